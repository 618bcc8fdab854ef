"""Device pages on an NVIDIA GPU (optional extra ``mmsb[gpu]``)."""

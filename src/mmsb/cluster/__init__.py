"""A sharded bus on Ray (optional extra ``mmsb[cluster]``)."""

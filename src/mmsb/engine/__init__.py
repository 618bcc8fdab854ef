"""Compiled kernels and (in later layers) the multi-worker driver."""

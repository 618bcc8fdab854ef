"""Monitoring: provenance, invariants, memory and GC."""

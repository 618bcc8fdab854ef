"""On-disk storage: arena, page table, log, checkpoints, recovery and the writer lock.

Nothing here knows about graphs or propagation; upper layers reach storage through the
bus's write path.
"""

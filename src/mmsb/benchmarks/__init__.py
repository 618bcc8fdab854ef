"""Benchmark scenarios, shared by ``mmsb bench`` and ``mmsb validate``.

Each scenario returns a :class:`Result` holding its measured figures and the conditions
they were measured under (payload size, batch size, pages, sync mode, workers). Nothing
here is projected or derived from another figure: every number is a timed run.
"""

from mmsb.benchmarks.common import Result

__all__ = ["Result"]

"""Reliability tooling shipped with the library: the crash campaign (``mmsb crashtest``)
and the power-loss simulator. Neither is imported by the storage engine."""

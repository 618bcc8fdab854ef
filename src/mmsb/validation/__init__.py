"""Validation targets (SPEC §9): a registry (``targets.json``), one runner module per target,
and text/JSON reports. ``mmsb validate`` is a thin front end over :func:`run_validation`."""

from mmsb.validation.report import append_history, format_line, format_report, write_json
from mmsb.validation.runner import (
    Context,
    Outcome,
    TargetResult,
    ValidationReport,
    run_target,
    run_validation,
)
from mmsb.validation.targets import RegistryError, TargetSpec, load_targets

__all__ = [
    "Context",
    "Outcome",
    "RegistryError",
    "TargetResult",
    "TargetSpec",
    "ValidationReport",
    "append_history",
    "format_line",
    "format_report",
    "load_targets",
    "run_target",
    "run_validation",
    "write_json",
]

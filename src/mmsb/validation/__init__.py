"""Validation targets (SPEC §9): a registry (``targets.json``), one runner module per target,
and text/JSON reports. ``mmsb validate`` is a thin front end over :func:`run_validation`."""

from mmsb.validation.history import (
    append_history,
    compare_with_history,
    format_regression,
    read_history,
)
from mmsb.validation.report import format_line, format_report, format_result_line, write_json
from mmsb.validation.runner import (
    Context,
    Outcome,
    TargetResult,
    ValidationReport,
    run_target,
    run_validation,
)
from mmsb.validation.targets import Check, CheckResult, RegistryError, TargetSpec, load_targets

__all__ = [
    "Check",
    "CheckResult",
    "Context",
    "Outcome",
    "RegistryError",
    "TargetResult",
    "TargetSpec",
    "ValidationReport",
    "append_history",
    "compare_with_history",
    "format_line",
    "format_regression",
    "format_report",
    "format_result_line",
    "load_targets",
    "read_history",
    "run_target",
    "run_validation",
    "write_json",
]

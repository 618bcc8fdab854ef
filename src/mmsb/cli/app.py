"""The ``mmsb`` command group and its error mapping.

Exit codes: 0 success; 1 the command ran and found a problem (``verify`` not ok, a
validation target missed, a replay that does not match); 2 the command could not run (bad
usage, no bus at the path, writer lock held, corrupt files). Expected errors — every
:class:`mmsb.MMSBError` and file-level ``OSError`` — print one line on stderr, never a
traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

import mmsb
from mmsb.cli.bench import bench
from mmsb.cli.crashtest import crashtest
from mmsb.cli.graphcmd import graph, provenance
from mmsb.cli.inspect import history, info, log_cmd, verify
from mmsb.cli.maintain import checkpoint, compact, replay
from mmsb.cli.metricscmd import metrics
from mmsb.cli.output import CommandError
from mmsb.cli.validate import validate


def _describe_oserror(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


class MMSBGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except mmsb.MMSBError as exc:
            raise CommandError(
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            ) from None
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise CommandError(_describe_oserror(exc)) from None


@click.group(cls=MMSBGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mmsb.__version__, prog_name="mmsb")
def cli() -> None:
    """MMSB: an embedded, memory-mapped, deterministic state store.

    PATH is a bus directory. Read-only commands (info, log, history, verify) never take the
    writer lock and work beside a running writer.
    """


for command in (info, log_cmd, history, checkpoint, verify, replay, compact, validate, crashtest,
                graph, provenance, bench, metrics):  # fmt: skip
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``mmsb``, ``python -m mmsb``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="mmsb")

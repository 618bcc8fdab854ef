"""The ``mmsb`` command group and its error mapping.

Exit codes: 0 success; 1 the command ran and found a problem (``verify`` not ok, a
validation target missed, a replay that does not match); 2 the command could not run (bad
usage, no bus at the path, writer lock held, corrupt files). Expected errors — every
:class:`mmsb.MMSBError` and file-level ``OSError`` — print one line on stderr, never a
traceback.

Commands are loaded on first use: ``mmsb --help`` lists them from :data:`COMMANDS` without
importing numpy, the bus or the benchmark code, and ``mmsb info`` loads only its own module.
Every command's help ends with a line saying whether it is safe beside a running writer.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import click

from mmsb import __version__
from mmsb.cli.output import CommandError
from mmsb.errors import MMSBError

#: How each kind of command behaves beside a process that has the bus open for writing.
#: The first words of each text are what ``mmsb --help`` shows after the command's summary.
BESIDE_WRITER = {
    "read-only": "Safe beside a running writer: opens the bus read-only and never takes the "
    "writer lock.",
    "replay": "Safe beside a running writer: reads PATH read-only (no writer lock) and writes "
    "only the new bus at OUT.",
    "own-buses": "Safe beside a running writer: touches no existing bus, only the ones it "
    "creates itself (its load can slow a writer on the same machine).",
    "writer-lock": "Not safe beside a running writer: takes the writer lock, so while another "
    "process writes it exits with code 2 and says so.",
}

#: The tag each kind gets in the command listing of ``mmsb --help`` (explained above it).
TAGS = {"read-only": "[safe]", "replay": "[safe]", "own-buses": "[safe]", "writer-lock": "[lock]"}


@dataclass(frozen=True)
class Spec:
    """Where a command lives, how it behaves beside a writer, and its one-line summary."""

    target: str  # "module:attribute"
    safety: str  # a key of BESIDE_WRITER
    summary: str  # the listing's text (``mmsb --help``), shown without loading the command


COMMANDS: dict[str, Spec] = {
    "info": Spec("mmsb.cli.inspect:info", "read-only",
                 "What is in the bus: LSN, pages, log, checkpoints."),
    "log": Spec("mmsb.cli.inspect:log_cmd", "read-only", "Commits (log frames), newest first."),
    "history": Spec("mmsb.cli.inspect:history", "read-only",
                    "Deltas that touched one page, newest first."),
    "checkpoint": Spec("mmsb.cli.maintain:checkpoint", "writer-lock", "Write a checkpoint now."),
    "verify": Spec("mmsb.cli.inspect:verify", "read-only", "Check the integrity of a bus."),
    "replay": Spec("mmsb.cli.maintain:replay", "replay",
                   "Write a standalone bus holding history up to an LSN."),
    "compact": Spec("mmsb.cli.maintain:compact", "writer-lock",
                    "Drop old checkpoints and the log they cover."),
    "validate": Spec("mmsb.cli.validate:validate", "own-buses",
                     "Measure the validation targets."),
    "crashtest": Spec("mmsb.cli.crashtest:crashtest", "own-buses",
                      "Kill writers at random moments; check every recovery."),
    "graph": Spec("mmsb.cli.graphcmd:graph", "read-only",
                  "The dependency graph: size, kinds, validation."),
    "provenance": Spec("mmsb.cli.graphcmd:provenance", "read-only",
                       "Which delta wrote a page, and what fed it."),
    "bench": Spec("mmsb.cli.bench:bench", "own-buses",
                  "Throughput, memory and snapshot benchmarks."),
    "metrics": Spec("mmsb.cli.metricscmd:metrics", "read-only",
                    "Serve a bus's figures for Prometheus."),
    "warmup": Spec("mmsb.cli.warmup:warmup", "own-buses",
                   "Compile the kernels once, so later processes start fast."),
}  # fmt: skip


def load_command(name: str) -> click.Command:
    """Import the command ``name`` and give its help the line about a running writer."""
    spec = COMMANDS[name]
    module, attr = spec.target.split(":")
    command: click.Command = getattr(importlib.import_module(module), attr)
    note = BESIDE_WRITER[spec.safety]
    if note not in (command.help or ""):  # loaded once per process; a second load keeps it
        command.help = f"{(command.help or '').rstrip()}\n\n{note}"
    command.short_help = spec.summary
    return command


class LazyCommands(MutableMapping[str, click.Command]):
    """The group's commands, each imported the first time it is looked up."""

    def __init__(self) -> None:
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            if name not in COMMANDS:
                raise KeyError(name)
            self._loaded[name] = load_command(name)
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:  # pragma: no cover - click never deletes
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (n for n in self._loaded if n not in COMMANDS)

    def __len__(self) -> int:
        return len(set(COMMANDS) | set(self._loaded))


def _describe_oserror(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


class MMSBGroup(click.Group):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = LazyCommands()

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in COMMANDS order: the bus readers first

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The listing, from :data:`COMMANDS` (nothing is imported), each with its tag."""
        rows = [(name, f"{TAGS[spec.safety]} {spec.summary}") for name, spec in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MMSBError as exc:
            raise CommandError(
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            ) from None
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise CommandError(_describe_oserror(exc)) from None


@click.group(cls=MMSBGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mmsb")
def cli() -> None:
    """MMSB: an embedded, memory-mapped, deterministic state store.

    PATH is a bus directory. Each command says whether it is safe beside a running writer
    (a process that has the bus open). [safe]: the readers (info, log, history, verify,
    graph, provenance, metrics, and replay's source) open it read-only and never take the
    writer lock; validate, bench, crashtest and warmup use only buses they create.
    [lock]: checkpoint and compact take the writer lock and refuse, with exit code 2, while
    another process writes.

    Times are shown as ISO 8601 in the local time zone, with its UTC offset; --json output
    keeps the raw nanoseconds since the epoch.
    """


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``mmsb``, ``python -m mmsb``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="mmsb")

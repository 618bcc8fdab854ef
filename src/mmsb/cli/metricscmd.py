"""``mmsb metrics``: serve a bus's figures for Prometheus (the ``mmsb[metrics]`` extra)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click

import mmsb
from mmsb.cli.output import CommandError, require_bus
from mmsb.metrics import serve

REFRESH_S = 0.25  # how often the read-only bus catches up with its writer while serving


@click.command()
@click.argument("path", type=click.Path())
@click.option("--port", type=click.IntRange(0, 65535), required=True,
              help="TCP port (0: any free port; the printed URL names it).")  # fmt: skip
@click.option("--addr", default="127.0.0.1", show_default=True,
              help="Address to bind (0.0.0.0: every interface).")  # fmt: skip
@click.option("--duration", type=click.FloatRange(min=0, min_open=True),
              help="Stop after this many seconds (default: serve until interrupted).")  # fmt: skip
def metrics(path: str, port: int, addr: str, duration: float | None) -> None:
    """Serve the figures of the bus at PATH for Prometheus at http://ADDR:PORT/metrics.

    The bus is opened read-only (no writer lock: it works beside a running writer, whose
    commits it follows) and its stats are read at each scrape. Runs until interrupted
    (Ctrl-C) or for --duration seconds. Needs prometheus-client: pip install 'mmsb[metrics]'.
    """
    require_bus(path)
    with mmsb.open(path, readonly=True) as bus:
        try:
            server = serve(bus, port, addr)
        except ImportError as exc:
            raise CommandError(str(exc)) from None
        with server:
            click.echo(f"serving {server.url} for {path} (read-only); Ctrl-C stops")
            end = None if duration is None else time.monotonic() + duration
            with _interrupt_sets() as stop:
                while not stop.is_set() and (end is None or time.monotonic() < end):
                    bus.refresh()
                    left = REFRESH_S if end is None else end - time.monotonic()
                    stop.wait(max(0.0, min(REFRESH_S, left)))


@contextmanager
def _interrupt_sets() -> Iterator[threading.Event]:
    """An event that Ctrl-C (SIGINT) sets instead of raising KeyboardInterrupt wherever the
    main thread happens to be (in the middle of a refresh, say): the loop ends between
    refreshes and the server and the bus close as usual. Off the main thread (where no
    handler can be installed) Ctrl-C raises as before."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)

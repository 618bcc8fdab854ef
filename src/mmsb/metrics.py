"""Prometheus metrics for a bus: :func:`serve` answers ``GET /metrics`` from a background
thread with the figures of :meth:`Bus.stats <mmsb.bus.Bus.stats>`, read at scrape time.

Needs the optional extra ``mmsb[metrics]`` (``prometheus-client``); ``import mmsb`` does
not load this module, and this module loads ``prometheus_client`` only when a function
here is called, so a missing extra shows as one clear :class:`ImportError`.

Each server has its own registry holding one :class:`BusCollector`: nothing is added to
``prometheus_client``'s global registry. To add a bus's figures to an application's own
exporter instead, register ``BusCollector(bus)`` in its registry.

Metric names (all ``mmsb_`` prefixed; times in seconds, sizes in bytes): ``bus_info``
(labels ``path``, ``sync``, ``readonly``), ``lsn``, ``commits_total``, ``deltas_total``,
``log_appended_bytes_total``, ``log_write_seconds_total``, ``log_bytes``, ``log_segments``,
``checkpoints``, ``checkpoint_lsn``, ``checkpoint_bytes``, ``checkpoint_age_seconds``,
``tick_duration_seconds`` (a histogram), ``tick_last_seconds``, ``gc_steps_total``,
``gc_pause_seconds_total``, ``snapshots_pinned``, ``readers``,
``fsync_duration_seconds`` (a summary: count and sum), ``fsync_max_seconds``. A figure the
bus does not know (no checkpoint yet, no tick yet, a read-only bus's fsyncs) is left out of
its family rather than reported as 0.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmsb.bus import Bus
    from mmsb.monitor.stats import BusStats

__all__ = ["EXTRA", "BusCollector", "MetricsServer", "serve"]

EXTRA = "pip install 'mmsb[metrics]'"


def _prometheus(module: str = "prometheus_client") -> ModuleType:
    """Import a part of ``prometheus_client``; a clear error when the extra is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"mmsb.metrics needs the prometheus-client package: {EXTRA}") from exc


class BusCollector:
    """A ``prometheus_client`` collector of one bus's figures: each scrape calls
    ``bus.stats()`` once (cheap, and safe from the scrape thread)."""

    def __init__(self, bus: Bus) -> None:
        _prometheus()
        self.bus = bus

    def collect(self) -> Iterator[Any]:
        core = _prometheus("prometheus_client.core")
        go = _prometheus("prometheus_client.utils").floatToGoString
        s: BusStats = self.bus.stats()

        def family(kind: str, name: str, doc: str, value: float | None, **kw: Any) -> Any:
            fam = getattr(core, kind)(f"mmsb_{name}", doc, **kw)
            if value is not None:
                fam.add_metric([], value)
            return fam

        yield core.InfoMetricFamily(
            "mmsb_bus", "The bus: its directory, sync mode and whether it is read-only.",
            value={"path": s.path, "sync": s.sync or "", "readonly": str(s.readonly).lower()},
        )  # fmt: skip
        g, c = "GaugeMetricFamily", "CounterMetricFamily"
        yield family(g, "lsn", "The last commit the bus reflects.", s.lsn)
        yield family(c, "commits", "Commits published since open.", s.commits)
        yield family(c, "deltas", "Deltas committed since open.", s.deltas)
        yield family(c, "log_appended_bytes", "Bytes appended to the log since open.",
                     s.log_appended_bytes)  # fmt: skip
        yield family(c, "log_write_seconds", "Time spent writing to the log since open.",
                     s.log_write_ms / 1e3)  # fmt: skip
        yield family(g, "log_bytes", "Log segment files on disk.", s.log_bytes)
        yield family(g, "log_segments", "Log segments on disk.", s.log_segments)
        yield family(g, "checkpoints", "Checkpoint files on disk.", s.checkpoints)
        yield family(g, "checkpoint_lsn", "The newest checkpoint's LSN.", s.checkpoint_lsn)
        yield family(g, "checkpoint_bytes", "The newest checkpoint's size.",
                     s.checkpoint_bytes if s.checkpoints else None)  # fmt: skip
        yield family(g, "checkpoint_age_seconds", "Seconds since the newest checkpoint.",
                     s.checkpoint_age_s)  # fmt: skip
        ticks = core.HistogramMetricFamily("mmsb_tick_duration_seconds",
                                           "Tick latency since open.")  # fmt: skip
        bounds = [go(ms / 1e3) for ms in s.tick_le_ms] + ["+Inf"]
        ticks.add_metric([], list(zip(bounds, s.tick_buckets, strict=True)),
                         s.tick_total_ms / 1e3)  # fmt: skip
        yield ticks
        last = None if s.last_tick_ms is None else s.last_tick_ms / 1e3
        yield family(g, "tick_last_seconds", "The latest tick's latency.", last)
        yield family(c, "gc_steps", "GC steps run since open.", s.gc_steps)
        yield family(c, "gc_pause_seconds", "GC steps' summed pause since open.",
                     s.gc_pause_ms / 1e3)  # fmt: skip
        yield family(g, "snapshots_pinned", "Snapshot slots held now, by any process.",
                     s.snapshots)  # fmt: skip
        yield family(g, "readers", "Live reader registrations now.", s.readers)
        fsync = core.SummaryMetricFamily("mmsb_fsync_duration_seconds",
                                         "Log syncs that reached the disk since open.")  # fmt: skip
        if not s.readonly:
            mean = s.fsync_mean_ms or 0.0
            fsync.add_metric([], s.fsyncs, s.fsyncs * mean / 1e3)
        yield fsync
        worst = None if s.fsync_max_ms is None else s.fsync_max_ms / 1e3
        yield family(g, "fsync_max_seconds", "The longest log sync since open.", worst)


class MetricsServer:
    """A running exporter (see :func:`serve`): ``url`` to scrape, :meth:`stop` to end it;
    a context manager that stops on exit."""

    def __init__(self, httpd: Any, thread: Any, addr: str) -> None:
        self._httpd = httpd
        self._thread = thread
        self.addr: str = addr
        self.port: int = int(httpd.server_port)
        host = f"[{addr}]" if ":" in addr else addr
        self.url: str = f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(bus: Bus, port: int, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve ``bus``'s figures for Prometheus at ``http://addr:port/metrics`` from a daemon
    thread, until :meth:`MetricsServer.stop`. ``port=0`` takes a free port (read it from
    the result). Raises :class:`ImportError` naming the extra when ``prometheus-client``
    is not installed, and :class:`OSError` when the address cannot be bound."""
    prom = _prometheus()
    registry = prom.CollectorRegistry(auto_describe=False)
    registry.register(BusCollector(bus))
    httpd, thread = prom.start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(httpd, thread, addr)

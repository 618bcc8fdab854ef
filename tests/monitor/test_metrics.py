"""The Prometheus exporter: ``mmsb.metrics.serve`` scraped over loopback, the collector in
an application's own registry, the ``mmsb metrics`` command serving a live bus read-only
from another process, and a clear error when the ``metrics`` extra is missing.

Every server binds 127.0.0.1 on a free port (port 0), every wait has a timeout, and each
test stops what it started."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import mmsb
from mmsb.cli import cli
from mmsb.metrics import EXTRA, BusCollector, serve

ROOT = Path(__file__).resolve().parents[2]
HINT = "pip install 'mmsb[metrics]'"
TIMEOUT = 10.0
FAMILIES = {
    "mmsb_bus_info": "gauge", "mmsb_lsn": "gauge", "mmsb_commits": "counter",
    "mmsb_deltas": "counter", "mmsb_log_appended_bytes": "counter", "mmsb_log_bytes": "gauge",
    "mmsb_log_write_seconds": "counter",
    "mmsb_log_segments": "gauge", "mmsb_checkpoints": "gauge", "mmsb_checkpoint_lsn": "gauge",
    "mmsb_checkpoint_bytes": "gauge", "mmsb_checkpoint_age_seconds": "gauge",
    "mmsb_tick_duration_seconds": "histogram", "mmsb_tick_last_seconds": "gauge",
    "mmsb_gc_steps": "counter", "mmsb_gc_pause_seconds": "counter",
    "mmsb_snapshots_pinned": "gauge", "mmsb_readers": "gauge",
    "mmsb_fsync_duration_seconds": "summary", "mmsb_fsync_max_seconds": "gauge",
}  # fmt: skip


def scrape(url: str) -> dict[str, float]:
    """Every sample of one scrape, keyed by name (and labels, where there are any)."""
    with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return parse(text)


def parse(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith("mmsb_"):
            assert FAMILIES.get(fam.name) == fam.type, (fam.name, fam.type)
            out[f"#{fam.name}"] = 1.0  # the family is there, with or without samples
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def families(samples: dict[str, float]) -> set[str]:
    return {k[1:] for k in samples if k.startswith("#")}


# how long a stopped command may take to exit: generous, since this shared 2-core machine
# can stall a process for seconds under a full test run; a command that hangs still fails
EXIT_TIMEOUT = 30.0


def exit_code(proc: subprocess.Popen[str]) -> int:
    """``proc``'s exit status once it ends; if it does not end within ``EXIT_TIMEOUT``, it
    is aborted (faulthandler prints every thread's stack) and the test fails with them."""
    try:
        return proc.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        proc.wait(timeout=TIMEOUT)
        stacks = proc.stderr.read() if proc.stderr is not None else ""
        pytest.fail(f"the command did not stop within {EXIT_TIMEOUT} s; its threads:\n{stacks}")


def wait_for(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_serve_exposes_every_family_and_they_move(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="normal") as bus, serve(bus, 0, addr="127.0.0.1") as server:
        assert server.addr == "127.0.0.1" and server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        first = scrape(server.url)
        assert families(first) == set(FAMILIES)
        info = f"mmsb_bus_info{{path={bus.path},readonly=false,sync=normal}}"
        assert first[info] == 1
        assert first["mmsb_lsn"] == 0 and first["mmsb_commits_total"] == 0
        assert "mmsb_checkpoint_age_seconds" not in first  # no checkpoint yet: no sample
        assert "mmsb_tick_last_seconds" not in first
        a, b = bus.create_page(64), bus.create_page(64)
        bus.derive(b, lambda x: x + 1, [a])
        for i in range(3):
            bus.write(a, bytes([i]) * 8)
            bus.tick()
        bus.checkpoint()
        bus.gc()
        bus.write(a, b"z")
        bus.sync_now()
        snap = bus.snapshot()
        reader = mmsb.open(path, readonly=True)
        try:
            second = scrape(server.url)
        finally:
            reader.close()
            snap.close()
        s = bus.stats()
        assert second["mmsb_lsn"] == s.lsn > 0
        assert second["mmsb_commits_total"] == s.commits > 0
        assert second["mmsb_deltas_total"] == s.deltas > 0
        assert second["mmsb_log_appended_bytes_total"] == s.log_appended_bytes > 0
        assert second["mmsb_log_write_seconds_total"] == pytest.approx(s.log_write_ms / 1e3)
        assert second["mmsb_log_write_seconds_total"] > 0
        assert second["mmsb_log_bytes"] == s.log_bytes > first["mmsb_log_bytes"]
        assert second["mmsb_log_segments"] == s.log_segments > first["mmsb_log_segments"]
        assert second["mmsb_checkpoints"] == 1 and second["mmsb_checkpoint_lsn"] > 0
        assert second["mmsb_checkpoint_bytes"] == s.checkpoint_bytes > 0
        assert 0 <= second["mmsb_checkpoint_age_seconds"] < 60
        assert second["mmsb_tick_duration_seconds_count"] == 3
        assert second["mmsb_tick_duration_seconds_bucket{le=+Inf}"] == 3
        assert second["mmsb_tick_duration_seconds_bucket{le=0.064}"] <= 3
        assert second["mmsb_tick_duration_seconds_sum"] == pytest.approx(s.tick_total_ms / 1e3)
        assert second["mmsb_tick_last_seconds"] > 0
        assert second["mmsb_gc_steps_total"] == s.gc_steps == 4  # three ticks, one gc()
        assert second["mmsb_gc_pause_seconds_total"] > 0
        assert second["mmsb_snapshots_pinned"] == 1 and second["mmsb_readers"] == 1
        assert second["mmsb_fsync_duration_seconds_count"] == s.fsyncs > 0
        assert second["mmsb_fsync_duration_seconds_sum"] > 0
        assert second["mmsb_fsync_max_seconds"] > 0
        third = scrape(server.url)  # released: the gauges fall back
        assert third["mmsb_snapshots_pinned"] == 0 and third["mmsb_readers"] == 0
        url = server.url
    with pytest.raises(urllib.error.URLError):  # stopped: nothing listens any more
        urllib.request.urlopen(url, timeout=TIMEOUT)


def test_the_collector_joins_an_application_registry(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        bus.create_page(64)
        registry = CollectorRegistry()
        registry.register(BusCollector(bus))
        got = parse(generate_latest(registry).decode())
        assert got["mmsb_lsn"] == 1 and families(got) == set(FAMILIES)
        # a read-only bus: writer-only figures without samples
        with mmsb.open(tmp_path / "b", readonly=True) as ro:
            registry = CollectorRegistry()
            registry.register(BusCollector(ro))
            got = parse(generate_latest(registry).decode())
            assert got["mmsb_lsn"] == 1 and got["mmsb_readers"] == 1
            assert "mmsb_fsync_duration_seconds_count" not in got
            assert "mmsb_fsync_max_seconds" not in got
    # serve() registers nothing globally
    assert not any(n.startswith("mmsb_") for n in REGISTRY._names_to_collectors)


def test_serve_refuses_a_taken_port(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus, serve(bus, 0) as server:
        with pytest.raises(OSError):
            serve(bus, server.port)
        assert scrape(server.url)["mmsb_lsn"] == 0
        server.stop()
        server.stop()  # idempotent


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's stdout lines, read by a daemon thread (so waits can time out)."""
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return q


def test_the_cli_serves_a_live_bus_read_only(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as bus:
        p = bus.create_page(64)
        bus.write(p, b"before")
        proc = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", "mmsb", "metrics", str(path),
             "--port", "0", "--addr", "127.0.0.1", "--duration", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            line = lines_of(proc).get(timeout=60)
            assert line.startswith("serving http://127.0.0.1:"), line
            url = line.split()[1]
            got = scrape(url)
            assert families(got) == set(FAMILIES)
            assert got["mmsb_lsn"] == bus.lsn == 2
            assert got["mmsb_readers"] == 1  # the command's own registration
            assert any(k.startswith("mmsb_bus_info{") and "readonly=true" in k for k in got)
            for _ in range(3):
                bus.write(p, b"after")
            bus.checkpoint()
            wait_for(lambda: scrape(url)["mmsb_lsn"] == bus.lsn, "the LSN to follow")
            got = scrape(url)
            assert got["mmsb_checkpoints"] == 1 and got["mmsb_log_segments"] == 2
            assert bus.stats().readers == 1
            proc.send_signal(signal.SIGINT)  # the way to stop it by hand
            assert exit_code(proc) == 0
            assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=TIMEOUT)
            for f in (proc.stdout, proc.stderr):
                if f is not None:
                    f.close()
        assert bus.stats().readers == 0


def test_the_cli_stops_after_its_duration(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as bus:
        bus.create_page(8)
    t0 = time.monotonic()
    res = CliRunner().invoke(cli, ["metrics", str(path), "--port", "0", "--duration", "0.3"])
    assert res.exit_code == 0, res.output
    assert 0.3 <= time.monotonic() - t0 < TIMEOUT
    assert res.output.startswith("serving http://127.0.0.1:")
    res = CliRunner().invoke(cli, ["metrics", str(tmp_path / "nothing"), "--port", "0"])
    assert res.exit_code == 2 and "no bus at" in res.output


def test_a_missing_extra_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert EXTRA == HINT
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
        with pytest.raises(ImportError, match=r"prometheus-client.*mmsb\[metrics\]"):
            serve(bus, 0)
        with pytest.raises(ImportError, match=r"mmsb\[metrics\]"):
            BusCollector(bus)
    res = CliRunner().invoke(cli, ["metrics", str(tmp_path / "b"), "--port", "0",
                                   "--duration", "5"])  # fmt: skip
    assert res.exit_code == 2
    assert HINT in res.output and "Traceback" not in res.output


def test_import_mmsb_loads_neither_the_exporter_nor_prometheus() -> None:
    code = ("import sys, mmsb; print(sorted(m for m in sys.modules if m == 'mmsb.metrics' "
            "or m.split('.')[0] == 'prometheus_client'))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120, env={**os.environ}).stdout.strip()  # fmt: skip
    assert out == "[]"


def test_prometheus_client_is_the_metrics_extra() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {k: [d.split(">")[0].split("=")[0].strip() for d in v] for k, v in extras.items()}
    assert names["metrics"] == ["prometheus-client"]
    assert "prometheus-client" in names["dev"]  # the tests scrape the exporter

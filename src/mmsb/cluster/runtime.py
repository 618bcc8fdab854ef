"""Everything that touches Ray: importing it, starting or joining a cluster, creating the
actors, and calling them with a timeout, turning Ray's exceptions into typed errors.

``import mmsb`` never imports this module; importing it does not import Ray either: Ray
is imported by :func:`ray_module` the first time a cluster is created or opened.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from mmsb.errors import ClusterError, ClusterUnavailableError, MMSBError

SHARD_RESOURCE = "mmsb_shard"  # custom resource a node offers to host shards
SEQUENCER_RESOURCE = "mmsb_sequencer"  # custom resource of the node that holds the log
CALL_TIMEOUT = 60.0  # seconds for one call (every ray.get has a timeout)
RESTART_TIMEOUT = 60.0  # seconds to wait for Ray to restart a lost actor
LOOPBACK = "127.0.0.1"
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def ray_module(loopback: bool = False) -> ModuleType:
    """Import Ray, or raise :class:`ClusterError` naming the extra that installs it.

    ``loopback``: a cluster on this machine only. Ray turns a loopback address it is given
    into the machine's outward address before connecting; with this variable set to 0
    (read when Ray is imported) it keeps 127.0.0.1, so nothing leaves the machine."""
    if loopback and "ray" not in sys.modules:
        os.environ.setdefault(_LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(
            "mmsb.cluster needs Ray: install the extra with pip install 'mmsb[cluster]'"
        ) from exc
    return ray


def is_loopback(address: str | None) -> bool:
    return address is None or address.split(":")[0] in (LOOPBACK, "localhost")


def start_local(shards: int, object_store_memory: int) -> tuple[str, str]:
    """Start a Ray instance on this machine bound to 127.0.0.1, with its session files in
    a new temporary directory; return (address, that directory)."""
    ray = ray_module(loopback=True)
    tmp = tempfile.mkdtemp(prefix="mmsb-ray-")  # short: Ray's socket paths must fit
    os.environ.setdefault("RAY_TMPDIR", tmp)
    ray.init(
        num_cpus=max(2, os.cpu_count() or 1),
        resources={SHARD_RESOURCE: shards, SEQUENCER_RESOURCE: 1},
        object_store_memory=object_store_memory,
        include_dashboard=False,
        _temp_dir=os.path.join(tmp, "ray"),
        _node_ip_address=LOOPBACK,
        log_to_driver=False,
        configure_logging=False,
    )
    return ray.get_runtime_context().gcs_address, tmp


def connect(address: str) -> None:
    """Join an existing cluster (``"auto"``, or ``host:port``) unless already connected."""
    ray = ray_module(loopback=is_loopback(address))
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, configure_logging=False)


def has_resource(name: str) -> bool:
    ray = ray_module()
    return bool(ray.cluster_resources().get(name, 0) > 0)


def make_actor(
    cls: type, args: Sequence[Any], *, resource: str, spread: bool, name: str | None = None
) -> Any:
    """Create an actor of ``cls`` that Ray restarts (on another node if its node is
    lost); placed on nodes offering ``resource`` when the cluster has that resource.
    ``args`` should be small plain values: Ray keeps them to restart the actor."""
    ray = ray_module()
    opts: dict[str, Any] = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": 0}
    if name is not None:
        opts["name"] = name
    if has_resource(resource):
        opts["resources"] = {resource: 1}
    if spread:
        opts["scheduling_strategy"] = "SPREAD"
    return ray.remote(cls).options(**opts).remote(*args)


def kill(actor: Any) -> None:
    ray = ray_module()
    with contextlib.suppress(Exception):  # already gone
        ray.kill(actor, no_restart=True)


def lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or the error a remote call raised inside it) says an actor or its
    node is gone, or did not answer in time: worth waiting for a restart and retrying."""
    ex = ray_module().exceptions
    kinds = (ex.RayActorError, ex.GetTimeoutError, ex.ObjectLostError, ex.OwnerDiedError,
             ex.WorkerCrashedError, ex.NodeDiedError)  # fmt: skip
    return isinstance(exc, kinds) or isinstance(unwrap(exc), kinds)


def unwrap(exc: BaseException) -> BaseException:
    """The error a remote call raised, without Ray's wrapper."""
    ex = ray_module().exceptions
    if isinstance(exc, ex.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException) and cause is not exc:
            return unwrap(cause)
    return exc


def get(refs: Any, timeout: float = CALL_TIMEOUT) -> Any:
    """``ray.get`` with a timeout. The :class:`MMSBError` a remote method raised comes back
    as itself; a lost actor or a timeout as Ray's error (for :func:`retrying`); anything
    else as :class:`ClusterError` chained to Ray's."""
    ray = ray_module()
    try:
        return ray.get(refs, timeout=timeout)
    except Exception as exc:
        inner = unwrap(exc)
        if isinstance(inner, MMSBError):
            raise inner from None
        if lost(exc):
            raise
        raise ClusterError(f"a remote call failed: {type(inner).__name__}: {inner}") from exc


def wait_alive(actor: Any, what: str, timeout: float = RESTART_TIMEOUT) -> None:
    """Wait until ``actor`` answers a ping (Ray restarts a lost actor); raise
    :class:`ClusterUnavailableError` when it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            get(actor.ping.remote(), timeout=max(1.0, min(left, 10.0)))
            return
        except Exception as exc:
            if not lost(exc):
                raise
        if time.monotonic() > deadline:
            raise ClusterUnavailableError(f"{what} did not come back within {timeout:.0f} s")
        time.sleep(0.2)


def retrying(
    fn: Callable[[], Any],
    actors: Callable[[], Sequence[tuple[Any, str]]],
    *,
    attempts: int = 4,
    lsn: int | None = None,
) -> Any:
    """Run ``fn`` (which submits idempotent calls and gets their results); when an actor
    is lost, wait for every actor in ``actors()`` to answer again and run it once more.
    After ``attempts`` tries, or when an actor does not come back, raise
    :class:`ClusterUnavailableError` (with ``lsn``, the commit in flight if logged)."""
    last: BaseException | None = None
    for _ in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not lost(exc):
                raise
            last = exc
        try:
            for actor, what in actors():
                wait_alive(actor, what)
        except ClusterUnavailableError as exc:
            raise ClusterUnavailableError(str(exc), lsn) from last
    raise ClusterUnavailableError(
        f"the cluster kept losing actors ({type(last).__name__}: {last})", lsn
    ) from last


def shutdown() -> None:
    ray = ray_module()
    if ray.is_initialized():
        ray.shutdown()

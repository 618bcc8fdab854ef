"""A Ray cluster on loopback for the ``cluster`` tests: a head node (the driver and the
sequencer) and three worker nodes that host shards, each with one CPU and a small object
store, session files in a temporary directory, health checks every 500 ms. One cluster
serves the whole session; a test that removes a node adds one back."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

STORE = 80 << 20  # bytes of object store per node (Ray's minimum is 75 MiB)
WORKERS = 3


class LoopbackCluster:
    def __init__(self) -> None:
        from mmsb.cluster import runtime

        ray = runtime.ray_module(loopback=True)  # keeps every address on 127.0.0.1
        from ray.cluster_utils import Cluster

        self.tmp = tempfile.mkdtemp(prefix="mmsb-rt-", dir="/tmp")
        os.environ["RAY_TMPDIR"] = self.tmp  # Ray writes its address file there
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "object_store_memory": STORE,
                "include_dashboard": False,
                "temp_dir": os.path.join(self.tmp, "ray"),
                "node_ip_address": "127.0.0.1",
                "resources": {runtime.SEQUENCER_RESOURCE: 1},
                "_system_config": {
                    "health_check_initial_delay_ms": 0,
                    "health_check_period_ms": 500,
                    "health_check_timeout_ms": 500,
                    "health_check_failure_threshold": 3,
                },
            },
        )
        self.workers = [self.add_worker() for _ in range(WORKERS)]
        ray.init(address=self.cluster.address, log_to_driver=False)
        self.cluster.wait_for_nodes(timeout=60)
        self.address = self.cluster.address

    def add_worker(self) -> Any:
        from mmsb.cluster import runtime

        return self.cluster.add_node(
            num_cpus=1, object_store_memory=STORE, node_ip_address="127.0.0.1",
            resources={runtime.SHARD_RESOURCE: 4},
        )  # fmt: skip

    def kill_node_of(self, node_id: str) -> Any:
        """Kill the worker node with Ray node id ``node_id`` at once (no graceful stop)."""
        node = next(w for w in self.workers if w.node_id == node_id)
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)
        return node

    def close(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LoopbackCluster]:
    from mmsb.cluster import runtime

    runtime.ray_module(loopback=True)  # before anything imports Ray (see runtime.ray_module)
    c = LoopbackCluster()
    try:
        yield c
    finally:
        c.close()

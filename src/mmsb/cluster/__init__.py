"""A sharded bus on Ray (optional extra ``mmsb[cluster]``): :class:`ClusterBus`.

A sequencer actor owns the global input log and gives every commit its global LSN; each
shard actor owns an ordinary on-disk bus holding the pages ``g`` with
``(g - 1) % shards == i`` and applies its part of every global commit in LSN order
(docs/cluster.md). ``import mmsb`` does not import this package, and this package imports
Ray only when a cluster is created or opened (:class:`ClusterError` names the extra when
Ray is missing).
"""

from mmsb.cluster.bus import ClusterBus
from mmsb.cluster.partition import shard_of
from mmsb.cluster.snapshot import ClusterSnapshot
from mmsb.errors import ClusterError, ClusterUnavailableError

__all__ = ["ClusterBus", "ClusterError", "ClusterSnapshot", "ClusterUnavailableError", "shard_of"]

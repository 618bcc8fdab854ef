"""The dependency graph: edges and their queries, propagation, ticks and events."""

from mmsb.graph.dag import EDGE_DTYPE, KINDS, Graph, GraphReport, GraphView
from mmsb.graph.tick import TickReport
from mmsb.writer.events import EVENTS, Event, Subscription

__all__ = [
    "EDGE_DTYPE",
    "EVENTS",
    "KINDS",
    "Event",
    "Graph",
    "GraphReport",
    "GraphView",
    "Subscription",
    "TickReport",
]

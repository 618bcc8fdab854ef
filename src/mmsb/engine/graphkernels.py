"""Compiled kernels over edge columns: deterministic topological order and reachability.

Arrays and scalars only. Node ids are page ids; edges are two parallel int64 columns
(parent, child), duplicates allowed (one row per edge kind).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.engine.jit import njit

I64 = npt.NDArray[np.int64]


@njit(cache=True, nogil=True)
def _heap_push(heap: Any, n: int, v: int) -> int:
    i = n
    heap[i] = v
    while i > 0:
        p = (i - 1) >> 1
        if heap[p] <= heap[i]:
            break
        heap[p], heap[i] = heap[i], heap[p]
        i = p
    return n + 1


@njit(cache=True, nogil=True)
def _heap_pop(heap: Any, n: int) -> tuple[int, int]:
    top = heap[0]
    n -= 1
    heap[0] = heap[n]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= n:
            break
        small = left
        right = left + 1
        if right < n and heap[right] < heap[left]:
            small = right
        if heap[i] <= heap[small]:
            break
        heap[i], heap[small] = heap[small], heap[i]
        i = small
    return top, n


@njit(cache=True, nogil=True)
def kahn_order(n: int, src: Any, dst: Any) -> Any:
    """Topological order of nodes ``0..n-1`` over edges ``src[i] -> dst[i]``; among ready
    nodes the smallest index goes first. Returns fewer than ``n`` nodes when a cycle exists
    (the nodes on or behind a cycle are left out)."""
    m = src.size
    indeg = np.zeros(n, np.int64)
    for i in range(m):
        indeg[dst[i]] += 1
    start = np.zeros(n + 1, np.int64)
    for i in range(m):
        start[src[i] + 1] += 1
    for v in range(n):
        start[v + 1] += start[v]
    fill = start[:-1].copy()
    adj = np.empty(m, np.int64)
    for i in range(m):
        s = src[i]
        adj[fill[s]] = dst[i]
        fill[s] += 1
    heap = np.empty(n, np.int64)
    hn = 0
    for v in range(n):
        if indeg[v] == 0:
            hn = _heap_push(heap, hn, v)
    out = np.empty(n, np.int64)
    k = 0
    while hn > 0:
        v, hn = _heap_pop(heap, hn)
        out[k] = v
        k += 1
        for j in range(start[v], start[v + 1]):
            w = adj[j]
            indeg[w] -= 1
            if indeg[w] == 0:
                hn = _heap_push(heap, hn, w)
    return out[:k]


@njit(cache=True, nogil=True)
def _topo_ids(parents: Any, children: Any) -> tuple[Any, int]:
    m = parents.size
    top = 0
    for i in range(m):
        top = max(top, parents[i], children[i])
    idx = np.full(top + 1, -1, np.int64)
    for i in range(m):
        idx[parents[i]] = 0
        idx[children[i]] = 0
    nodes = np.empty(2 * m, np.int64)
    n = 0
    for v in range(top + 1):
        if idx[v] == 0:
            idx[v] = n
            nodes[n] = v
            n += 1
    src = np.empty(m, np.int64)
    dst = np.empty(m, np.int64)
    for i in range(m):
        src[i] = idx[parents[i]]
        dst[i] = idx[children[i]]
    order = kahn_order(n, src, dst)
    out = np.empty(order.size, np.int64)
    for i in range(order.size):
        out[i] = nodes[order[i]]
    return out, n


def topo_order(parents: I64, children: I64) -> tuple[I64, bool]:
    """(page ids in topological order, ties by id; whether the graph is acyclic). Only
    pages with at least one edge appear; on a cycle the pages on or behind it are left out."""
    if parents.size == 0:
        return np.zeros(0, np.int64), True
    order, n = _topo_ids(parents, children)
    return order, order.size == n

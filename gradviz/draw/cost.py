"""How long `dot` will take to lay out a view, estimated from the view alone.

`dot` ranks the nodes, then routes every edge that spans more than one rank through one
virtual node per rank it crosses; crossing reduction and positioning then work on real and
virtual nodes alike. A view's node count therefore says little: densenet's 451 boxes with
their dense concatenations make ~20,000 virtual nodes and take 20 s, a 500-node chain none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from gradviz.graph.model import Graph

__all__ = ["COST_BUDGET", "item_edges", "layout_cost"]

# What `dot` lays out in well under a second on one core: densenet121 collapsed to its dense
# layers costs ~4,600 (0.7 s), cut at 300 nodes ~9,400 (24 s); chains and residual nets of
# 500 nodes cost ~1,000 (0.1 s). Measured in benchmarks/bench_zoo.py.
COST_BUDGET = 5000


def layout_cost(item_ids: Iterable[str], edges: Sequence[tuple[str, str, int]]) -> int:
    """Nodes plus edge segments (one per rank an edge crosses) of a view whose edges point
    forward: what `dot`'s crossing reduction and positioning work through.

    Ranks count back from the outputs, as `dot`'s edge-length minimising ranking places a
    parameter just above the op it feeds rather than at the top of the picture.
    """
    pred: dict[str, list[str]] = {k: [] for k in item_ids}
    outdeg = dict.fromkeys(pred, 0)
    for a, b, _ in edges:
        if a in pred and b in pred:
            pred[b].append(a)
            outdeg[a] += 1
    height = dict.fromkeys(pred, 0)
    ready = [k for k, d in outdeg.items() if d == 0]
    while ready:
        k = ready.pop()
        h = height[k] + 1
        for p in pred[k]:
            if height[p] < h:
                height[p] = h
            outdeg[p] -= 1
            if outdeg[p] == 0:
                ready.append(p)
    # An edge into the "more" box of a cut view can close a cycle; its nodes stay at 0.
    span = sum(abs(height[a] - height[b]) for a, b, _ in edges if a in height and b in height)
    return len(pred) + span


def item_edges(graph: Graph, item_of: Mapping[str, str]) -> list[tuple[str, str, int]]:
    """The edges between drawn items (source, target, how many graph edges it stands for)."""
    counts: Counter[tuple[str, str]] = Counter()
    for s, d in graph.edges:
        a, b = item_of[s], item_of[d]
        if a != b:
            counts[(a, b)] += 1
    return [(a, b, c) for (a, b), c in counts.items()]

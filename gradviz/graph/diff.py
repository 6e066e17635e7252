"""What changed between two traced runs (another seed, depth or program), node by node."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gradviz.errors import ArgumentError
from gradviz.graph.model import Graph, Node, gc_paused

__all__ = ["DIFF_COLORS", "GraphDiff", "diff"]

DIFF_COLORS = {"added": "#8ce99a", "removed": "#ffa8a8", "mixed": "#ffe066"}


def _key(node: Node) -> tuple[Any, ...]:
    return (node.kind, node.label, node.module, node.shape)


@dataclass(frozen=True)
class GraphDiff:
    """Nodes of run A and run B matched structurally by (kind, label, module, shape), the
    k-th occurrence in A with the k-th in B (ids differ between runs).

    added: ids in B without a partner; removed: ids in A without one; common: (A id, B id)
    pairs. `graph` is B plus A's removed nodes (ids "a/…") with their edges; `colors`
    paints added nodes green and removed ones red for `draw`/`to_dot`."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    common: tuple[tuple[str, str], ...]
    graph: Graph
    colors: Mapping[str, str]

    @property
    def same(self) -> bool:
        return not self.added and not self.removed

    def summary(self) -> dict[str, int]:
        return {"added": len(self.added), "removed": len(self.removed), "common": len(self.common)}

    def added_labels(self) -> Counter:
        return Counter(self.graph.node(i).label for i in self.added)

    def removed_labels(self) -> Counter:
        return Counter(self.graph.node(f"a/{i}").label for i in self.removed)

    def __str__(self) -> str:
        if self.same:
            return f"same structure ({len(self.common)} nodes)"
        parts = [f"{len(self.common)} nodes in both"]
        if self.added:
            parts.append(
                f"{len(self.added)} added ("
                + ", ".join(f"{k} ×{v}" for k, v in self.added_labels().most_common(3))
                + ")"
            )
        if self.removed:
            parts.append(
                f"{len(self.removed)} removed ("
                + ", ".join(f"{k} ×{v}" for k, v in self.removed_labels().most_common(3))
                + ")"
            )
        return "; ".join(parts)


@gc_paused()
def diff(graph_a: Graph, graph_b: Graph) -> GraphDiff:
    """What changed between two traced runs (another seed, depth or program)."""
    for name, g in (("graph_a", graph_a), ("graph_b", graph_b)):
        if not isinstance(g, Graph):
            raise ArgumentError(
                name, type(g).__name__, "pass gradviz Graphs (from trace() or trace_example())"
            )
    by_key_a: dict[tuple, list[str]] = {}
    for n in graph_a.nodes:
        by_key_a.setdefault(_key(n), []).append(n.id)
    taken: dict[tuple, int] = {}
    common: list[tuple[str, str]] = []
    added: list[str] = []
    partner: dict[str, str] = {}  # A id → B id
    for n in graph_b.nodes:
        k = _key(n)
        i = taken.get(k, 0)
        pool = by_key_a.get(k, [])
        if i < len(pool):
            common.append((pool[i], n.id))
            partner[pool[i]] = n.id
            taken[k] = i + 1
        else:
            added.append(n.id)
    removed = [n.id for n in graph_a.nodes if n.id not in partner]
    removed_set = set(removed)
    extra = tuple(
        Node(f"a/{n.id}", n.kind, n.label, n.shape, n.dtype, n.module, n.saved, n.grad_fn, n.attrs)
        for n in graph_a.nodes
        if n.id in removed_set
    )

    def in_merged(a_id: str) -> str:
        return f"a/{a_id}" if a_id in removed_set else partner[a_id]

    extra_edges = tuple(
        (in_merged(s), in_merged(d))
        for s, d in graph_a.edges
        if s in removed_set or d in removed_set
    )
    merged = Graph(
        graph_b.nodes + extra,
        graph_b.edges + extra_edges,
        tuple(sorted(set(graph_a.modules) | set(graph_b.modules))),
    )
    colors = {i: DIFF_COLORS["added"] for i in added}
    colors.update({f"a/{i}": DIFF_COLORS["removed"] for i in removed})
    return GraphDiff(tuple(added), tuple(removed), tuple(common), merged, colors)

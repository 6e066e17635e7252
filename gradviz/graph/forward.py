"""The forward picture of a traced graph: one node per module call site, edges where data
flows between modules, linked both ways to the autograd nodes each one stands for."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gradviz.errors import ArgumentError
from gradviz.graph.model import Graph, Node, gc_paused
from gradviz.graph.paths import module_paths, parent, shape_text

__all__ = ["ForwardView", "MODULE_NODE_COLOR", "forward_view"]

MODULE_NODE_COLOR = "#fff3bf"


@dataclass(frozen=True)
class ForwardView:
    """The forward picture: one node per module call site, edges where data flows between
    modules. `graph` draws with `plan`/`draw` like any Graph (modules as "m/PATH" nodes,
    ops made outside any module kept as they are); `members` maps each of its nodes to the
    autograd node ids it stands for, `node_of` the other way."""

    graph: Graph
    members: Mapping[str, tuple[str, ...]]
    node_of: Mapping[str, str]
    colors: Mapping[str, str]

    def nodes_for(self, autograd_ids: Iterable[str]) -> list[str]:
        """Forward nodes standing for any of `autograd_ids`, each once."""
        return list(dict.fromkeys(self.node_of[i] for i in autograd_ids if i in self.node_of))


def _listing(parts: list[str], limit: int = 4) -> str:
    return ", ".join(parts[:limit]) + (", …" if len(parts) > limit else "")


def _module_node(key: str, group: list[Node], users: dict[str, list[str]],
                 types: dict[str, str], own_ops: bool) -> Node:
    """The forward node standing for one module's ops and parameters."""
    path = key[2:]
    inside = {m.id for m in group}
    # The module's output: an op of it used outside it (the first such in graph order).
    out = next((m for m in group
                if m.kind == "op" and any(u not in inside for u in users.get(m.id, ()))), None)
    ops = Counter(m.label for m in group if m.kind == "op")
    params = [m for m in group if m.kind == "param"]
    attrs = [("ops", _listing([f"{k} ×{v}" if v > 1 else k for k, v in ops.most_common(5)]))]
    if params:
        names = [f"{p.label.rsplit('.', 1)[-1]} {shape_text(p.shape, '?')}" for p in params]
        attrs.append(("params", _listing(names)))
    name = path.rsplit(".", 1)[-1]
    own = " (own ops)" if own_ops else ""
    return Node(
        id=key,
        kind="op",
        label=f"{name}: {types.get(path, 'module')}{own}",
        shape=out.shape if out is not None else None,
        dtype=out.dtype if out is not None else None,
        module=path,
        attrs=tuple(attrs),
    )


def _groups(graph: Graph) -> tuple[dict[str, str], dict[str, list[Node]]]:
    """Which forward node shows each autograd node, and the module groups themselves."""
    node_of: dict[str, str] = {}
    groups: dict[str, list[Node]] = {}
    for n in graph.nodes:
        if n.module and (n.kind == "op" or n.kind == "param"):
            key = f"m/{n.module}"
            groups.setdefault(key, []).append(n)
            node_of[n.id] = key
        else:
            node_of[n.id] = n.id
    # Parameters alone (a module that made no op, e.g. forward ran without capture) stay nodes.
    for key, group in list(groups.items()):
        if all(m.kind == "param" for m in group):
            for m in group:
                node_of[m.id] = m.id
            del groups[key]
    return node_of, groups


@gc_paused()
def forward_view(graph: Graph) -> ForwardView:
    """Modules and the data flow between them, derived from the autograd graph's module
    tags (ops made by `capture`d modules and parameters by name).

    Each module that made ops becomes a node "m/PATH" labelled "NAME: Type", with its
    output shape, its own ops and its parameters (shown with show_attrs); a module that
    also has submodules sits inside its own cluster. Untagged ops, free parameters, leaves
    and outputs stay as they are. Edges follow the forward direction, once per pair.
    """
    if not isinstance(graph, Graph):
        raise ArgumentError("graph", type(graph).__name__, "pass a gradviz Graph (from trace())")
    types = graph.module_types
    with_children = {parent(p) for p in module_paths(graph)} - {None}
    node_of, groups = _groups(graph)
    users: dict[str, list[str]] = {}
    for s, d in graph.edges:
        users.setdefault(s, []).append(d)
    nodes: list[Node] = []
    members: dict[str, tuple[str, ...]] = {}
    for n in graph.nodes:
        key = node_of[n.id]
        if key in members:
            continue
        if key == n.id:
            # Ops made outside any module: the forward picture names them, no saved values.
            plain = Node(n.id, n.kind, n.label, n.shape, n.dtype, n.module, grad_fn=n.grad_fn)
            nodes.append(plain if n.kind == "op" else n)
            members[key] = (n.id,)
            continue
        group = groups[key]
        nodes.append(_module_node(key, group, users, types, key[2:] in with_children))
        members[key] = tuple(m.id for m in group)
    seen: dict[tuple[str, str], None] = {}
    for s, d in graph.edges:
        a, b = node_of[s], node_of[d]
        if a != b:
            seen[(a, b)] = None
    fgraph = Graph(tuple(nodes), tuple(seen), graph.modules)
    colors = {k: MODULE_NODE_COLOR for k in groups}
    return ForwardView(fgraph, members, node_of, colors)

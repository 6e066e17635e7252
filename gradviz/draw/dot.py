"""Draw any `View` of a `Graph` as a `graphviz.Digraph`: the one drawing path of gradviz.

The library's `graph.to_dot()`, the explorer's opened and rolled views, the forward view,
diffs, the app, the notebook widget, the CLI and `render` all come here. What to draw is
decided first, as plain data (`plan_view` for a depth, `plan` for a reader's `ViewState`);
this module only writes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import graphviz

from gradviz.draw.items import DEFAULT_BUDGET, STYLES, View, ViewItem
from gradviz.draw.plan import plan, plan_view
from gradviz.draw.state import ViewState
from gradviz.errors import ArgumentError
from gradviz.graph.model import Graph, Node, gc_paused
from gradviz.graph.paths import natural_key, shape_text

__all__ = ["DEFAULT_BUDGET", "STYLES", "View", "ViewItem", "new_digraph", "plan_view", "to_dot"]

_LEGEND = (
    ("op", "autograd op"),
    ("custom", "custom Function"),
    ("param", "parameter"),
    ("leaf", "input (requires grad)"),
    ("output", "traced output"),
    ("module", "collapsed module"),
    ("fold", "folded run"),
    ("roll", "repeated blocks (× count)"),
)


def _esc(text: str) -> str:
    # DOT strings: backslashes start escapes such as \n, so user text must double them.
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _node_lines(node: Node, show_saved: bool, show_attrs: bool, in_cluster: bool) -> list[str]:
    lines = [node.label]
    if node.kind == "op" and node.grad_fn and node.grad_fn != node.label:
        lines.append(f"({node.grad_fn})")
    if node.shape is not None:
        lines.append(shape_text(node.shape))
    if node.module and not in_cluster and node.kind == "op":
        lines.append(f"in {node.module}")
    if show_saved:
        lines.extend(s.describe() for s in node.saved)
    if show_attrs:
        lines.extend(f"{k}={v}" for k, v in node.attrs)
    return lines


def to_dot(
    graph: Graph,
    view: View | ViewState | None = None,
    *,
    show_saved: bool = False,
    show_attrs: bool = False,
    cluster: bool = True,
    depth: int | None = None,
    budget: int | None = DEFAULT_BUDGET,
    fold: bool = True,
    highlight: Iterable[str] = (),
    annotations: Mapping[str, str] | None = None,
    colors: Mapping[str, str] | None = None,
    legend: bool = True,
    rankdir: str = "TB",
    title: str | None = None,
) -> graphviz.Digraph:
    """Draw `graph` as a `graphviz.Digraph` (it shows in Jupyter and renders to any format).

    view: what to draw — None plans from `depth`, `budget` and `fold` (see `plan_view`); a
    `ViewState` (what a reader opened) is planned with `plan` within `budget`; a `View`
    (from either planner) is drawn as it is.

    Colours: grey boxes are autograd ops, orange ones custom autograd Functions, blue
    boxes parameters, light-blue ellipses other leaves that require grad, green boxes
    the traced outputs, yellow 3-D boxes collapsed modules, orange double boxes rolled
    runs of repeated blocks, dashed boxes folded runs. Edges point forward, from inputs
    and parameters to the outputs.

    show_saved / show_attrs: list each op's saved tensors / saved non-tensor values.
    cluster: draw ops inside boxes of the module that created them (needs `capture`).
    highlight: node or item ids drawn with a thick red border. annotations: id → extra
    text (e.g. a gradient norm from the stepper). colors: id → fill colour.
    """
    if rankdir not in ("TB", "BT", "LR", "RL"):
        raise ArgumentError("rankdir", rankdir, "use 'TB', 'BT', 'LR' or 'RL'")
    with gc_paused():
        if view is None:
            view = plan_view(graph, depth=depth, budget=budget, fold=fold)
        elif isinstance(view, ViewState):
            view = plan(graph, view, budget=budget)
        elif not isinstance(view, View):
            raise ArgumentError(
                "view",
                type(view).__name__,
                "pass None, a ViewState (explorer.default_state) or a View (plan)",
            )
    marked = set(highlight)
    notes = dict(annotations or {})
    fills = dict(colors or {})
    dot = new_digraph(rankdir, ([title] if title else []) + list(view.notes))
    clusters: dict[str | None, list[tuple[str, dict[str, str]]]] = {}
    for item in view.items:
        where = item.module if cluster else None
        stmt = _node_stmt(graph, item, show_saved, show_attrs, cluster, marked, notes, fills)
        clusters.setdefault(where, []).append(stmt)
    _emit_clusters(dot, clusters, graph.module_types)
    for a, b, count in view.edges:
        attrs = {"label": f"×{count}", "fontsize": "8"} if count > 1 else {}
        dot.edge(a, b, **attrs)
    if legend:
        _add_legend(dot, view)
    return dot


# Op nodes are most nodes: their style is the DOT default, so each statement carries
# only what differs (graphviz's quoting of every attribute dominated to_dot's time).
NODE_DEFAULTS = {
    "fontname": "Helvetica",
    "fontsize": "10",
    "margin": "0.08,0.04",
    "height": "0.3",
    **STYLES["op"],
}


def new_digraph(rankdir: str, caption: list[str]) -> graphviz.Digraph:
    """An empty drawing with gradviz's graph, node and edge defaults and a caption."""
    dot = graphviz.Digraph(
        "gradviz",
        graph_attr={
            "rankdir": rankdir,
            "fontname": "Helvetica",
            "fontsize": "11",
            "newrank": "true",
        },
        node_attr=NODE_DEFAULTS,
        edge_attr={"arrowsize": "0.6", "color": "#495057"},
    )
    if caption:
        dot.attr(label=_esc("\n".join(caption)).replace("\n", "\\n"), labelloc="t", labeljust="l")
    return dot


def _node_stmt(
    graph: Graph,
    item: ViewItem,
    show_saved: bool,
    show_attrs: bool,
    cluster: bool,
    highlight: set[str],
    annotations: Mapping[str, str],
    colors: Mapping[str, str],
) -> tuple[str, dict[str, str]]:
    if item.kind == "module":
        nodes = [graph.node(m) for m in item.members]
        kinds = Counter(n.kind for n in nodes)
        path = item.id[4:]
        lines = [path, item.title, f"{kinds['op']} ops · {kinds['param']} params"]
        style = dict(STYLES["module"])
    elif item.kind == "roll":
        lines = list(item.detail) or [item.title]
        style = dict(STYLES["roll"])
    elif item.kind == "fold":
        lines = [f"⋯ {len(item.members):,} nodes folded", item.title]
        style = dict(STYLES["fold"])
    else:
        node = graph.node(item.members[0])
        lines = _node_lines(node, show_saved, show_attrs, cluster and node.module is not None)
        custom = node.kind == "op" and node.grad_fn is not None and node.grad_fn != node.label
        style = dict(STYLES["custom" if custom else node.kind])
    note = annotations.get(item.id)
    if note:
        lines.append(note)
    if item.id in colors:
        style["fillcolor"] = colors[item.id]
    if item.id in highlight or (item.kind != "fold" and any(m in highlight for m in item.members)):
        style.update(penwidth="3", color="#e03131")
    style["label"] = "\\n".join(_esc(line) for line in lines)
    return item.id, {k: v for k, v in style.items() if NODE_DEFAULTS.get(k) != v}


def _emit_clusters(
    dot: graphviz.Digraph,
    clusters: dict[str | None, list[tuple[str, dict[str, str]]]],
    types: Mapping[str, str],
) -> None:
    for name, attrs in clusters.get(None, []):
        dot.node(name, **attrs)
    paths = sorted(p for p in clusters if p is not None)
    # Every ancestor of a used path needs a cluster too, so nesting mirrors the modules.
    needed: set[str] = set()
    for p in paths:
        parts = p.split(".")
        for i in range(1, len(parts) + 1):
            needed.add(".".join(parts[:i]))
    children: dict[str | None, list[str]] = {}
    for p in sorted(needed, key=lambda s: (s.count("."), natural_key(s))):
        parent = p.rsplit(".", 1)[0] if "." in p else None
        children.setdefault(parent, []).append(p)

    def build(path: str) -> graphviz.Digraph:
        sub = graphviz.Digraph(name=f"cluster_{path}")
        label = f"{path}: {types[path]}" if path in types else path
        sub.attr(
            label=_esc(label), style="rounded,dashed", color="#adb5bd", fontsize="9", labeljust="l"
        )
        for name, attrs in clusters.get(path, []):
            sub.node(name, **attrs)
        for child in children.get(path, []):
            sub.subgraph(build(child))
        return sub

    for top in children.get(None, []):
        dot.subgraph(build(top))


def _add_legend(dot: graphviz.Digraph, view: View) -> None:
    used = {i.kind for i in view.items} | {"op"}
    shown = [(kind, text) for kind, text in _LEGEND if kind in used]
    legend = graphviz.Digraph(name="cluster_legend")
    legend.attr(label="legend", style="rounded", color="#dee2e6", fontsize="9")
    for kind, text in shown:
        legend.node(f"legend_{kind}", label=text, **STYLES[kind], fontsize="8")
    for (a, _), (b, _) in zip(shown, shown[1:], strict=False):
        legend.edge(f"legend_{a}", f"legend_{b}", style="invis")
    dot.subgraph(legend)

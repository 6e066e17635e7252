"""Draw a `Graph` with Graphviz, keeping big graphs readable within a node budget.

Tracing and drawing are separate: `plan_view` decides what to draw (which modules to
collapse, which long runs to fold) as plain data; `to_dot` turns that plan into a
`graphviz.Digraph`. `dot` lays out in roughly quadratic time, so the default view of a
big graph stays within about 500 drawn nodes and says in the picture what it folded.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import graphviz

from gradviz.errors import ArgumentError
from gradviz.graph.model import Graph, Node, gc_paused

__all__ = ["DEFAULT_BUDGET", "View", "ViewItem", "plan_view", "to_dot", "STYLES"]

DEFAULT_BUDGET = 500
# A straight run longer than this is folded when the graph is over budget; the first and
# last few nodes of the run stay visible so the reader sees what repeats.
FOLD_MIN_RUN = 8
FOLD_KEEP = 2
# Side trees up to this size (a weight and its transpose) fold with the node they feed.
_ATTACH_MAX = 4

STYLES: dict[str, dict[str, str]] = {
    "op": {"shape": "box", "style": "rounded,filled", "fillcolor": "#eeeeee"},
    "custom": {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffd8a8"},
    "param": {"shape": "box", "style": "filled", "fillcolor": "#a5d8ff"},
    "leaf": {"shape": "ellipse", "style": "filled", "fillcolor": "#d0ebff"},
    "output": {"shape": "box", "style": "filled", "fillcolor": "#b2f2bb"},
    "module": {"shape": "box3d", "style": "filled", "fillcolor": "#fff3bf"},
    "fold": {"shape": "box", "style": "dashed,filled", "fillcolor": "#ffffff"},
}
_LEGEND = (
    ("op", "autograd op"),
    ("custom", "custom Function"),
    ("param", "parameter"),
    ("leaf", "input (requires grad)"),
    ("output", "traced output"),
    ("module", "collapsed module"),
    ("fold", "folded run"),
)


@dataclass(frozen=True)
class ViewItem:
    """One drawn node: a graph node, a collapsed module, or a folded run."""

    id: str
    kind: str  # a Node kind, "module" or "fold"
    members: tuple[str, ...]  # ids of the graph nodes it stands for
    title: str
    module: str | None = None  # cluster it is drawn in


@dataclass(frozen=True)
class View:
    items: tuple[ViewItem, ...]
    edges: tuple[tuple[str, str, int], ...]  # (src item, dst item, multiplicity)
    depth: int | None  # modules collapsed below this depth (None: none)
    notes: tuple[str, ...] = ()
    total_nodes: int = 0
    item_of: Mapping[str, str] = field(default_factory=dict)  # graph node id → item id


def _module_depth(path: str | None) -> int:
    return 0 if not path else path.count(".") + 1


def _collapse(graph: Graph, depth: int | None) -> tuple[dict[str, str], dict[str, ViewItem]]:
    """Map each graph node to a drawn item id, collapsing modules deeper than `depth`."""
    types = graph.module_types
    item_of: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    box_of: dict[str, str | None] = {}  # module path → its box at `depth` (None: not boxed)
    for n in graph.nodes:
        key = None
        if depth is not None and n.module:
            key = box_of.get(n.module, "")
            if key == "":
                deep = _module_depth(n.module) >= depth
                key = box_of[n.module] = f"mod/{'.'.join(n.module.split('.')[:depth])}" if deep else None
        if key is None:
            item_of[n.id] = n.id
        else:
            item_of[n.id] = key
            groups.setdefault(key, []).append(n.id)
    # A box of parameters alone (forward ran without capture) hides more than it saves.
    for key, members in list(groups.items()):
        if all(graph.node(m).kind != "op" for m in members):
            for m in members:
                item_of[m] = m
            del groups[key]
    items: dict[str, ViewItem] = {}
    for n in graph.nodes:
        key = item_of[n.id]
        if key in items:
            continue
        if key == n.id:
            items[key] = ViewItem(key, n.kind, (n.id,), n.label, n.module)
        else:
            path = key[4:]
            members = tuple(groups[key])
            parent = path.rsplit(".", 1)[0] if "." in path else None
            items[key] = ViewItem(key, "module", members, types.get(path, "module"), parent)
    return item_of, items


def _item_counts(graph: Graph) -> dict[int, int]:
    """How many items `_collapse(graph, d)` draws, for each depth d from 1 to the deepest
    module, counted per module path instead of building every collapse."""
    per_module: Counter[tuple[str, bool]] = Counter()
    free = 0
    for n in graph.nodes:
        if n.module:
            per_module[(n.module, n.kind == "op")] += 1
        else:
            free += 1
    deepest = max((_module_depth(m) for m, _ in per_module), default=0)
    counts: dict[int, int] = {}
    for d in range(1, deepest + 1):
        count = free
        boxes: dict[str, list] = {}  # box path → [has an op, nodes that are not ops]
        for (module, is_op), c in per_module.items():
            if _module_depth(module) < d:
                count += c
                continue
            box = boxes.setdefault(".".join(module.split(".")[:d]), [False, 0])
            if is_op:
                box[0] = True
            else:
                box[1] += c
        # A box of parameters alone is drawn as its parameters (see _collapse).
        counts[d] = count + sum(1 if has_op else others for has_op, others in boxes.values())
    return counts


def _item_edges(graph: Graph, item_of: Mapping[str, str]) -> list[tuple[str, str, int]]:
    counts: Counter[tuple[str, str]] = Counter()
    for s, d in graph.edges:
        a, b = item_of[s], item_of[d]
        if a != b:
            counts[(a, b)] += 1
    return [(a, b, c) for (a, b), c in counts.items()]


def _fold_runs(
    items: dict[str, ViewItem], edges: list[tuple[str, str, int]], min_run: int
) -> tuple[dict[str, ViewItem], list[tuple[str, str, int]], list[int]]:
    """Fold straight runs of the graph's spine into one node each.

    Nodes whose only use is feeding a single next node (parameters, their transposes)
    hang off the spine and fold together with the node they feed.
    """
    succ: dict[str, list[str]] = {k: [] for k in items}
    pred: dict[str, list[str]] = {k: [] for k in items}
    for a, b, _ in edges:
        succ[a].append(b)
        pred[b].append(a)
    # Topological order (edges point forward); attached = single use, all inputs attached.
    indeg = {k: len(v) for k, v in pred.items()}
    order: list[str] = []
    ready = deque(k for k in items if indeg[k] == 0)
    while ready:
        k = ready.popleft()
        order.append(k)
        for s in succ[k]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    attached: dict[str, bool] = {}
    size: dict[str, int] = {}
    for k in order:
        size[k] = 1 + sum(size[p] for p in pred[k])
        attached[k] = (
            len(succ[k]) == 1
            and items[k].kind != "output"
            and all(attached[p] for p in pred[k])
            and size[k] <= _ATTACH_MAX
        )
    owner: dict[str, str] = {}
    for k in reversed(order):
        owner[k] = owner[succ[k][0]] if attached[k] else k
    spine_succ = {k: [s for s in succ[k] if not attached[s]] for k in items if not attached[k]}
    spine_pred = {k: [p for p in pred[k] if not attached[p]] for k in items if not attached[k]}

    def linked(a: str, b: str) -> bool:
        return spine_succ[a] == [b] and spine_pred[b] == [a]

    runs: list[list[str]] = []
    done: set[str] = set()
    for k in order:
        if attached[k] or k in done:
            continue
        # Start a run only where it cannot be extended backwards.
        preds = spine_pred[k]
        if len(preds) == 1 and linked(preds[0], k):
            continue
        run = [k]
        while len(spine_succ[run[-1]]) == 1 and linked(run[-1], spine_succ[run[-1]][0]):
            run.append(spine_succ[run[-1]][0])
        done.update(run)
        if len(run) >= min_run:
            runs.append(run)
    if not runs:
        return items, edges, []
    members_of: dict[str, list[str]] = {}
    for k in order:
        members_of.setdefault(owner[k], []).append(k)
    folded_of: dict[str, str] = {}
    new_items = dict(items)
    sizes = []
    for i, run in enumerate(runs):
        middle = run[FOLD_KEEP: len(run) - FOLD_KEEP]
        fold_id = f"fold/{i}"
        drawn = [m for s in middle for m in members_of[s]]
        graph_members = tuple(g for m in drawn for g in items[m].members)
        hist = Counter(items[m].title for m in middle)
        title = ", ".join(f"{name} ×{n}" for name, n in hist.most_common(3))
        if len(hist) > 3:
            title += ", …"
        module = items[middle[0]].module if all(items[m].module == items[middle[0]].module for m in middle) else None
        for m in drawn:
            folded_of[m] = fold_id
            del new_items[m]
        new_items[fold_id] = ViewItem(fold_id, "fold", graph_members, title, module)
        sizes.append(len(graph_members))
    counts: Counter[tuple[str, str]] = Counter()
    for a, b, c in edges:
        a, b = folded_of.get(a, a), folded_of.get(b, b)
        if a != b:
            counts[(a, b)] += c
    return new_items, [(a, b, c) for (a, b), c in counts.items()], sizes


def plan_view(
    graph: Graph,
    *,
    depth: int | None = None,
    budget: int | None = DEFAULT_BUDGET,
    fold: bool = True,
) -> View:
    """Decide what to draw.

    depth: draw modules whose path has this many parts ("layers.0" has 2) as single
    nodes; None keeps every node. budget: most nodes to draw; when the graph is larger
    and `depth` is None, modules collapse to the deepest level that fits, then long
    straight runs fold, then the farthest nodes from the outputs are left out — each
    step noted in the picture. budget=None draws everything.
    """
    if depth is not None and (not isinstance(depth, int) or depth < 1):
        raise ArgumentError("depth", depth, "use a whole number ≥ 1 (1 = top-level modules) or None for no collapsing")
    if budget is not None and (not isinstance(budget, int) or budget < 10):
        raise ArgumentError("budget", budget, "use a whole number ≥ 10, or None to draw every node")
    notes: list[str] = []
    total = len(graph.nodes)
    chosen = False
    if budget is not None and depth is None and total > budget:
        # The deepest collapse that fits; counting is cheaper than collapsing each depth.
        counts = _item_counts(graph)
        for d in sorted(counts, reverse=True):
            depth, chosen = d, True
            if counts[d] <= budget:
                break
    item_of, items = _collapse(graph, depth)
    if chosen and len(items) < total:
        notes.append(f"modules collapsed below depth {depth}")
    edges = _item_edges(graph, item_of)
    if budget is not None and fold and len(items) > budget:
        before = dict(items)
        items, edges, sizes = _fold_runs(items, edges, FOLD_MIN_RUN)
        if sizes:
            notes.append(
                f"{len(sizes)} long run{'s' if len(sizes) > 1 else ''} folded "
                f"({sum(sizes):,} nodes)"
            )
            for item in items.values():
                if item.kind == "fold":
                    for g in item.members:
                        item_of[g] = item.id
        del before
    if budget is not None and len(items) > budget:
        items, edges, dropped = _truncate(items, edges, budget)
        notes.append(f"{dropped:,} drawn nodes farthest from the outputs left out")
    if notes:
        notes.insert(0, f"default view: {total:,} nodes → {len(items):,} drawn")
        notes.append("pass budget=None to draw everything")
    ordered = tuple(items.values())
    return View(ordered, tuple(edges), depth, tuple(notes), total, dict(item_of))


def _truncate(
    items: dict[str, ViewItem], edges: list[tuple[str, str, int]], budget: int
) -> tuple[dict[str, ViewItem], list[tuple[str, str, int]], int]:
    pred: dict[str, list[str]] = {k: [] for k in items}
    for a, b, _ in edges:
        pred[b].append(a)
    outputs = [k for k, v in items.items() if v.kind == "output"]
    keep: dict[str, None] = {}
    queue = deque(outputs)
    while queue and len(keep) < budget - 1:
        k = queue.popleft()
        if k in keep:
            continue
        keep[k] = None
        queue.extend(pred[k])
    dropped = [k for k in items if k not in keep]
    members = tuple(g for k in dropped for g in items[k].members)
    kept = {k: items[k] for k in items if k in keep}
    kept["more"] = ViewItem("more", "fold", members, f"{len(dropped):,} more nodes not drawn")
    counts: Counter[tuple[str, str]] = Counter()
    for a, b, c in edges:
        a2 = a if a in keep else "more"
        b2 = b if b in keep else "more"
        if a2 != b2:
            counts[(a2, b2)] += c
    return kept, [(a, b, c) for (a, b), c in counts.items()], len(dropped)


def _esc(text: str) -> str:
    # DOT strings: backslashes start escapes such as \n, so user text must double them.
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dims(shape: Iterable[int] | None) -> str:
    if shape is None:
        return ""
    shape = tuple(shape)
    return "×".join(str(s) for s in shape) if shape else "scalar"


def _node_lines(node: Node, show_saved: bool, show_attrs: bool, in_cluster: bool) -> list[str]:
    lines = [node.label]
    if node.kind == "op" and node.grad_fn and node.grad_fn != node.label:
        lines.append(f"({node.grad_fn})")
    if node.shape is not None:
        lines.append(_dims(node.shape))
    if node.module and not in_cluster and node.kind == "op":
        lines.append(f"in {node.module}")
    if show_saved:
        lines.extend(s.describe() for s in node.saved)
    if show_attrs:
        lines.extend(f"{k}={v}" for k, v in node.attrs)
    return lines


def to_dot(
    graph: Graph,
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

    Colours: grey boxes are autograd ops, orange ones custom autograd Functions, blue
    boxes parameters, light-blue ellipses other leaves that require grad, green boxes
    the traced outputs, yellow 3-D boxes collapsed modules, dashed boxes folded runs.
    Edges point forward, from inputs and parameters to the outputs.

    show_saved / show_attrs: list each op's saved tensors / saved non-tensor values.
    cluster: draw ops inside boxes of the module that created them (needs `capture`).
    depth, budget, fold: see `plan_view`. highlight: node ids drawn with a thick red
    border. annotations: node id → extra text (e.g. a gradient norm from the stepper).
    colors: node id → fill colour, overriding the kind's colour.
    """
    if rankdir not in ("TB", "BT", "LR", "RL"):
        raise ArgumentError("rankdir", rankdir, "use 'TB', 'BT', 'LR' or 'RL'")
    with gc_paused():
        view = plan_view(graph, depth=depth, budget=budget, fold=fold)
    highlight = set(highlight)
    annotations = dict(annotations or {})
    colors = dict(colors or {})
    dot = new_digraph(rankdir, ([title] if title else []) + list(view.notes))

    # Group drawn items by the module cluster they sit in.
    clusters: dict[str | None, list[str]] = {}
    for item in view.items:
        where = item.module if cluster else None
        clusters.setdefault(where, []).append(_node_stmt(graph, item, show_saved, show_attrs, cluster, highlight, annotations, colors))
    _emit_clusters(dot, clusters, graph.module_types)
    for a, b, count in view.edges:
        attrs = {"label": f"×{count}", "fontsize": "8"} if count > 1 else {}
        dot.edge(a, b, **attrs)
    if legend:
        _add_legend(dot, view)
    return dot


# Op nodes are most nodes: their style is the DOT default, so each statement carries
# only what differs (graphviz's quoting of every attribute dominated to_dot's time).
NODE_DEFAULTS = {"fontname": "Helvetica", "fontsize": "10", "margin": "0.08,0.04", "height": "0.3", **STYLES["op"]}


def new_digraph(rankdir: str, caption: list[str]) -> graphviz.Digraph:
    """An empty drawing with gradviz's graph, node and edge defaults and a caption."""
    dot = graphviz.Digraph(
        "gradviz",
        graph_attr={"rankdir": rankdir, "fontname": "Helvetica", "fontsize": "11", "newrank": "true"},
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
    if item.id in highlight or any(m in highlight for m in item.members if item.kind != "fold"):
        style.update(penwidth="3", color="#e03131")
    style["label"] = "\\n".join(_esc(line) for line in lines)
    return item.id, {k: v for k, v in style.items() if NODE_DEFAULTS.get(k) != v}


def _emit_clusters(
    dot: graphviz.Digraph, clusters: dict[str | None, list[tuple[str, dict[str, str]]]], types: Mapping[str, str]
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
    for p in sorted(needed, key=lambda s: (s.count("."), _natural(s))):
        parent = p.rsplit(".", 1)[0] if "." in p else None
        children.setdefault(parent, []).append(p)

    def build(path: str) -> graphviz.Digraph:
        sub = graphviz.Digraph(name=f"cluster_{path}")
        label = f"{path}: {types[path]}" if path in types else path
        sub.attr(label=_esc(label), style="rounded,dashed", color="#adb5bd", fontsize="9", labeljust="l")
        for name, attrs in clusters.get(path, []):
            sub.node(name, **attrs)
        for child in children.get(path, []):
            sub.subgraph(build(child))
        return sub

    for top in children.get(None, []):
        dot.subgraph(build(top))


def _natural(text: str) -> list[object]:
    # "layers.10" after "layers.9": compare digit runs as numbers.
    out: list[object] = []
    for part in text.split("."):
        out.append((0, int(part)) if part.isdigit() else (1, part))
    return out


def _add_legend(dot: graphviz.Digraph, view: View) -> None:
    used = {i.kind for i in view.items}
    if any(i.kind == "op" for i in view.items):
        used.add("op")
    legend = graphviz.Digraph(name="cluster_legend")
    legend.attr(label="legend", style="rounded", color="#dee2e6", fontsize="9")
    shown = [(kind, text) for kind, text in _LEGEND if kind in used or kind == "op"]
    for kind, text in shown:
        legend.node(f"legend_{kind}", label=text, **{k: v for k, v in STYLES[kind].items()}, fontsize="8")
    for (a, _), (b, _) in zip(shown, shown[1:], strict=False):
        legend.edge(f"legend_{a}", f"legend_{b}", style="invis")
    dot.subgraph(legend)

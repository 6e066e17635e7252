"""Draw any `View` of a `Graph` as a `graphviz.Digraph`: the one drawing path of gradviz.

The library's `graph.to_dot()`, the explorer's opened and rolled views, the forward view,
diffs, the app, the notebook widget, the CLI and `render` all come here. What to draw is
decided first, as plain data (`plan_view` for a depth, `plan` for a reader's `ViewState`);
this module only writes it.
"""

from __future__ import annotations

import re
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


# A DOT ID that needs no quotes (the graphviz package's rule, so plain names stay bare).
# fullmatch, not match(...$): "$" also matches before a final newline, and "a\n" left bare
# reads back as "a".
_BARE_ID = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*|-?(\.[0-9]+|[0-9]+(\.[0-9]*)?)").fullmatch
_KEYWORDS = frozenset({"node", "edge", "graph", "digraph", "subgraph", "strict"})


def quote(text: str) -> str:
    """`text` as one DOT ID whose label meaning is `text` itself: the one quoting of gradviz.

    Backslashes are doubled (labels read \\n, \\l, \\N as escapes), quotes escaped and
    line breaks written as \\n, so any name parses and reads back. Each "\\r" is a break of
    its own, in "\\r\\n" too: labels are lines joined by "\\n", and a line ending in "\\r"
    must not swallow the break after it. Unlike the graphviz package's quoting, "<...>"
    stays a plain string: a module named "<b>" must not turn into an HTML label.
    """
    if _BARE_ID(text) and text.lower() not in _KEYWORDS:
        return text
    if "\\" in text or '"' in text or "\r" in text or "\0" in text:
        text = (
            text.replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\r", "\n")
            .replace("\n", "\\n")
            .replace("\0", "")
        )
    elif "\n" in text:  # the common hostile-free multi-line label: one pass
        text = text.replace("\n", "\\n")
    return f'"{text}"'


def _attr_list(attrs: Mapping[str, str], label_first: bool = True) -> str:
    # The graphviz package's order: a node's or edge's label first, then the rest sorted;
    # graph attribute statements sort every name.
    if not label_first or "label" not in attrs:
        return " ".join(f"{k}={quote(v)}" for k, v in sorted(attrs.items()))
    parts = [f"label={quote(attrs['label'])}"]
    parts.extend(f"{k}={quote(v)}" for k, v in sorted(attrs.items()) if k != "label")
    return " ".join(parts)


def _node_line(indent: str, name: str, attrs: Mapping[str, str] | str) -> str:
    text = attrs if isinstance(attrs, str) else _attr_list(attrs)
    if not text:
        return f"{indent}{quote(name)}\n"
    return f"{indent}{quote(name)} [{text}]\n"


def _edge_line(indent: str, a: str, b: str, attrs: Mapping[str, str]) -> str:
    if not attrs:
        return f"{indent}{quote(a)} -> {quote(b)}\n"
    return f"{indent}{quote(a)} -> {quote(b)} [{_attr_list(attrs)}]\n"


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
    clusters: dict[str | None, list[tuple[str, str]]] = {}
    texts = _Texts(graph, show_saved, show_attrs, cluster)
    plain = not (marked or notes or fills)
    for item in view.items:
        where = item.module if cluster else None
        if plain and item.kind in _NODE_KINDS:
            stmt = (texts.id(item.id), texts.node_attrs(item))
        else:
            name, attrs = _node_stmt(graph, item, texts, marked, notes, fills)
            stmt = (texts.id(name), attrs)
        clusters.setdefault(where, []).append(stmt)  # (quoted id, attribute text)
    # DOT text is written here directly: going through the graphviz package's quoting per
    # attribute was a quarter of the drawing's time. The Digraph still owns head and body.
    lines = dot.body
    _cluster_lines(lines, clusters, graph.module_types)
    ids = texts.ids
    for a, b, count in view.edges:
        qa, qb = ids.get(a) or texts.id(a), ids.get(b) or texts.id(b)
        if count > 1:
            lines.append(f'\t{qa} -> {qb} [label="×{count}" fontsize=8]\n')
        else:
            lines.append(f"\t{qa} -> {qb}\n")
    if legend:
        _legend_lines(lines, view)
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
        attrs = {"label": "\n".join(caption), "labeljust": "l", "labelloc": "t"}
        dot.body.append(f"\t{_attr_list(attrs, label_first=False)}\n")
    return dot


_NODE_KINDS = frozenset({"op", "param", "leaf", "output"})


def _style_text(style: Mapping[str, str]) -> str:
    """The attributes of `style` that differ from the node defaults, as DOT text."""
    diff = {k: v for k, v in style.items() if NODE_DEFAULTS.get(k) != v}
    return _attr_list(diff, label_first=False)


# What each node style adds to the defaults, written once.
_STYLE_TEXTS = {kind: _style_text(style) for kind, style in STYLES.items()}


class _Texts:
    """The DOT text of one drawing's nodes: label lines and quoted ids, each written once
    (a saved tensor's description repeats in every block of a stack)."""

    def __init__(self, graph: Graph, show_saved: bool, show_attrs: bool, cluster: bool) -> None:
        self.index = graph._index
        self.show_saved, self.show_attrs, self.cluster = show_saved, show_attrs, cluster
        self.ids: dict[str, str] = {}
        self.saved: dict[int, str] = {}  # id(SavedTensor) → its line (the graph keeps it alive)

    def id(self, name: str) -> str:
        found = self.ids[name] = quote(name)
        return found

    def lines(self, node: Node) -> list[str]:
        in_cluster = self.cluster and node.module is not None
        lines = [node.label]
        if node.kind == "op" and node.grad_fn and node.grad_fn != node.label:
            lines.append(f"({node.grad_fn})")
        if node.shape is not None:
            lines.append(shape_text(node.shape))
        if node.module and not in_cluster and node.kind == "op":
            lines.append(f"in {node.module}")
        if self.show_saved and node.saved:
            known = self.saved
            for s in node.saved:
                line = known.get(id(s))
                if line is None:
                    line = known[id(s)] = s.describe()
                lines.append(line)
        if self.show_attrs and node.attrs:
            lines.extend([f"{k}={v}" for k, v in node.attrs])
        return lines

    def node_attrs(self, item: ViewItem) -> str:
        """A graph node's attributes with no highlight, note or colour: label and style."""
        node = self.index[item.members[0]]
        kind = node.kind
        if kind == "op" and node.grad_fn is not None and node.grad_fn != node.label:
            kind = "custom"
        label = "label=" + quote("\n".join(self.lines(node)))
        style = _STYLE_TEXTS[kind]
        return f"{label} {style}" if style else label


def _node_stmt(
    graph: Graph,
    item: ViewItem,
    texts: _Texts,
    highlight: set[str],
    annotations: Mapping[str, str],
    colors: Mapping[str, str],
) -> tuple[str, str]:
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
        lines = texts.lines(node)
        custom = node.kind == "op" and node.grad_fn is not None and node.grad_fn != node.label
        style = dict(STYLES["custom" if custom else node.kind])
    note = annotations.get(item.id)
    if note:
        lines.append(note)
    if item.id in colors:
        style["fillcolor"] = colors[item.id]
    if item.id in highlight or (item.kind != "fold" and any(m in highlight for m in item.members)):
        style.update(penwidth="3", color="#e03131")
    style["label"] = "\n".join(lines)
    return item.id, _attr_list({k: v for k, v in style.items() if NODE_DEFAULTS.get(k) != v})


def _cluster_lines(
    out: list[str],
    clusters: dict[str | None, list[tuple[str, str]]],
    types: Mapping[str, str],
) -> None:
    for name, attrs in clusters.get(None, []):
        out.append(f"\t{name} [{attrs}]\n" if attrs else f"\t{name}\n")
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
    # Iterative: a module tree can nest deeper than Python's recursion limit.
    stack: list[tuple[str, int, bool]] = [(p, 1, True) for p in reversed(children.get(None, []))]
    while stack:
        path, level, opening = stack.pop()
        indent = "\t" * level
        if not opening:
            out.append(f"{indent}}}\n")
            continue
        out.append(f"{indent}subgraph {quote(f'cluster_{path}')} {{\n")
        label = f"{path}: {types[path]}" if path in types else path
        inner = indent + "\t"
        head, tail = _CLUSTER_ATTRS
        out.append(f"{inner}{head}{quote(label)}{tail}\n")
        for name, node_attrs in clusters.get(path, []):
            out.append(f"{inner}{name} [{node_attrs}]\n" if node_attrs else f"{inner}{name}\n")
        stack.append((path, level, False))
        stack.extend((child, level + 1, True) for child in reversed(children.get(path, [])))


# A cluster's attributes in the order _attr_list writes them (sorted by name), around its label.
_CLUSTER_ATTRS = ('color="#adb5bd" fontsize=9 label=', ' labeljust=l style="rounded,dashed"')


def _legend_lines(out: list[str], view: View) -> None:
    used = {i.kind for i in view.items} | {"op"}
    shown = [(kind, text) for kind, text in _LEGEND if kind in used]
    out.append("\tsubgraph cluster_legend {\n")
    attrs = {"label": "legend", "style": "rounded", "color": "#dee2e6", "fontsize": "9"}
    out.append(f"\t\t{_attr_list(attrs, label_first=False)}\n")
    for kind, text in shown:
        attrs = {"label": text, **STYLES[kind], "fontsize": "8"}
        out.append(_node_line("\t\t", f"legend_{kind}", attrs))
    for (a, _), (b, _) in zip(shown, shown[1:], strict=False):
        out.append(_edge_line("\t\t", f"legend_{a}", f"legend_{b}", {"style": "invis"}))
    out.append("\t}\n")

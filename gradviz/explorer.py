"""Explore big autograd graphs: search, inspect, open modules, roll repeated blocks, link
the forward (module) view with the backward (autograd) view, and diff two runs.

Plain data and functions only (no Streamlit). A `ViewState` says which module paths are
drawn open and which runs of repeated blocks are rolled into one node; `plan` turns a graph
and a state into a `drawing.View`, `draw` into a `graphviz.Digraph`. Big graphs start from
`default_state`: repeated blocks rolled ("TransformerEncoderLayer × 24"), modules opened as
deep as the node budget allows.
"""

from __future__ import annotations

import functools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import graphviz

from gradviz.draw import dot as drawing
from gradviz.draw.dot import DEFAULT_BUDGET, STYLES, View, ViewItem
from gradviz.errors import ArgumentError
from gradviz.graph.model import Graph, Node, gc_paused
from gradviz.graph.tracing import is_accumulate

if TYPE_CHECKING:
    from gradviz.backward.stepper import BackwardStepper

__all__ = [
    "DIFF_COLORS",
    "ForwardView",
    "GraphDiff",
    "ROLL_ABOVE",
    "Run",
    "TensorStats",
    "ViewState",
    "autograd_nodes_of",
    "back",
    "breadcrumb",
    "collapse",
    "default_state",
    "diff",
    "diff_item_colors",
    "draw",
    "expand",
    "forward_view",
    "inspect",
    "items_for",
    "module_paths",
    "plan",
    "repeated_runs",
    "saved_stats",
    "search",
    "tensor_stats",
    "trace_with_stats",
]

# Graphs above this many nodes start with repeated blocks rolled (ResNet-50: 340 nodes).
ROLL_ABOVE = 250
# Unrolling a run longer than this shows UNROLL_KEEP blocks at each end and keeps the
# middle rolled, so opening a 6 250-layer chain draws 7 nodes, not 6 250.
UNROLL_MAX = 12
UNROLL_KEEP = 3
ROLL_STYLE = {"shape": "box3d", "style": "filled,bold", "fillcolor": "#ffd8a8", "peripheries": "2"}
DIFF_COLORS = {"added": "#8ce99a", "removed": "#ffa8a8", "mixed": "#ffe066"}
MODULE_NODE_COLOR = "#fff3bf"
# The last line of a big view's caption in the app; static drawings leave it out.
CLICK_NOTE = "click a closed or rolled box to open it"


# -- module paths ---------------------------------------------------------------------
def _depth(path: str) -> int:
    return path.count(".") + 1


@functools.lru_cache(maxsize=1 << 17)
def _prefixes(path: str) -> tuple[str, ...]:
    if "." not in path:
        return (path,)
    parts = path.split(".")
    return tuple(".".join(parts[: i + 1]) for i in range(len(parts)))


def _parent(path: str) -> str | None:
    return path.rsplit(".", 1)[0] if "." in path else None


@functools.lru_cache(maxsize=1 << 17)
def _natural_key(path: str) -> tuple[object, ...]:
    return tuple(drawing._natural(path))


@gc_paused()
def module_paths(graph: Graph) -> list[str]:
    """Every module path a node sits in, with all its ancestors ("layers", "layers.0", …)."""
    facts = _facts(graph)
    if "paths" not in facts:
        seen: dict[str, None] = {}
        for m in {n.module for n in graph.nodes if n.module}:
            for p in _prefixes(m):
                seen[p] = None
        facts["paths"] = tuple(sorted(seen, key=_natural_key))
    return list(facts["paths"])


def _in_subtree(module: str | None, path: str) -> bool:
    return module is not None and (module == path or module.startswith(path + "."))


# -- view state -----------------------------------------------------------------------
@dataclass(frozen=True)
class ViewState:
    """What the reader opened. expanded: module paths drawn open (a closed module is one
    box). rolled: ids of `Run`s drawn as one node. trail: what the reader opened, in order
    (the breadcrumb); history: (expanded, rolled) before each step of the trail."""

    expanded: frozenset[str] = frozenset()
    rolled: frozenset[str] = frozenset()
    trail: tuple[str, ...] = ()
    history: tuple[tuple[frozenset[str], frozenset[str]], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Run:
    """Consecutive sibling modules of one type with the same inside, each feeding the next."""

    id: str  # "roll/layers.0..layers.23"
    parent: str | None
    paths: tuple[str, ...]
    type_name: str
    ops: tuple[int, ...]  # autograd ops in each block (the first block may make fewer)
    params_each: int

    @property
    def count(self) -> int:
        return len(self.paths)

    @property
    def title(self) -> str:
        return f"{self.type_name} × {self.count:,}"

    @property
    def ops_text(self) -> str:
        lo, hi = min(self.ops), max(self.ops)
        return f"{lo} ops" if lo == hi else f"{lo}–{hi} ops"


def _cross_edges(graph: Graph) -> set[tuple[str, str | None, tuple[int, ...] | None]]:
    """(source module, destination module, source shape) of every edge that leaves a module,
    once each: a 20k-layer chain has 80k edges but only 20k distinct ones of these."""
    facts = _facts(graph)
    if "cross" not in facts:
        index = graph._index
        cross = set()
        for s, d in graph.edges:
            a, b = index[s], index[d]
            if a.module and a.module != b.module:
                cross.add((a.module, b.module, a.shape))
        facts["cross"] = cross
    return facts["cross"]


def _signatures(graph: Graph, paths: Iterable[str]) -> dict[str, Any]:
    """A hashable fingerprint of each module's architecture: the submodules inside it (path
    relative to it, type), its parameters (relative name, shape, dtype) and the shapes it
    hands on. Op counts are left out on purpose: the first block of a stack often makes
    fewer autograd nodes (its input needs no gradient) yet is the same block."""
    wanted = set(paths)
    types = graph.module_types
    parts: dict[str, set] = {p: set() for p in wanted}
    params: dict[str, Counter] = defaultdict(Counter)
    for m in {n.module for n in graph.nodes if n.module}:
        for p in _prefixes(m):
            if p in wanted:
                parts[p].add((m[len(p):], types.get(m)))
    for n in graph.nodes:
        if n.kind != "param" or not n.module:
            continue
        for p in _prefixes(n.module):
            if p in wanted:
                name = n.label[len(p) + 1:] if n.label.startswith(p + ".") else n.label
                params[p][(name, n.shape, n.dtype)] += 1
    outs: dict[str, set] = {p: set() for p in wanted}
    for a, b, shape in _cross_edges(graph):
        for p in _prefixes(a):
            if p in wanted and not _in_subtree(b, p):
                outs[p].add(shape)
    return {p: (frozenset(parts[p]), frozenset(params[p].items()) if p in params else frozenset(), frozenset(outs[p])) for p in wanted}


def _exits(graph: Graph) -> dict[str, set[str]]:
    """For each module path: where edges leaving it land, as the sibling-level path of the
    destination under the same parent ("" when they leave the parent)."""
    out: dict[str, set[str]] = {}
    for a, b in {(a, b) for a, b, _ in _cross_edges(graph)}:
        for p in _prefixes(a):
            if _in_subtree(b, p):
                continue
            parent = _parent(p)
            target = ""
            if b and (parent is None or _in_subtree(b, parent)) and _depth(b) >= _depth(p):
                target = _prefixes(b)[_depth(p) - 1]
            out.setdefault(p, set()).add(target)
    return out


@gc_paused()
def repeated_runs(graph: Graph, *, min_count: int = 2) -> tuple[Run, ...]:
    """Runs of consecutive sibling modules of the same type and the same internal structure
    where each one's outputs go only to the next (so rolling them adds no cycle)."""
    if not isinstance(min_count, int) or min_count < 2:
        raise ArgumentError("min_count", min_count, "use a whole number ≥ 2")
    paths = module_paths(graph)
    if not paths:
        return ()
    types = graph.module_types
    children: dict[str | None, list[str]] = {}
    for p in paths:
        children.setdefault(_parent(p), []).append(p)
    sig = _signatures(graph, paths)
    exits = _exits(graph)
    ops: dict[str, int] = dict.fromkeys(paths, 0)
    n_params: dict[str, int] = dict.fromkeys(paths, 0)
    own = Counter((n.module, n.kind) for n in graph.nodes if n.module and n.kind in ("op", "param"))
    for (module, kind), count in own.items():
        tally = ops if kind == "op" else n_params
        for p in _prefixes(module):
            tally[p] += count
    runs: list[Run] = []
    for parent, kids in children.items():
        # Only numbered children (ModuleList / Sequential entries) are "consecutive".
        kids = sorted((k for k in kids if k.rsplit(".", 1)[-1].isdigit()), key=_natural_key)
        i = 0
        while i < len(kids):
            j = i
            while (
                j + 1 < len(kids)
                and _index_of(kids[j + 1]) == _index_of(kids[j]) + 1
                and types.get(kids[j + 1]) == types.get(kids[i])
                and sig[kids[j + 1]] == sig[kids[i]]
                and exits.get(kids[j], set()) == {kids[j + 1]}
            ):
                j += 1
            members = kids[i: j + 1]
            if len(members) >= min_count and ops[members[0]] > 0:
                runs.append(
                    Run(
                        id=f"roll/{members[0]}..{members[-1]}",
                        parent=parent,
                        paths=tuple(members),
                        type_name=types.get(members[0], "module"),
                        ops=tuple(ops[m] for m in members),
                        params_each=n_params[members[0]],
                    )
                )
            i = j + 1
    return tuple(sorted(runs, key=lambda r: _natural_key(r.paths[0])))


def _index_of(path: str) -> int:
    return int(path.rsplit(".", 1)[-1])


def _facts(graph: Graph) -> dict[str, Any]:
    """Per-graph memo: graphs are frozen, and finding runs walks every edge per level."""
    cached = _FACTS.get(id(graph))
    if cached is not None and cached[0] is graph:
        return cached[1]
    if len(_FACTS) > 32:
        _FACTS.clear()
    facts: dict[str, Any] = {}
    _FACTS[id(graph)] = (graph, facts)  # holding the graph keeps its id() unique
    return facts


_FACTS: dict[int, tuple[Graph, dict[str, Any]]] = {}


def _runs_by_id(graph: Graph) -> dict[str, Run]:
    facts = _facts(graph)
    if "runs" not in facts:
        with gc_paused():
            facts["runs"] = {r.id: r for r in repeated_runs(graph)}
    return facts["runs"]
# The last assignment made (default_state computes it; plan then needs the same one).
_LAST_ASSIGN: list[tuple[Graph, frozenset[str], frozenset[str], Any]] = []


def _run_for(graph: Graph, run_id: str) -> Run | None:
    """The run `run_id` names: one of `repeated_runs`, or a stretch of one ("roll/a.3..a.20",
    what is left rolled after unrolling a long run)."""
    runs = _runs_by_id(graph)
    run = runs.get(run_id)
    if run is not None:
        return run
    first, last = _run_paths_ends(run_id)
    for r in runs.values():
        if first in r.paths and last in r.paths:
            i, j = r.paths.index(first), r.paths.index(last)
            if i < j:
                return Run(run_id, r.parent, r.paths[i: j + 1], r.type_name, r.ops[i: j + 1], r.params_each)
    return None


@gc_paused()
def default_state(
    graph: Graph,
    *,
    budget: int | None = DEFAULT_BUDGET,
    depth: int | None = None,
    roll: bool | None = None,
) -> ViewState:
    """The first view of `graph`.

    budget=None opens everything. depth: open modules above this depth only (1 = show
    top-level modules as boxes). Otherwise graphs above `ROLL_ABOVE` nodes (or roll=True)
    roll every run of repeated blocks, then modules open level by level while the drawn
    count stays within `budget`.
    """
    _check_budget(budget)
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise ArgumentError("depth", depth, "use a whole number ≥ 1 (1 = top-level modules as boxes) or None")
    paths = module_paths(graph)
    if budget is None:
        return ViewState(expanded=frozenset(paths))
    if depth is not None:
        return ViewState(expanded=frozenset(p for p in paths if _depth(p) < depth))
    if roll is None:
        roll = len(graph) > ROLL_ABOVE
    rolled = frozenset(_runs_by_id(graph)) if roll else frozenset()
    deepest = max((_depth(p) for p in paths), default=0)
    state = ViewState(expanded=frozenset(paths), rolled=rolled)
    with gc_paused():
        for d in range(deepest + 1, 0, -1):
            state = ViewState(expanded=frozenset(p for p in paths if _depth(p) < d), rolled=rolled)
            if len(_assign(graph, state)[1]) <= budget:
                break
    return state


def expand(state: ViewState, target: str) -> ViewState:
    """Open module `target` ("layers.3", or a drawn id "mod/layers.3") or unroll run
    `target` ("roll/…"); the step is added to the breadcrumb.

    An unrolled run shows its blocks as closed boxes; opening a module opens its ancestors
    and unrolls any run it sits in.
    """
    if not isinstance(state, ViewState):
        raise ArgumentError("state", type(state).__name__, "pass a ViewState (e.g. default_state(graph))")
    if not isinstance(target, str) or not target:
        raise ArgumentError("target", target, "pass a module path such as 'layers.0' or a drawn id 'mod/…' / 'roll/…'")
    expanded, rolled = set(state.expanded), set(state.rolled)
    if target.startswith("roll/"):
        if target not in rolled:
            return state
        rolled.discard(target)
        members = _run_paths(target)
        inside = set(members)
        expanded = {p for p in expanded if not any(q in inside for q in _prefixes(p))}
        if len(members) > UNROLL_MAX:
            # A long run opens at its ends; the middle stays rolled (click it to go on).
            rolled.add(f"roll/{members[UNROLL_KEEP]}..{members[-UNROLL_KEEP - 1]}")
        crumb = target
    else:
        path = target[4:] if target.startswith("mod/") else target
        if all(p in expanded for p in _prefixes(path)) and not any(_run_holds(r, path) for r in rolled):
            return state
        expanded.update(_prefixes(path))
        rolled = {r for r in rolled if not _run_holds(r, path)}
        crumb = path
    return ViewState(
        frozenset(expanded),
        frozenset(rolled),
        state.trail + (crumb,),
        state.history + ((state.expanded, state.rolled),),
    )


def collapse(state: ViewState, path: str) -> ViewState:
    """Close module `path` (and everything inside it) again."""
    path = path[4:] if path.startswith("mod/") else path
    expanded = frozenset(p for p in state.expanded if not _in_subtree(p, path))
    if expanded == state.expanded:
        return state
    return ViewState(expanded, state.rolled, state.trail + (f"close {path}",), state.history + ((state.expanded, state.rolled),))


def back(state: ViewState, steps: int) -> ViewState:
    """The state after the first `steps` entries of the breadcrumb (0: the first view)."""
    if not isinstance(steps, int) or not 0 <= steps <= len(state.trail):
        raise ArgumentError("steps", steps, f"use 0 … {len(state.trail)} (the breadcrumb has {len(state.trail)} steps)")
    if steps == len(state.trail):
        return state
    expanded, rolled = state.history[steps]
    return ViewState(expanded, rolled, state.trail[:steps], state.history[:steps])


def breadcrumb(state: ViewState) -> list[str]:
    """Labels of the breadcrumb: the first view, then each module opened."""
    return ["overview"] + [_crumb_label(t) for t in state.trail]


def _crumb_label(step: str) -> str:
    if step.startswith("roll/"):
        first, last = _run_paths_ends(step)
        return f"{first}…{last.rsplit('.', 1)[-1]}"
    return step


def _run_paths_ends(run_id: str) -> tuple[str, str]:
    first, _, last = run_id[5:].partition("..")
    return first, last


def _run_paths(run_id: str) -> list[str]:
    """Member paths of a run id "roll/layers.0..layers.5" (runs are numbered siblings)."""
    first, last = _run_paths_ends(run_id)
    parent = _parent(first)
    prefix = "" if parent is None else parent + "."
    try:
        return [f"{prefix}{i}" for i in range(_index_of(first), _index_of(last) + 1)]
    except ValueError:
        return []


def _run_holds(run_id: str, path: str) -> bool:
    first, last = _run_paths_ends(run_id)
    depth = _depth(first)
    if _depth(path) < depth:
        return False
    block = _prefixes(path)[depth - 1]
    if _parent(block) != _parent(first):
        return False
    try:
        return _index_of(first) <= _index_of(block) <= _index_of(last)
    except ValueError:
        return False


# -- planning -------------------------------------------------------------------------
def _check_budget(budget: int | None) -> None:
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 10):
        raise ArgumentError("budget", budget, "use a whole number ≥ 10, or None to draw every node")


def _assign(graph: Graph, state: ViewState) -> tuple[dict[str, str], dict[str, ViewItem]]:
    """Map each graph node to the drawn item that shows it (callers may change the result:
    each call returns fresh dicts)."""
    last = _LAST_ASSIGN[0] if _LAST_ASSIGN else None
    if last is not None and last[0] is graph and last[1] == state.expanded and last[2] == state.rolled:
        item_of, items = last[3]
    else:
        item_of, items = _assign_new(graph, state)
        _LAST_ASSIGN[:] = [(graph, state.expanded, state.rolled, (item_of, items))]
    return dict(item_of), dict(items)


def _assign_new(graph: Graph, state: ViewState) -> tuple[dict[str, str], dict[str, ViewItem]]:
    runs: dict[str, Run] = {}
    run_of: dict[str, Run] = {}
    for rid in state.rolled:
        run = _run_for(graph, rid)
        if run is not None:
            runs[rid] = run
            for p in run.paths:
                run_of[p] = run
    expanded = state.expanded
    types = graph.module_types
    box_of_module: dict[str, str | None] = {}  # module path → box key (None: drawn open)

    def box(module: str) -> str | None:
        found = box_of_module.get(module, "?")
        if found != "?":
            return found
        key = None
        for p in _prefixes(module):
            run = run_of.get(p)
            if run is not None:
                key = run.id
                break
            if p not in expanded:
                key = f"mod/{p}"
                break
        box_of_module[module] = key
        return key

    item_of: dict[str, str] = {}
    groups: dict[str, list[Node]] = {}
    for n in graph.nodes:
        key = box(n.module) if n.module else None
        if key is None:
            item_of[n.id] = n.id
        else:
            item_of[n.id] = key
            groups.setdefault(key, []).append(n)
    # A box of parameters alone (forward ran without capture) hides more than it saves.
    for key, members in list(groups.items()):
        if all(m.kind != "op" for m in members):
            for m in members:
                item_of[m.id] = m.id
            del groups[key]
    parents = {q for m in box_of_module for q in _prefixes(m)[:-1]}
    items: dict[str, ViewItem] = {}
    for n in graph.nodes:
        key = item_of[n.id]
        if key in items:
            continue
        if key == n.id:
            where = n.module
            if where and n.id == f"m/{where}" and where not in parents:
                where = _parent(where)  # a forward-view module node sits beside its siblings
            items[key] = ViewItem(key, n.kind, (n.id,), n.label, where)
        elif key.startswith("roll/"):
            run = runs[key]
            members = tuple(m.id for m in groups[key])
            items[key] = ViewItem(key, "roll", members, run.title, run.parent)
        else:
            path = key[4:]
            members = tuple(m.id for m in groups[key])
            items[key] = ViewItem(key, "module", members, types.get(path, "module"), _parent(path))
    return item_of, items


def plan(graph: Graph, state: ViewState | None = None, *, budget: int | None = DEFAULT_BUDGET) -> View:
    """What to draw for `graph` in `state` (None: `default_state`). Above `budget` drawn
    items, long straight runs fold and then the items farthest from the outputs are left
    out, as in `drawing.plan_view`; each step is noted in the picture."""
    if not isinstance(graph, Graph):
        raise ArgumentError("graph", type(graph).__name__, "pass a gradviz Graph (from trace())")
    _check_budget(budget)
    with gc_paused():
        if state is None:
            state = default_state(graph, budget=budget)
        item_of, items = _assign(graph, state)
        counts: Counter[tuple[str, str]] = Counter()
        for s, d in graph.edges:
            a, b = item_of[s], item_of[d]
            if a != b:
                counts[(a, b)] += 1
        edges = [(a, b, c) for (a, b), c in counts.items()]
        notes: list[str] = []
        rolls = [i for i in items.values() if i.kind == "roll"]
        boxes = sum(1 for i in items.values() if i.kind == "module")
        if rolls:
            shown = ", ".join(i.title for i in rolls[:3]) + (", …" if len(rolls) > 3 else "")
            notes.append(f"{len(rolls)} run{'s' if len(rolls) > 1 else ''} of repeated blocks rolled ({shown})")
        if boxes:
            notes.append(f"{boxes} module{'s' if boxes > 1 else ''} drawn closed")
        if budget is not None and len(items) > budget:
            items, edges, sizes = drawing._fold_runs(items, edges, drawing.FOLD_MIN_RUN)
            if sizes:
                notes.append(f"{len(sizes)} long run{'s' if len(sizes) > 1 else ''} folded ({sum(sizes):,} nodes)")
                for item in items.values():
                    if item.kind == "fold":
                        for g in item.members:
                            item_of[g] = item.id
        if budget is not None and len(items) > budget:
            items, edges, dropped = drawing._truncate(items, edges, budget)
            notes.append(f"{dropped:,} drawn nodes farthest from the outputs left out")
            for g in items["more"].members:
                item_of[g] = "more"
        if notes:
            notes.insert(0, f"{len(graph):,} nodes → {len(items):,} drawn")
            notes.append(CLICK_NOTE)
    return View(tuple(items.values()), tuple(edges), None, tuple(notes), len(graph), item_of)


def items_for(view: View, node_ids: Iterable[str]) -> list[str]:
    """The drawn items that show `node_ids` (graph node ids), each once, in order."""
    out: dict[str, None] = {}
    for nid in node_ids:
        item = view.item_of.get(nid)
        if item is not None:
            out[item] = None
    return list(out)


def draw(
    graph: Graph,
    state: ViewState | None = None,
    *,
    view: View | None = None,
    show_saved: bool = False,
    show_attrs: bool = False,
    cluster: bool = True,
    budget: int | None = DEFAULT_BUDGET,
    highlight: Iterable[str] = (),
    annotations: Mapping[str, str] | None = None,
    colors: Mapping[str, str] | None = None,
    legend: bool = True,
    rankdir: str = "TB",
    title: str | None = None,
) -> graphviz.Digraph:
    """Draw `graph` in `state` like `drawing.to_dot` (same styles and options), with rolled
    runs as orange double boxes. Pass `view` (from `plan`) to skip planning again."""
    if rankdir not in ("TB", "BT", "LR", "RL"):
        raise ArgumentError("rankdir", rankdir, "use 'TB', 'BT', 'LR' or 'RL'")
    if view is None:
        view = plan(graph, state, budget=budget)
    highlight = set(highlight)
    annotations = dict(annotations or {})
    colors = dict(colors or {})
    dot = drawing.new_digraph(rankdir, ([title] if title else []) + list(view.notes))
    runs = {i.id: _run_for(graph, i.id) for i in view.items if i.kind == "roll"}
    clusters: dict[str | None, list[tuple[str, dict[str, str]]]] = {}
    for item in view.items:
        where = item.module if cluster else None
        if item.kind == "roll":
            stmt = _roll_stmt(item, runs[item.id], highlight, annotations, colors)
        else:
            stmt = drawing._node_stmt(graph, item, show_saved, show_attrs, cluster, highlight, annotations, colors)
        clusters.setdefault(where, []).append(stmt)
    drawing._emit_clusters(dot, clusters, graph.module_types)
    for a, b, count in view.edges:
        attrs = {"label": f"×{count}", "fontsize": "8"} if count > 1 else {}
        dot.edge(a, b, **attrs)
    if legend:
        _add_legend(dot, view)
    return dot


def _roll_stmt(item: ViewItem, run: Run, highlight: set[str], annotations: Mapping[str, str], colors: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    first, last = run.paths[0], run.paths[-1]
    lines = [f"{first} … {last}", run.title, f"each: {run.ops_text} · {run.params_each} params"]
    if annotations.get(item.id):
        lines.append(annotations[item.id])
    style = dict(ROLL_STYLE)
    if item.id in colors:
        style["fillcolor"] = colors[item.id]
    if item.id in highlight or any(m in highlight for m in item.members):
        style.update(penwidth="3", color="#e03131")
    style["label"] = "\\n".join(drawing._esc(line) for line in lines)
    return item.id, style


def _add_legend(dot: graphviz.Digraph, view: View) -> None:
    used = {i.kind for i in view.items} | {"op"}
    entries = list(drawing._LEGEND) + [("roll", "repeated blocks (× count)")]
    styles = dict(STYLES, roll=ROLL_STYLE)
    shown = [(kind, text) for kind, text in entries if kind in used]
    legend = graphviz.Digraph(name="cluster_legend")
    legend.attr(label="legend", style="rounded", color="#dee2e6", fontsize="9")
    for kind, text in shown:
        legend.node(f"legend_{kind}", label=text, **styles[kind], fontsize="8")
    for (a, _), (b, _) in zip(shown, shown[1:], strict=False):
        legend.edge(f"legend_{a}", f"legend_{b}", style="invis")
    dot.subgraph(legend)


# -- search and inspection ------------------------------------------------------------
@gc_paused()
def search(graph: Graph, query: str) -> list[str]:
    """Ids of the nodes whose op name, module path, module type, parameter name or id
    contains `query` (case-insensitive), in graph order. An empty query matches nothing."""
    if not isinstance(query, str):
        raise ArgumentError("query", query, "pass text, e.g. 'addmm', 'layers.3' or 'fc1.weight'")
    q = query.strip().lower()
    if not q:
        return []
    types = {p: t.lower() for p, t in graph.modules}
    out = []
    for n in graph.nodes:
        hay = (n.label.lower(), (n.grad_fn or "").lower(), (n.module or "").lower(), types.get(n.module or "", ""))
        if n.id.lower() == q or any(q in h for h in hay):
            out.append(n.id)
    return out


@dataclass(frozen=True)
class TensorStats:
    """Summary numbers of a tensor: enough to spot a dead, exploding or NaN value."""

    shape: tuple[int, ...]
    dtype: str
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    norm: float | None
    zeros: float  # share of entries that are exactly 0
    nonfinite: int  # NaN/inf entries

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("shape", "dtype", "mean", "std", "min", "max", "norm", "zeros", "nonfinite")}

    def describe(self) -> str:
        dims = "×".join(map(str, self.shape)) or "scalar"
        if self.mean is None:
            return f"{dims} {self.dtype}: " + (f"all {self.nonfinite} entries NaN/inf" if self.nonfinite else "empty")
        text = f"{dims} {self.dtype}: mean {self.mean:.3g}, std {self.std:.3g}, min {self.min:.3g}, max {self.max:.3g}, ‖·‖ {self.norm:.3g}"
        if self.zeros:
            text += f", {self.zeros:.0%} zeros"
        if self.nonfinite:
            text += f", {self.nonfinite} NaN/inf"
        return text


def tensor_stats(value: Any) -> TensorStats:
    """Statistics of a NumPy array or a torch tensor (read without touching autograd)."""
    import numpy as np

    dtype = str(getattr(value, "dtype", "")).replace("torch.", "")
    if hasattr(value, "detach") and value.numel() <= _SMALL and not value.is_complex():
        # Tiny tensors (a 20k-layer chain saves tens of thousands): plain Python is 5× faster.
        return _small_stats(tuple(value.shape), dtype, value.detach().reshape(-1).tolist())
    if hasattr(value, "detach"):  # a torch tensor; NumPy has no bfloat16, so go via float32
        t = value.detach().cpu()
        if t.is_complex():
            t = t.abs()
        arr = (t.float() if t.dtype.itemsize < 4 or not t.dtype.is_floating_point else t).numpy()
    else:
        arr = np.asarray(value)
        dtype = dtype or str(arr.dtype)
    arr = arr.astype(np.float64, copy=False)
    shape = tuple(int(s) for s in arr.shape)
    if arr.size == 0:
        return TensorStats(shape, dtype, None, None, None, None, None, 0.0, 0)
    finite = np.isfinite(arr)
    bad = int(arr.size - np.count_nonzero(finite))
    vals = arr if bad == 0 else arr[finite]
    zeros = float(np.count_nonzero(arr == 0)) / arr.size
    if vals.size == 0:
        return TensorStats(shape, dtype, None, None, None, None, None, zeros, bad)
    return TensorStats(
        shape, dtype, float(vals.mean()), float(vals.std()), float(vals.min()), float(vals.max()),
        float(math.sqrt(float(np.dot(vals.ravel(), vals.ravel())))), zeros, bad,
    )


_SMALL = 64


def _small_stats(shape: tuple[int, ...], dtype: str, values: list[float]) -> TensorStats:
    shape = tuple(int(s) for s in shape)
    if not values:
        return TensorStats(shape, dtype, None, None, None, None, None, 0.0, 0)
    zeros = sum(1 for v in values if v == 0) / len(values)
    finite = [float(v) for v in values if math.isfinite(v)]
    bad = len(values) - len(finite)
    if not finite:
        return TensorStats(shape, dtype, None, None, None, None, None, zeros, bad)
    mean = math.fsum(finite) / len(finite)
    std = math.sqrt(max(0.0, math.fsum((v - mean) ** 2 for v in finite) / len(finite)))
    norm = math.sqrt(math.fsum(v * v for v in finite))
    return TensorStats(shape, dtype, mean, std, min(finite), max(finite), norm, zeros, bad)


_SAVED_NAMES: dict[type, tuple[str, ...]] = {}


def saved_stats(ids: Mapping[Any, str]) -> dict[str, dict[str, TensorStats]]:
    """Statistics of what each live autograd node saved, and of each leaf's value, keyed
    by node id then by the `SavedTensor` name (leaves: "value"). `ids` is the map from
    `tracing.trace_with_ids`; call this while the autograd graph is alive."""
    import torch

    out: dict[str, dict[str, TensorStats]] = {}
    memo: dict[int, TensorStats] = {}  # the same tensor saved by several nodes

    def stats(t: torch.Tensor) -> TensorStats:
        key = id(t)
        if key not in memo:
            memo[key] = tensor_stats(t)
        return memo[key]

    keep: list[Any] = []  # saved-tensor reads make new wrappers; keep them so id() stays unique
    for fn, node_id in ids.items():
        if is_accumulate(fn):
            out[node_id] = {"value": stats(fn.variable)}
            continue
        cls = type(fn)
        names = _SAVED_NAMES.get(cls)
        if names is None:
            names = _SAVED_NAMES[cls] = tuple(a for a in dir(fn) if a.startswith("_saved_"))
        found: dict[str, TensorStats] = {}
        for attr in names:
            short = attr[len("_saved_"):]
            try:
                value = getattr(fn, attr)
            except RuntimeError:  # freed by an earlier backward
                continue
            keep.append(value)
            if isinstance(value, torch.Tensor):
                found[short] = stats(value)
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
                for i, v in enumerate(value):
                    found[f"{short}[{i}]"] = stats(v)
        if hasattr(cls, "_forward_cls"):
            try:
                tensors = fn.saved_tensors
            except RuntimeError:
                tensors = ()
            keep.append(tensors)
            for i, t in enumerate(tensors):
                if isinstance(t, torch.Tensor):
                    found[f"saved_tensors[{i}]"] = stats(t)
        if found:
            out[node_id] = found
    return out


# Above this many nodes statistics are skipped: on a 25k-node chain they cost a third of
# the page's first view, and nobody inspects 25k saved tensors.
STATS_MAX_NODES = 10_000


def trace_with_stats(*outputs: Any, model: Any = None, params: Any = None,
                     max_nodes: int | None = STATS_MAX_NODES) -> tuple[Graph, dict[str, dict[str, TensorStats]]]:
    """`trace`, plus statistics of every saved tensor and leaf value (see `saved_stats`);
    none when the graph has more than `max_nodes` nodes."""
    from gradviz.graph.tracing import trace_with_ids

    graph, ids = trace_with_ids(*outputs, model=model, params=params, saved=True)
    if max_nodes is not None and len(graph) > max_nodes:
        return _with_container_types(graph, model), {}
    with gc_paused():
        stats = saved_stats(ids)
    return _with_container_types(graph, model), stats


def _with_container_types(graph: Graph, model: Any) -> Graph:
    """Name the type of container modules too ("0" → "Block", "layers" → "ModuleList"):
    `trace` records the modules that made ops or own parameters, and a block whose
    children do all the work would otherwise roll as "module × 6"."""
    if model is None or not hasattr(model, "named_modules"):
        return graph
    known = graph.module_types
    wanted = set(module_paths(graph)) - set(known)
    extra = [(path, type(m).__name__) for path, m in model.named_modules() if path in wanted]
    if not extra:
        return graph
    return Graph(graph.nodes, graph.edges, tuple(sorted(graph.modules + tuple(extra))))


def _dims(shape: Sequence[int] | None) -> str:
    return drawing._dims(shape) if shape is not None else "?"


def inspect(
    graph: Graph,
    node_id: str,
    stepper: BackwardStepper | None = None,
    *,
    stats: Mapping[str, Mapping[str, TensorStats]] | None = None,
    view: View | None = None,
) -> dict[str, Any]:
    """Everything known about one drawn id, as plain data for a panel.

    A graph node id gives its op name, module, shapes, saved tensors (with statistics from
    `trace_with_stats` when `stats` is given), saved values, inputs and users, and with a
    `stepper` (same program) the gradients of its backward step. "mod/PATH" or "m/PATH"
    gives the module's summary, "roll/…" a rolled run's, "fold/…" (with `view`) a folded run's.
    """
    if not isinstance(graph, Graph):
        raise ArgumentError("graph", type(graph).__name__, "pass a gradviz Graph")
    if not isinstance(node_id, str):
        raise ArgumentError("node_id", node_id, "pass a node id such as 'n3' or a drawn id 'mod/…'")
    if node_id.startswith(("mod/", "m/")):
        return _inspect_module(graph, node_id.split("/", 1)[1])
    if node_id.startswith("roll/"):
        run = _run_for(graph, node_id)
        if run is None:
            raise ArgumentError("node_id", node_id, "this graph has no such run of repeated blocks; use an id from the drawing")
        info = _inspect_module(graph, run.paths[0])
        info.update(kind="roll", id=node_id, label=run.title, paths=list(run.paths), count=run.count, module=run.parent)
        return info
    if node_id.startswith("fold/") or node_id == "more":
        item = next((i for i in view.items if i.id == node_id), None) if view is not None else None
        members = list(item.members) if item else []
        return {"id": node_id, "kind": "fold", "label": item.title if item else "folded run",
                "members": members, "ops": dict(Counter(graph.node(m).label for m in members if graph.node(m).kind == "op").most_common())}
    node = graph.node(node_id)
    node_stats = (stats or {}).get(node_id, {})
    info: dict[str, Any] = {
        "id": node.id,
        "kind": node.kind,
        "label": node.label,
        "grad_fn": node.grad_fn,
        "module": node.module,
        "module_type": graph.module_types.get(node.module or ""),
        "shape": node.shape,
        "shape_text": _dims(node.shape),
        "dtype": node.dtype,
        "saved": [
            {"name": s.name, "shape": s.shape, "dtype": s.dtype,
             "stats": node_stats[s.name].to_dict() if s.name in node_stats else None}
            for s in node.saved
        ],
        "value": node_stats["value"].to_dict() if "value" in node_stats else None,
        "attrs": dict(node.attrs),
        "inputs": [{"id": i, "label": graph.node(i).label} for i in graph.inputs_of(node_id)],
        "users": [{"id": u, "label": graph.node(u).label} for u in graph.users_of(node_id)],
        "gradients": None,
    }
    if stepper is not None:
        info["gradients"] = _step_gradients(stepper, node)
    return info


def _step_gradients(stepper: BackwardStepper, node: Node) -> dict[str, Any] | None:
    step = next((s for s in stepper if s.node.id == node.id), None)
    if step is None or step.node.label != node.label:
        return None

    def many(arrays: Sequence[Any]) -> list[dict[str, Any] | None]:
        return [None if a is None else tensor_stats(a).to_dict() for a in arrays]

    out: dict[str, Any] = {
        "step": step.index,
        "grad_outputs": many(step.grad_outputs),
        "grad_inputs": many(step.grad_inputs),
        "to": list(step.next_ids),
        "max_rel_error": step.max_rel_error,
        "agrees": step.agrees,
        "formula": step.formula,
    }
    if node.kind in ("param", "leaf"):
        grad = stepper.param_grads.get(node.label)
        out["grad"] = None if grad is None else tensor_stats(grad).to_dict()
    return out


def _inspect_module(graph: Graph, path: str) -> dict[str, Any]:
    members = autograd_nodes_of(graph, path)
    if not members:
        raise ArgumentError("node_id", f"mod/{path}", "no node of this graph sits in that module; use an id from the drawing")
    inside = set(members)
    nodes = [graph.node(m) for m in members]
    ops = Counter(n.label for n in nodes if n.kind == "op")
    params = [{"name": n.label, "shape": n.shape, "dtype": n.dtype} for n in nodes if n.kind == "param"]
    ins = [s for s, d in graph.edges if d in inside and s not in inside]
    outs = [s for s, d in graph.edges if s in inside and d not in inside]
    return {
        "id": f"mod/{path}",
        "kind": "module",
        "label": graph.module_types.get(path, "module"),
        "module": path,
        "module_type": graph.module_types.get(path, "module"),
        "nodes": len(members),
        "ops": dict(ops.most_common()),
        "params": params,
        "param_count": sum(math.prod(p["shape"] or ()) for p in params),
        "input_shapes": sorted({_dims(graph.node(s).shape) for s in ins if graph.node(s).kind == "op"}),
        "output_shapes": sorted({_dims(graph.node(s).shape) for s in outs}),
        "members": members,
    }


# -- forward (module) view ------------------------------------------------------------
def autograd_nodes_of(graph: Graph, module_path: str) -> list[str]:
    """Ids of the autograd nodes (ops and parameters) inside module `module_path`, with
    its submodules; also accepts drawn ids "mod/PATH", "m/PATH" and "roll/…"."""
    if not isinstance(module_path, str):
        raise ArgumentError("module_path", module_path, "pass a module path such as 'layers.0'")
    if module_path.startswith("roll/"):
        return [n.id for n in graph.nodes if n.module and _run_holds(module_path, n.module)]
    if module_path.startswith(("mod/", "m/")):
        module_path = module_path.split("/", 1)[1]
    return [n.id for n in graph.nodes if _in_subtree(n.module, module_path)]


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
    with_children = {_parent(p) for p in module_paths(graph)} - {None}
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
    for key, members in list(groups.items()):
        if all(m.kind == "param" for m in members):
            for m in members:
                node_of[m.id] = m.id
            del groups[key]
    users: dict[str, list[str]] = {}
    for s, d in graph.edges:
        users.setdefault(s, []).append(d)
    nodes: list[Node] = []
    members: dict[str, tuple[str, ...]] = {}
    done: set[str] = set()
    for n in graph.nodes:
        key = node_of[n.id]
        if key in done:
            continue
        done.add(key)
        if key == n.id:
            # Ops made outside any module: the forward picture names them, no saved values.
            nodes.append(Node(n.id, n.kind, n.label, n.shape, n.dtype, n.module, grad_fn=n.grad_fn) if n.kind == "op" else n)
            members[key] = (n.id,)
            continue
        group = groups[key]
        path = key[2:]
        inside = {m.id for m in group}
        # The module's output: an op of it used outside it (the first such in graph order).
        out = next((m for m in group if m.kind == "op" and any(u not in inside for u in users.get(m.id, ()))), None)
        ops = Counter(m.label for m in group if m.kind == "op")
        params = [m for m in group if m.kind == "param"]
        attrs = [("ops", ", ".join(f"{k} ×{v}" if v > 1 else k for k, v in ops.most_common(4)) + (", …" if len(ops) > 4 else ""))]
        if params:
            attrs.append(("params", ", ".join(f"{p.label.rsplit('.', 1)[-1]} {_dims(p.shape)}" for p in params[:4]) + (", …" if len(params) > 4 else "")))
        name = path.rsplit(".", 1)[-1]
        own = " (own ops)" if path in with_children else ""
        nodes.append(
            Node(
                id=key,
                kind="op",
                label=f"{name}: {types.get(path, 'module')}{own}",
                shape=out.shape if out is not None else None,
                dtype=out.dtype if out is not None else None,
                module=path,
                attrs=tuple(attrs),
            )
        )
        members[key] = tuple(m.id for m in group)
    seen: dict[tuple[str, str], None] = {}
    for s, d in graph.edges:
        a, b = node_of[s], node_of[d]
        if a != b:
            seen[(a, b)] = None
    fgraph = Graph(tuple(nodes), tuple(seen), graph.modules)
    colors = {k: MODULE_NODE_COLOR for k in groups}
    return ForwardView(fgraph, members, node_of, colors)


# -- diff of two runs -----------------------------------------------------------------
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
            parts.append(f"{len(self.added)} added (" + ", ".join(f"{k} ×{v}" for k, v in self.added_labels().most_common(3)) + ")")
        if self.removed:
            parts.append(f"{len(self.removed)} removed (" + ", ".join(f"{k} ×{v}" for k, v in self.removed_labels().most_common(3)) + ")")
        return "; ".join(parts)


@gc_paused()
def diff(graph_a: Graph, graph_b: Graph) -> GraphDiff:
    """What changed between two traced runs (another seed, depth or program)."""
    for name, g in (("graph_a", graph_a), ("graph_b", graph_b)):
        if not isinstance(g, Graph):
            raise ArgumentError(name, type(g).__name__, "pass gradviz Graphs (from trace() or trace_example())")
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
        for n in graph_a.nodes if n.id in removed_set
    )

    def in_merged(a_id: str) -> str:
        return f"a/{a_id}" if a_id in removed_set else partner[a_id]

    extra_edges = tuple(
        (in_merged(s), in_merged(d)) for s, d in graph_a.edges if s in removed_set or d in removed_set
    )
    merged = Graph(graph_b.nodes + extra, graph_b.edges + extra_edges, tuple(sorted(set(graph_a.modules) | set(graph_b.modules))))
    colors = {i: DIFF_COLORS["added"] for i in added}
    colors.update({f"a/{i}": DIFF_COLORS["removed"] for i in removed})
    return GraphDiff(tuple(added), tuple(removed), tuple(common), merged, colors)



def diff_item_colors(view: View, d: GraphDiff) -> dict[str, str]:
    """Fill colours for the drawn items of `d.graph`: green when every node an item stands
    for was added, red when every one was removed, yellow when an item holds both."""
    added = set(d.added)
    removed = {f"a/{i}" for i in d.removed}
    out: dict[str, str] = {}
    for item in view.items:
        new = sum(1 for m in item.members if m in added)
        old = sum(1 for m in item.members if m in removed)
        if new and new == len(item.members):
            out[item.id] = DIFF_COLORS["added"]
        elif old and old == len(item.members):
            out[item.id] = DIFF_COLORS["removed"]
        elif new or old:
            out[item.id] = DIFF_COLORS["mixed"]
    return out

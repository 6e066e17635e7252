"""What the reader opened: `ViewState` (modules drawn open, runs of repeated blocks drawn
rolled, the breadcrumb), the first state of a big graph, the steps that change it, and which
drawn item shows each graph node in a state.

A state is plain frozen data: each browser session or notebook widget holds its own, and
what is derived from a graph (its runs, the last assignment) lives on the `Graph` object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gradviz.draw.cost import COST_BUDGET, item_edges, layout_cost
from gradviz.draw.items import DEFAULT_BUDGET, ViewItem
from gradviz.errors import ArgumentError
from gradviz.graph.model import Graph, Node, gc_paused
from gradviz.graph.paths import depth as path_depth
from gradviz.graph.paths import in_subtree, module_paths, parent, prefixes
from gradviz.graph.runs import Run, run_for, run_holds, run_paths, run_paths_ends, runs_by_id

__all__ = [
    "ROLL_ABOVE",
    "ViewState",
    "assign",
    "back",
    "breadcrumb",
    "check_budget",
    "collapse",
    "default_state",
    "expand",
]

# Graphs above this many nodes start with repeated blocks rolled (ResNet-50: 340 nodes).
ROLL_ABOVE = 250
# Unrolling a run longer than this shows UNROLL_KEEP blocks at each end and keeps the
# middle rolled, so opening a 6 250-layer chain draws 7 nodes, not 6 250.
UNROLL_MAX = 12
UNROLL_KEEP = 3
# Assignments kept per graph: the app redraws the state it just planned, and a reader
# going back and forth between a few states should not recompute them.
_ASSIGNMENTS_KEPT = 8


@dataclass(frozen=True)
class ViewState:
    """What the reader opened. expanded: module paths drawn open (a closed module is one
    box). rolled: ids of `Run`s drawn as one node. trail: what the reader opened, in order
    (the breadcrumb); history: (expanded, rolled) before each step of the trail."""

    expanded: frozenset[str] = frozenset()
    rolled: frozenset[str] = frozenset()
    trail: tuple[str, ...] = ()
    history: tuple[tuple[frozenset[str], frozenset[str]], ...] = field(default=(), repr=False)


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
    check_budget(budget)
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise ArgumentError(
            "depth", depth, "use a whole number ≥ 1 (1 = top-level modules as boxes) or None"
        )
    paths = module_paths(graph)
    if budget is None:
        return ViewState(expanded=frozenset(paths))
    if depth is not None:
        return ViewState(expanded=frozenset(p for p in paths if path_depth(p) < depth))
    if roll is None:
        roll = len(graph) > ROLL_ABOVE
    rolled = frozenset(runs_by_id(graph)) if roll else frozenset()
    deepest = max((path_depth(p) for p in paths), default=0)
    state = ViewState(expanded=frozenset(paths), rolled=rolled)
    with gc_paused():
        for d in range(deepest + 1, 0, -1):
            state = ViewState(
                expanded=frozenset(p for p in paths if path_depth(p) < d), rolled=rolled
            )
            item_of, items = assign(graph, state)
            # Dense concatenations lay out slowly at any node count: bound the cost too.
            if len(items) <= budget and layout_cost(items, item_edges(graph, item_of)) <= (
                COST_BUDGET
            ):
                break
    return state


def expand(state: ViewState, target: str) -> ViewState:
    """Open module `target` ("layers.3", or a drawn id "mod/layers.3") or unroll run
    `target` ("roll/…"); the step is added to the breadcrumb.

    An unrolled run shows its blocks as closed boxes; opening a module opens its ancestors
    and unrolls any run it sits in.
    """
    if not isinstance(state, ViewState):
        raise ArgumentError(
            "state", type(state).__name__, "pass a ViewState (e.g. default_state(graph))"
        )
    if not isinstance(target, str) or not target:
        raise ArgumentError(
            "target",
            target,
            "pass a module path such as 'layers.0' or a drawn id 'mod/…' / 'roll/…'",
        )
    expanded, rolled = set(state.expanded), set(state.rolled)
    if target.startswith("roll/"):
        if target not in rolled:
            return state
        rolled.discard(target)
        members = run_paths(target)
        inside = set(members)
        expanded = {p for p in expanded if not any(q in inside for q in prefixes(p))}
        if len(members) > UNROLL_MAX:
            # A long run opens at its ends; the middle stays rolled (click it to go on).
            rolled.add(f"roll/{members[UNROLL_KEEP]}..{members[-UNROLL_KEEP - 1]}")
        crumb = target
    else:
        path = target[4:] if target.startswith("mod/") else target
        if all(p in expanded for p in prefixes(path)) and not any(
            run_holds(r, path) for r in rolled
        ):
            return state
        expanded.update(prefixes(path))
        rolled = {r for r in rolled if not run_holds(r, path)}
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
    expanded = frozenset(p for p in state.expanded if not in_subtree(p, path))
    if expanded == state.expanded:
        return state
    return ViewState(
        expanded,
        state.rolled,
        state.trail + (f"close {path}",),
        state.history + ((state.expanded, state.rolled),),
    )


def back(state: ViewState, steps: int) -> ViewState:
    """The state after the first `steps` entries of the breadcrumb (0: the first view)."""
    if not isinstance(steps, int) or not 0 <= steps <= len(state.trail):
        raise ArgumentError(
            "steps",
            steps,
            f"use 0 … {len(state.trail)} (the breadcrumb has {len(state.trail)} steps)",
        )
    if steps == len(state.trail):
        return state
    expanded, rolled = state.history[steps]
    return ViewState(expanded, rolled, state.trail[:steps], state.history[:steps])


def breadcrumb(state: ViewState) -> list[str]:
    """Labels of the breadcrumb: the first view, then each module opened."""
    return ["overview"] + [_crumb_label(t) for t in state.trail]


def _crumb_label(step: str) -> str:
    if step.startswith("roll/"):
        first, last = run_paths_ends(step)
        return f"{first}…{last.rsplit('.', 1)[-1]}"
    return step


def check_budget(budget: int | None) -> None:
    if budget is not None and (
        not isinstance(budget, int) or isinstance(budget, bool) or budget < 10
    ):
        raise ArgumentError("budget", budget, "use a whole number ≥ 10, or None to draw every node")


def assign(graph: Graph, state: ViewState) -> tuple[dict[str, str], dict[str, ViewItem]]:
    """Map each graph node to the drawn item that shows it (callers may change the result:
    each call returns fresh dicts)."""
    kept: dict[tuple[frozenset[str], frozenset[str]], tuple[dict[str, str], dict[str, ViewItem]]]
    kept = graph.memo("assignments", dict)
    key = (state.expanded, state.rolled)
    found = kept.get(key)
    if found is None:
        found = _assign_new(graph, state)
        if len(kept) >= _ASSIGNMENTS_KEPT:
            kept.clear()
        kept[key] = found
    item_of, items = found
    return dict(item_of), dict(items)


def _assign_new(graph: Graph, state: ViewState) -> tuple[dict[str, str], dict[str, ViewItem]]:
    runs: dict[str, Run] = {}
    run_of: dict[str, Run] = {}
    for rid in state.rolled:
        run = run_for(graph, rid)
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
        for p in prefixes(module):
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
    parents = {q for m in box_of_module for q in prefixes(m)[:-1]}
    items: dict[str, ViewItem] = {}
    for n in graph.nodes:
        key = item_of[n.id]
        if key in items:
            continue
        if key == n.id:
            where = n.module
            if where and n.id == f"m/{where}" and where not in parents:
                where = parent(where)  # a forward-view module node sits beside its siblings
            items[key] = ViewItem(key, n.kind, (n.id,), n.label, where)
        elif key.startswith("roll/"):
            run = runs[key]
            ids = tuple(m.id for m in groups[key])
            detail = (
                f"{run.paths[0]} … {run.paths[-1]}",
                run.title,
                f"each: {run.ops_text} · {run.params_each} params",
            )
            items[key] = ViewItem(key, "roll", ids, run.title, run.parent, detail)
        else:
            path = key[4:]
            ids = tuple(m.id for m in groups[key])
            items[key] = ViewItem(key, "module", ids, types.get(path, "module"), parent(path))
    return item_of, items

"""Decide what to draw of a `Graph` within a node budget, as a `View` of plain data.

Two ways in, one result: `plan_view(graph, depth=…)` collapses modules below a depth (the
static drawings of `to_dot`), `plan(graph, state)` draws what a reader opened (`ViewState`:
open modules, rolled runs). Over budget, both fold long straight runs and then leave out the
nodes farthest from the outputs, noting each step in the picture: `dot` lays out in roughly
quadratic time, so a view stays within about `DEFAULT_BUDGET` drawn nodes.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping

from gradviz.draw.cost import COST_BUDGET, item_edges, layout_cost
from gradviz.draw.items import DEFAULT_BUDGET, View, ViewItem
from gradviz.draw.state import ViewState, assign, check_budget, default_state
from gradviz.errors import ArgumentError
from gradviz.graph.diff import DIFF_COLORS, GraphDiff
from gradviz.graph.model import Graph, gc_paused

__all__ = ["CLICK_NOTE", "diff_item_colors", "items_for", "plan", "plan_view"]

# A straight run longer than this is folded when the graph is over budget; the first and
# last few nodes of the run stay visible so the reader sees what repeats.
FOLD_MIN_RUN = 8
FOLD_KEEP = 2
# Side trees up to this size (a weight and its transpose) fold with the node they feed.
_ATTACH_MAX = 4
# The last line of a big view's caption in the app; static drawings leave it out.
CLICK_NOTE = "click a closed or rolled box to open it"


def _module_depth(path: str | None) -> int:
    return 0 if not path else path.count(".") + 1


def _collapse(graph: Graph, depth: int | None) -> tuple[dict[str, str], dict[str, ViewItem]]:
    """Map each graph node to a drawn item id, collapsing modules deeper than `depth`."""
    if depth is None:  # every node drawn as itself
        make = ViewItem._of_node
        every = {n.id: make(n.id, n.kind, n.label, n.module) for n in graph.nodes}
        return {k: k for k in every}, every
    types = graph.module_types
    item_of: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    box_of: dict[str, str | None] = {}  # module path → its box at `depth` (None: not boxed)
    boxed_ops: set[str] = set()  # boxes holding at least one op
    for n in graph.nodes:
        key = None
        if depth is not None and n.module:
            key = box_of.get(n.module, "")
            if key == "":
                deep = _module_depth(n.module) >= depth
                key = box_of[n.module] = (
                    f"mod/{'.'.join(n.module.split('.')[:depth])}" if deep else None
                )
        if key is None:
            item_of[n.id] = n.id
        else:
            item_of[n.id] = key
            groups.setdefault(key, []).append(n.id)
            if n.kind == "op":
                boxed_ops.add(key)
    # A box of parameters alone (forward ran without capture) hides more than it saves.
    for key, members in list(groups.items()):
        if key not in boxed_ops:
            for m in members:
                item_of[m] = m
            del groups[key]
    items: dict[str, ViewItem] = {}
    for n in graph.nodes:
        key = item_of[n.id]
        if key in items:
            continue
        if key == n.id:
            items[key] = ViewItem._of_node(key, n.kind, n.label, n.module)
        else:
            path = key[4:]
            ids = tuple(groups[key])
            parent = path.rsplit(".", 1)[0] if "." in path else None
            items[key] = ViewItem(key, "module", ids, types.get(path, "module"), parent)
    return item_of, items


def _item_counts(graph: Graph) -> dict[int, int]:
    """How many items `_collapse(graph, d)` draws, for each depth d from 1 to the deepest
    module, counted per module path instead of building every collapse."""
    per_module: dict[tuple[str, bool], int] = {}  # a dict: Counter's += costs a call a node
    free = 0
    for n in graph.nodes:
        if n.module:
            key = (n.module, n.kind == "op")
            per_module[key] = per_module.get(key, 0) + 1
        else:
            free += 1
    depth_of = {m: _module_depth(m) for m, _ in per_module}
    deepest = max(depth_of.values(), default=0)
    counts: dict[int, int] = {}
    for d in range(1, deepest + 1):
        count = free
        boxes: dict[str, list] = {}  # box path → [has an op, nodes that are not ops]
        for (module, is_op), c in per_module.items():
            if depth_of[module] < d:
                count += c
                continue
            box = boxes.setdefault(module if depth_of[module] == d else ".".join(
                module.split(".")[:d]), [False, 0])
            if is_op:
                box[0] = True
            else:
                box[1] += c
        # A box of parameters alone is drawn as its parameters (see _collapse).
        counts[d] = count + sum(1 if has_op else others for has_op, others in boxes.values())
    return counts


Edges = list[tuple[str, str, int]]


def _topological(
    items: Mapping[str, ViewItem], succ: Mapping[str, list[str]], pred: Mapping[str, list[str]]
) -> list[str]:
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
    return order


def _attached(
    items: Mapping[str, ViewItem],
    order: list[str],
    succ: Mapping[str, list[str]],
    pred: Mapping[str, list[str]],
) -> dict[str, bool]:
    """Items that only feed one next item, with all their inputs attached too: parameters
    and their transposes hang off the spine and fold with the node they feed."""
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
    return attached


def _straight_runs(
    order: list[str],
    attached: Mapping[str, bool],
    spine_succ: Mapping[str, list[str]],
    spine_pred: Mapping[str, list[str]],
    min_run: int,
) -> list[list[str]]:
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
    return runs


def _fold_item(
    fold_id: str, middle: list[str], drawn: list[str], items: Mapping[str, ViewItem]
) -> ViewItem:
    graph_members = tuple(g for m in drawn for g in items[m].members)
    hist = Counter(items[m].title for m in middle)
    title = ", ".join(f"{name} ×{n}" for name, n in hist.most_common(3))
    if len(hist) > 3:
        title += ", …"
    first = items[middle[0]].module
    module = first if all(items[m].module == first for m in middle) else None
    return ViewItem(fold_id, "fold", graph_members, title, module)


def _fold_runs(
    items: dict[str, ViewItem], edges: Edges, min_run: int
) -> tuple[dict[str, ViewItem], Edges, list[int]]:
    """Fold straight runs of the graph's spine into one node each, keeping `FOLD_KEEP`
    items visible at each end so the reader sees what repeats."""
    succ: dict[str, list[str]] = {k: [] for k in items}
    pred: dict[str, list[str]] = {k: [] for k in items}
    for a, b, _ in edges:
        succ[a].append(b)
        pred[b].append(a)
    order = _topological(items, succ, pred)  # edges point forward
    attached = _attached(items, order, succ, pred)
    spine_succ = {k: [s for s in succ[k] if not attached[s]] for k in items if not attached[k]}
    spine_pred = {k: [p for p in pred[k] if not attached[p]] for k in items if not attached[k]}
    runs = _straight_runs(order, attached, spine_succ, spine_pred, min_run)
    if not runs:
        return items, edges, []
    owner: dict[str, str] = {}
    for k in reversed(order):
        owner[k] = owner[succ[k][0]] if attached[k] else k
    members_of: dict[str, list[str]] = {}
    for k in order:
        members_of.setdefault(owner[k], []).append(k)
    folded_of: dict[str, str] = {}
    new_items = dict(items)
    sizes = []
    for i, run in enumerate(runs):
        middle = run[FOLD_KEEP : len(run) - FOLD_KEEP]
        drawn = [m for s in middle for m in members_of[s]]
        fold = _fold_item(f"fold/{i}", middle, drawn, items)
        for m in drawn:
            folded_of[m] = fold.id
            del new_items[m]
        new_items[fold.id] = fold
        sizes.append(len(fold.members))
    counts: Counter[tuple[str, str]] = Counter()
    for a, b, c in edges:
        a, b = folded_of.get(a, a), folded_of.get(b, b)
        if a != b:
            counts[(a, b)] += c
    return new_items, [(a, b, c) for (a, b), c in counts.items()], sizes


def _fit(
    items: dict[str, ViewItem],
    edges: Edges,
    item_of: dict[str, str],
    budget: int | None,
    fold: bool,
    notes: list[str],
) -> tuple[dict[str, ViewItem], Edges]:
    """Over budget: fold long straight runs, then leave out the items farthest from the
    outputs; `item_of` follows, and `notes` says what was done."""
    if budget is not None and fold and len(items) > budget:
        items, edges, sizes = _fold_runs(items, edges, FOLD_MIN_RUN)
        if sizes:
            s = "s" if len(sizes) > 1 else ""
            notes.append(f"{len(sizes)} long run{s} folded ({sum(sizes):,} nodes)")
            for item in items.values():
                if item.kind == "fold":
                    for g in item.members:
                        item_of[g] = item.id
    if budget is None:
        return items, edges
    # Node count alone does not bound `dot`'s time (dense concatenations): cut by cost too.
    keep = min(budget, len(items))
    over = keep < len(items) or layout_cost(items, edges) > COST_BUDGET
    while over and keep > 1:
        cut, cut_edges, dropped = _truncate(items, edges, keep)
        if layout_cost(cut, cut_edges) <= COST_BUDGET or keep <= 16:
            items, edges = cut, cut_edges
            notes.append(f"{dropped:,} drawn nodes farthest from the outputs left out")
            for g in items["more"].members:
                item_of[g] = "more"
            break
        keep = keep * 2 // 3
    return items, edges


Collapse = tuple[dict[str, str], dict[str, ViewItem]]


def _deepest_that_fits(graph: Graph, budget: int) -> tuple[int | None, Collapse]:
    """The deepest collapse whose drawing fits `budget` nodes and `COST_BUDGET` layout cost
    (depth None: no collapse), with that collapse; counting items is cheaper than
    collapsing at each depth, so the cost is computed only for depths that fit by count."""
    total = len(graph.nodes)
    counts = _item_counts(graph)
    depths: list[int | None] = [None, *sorted(counts, reverse=True)]
    for d in depths:
        if (total if d is None else counts[d]) > budget:
            continue
        item_of, items = _collapse(graph, d)
        if d is None and not counts or layout_cost(items, item_edges(graph, item_of)) <= (
            COST_BUDGET
        ):
            return d, (item_of, items)
    shallowest = depths[-1] if counts else None
    return shallowest, _collapse(graph, shallowest)


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
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise ArgumentError(
            "depth",
            depth,
            "use a whole number ≥ 1 (1 = top-level modules) or None for no collapsing",
        )
    check_budget(budget)
    notes: list[str] = []
    total = len(graph.nodes)
    chosen = False
    with gc_paused():
        if budget is not None and depth is None:
            depth, (item_of, items) = _deepest_that_fits(graph, budget)
            chosen = depth is not None
        else:
            item_of, items = _collapse(graph, depth)
        if chosen and len(items) < total:
            notes.append(f"modules collapsed below depth {depth}")
        items, edges = _fit(items, item_edges(graph, item_of), item_of, budget, fold, notes)
    if notes:
        notes.insert(0, f"default view: {total:,} nodes → {len(items):,} drawn")
        notes.append("pass budget=None to draw everything")
    return View(tuple(items.values()), tuple(edges), depth, tuple(notes), total, item_of)


def plan(
    graph: Graph, state: ViewState | None = None, *, budget: int | None = DEFAULT_BUDGET
) -> View:
    """What to draw for `graph` in `state` (None: `default_state`): open modules as
    clusters, closed ones as boxes, rolled runs as one node each. Over `budget` drawn items,
    long straight runs fold and then the items farthest from the outputs are left out, as
    in `plan_view`; each step is noted in the picture."""
    if not isinstance(graph, Graph):
        raise ArgumentError("graph", type(graph).__name__, "pass a gradviz Graph (from trace())")
    check_budget(budget)
    with gc_paused():
        if state is None:
            state = default_state(graph, budget=budget)
        item_of, items = assign(graph, state)
        notes: list[str] = []
        rolls = [i for i in items.values() if i.kind == "roll"]
        boxes = sum(1 for i in items.values() if i.kind == "module")
        if rolls:
            shown = ", ".join(i.title for i in rolls[:3]) + (", …" if len(rolls) > 3 else "")
            s = "s" if len(rolls) > 1 else ""
            notes.append(f"{len(rolls)} run{s} of repeated blocks rolled ({shown})")
        if boxes:
            notes.append(f"{boxes} module{'s' if boxes > 1 else ''} drawn closed")
        items, edges = _fit(items, item_edges(graph, item_of), item_of, budget, True, notes)
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

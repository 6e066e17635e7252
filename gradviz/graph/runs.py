"""Runs of repeated blocks: consecutive sibling modules of one type and the same inside,
each feeding the next ("TransformerEncoderLayer × 24"), found from the graph alone.

A run's id names its ends ("roll/layers.0..layers.23"); a stretch of a run left rolled after
opening its ends has an id of the same form, so ids survive a round trip through the browser.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gradviz.errors import ArgumentError
from gradviz.graph.model import Graph, gc_paused
from gradviz.graph.paths import depth, in_subtree, module_paths, natural_key, parent, prefixes

__all__ = [
    "Run",
    "repeated_runs",
    "run_for",
    "run_holds",
    "run_paths",
    "run_paths_ends",
    "runs_by_id",
]


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


def _index_of(path: str) -> int:
    return int(path.rsplit(".", 1)[-1])


def _cross_edges(graph: Graph) -> set[tuple[str, str | None, tuple[int, ...] | None]]:
    """(source module, destination module, source shape) of every edge that leaves a module,
    once each: a 20k-layer chain has 80k edges but only 20k distinct ones of these."""

    def compute() -> set[tuple[str, str | None, tuple[int, ...] | None]]:
        index = graph._index
        cross = set()
        for s, d in graph.edges:
            a, b = index[s], index[d]
            if a.module and a.module != b.module:
                cross.add((a.module, b.module, a.shape))
        return cross

    return graph.memo("cross", compute)


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
        for p in prefixes(m):
            if p in wanted:
                parts[p].add((m[len(p) :], types.get(m)))
    for n in graph.nodes:
        if n.kind != "param" or not n.module:
            continue
        for p in prefixes(n.module):
            if p in wanted:
                name = n.label[len(p) + 1 :] if n.label.startswith(p + ".") else n.label
                params[p][(name, n.shape, n.dtype)] += 1
    outs: dict[str, set] = {p: set() for p in wanted}
    for a, b, shape in _cross_edges(graph):
        for p in prefixes(a):
            if p in wanted and not in_subtree(b, p):
                outs[p].add(shape)
    return {
        p: (
            frozenset(parts[p]),
            frozenset(params[p].items()) if p in params else frozenset(),
            frozenset(outs[p]),
        )
        for p in wanted
    }


def _exits(graph: Graph) -> dict[str, set[str]]:
    """For each module path: where edges leaving it land, as the sibling-level path of the
    destination under the same parent ("" when they leave the parent)."""
    out: dict[str, set[str]] = {}
    for a, b in {(a, b) for a, b, _ in _cross_edges(graph)}:
        for p in prefixes(a):
            if in_subtree(b, p):
                continue
            above = parent(p)
            target = ""
            if b and (above is None or in_subtree(b, above)) and depth(b) >= depth(p):
                target = prefixes(b)[depth(p) - 1]
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
        children.setdefault(parent(p), []).append(p)
    sig = _signatures(graph, paths)
    exits = _exits(graph)
    ops: dict[str, int] = dict.fromkeys(paths, 0)
    n_params: dict[str, int] = dict.fromkeys(paths, 0)
    own = Counter((n.module, n.kind) for n in graph.nodes if n.module and n.kind in ("op", "param"))
    for (module, kind), count in own.items():
        tally = ops if kind == "op" else n_params
        for p in prefixes(module):
            tally[p] += count
    runs: list[Run] = []
    for above, kids in children.items():
        # Only numbered children (ModuleList / Sequential entries) are "consecutive".
        kids = sorted((k for k in kids if k.rsplit(".", 1)[-1].isdigit()), key=natural_key)
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
            members = kids[i : j + 1]
            if len(members) >= min_count and ops[members[0]] > 0:
                runs.append(
                    Run(
                        id=f"roll/{members[0]}..{members[-1]}",
                        parent=above,
                        paths=tuple(members),
                        type_name=types.get(members[0], "module"),
                        ops=tuple(ops[m] for m in members),
                        params_each=n_params[members[0]],
                    )
                )
            i = j + 1
    return tuple(sorted(runs, key=lambda r: natural_key(r.paths[0])))


def runs_by_id(graph: Graph) -> dict[str, Run]:
    """`repeated_runs` by id, found once per graph."""

    def compute() -> dict[str, Run]:
        with gc_paused():
            return {r.id: r for r in repeated_runs(graph)}

    return graph.memo("runs", compute)


def run_for(graph: Graph, run_id: str) -> Run | None:
    """The run `run_id` names: one of `repeated_runs`, or a stretch of one ("roll/a.3..a.20",
    what is left rolled after unrolling a long run)."""
    runs = runs_by_id(graph)
    run = runs.get(run_id)
    if run is not None:
        return run
    first, last = run_paths_ends(run_id)
    for r in runs.values():
        if first in r.paths and last in r.paths:
            i, j = r.paths.index(first), r.paths.index(last)
            if i < j:
                return Run(
                    run_id,
                    r.parent,
                    r.paths[i : j + 1],
                    r.type_name,
                    r.ops[i : j + 1],
                    r.params_each,
                )
    return None


def run_paths_ends(run_id: str) -> tuple[str, str]:
    first, _, last = run_id[5:].partition("..")
    return first, last


def run_paths(run_id: str) -> list[str]:
    """Member paths of a run id "roll/layers.0..layers.5" (runs are numbered siblings)."""
    first, last = run_paths_ends(run_id)
    above = parent(first)
    prefix = "" if above is None else above + "."
    try:
        return [f"{prefix}{i}" for i in range(_index_of(first), _index_of(last) + 1)]
    except ValueError:
        return []


def run_holds(run_id: str, path: str) -> bool:
    first, last = run_paths_ends(run_id)
    level = depth(first)
    if depth(path) < level:
        return False
    block = prefixes(path)[level - 1]
    if parent(block) != parent(first):
        return False
    try:
        return _index_of(first) <= _index_of(block) <= _index_of(last)
    except ValueError:
        return False

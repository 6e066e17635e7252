"""What a drawing is made of, as plain data: `ViewItem` (one drawn node: a graph node, a
closed module, a rolled run or a folded stretch) and `View` (items, edges, notes), plus the
styles every drawing shares. Planners (`plan`) make Views; `to_dot` draws any View."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["DEFAULT_BUDGET", "STYLES", "View", "ViewItem"]

DEFAULT_BUDGET = 500

STYLES: dict[str, dict[str, str]] = {
    "op": {"shape": "box", "style": "rounded,filled", "fillcolor": "#eeeeee"},
    "custom": {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffd8a8"},
    "param": {"shape": "box", "style": "filled", "fillcolor": "#a5d8ff"},
    "leaf": {"shape": "ellipse", "style": "filled", "fillcolor": "#d0ebff"},
    "output": {"shape": "box", "style": "filled", "fillcolor": "#b2f2bb"},
    "module": {"shape": "box3d", "style": "filled", "fillcolor": "#fff3bf"},
    "fold": {"shape": "box", "style": "dashed,filled", "fillcolor": "#ffffff"},
    "roll": {"shape": "box3d", "style": "filled,bold", "fillcolor": "#ffd8a8", "peripheries": "2"},
}


@dataclass(frozen=True)
class ViewItem:
    """One drawn node: a graph node, a collapsed module, a rolled run or a folded run."""

    id: str
    kind: str  # a Node kind, "module", "roll" or "fold"
    members: tuple[str, ...]  # ids of the graph nodes it stands for
    title: str
    module: str | None = None  # cluster it is drawn in
    detail: tuple[str, ...] = ()  # label lines a planner worked out (a rolled run's)

    @classmethod
    def _of_node(cls, id: str, kind: str, title: str, module: str | None) -> ViewItem:
        """The item of one graph node, without the frozen __init__'s six object.__setattr__
        calls (most of planning an all-nodes view). Equal to ViewItem(id, kind, (id,), ...)."""
        item = object.__new__(cls)
        item.__dict__.update(
            id=id, kind=kind, members=(id,), title=title, module=module, detail=()
        )
        return item


@dataclass(frozen=True)
class View:
    items: tuple[ViewItem, ...]
    edges: tuple[tuple[str, str, int], ...]  # (src item, dst item, multiplicity)
    depth: int | None  # modules collapsed below this depth (None: none)
    notes: tuple[str, ...] = ()
    total_nodes: int = 0
    item_of: Mapping[str, str] = field(default_factory=dict)  # graph node id → item id

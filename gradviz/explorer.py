"""Explore big autograd graphs in one namespace: search, inspect, open modules, roll
repeated blocks, link the forward (module) view with the backward (autograd) view, diff
two runs.

A façade: the graph questions live in `gradviz.graph` (paths, runs, stats, query, forward,
diff), the view state and planning in `gradviz.draw` (state, plan), and drawing is the one
`gradviz.to_dot(graph, view)` — pass it a `ViewState` from here or a `View` from `plan`.
A `ViewState` is plain frozen data: each session keeps its own; what is derived from a
graph is memoised on the `Graph` object itself.
"""

from __future__ import annotations

from gradviz.draw.items import DEFAULT_BUDGET, View, ViewItem
from gradviz.draw.plan import CLICK_NOTE, diff_item_colors, items_for, plan
from gradviz.draw.state import (
    ROLL_ABOVE,
    ViewState,
    back,
    breadcrumb,
    collapse,
    default_state,
    expand,
)
from gradviz.graph.diff import DIFF_COLORS, GraphDiff, diff
from gradviz.graph.forward import ForwardView, forward_view
from gradviz.graph.paths import module_paths
from gradviz.graph.query import autograd_nodes_of, inspect, search
from gradviz.graph.runs import Run, repeated_runs
from gradviz.graph.stats import (
    STATS_MAX_NODES,
    TensorStats,
    saved_stats,
    tensor_stats,
    trace_with_stats,
)

__all__ = [
    "CLICK_NOTE",
    "DEFAULT_BUDGET",
    "DIFF_COLORS",
    "ForwardView",
    "GraphDiff",
    "ROLL_ABOVE",
    "Run",
    "STATS_MAX_NODES",
    "TensorStats",
    "View",
    "ViewItem",
    "ViewState",
    "autograd_nodes_of",
    "back",
    "breadcrumb",
    "collapse",
    "default_state",
    "diff",
    "diff_item_colors",
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

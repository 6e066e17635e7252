"""`widget(output_or_model)`: the app's interactive autograd graph as a Jupyter widget.

The front end is the app's own graph component (`gradviz/assets/graph_view/`): the same
JavaScript file serves Streamlit and, as an anywidget ESM, Jupyter, VS Code and Colab. The
kernel lays the graph out with the real `dot` and sends the SVG; the browser pans, zooms,
shows hover details and reports clicks. `w.selected` follows clicks, and `w.expand(...)`,
`w.collapse(...)`, `w.back()` and `w.search(...)` set the view from Python.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Mapping
from importlib import resources
from typing import Any, TypedDict

import anywidget
import graphviz
import torch
import traitlets
from torch import nn

from gradviz import explorer as ex
from gradviz.draw.dot import to_dot
from gradviz.draw.items import DEFAULT_BUDGET
from gradviz.errors import ArgumentError, GradvizError
from gradviz.graph.model import Graph
from gradviz.graph.paths import shape_text
from gradviz.graph.tracing import capture

__all__ = ["GraphView", "GraphWidget", "details_of", "svg_of", "widget"]


def _asset(name: str) -> str:
    return (resources.files("gradviz") / "assets" / "graph_view" / name).read_text(encoding="utf-8")


class GraphvizNotFound(GradvizError):
    """Graphviz's `dot` program is not installed, so the widget cannot lay the graph out."""


@functools.lru_cache(maxsize=128)
def svg_of(dot_source: str) -> str:
    """Lay out DOT text with the real `dot` (cached: stepping back re-shows a frame)."""
    if shutil.which("dot") is None:
        raise GraphvizNotFound(
            "Graphviz's `dot` program is not on PATH: install it (Debian/Ubuntu: "
            "`apt-get install graphviz`; macOS: `brew install graphviz`; conda: `conda install "
            "graphviz`) and run the cell again"
        )
    svg = graphviz.pipe("dot", "svg", dot_source.encode("utf-8")).decode("utf-8")
    return svg[svg.find("<svg"):]


class GraphView(anywidget.AnyWidget):
    """The bare graph component: an SVG with pan, zoom, highlights, hover details, clicks."""

    _esm = _asset("graph_view.js")
    _css = _asset("graph_view.css")
    _html = traitlets.Unicode(_asset("graph_view.html")).tag(sync=True)
    svg = traitlets.Unicode("").tag(sync=True)
    highlight = traitlets.List(traitlets.Unicode()).tag(sync=True)
    selected = traitlets.Unicode(None, allow_none=True).tag(sync=True)
    focus = traitlets.Unicode(None, allow_none=True).tag(sync=True)
    height = traitlets.Int(600).tag(sync=True)
    # drawn id → {"title": str, "rows": [[name, value], ...]}, shown on hover and for the
    # selected node.
    details = traitlets.Dict().tag(sync=True)
    clusters = traitlets.Bool(False).tag(sync=True)
    searchable = traitlets.Bool(False).tag(sync=True)
    query = traitlets.Unicode("").tag(sync=True)
    crumbs = traitlets.List(traitlets.Unicode()).tag(sync=True)
    found = traitlets.Unicode("").tag(sync=True)


class _DotOptions(TypedDict):
    show_saved: bool
    cluster: bool


def _stats_text(stats: Mapping[str, Any] | None) -> str:
    if not stats or stats.get("mean") is None:
        return ""
    return f" (mean {stats['mean']:.3g}, std {stats['std']:.3g}, ‖·‖ {stats['norm']:.3g})"


def _node_rows(info: Mapping[str, Any]) -> list[list[str]]:
    rows = [["id", info["id"]], ["kind", info["kind"]]]
    if info["kind"] == "param":
        rows.append(["parameter", info["label"]])
    if info.get("grad_fn") and info["grad_fn"] != info["label"]:
        rows.append(["autograd node", info["grad_fn"]])
    if info.get("module"):
        kind = f" ({info['module_type']})" if info.get("module_type") else ""
        rows.append(["module", info["module"] + kind])
    rows.append(["shape", info.get("shape_text") or shape_text(info.get("shape"), "?")])
    rows.append(["dtype", info.get("dtype") or "—"])
    if info.get("value"):
        rows.append(["value", _stats_text(info["value"]).strip(" ()")])
    for s in info.get("saved", []):
        saved = f"{shape_text(s['shape'], '?')} {s['dtype'] or ''}".strip()
        rows.append([f"saved {s['name']}", saved + _stats_text(s.get("stats"))])
    if info.get("inputs"):
        rows.append(["inputs", ", ".join(i["label"] for i in info["inputs"][:6])])
    return rows


def _box_rows(info: Mapping[str, Any]) -> list[list[str]]:
    if info["kind"] == "fold":
        ops = ", ".join(f"{k} × {v}" for k, v in list(info["ops"].items())[:5])
        return [["folded nodes", str(len(info["members"]))], ["ops", ops]]
    rows = [["module", str(info["module"])], ["type", str(info["module_type"])],
            ["autograd nodes", f"{info['nodes']:,}"], ["parameters", f"{info['param_count']:,}"]]
    if info["kind"] == "roll":
        rows.insert(0, ["blocks", f"{info['count']}: {info['paths'][0]} … {info['paths'][-1]}"])
    if info.get("output_shapes"):
        rows.append(["output shapes", ", ".join(info["output_shapes"])])
    rows.append(["click", "opens it"])
    return rows


def details_of(graph: Graph, view: Any, stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Hover details of every drawn item of `view` (from `explorer.plan`), by drawn id."""
    out: dict[str, Any] = {}
    for item in view.items:
        try:
            info = ex.inspect(graph, item.id, stats=stats, view=view)
        except GradvizError:
            continue  # an item inspect cannot describe gets no card, the graph still shows
        box = info["kind"] in ("module", "roll", "fold")
        rows = _box_rows(info) if box else _node_rows(info)
        out[item.id] = {"title": str(info["label"]), "rows": rows}
    return out


class GraphWidget(GraphView):
    """The explorer in a notebook: click a closed module (yellow) or a rolled run (orange)
    to open it, click an open module's frame to close it, search, hover for details.

    `selected`: the drawn id last clicked (or set from Python). `expand`, `collapse`,
    `back`, `search` and `reset` change the view and redraw.
    """

    def __init__(self, graph: Graph, *, stats: Mapping[str, Any] | None = None,
                 budget: int | None = DEFAULT_BUDGET, depth: int | None = None,
                 show_saved: bool = False, cluster: bool = True, height: int = 600) -> None:
        super().__init__(height=height, clusters=True, searchable=True)
        self.graph = graph
        self._stats = dict(stats or {})
        self._budget = budget
        self._depth = depth
        self._options: _DotOptions = {"show_saved": show_saved, "cluster": cluster}
        self.state = ex.default_state(graph, budget=budget, depth=depth)
        self.view = ex.plan(graph, self.state, budget=budget)
        self.matches: list[str] = []
        self.observe(self._on_select, names="selected")
        self.observe(self._on_query, names="query")
        self.on_msg(self._on_message)
        self._redraw()

    # -- setting the view from Python ---------------------------------------------------
    def expand(self, *targets: str) -> GraphWidget:
        """Open modules ("layers.0", "mod/layers.0") or unroll runs ("roll/…"); redraws."""
        state = self.state
        for t in targets:
            state = ex.expand(state, t)
        return self._set(state)

    def collapse(self, *paths: str) -> GraphWidget:
        """Close modules again (each with everything inside it); redraws."""
        state = self.state
        for p in paths:
            if not isinstance(p, str) or not p:
                raise ArgumentError("path", p, "pass a module path such as 'layers.0'")
            state = ex.collapse(state, p)
        return self._set(state)

    def back(self, steps: int | None = None) -> GraphWidget:
        """Go back along the breadcrumb: to its first `steps` entries (default: one back)."""
        if steps is None:
            steps = max(0, len(self.state.trail) - 1)
        return self._set(ex.back(self.state, steps))

    def reset(self) -> GraphWidget:
        """The first view again."""
        return self._set(ex.default_state(self.graph, budget=self._budget, depth=self._depth))

    def search(self, query: str) -> list[str]:
        """Highlight the nodes whose op, module, parameter name or id contains `query`;
        returns their graph ids (the search box shows the same query)."""
        if not isinstance(query, str):
            raise ArgumentError("query", query,
                                "pass text, e.g. 'addmm', 'layers.3' or 'fc1.weight'")
        self.query = query
        return list(self.matches)

    def info(self, drawn_id: str | None = None) -> dict[str, Any]:
        """Everything known about `drawn_id` (default: the selection), as `explorer.inspect`."""
        target = self.selected if drawn_id is None else drawn_id
        if target is None:
            raise ArgumentError("drawn_id", None, "click a node first, or pass an id such as 'n3'")
        return ex.inspect(self.graph, target, stats=self._stats, view=self.view)

    # -- reacting to the front end ------------------------------------------------------
    def _set(self, state: ex.ViewState) -> GraphWidget:
        if state is not self.state:
            self.state = state
            self.view = ex.plan(self.graph, state, budget=self._budget)
            self._redraw()
        return self

    def _redraw(self) -> None:
        dot = to_dot(self.graph, self.view, **self._options)
        with self.hold_sync():
            self.svg = svg_of(dot.source)
            self.details = details_of(self.graph, self.view, self._stats)
            self.crumbs = ex.breadcrumb(self.state) if self.state.trail else []
            self._highlight()

    def _highlight(self) -> None:
        self.matches = ex.search(self.graph, self.query) if self.query.strip() else []
        self.highlight = ex.items_for(self.view, self.matches)
        self.focus = self.highlight[0] if self.highlight else None
        q = self.query.strip()
        shown = f"{len(self.matches)} nodes match “{q}”, {len(self.highlight)} drawn"
        self.found = shown if q else ""

    def _on_select(self, change: Mapping[str, Any]) -> None:
        new = change["new"]
        if isinstance(new, str) and new.startswith(("mod/", "roll/")):
            self.expand(new)

    def _on_query(self, change: Mapping[str, Any]) -> None:
        self._highlight()

    def _on_message(self, _widget: Any, content: Mapping[str, Any], _buffers: Any) -> None:
        event, value = content.get("event"), content.get("value")
        if event == "back" and isinstance(value, int) and 0 <= value <= len(self.state.trail):
            self.back(value)
        elif event == "cluster" and isinstance(value, str) and value in self.state.expanded:
            self.collapse(value)


def _graph_of(output_or_model: Any, inputs: Any, model: Any, params: Any) -> tuple[Graph, dict]:
    if isinstance(output_or_model, Graph):
        return output_or_model, {}
    if isinstance(output_or_model, nn.Module):
        if inputs is None:
            raise ArgumentError("inputs", None,
                                "a model needs example inputs to run forward: widget(model, "
                                "inputs=torch.randn(8, 784)), or pass the output tensor")
        model = output_or_model
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        with capture(model):
            out = model(*args)
        outputs = out if isinstance(out, tuple) else (out,)
    elif isinstance(output_or_model, torch.Tensor):
        outputs = (output_or_model,)
    elif isinstance(output_or_model, list | tuple) and output_or_model and all(
            isinstance(t, torch.Tensor) for t in output_or_model):
        outputs = tuple(output_or_model)
    else:
        raise ArgumentError("output_or_model", type(output_or_model).__name__,
                            "pass an output tensor (e.g. the loss), a tuple of them, an nn.Module "
                            "with inputs=, or a gradviz Graph")
    return ex.trace_with_stats(*outputs, model=model, params=params)


def widget(
    output_or_model: Any,
    *,
    inputs: Any = None,
    model: nn.Module | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
    budget: int | None = DEFAULT_BUDGET,
    depth: int | None = None,
    show_saved: bool = False,
    cluster: bool = True,
    height: int = 600,
) -> GraphWidget:
    """The interactive autograd graph of `output_or_model`, as a notebook widget.

    output_or_model: an output tensor (the loss), a tuple of them, a gradviz `Graph`, or an
    `nn.Module` run on `inputs` (under `capture`, so ops cluster by module). model/params
    name the parameters, as for `trace`. budget/depth: the first view, as in the app.
    Read `w.selected`; open modules with `w.expand("layers.0")`; `w.search("addmm")`.
    """
    if not isinstance(height, int) or isinstance(height, bool) or not 200 <= height <= 4000:
        raise ArgumentError("height", height, "use a whole number of pixels from 200 to 4000")
    graph, stats = _graph_of(output_or_model, inputs, model, params)
    return GraphWidget(graph, stats=stats, budget=budget, depth=depth, show_saved=show_saved,
                       cluster=cluster, height=height)

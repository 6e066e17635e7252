"""Write a graph to disk as DOT, SVG, PNG or JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
from typing import Any

import graphviz
import torch

from gradviz.draw.dot import to_dot
from gradviz.draw.items import DEFAULT_BUDGET
from gradviz.draw.plan import CLICK_NOTE, plan
from gradviz.draw.state import default_state
from gradviz.errors import ArgumentError, GraphvizMissing
from gradviz.graph.forward import forward_view
from gradviz.graph.model import Graph
from gradviz.graph.tracing import trace

__all__ = ["FORMATS", "VIEWS", "GraphvizMissing", "dot_available", "layout", "render"]

FORMATS = ("dot", "svg", "png", "json")
# default: Graph.to_dot's view (modules collapse to fit the budget). rolled: repeated
# blocks drawn as one node ("TransformerEncoderLayer × 24"), as the app's first view.
# forward: one node per module and the data flow between them.
VIEWS = ("default", "rolled", "forward")


def dot_available() -> bool:
    return shutil.which("dot") is not None


def _require_dot() -> None:
    if not dot_available():
        raise GraphvizMissing(
            "Graphviz's `dot` program is not on PATH, so SVG/PNG cannot be laid out: "
            "install it (Debian/Ubuntu: `apt-get install graphviz`; "
            "macOS: `brew install graphviz`) "
            "or export DOT/JSON instead"
        )


def layout(dot: graphviz.Digraph | str, fmt: str = "svg") -> bytes:
    """Lay out DOT text with the real `dot` program and return the drawing's bytes."""
    _require_dot()
    source = dot if isinstance(dot, str) else dot.source
    return graphviz.pipe("dot", fmt, source.encode("utf-8"))


def render(
    graph_or_tensor: Graph | torch.Tensor,
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    view: str = "default",
    **dot_options: Any,
) -> pathlib.Path:
    """Write `graph_or_tensor` to `path` as DOT, SVG, PNG or JSON and return the path.

    format defaults to the path's suffix (".svg" → "svg"), else "svg". A tensor is traced
    first. view: "default" (`Graph.to_dot`), "rolled" (repeated blocks as one node, as the
    app starts) or "forward" (modules and their data flow; JSON then holds that graph).
    `dot_options` go to `Graph.to_dot` (show_saved, depth, budget...).
    """
    target = pathlib.Path(path)
    fmt = (format or target.suffix.lstrip(".") or "svg").lower()
    if fmt == "gv":
        fmt = "dot"
    if fmt not in FORMATS:
        raise ArgumentError(
            "format", fmt, f"use one of {', '.join(FORMATS)} (or a path ending in one of them)"
        )
    if view not in VIEWS:
        raise ArgumentError(
            "view",
            view,
            "use 'default', 'rolled' (repeated blocks as one node) "
            "or 'forward' (modules and their data flow)",
        )
    if isinstance(graph_or_tensor, torch.Tensor):
        graph = trace(graph_or_tensor)
    elif isinstance(graph_or_tensor, Graph):
        graph = graph_or_tensor
    else:
        raise ArgumentError(
            "graph_or_tensor",
            type(graph_or_tensor).__name__,
            "pass a gradviz Graph (from trace()) or a tensor with a grad_fn",
        )
    if fmt == "json" and dot_options:
        raise ArgumentError(
            "dot_options",
            sorted(dot_options),
            "JSON holds the whole graph; drawing options apply to dot/svg/png only",
        )
    if fmt == "json" and view == "rolled":
        raise ArgumentError(
            "view",
            view,
            "JSON holds the whole graph: use view='default' or 'forward', or draw to dot/svg/png",
        )
    if view == "forward":
        forward = forward_view(graph)
        graph = forward.graph
        dot_options = {"show_attrs": True, "colors": forward.colors, **dot_options}
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        target.write_text(json.dumps(graph.to_json(), indent=1) + "\n", encoding="utf-8")
        return target
    dot = (
        graph.to_dot(**dot_options)
        if view == "default"
        else _explorer_dot(graph, view, dot_options)
    )
    if fmt == "dot":
        target.write_text(dot.source, encoding="utf-8")
    else:
        target.write_bytes(layout(dot, fmt))
    return target


def _explorer_dot(graph: Graph, view: str, options: dict[str, Any]) -> graphviz.Digraph:
    """The explorer's first view: `depth`/`budget` choose what opens, the rest draws."""
    options = dict(options)
    depth = options.pop("depth", None)
    budget = options.pop("budget", DEFAULT_BUDGET)
    options.pop("fold", None)  # rolling replaces folding here
    roll = True if view == "rolled" else None
    state = default_state(graph, budget=budget, depth=depth, roll=roll)
    planned = plan(graph, state, budget=budget)
    planned = dataclasses.replace(planned, notes=tuple(n for n in planned.notes if n != CLICK_NOTE))
    return to_dot(graph, planned, **options)

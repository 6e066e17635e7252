"""Write a graph to disk as DOT, SVG, PNG or JSON."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any

import graphviz
import torch

from .errors import ArgumentError, GradvizError
from .graph import Graph
from .tracing import trace

__all__ = ["FORMATS", "render", "dot_available", "layout"]

FORMATS = ("dot", "svg", "png", "json")


class GraphvizMissing(GradvizError):
    """Graphviz's `dot` program is not installed, so SVG/PNG cannot be drawn."""


def dot_available() -> bool:
    return shutil.which("dot") is not None


def _require_dot() -> None:
    if not dot_available():
        raise GraphvizMissing(
            "Graphviz's `dot` program is not on PATH, so SVG/PNG cannot be laid out: "
            "install it (Debian/Ubuntu: `apt-get install graphviz`; macOS: `brew install graphviz`) "
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
    **dot_options: Any,
) -> pathlib.Path:
    """Write `graph_or_tensor` to `path` as DOT, SVG, PNG or JSON and return the path.

    format defaults to the path's suffix (".svg" → "svg"), else "svg". A tensor is traced
    first. `dot_options` go to `Graph.to_dot` (show_saved, depth, budget...).
    """
    target = pathlib.Path(path)
    fmt = (format or target.suffix.lstrip(".") or "svg").lower()
    if fmt == "gv":
        fmt = "dot"
    if fmt not in FORMATS:
        raise ArgumentError("format", fmt, f"use one of {', '.join(FORMATS)} (or a path ending in one of them)")
    if isinstance(graph_or_tensor, torch.Tensor):
        graph = trace(graph_or_tensor)
    elif isinstance(graph_or_tensor, Graph):
        graph = graph_or_tensor
    else:
        raise ArgumentError(
            "graph_or_tensor", type(graph_or_tensor).__name__, "pass a gradviz Graph (from trace()) or a tensor with a grad_fn"
        )
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        if dot_options:
            raise ArgumentError("dot_options", sorted(dot_options), "JSON holds the whole graph; drawing options apply to dot/svg/png only")
        target.write_text(json.dumps(graph.to_json(), indent=1) + "\n", encoding="utf-8")
        return target
    dot = graph.to_dot(**dot_options)
    if fmt == "dot":
        target.write_text(dot.source, encoding="utf-8")
    else:
        target.write_bytes(layout(dot, fmt))
    return target

"""Streamlit glue shared by the pages: cached tracing and drawing, error display.

This is the only part of gradviz that imports Streamlit; the pages call these helpers
and the library, and hold no math of their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import streamlit as st

from gradviz.draw.export import layout
from gradviz.errors import GradvizError
from gradviz.graph.model import Graph
from gradviz.zoo.models import input_shape, model_names
from gradviz.zoo.sources import source_labels, trace_source

__all__ = ["keep_navigation", "graph_sources", "model_shape_input", "traced", "svg_of", "show_svg",
           "guard", "node_rows", "MODEL_KEY"]

# Session-state key under which the Build & Train page hands its model to the others.
MODEL_KEY = "gradviz.built_model"


def keep_navigation() -> None:
    """Hand a page run by Streamlit's older `pages/` folder navigation back to
    `streamlit_app.py`'s `st.navigation`.

    With a `pages/` folder beside the entry script, Streamlit runs a first visit straight
    to a page (a bookmark of /Backward) through its file-name navigation, which then labels
    the sidebar "streamlit app" for the whole server. Switching that mode off and rerunning
    lets the entry script name the pages, and the URL still opens the page asked for.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def graph_sources() -> dict[str, str]:
    """Label shown in the picker → source key: the examples first, then the 21 presets."""
    labels = source_labels()
    examples_first = {k: v for k, v in labels.items() if v.startswith("example:")}
    examples_first.update((k, v) for k, v in labels.items() if v.startswith("preset:"))
    # Then the models users bring (when torchvision / transformers are installed).
    for name in model_names():
        where = "Hugging Face, small config" if name.startswith("hf:") else "torchvision"
        examples_first[f"{name} — {where}, random weights"] = f"model:{name}"
    return examples_first


def model_shape_input(source: str) -> str:
    """For a model source, a box for the input shape; the source with that shape."""
    if not source.startswith("model:"):
        return source
    default = input_shape(source[6:])
    if default is None:
        st.caption("This model takes its built-in input.")
        return source
    text = st.text_input("Input shape", "x".join(map(str, default)), key=f"shape:{source}",
                         help="e.g. 2x3x64x64 for images (batch, channels, height, width), "
                              "1x16 for text (batch, tokens)")
    return source if text.strip() == "x".join(map(str, default)) else f"{source}@{text}"


@st.cache_resource(max_entries=24, show_spinner="Tracing…")
def traced(source: str, seed: int = 0) -> Graph:
    """Trace an example or preset once per process; the Graph is frozen, so sharing is safe."""
    return trace_source(source, seed)


@st.cache_data(max_entries=64, show_spinner="Laying out with Graphviz…")
def svg_of(dot_source: str) -> str:
    return layout(dot_source, "svg").decode("utf-8")


def show_svg(svg: str, height: int = 720) -> None:
    """Show Graphviz's SVG in the page (scrollable), so the browser does no layout work."""
    start = svg.find("<svg")
    # st.html sanitises SVG away; markdown with raw HTML keeps Graphviz's SVG as DOM nodes.
    st.markdown(
        f'<div class="gradviz-graph" style="overflow:auto;max-height:{height}px;'
        f'border:1px solid #e9ecef;border-radius:6px;background:white">{svg[start:]}</div>',
        unsafe_allow_html=True,
    )


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Show a library error as an st.error that says what to change, never a traceback."""
    try:
        yield
    except GradvizError as exc:
        st.error(f"{what}: {exc}")


def _shape_cell(shape: tuple[int, ...] | None) -> str:
    if shape:
        return "×".join(map(str, shape))
    return "scalar" if shape == () else ""


def node_rows(graph: Graph) -> list[dict[str, Any]]:
    return [
        {
            "id": n.id,
            "kind": n.kind,
            "label": n.label,
            "shape": _shape_cell(n.shape),
            "dtype": n.dtype or "",
            "module": n.module or "",
            "saved": ", ".join(s.describe() for s in n.saved),
        }
        for n in graph.nodes
    ]

"""The graph view component: Graphviz's SVG with pan, zoom, highlights and node clicks.

A Streamlit `st.components.v2` component whose HTML, CSS and JavaScript ship inside the
package (`gradviz/assets/graph_view/`). The server lays the graph out with the real `dot`
(cached), so the browser only shows the SVG and moves one CSS transform; a click sends
back the node's id (the `<title>` of its `<g class="node">`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib import resources

import streamlit as st

__all__ = ["graph_view", "COMPONENT_NAME"]

COMPONENT_NAME = "gradviz.graph_view"


def _asset(name: str) -> str:
    # Read as text and pass inline: it works from a wheel, a zip and an editable install
    # alike, without declaring the component in a pyproject manifest.
    return (resources.files("gradviz") / "assets" / "graph_view" / name).read_text(encoding="utf-8")


_COMPONENT = st.components.v2.component(
    COMPONENT_NAME,
    html=_asset("graph_view.html"),
    css=_asset("graph_view.css"),
    js=_asset("graph_view.js"),
)


def _noop() -> None:
    return None


def graph_view(
    svg: str,
    *,
    key: str,
    highlight: Iterable[str] = (),
    height: int = 700,
    selected: str | None = None,
    focus: str | None = None,
    on_click: Callable[[], None] | None = None,
) -> str | None:
    """Show `svg` (Graphviz output) zoomable and clickable; return the id clicked in this
    run, else None.

    highlight: drawn ids (SVG node titles) outlined in red, the rest dimmed. selected: the
    id outlined in blue. focus: an id to pan to when it changes. on_click: called before
    the script reruns after a click; read the id there from st.session_state[key]["click"].
    """
    if not isinstance(svg, str):
        raise TypeError(f"svg must be the SVG text from Graphviz, not {type(svg).__name__}")
    data = {
        "svg": svg,
        "highlight": list(dict.fromkeys(highlight)),
        "selected": selected,
        "focus": focus,
        "height": int(height),
    }
    result = _COMPONENT(key=key, data=data, height=int(height), on_click_change=on_click or _noop)
    return result.get("click") if result is not None else None

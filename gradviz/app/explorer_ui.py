"""Streamlit glue for the Graph page's explorer: cached traces, plans and layouts, the view
state (open modules, rolled blocks, breadcrumb) and selection in session state, the
inspector panel, the forward/backward link and the diff panel.

Everything here calls `gradviz.explorer` for the logic; layouts are cached on the DOT text
(`svg_of`), so a rerun that changes only the highlight never runs `dot` again.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import streamlit as st

from gradviz import explorer as ex
from gradviz.app import guard, node_rows, svg_of
from gradviz.app.graph_view import graph_view
from gradviz.draw.dot import to_dot
from gradviz.draw.export import layout
from gradviz.draw.items import DEFAULT_BUDGET, View
from gradviz.graph.model import Graph
from gradviz.graph.tracing import run_with_big_stack
from gradviz.zoo.sources import build_source

__all__ = [
    "MODES", "explored", "forward_of", "show_explorer", "show_node_table", "show_compare",
]

MODES = {"Backward (autograd)": "backward", "Forward (modules)": "forward"}
VIEW_KEY = "graph_view"
DIFF_KEY = "graph_diff_view"
_STATES = "gx.states"  # (source, seed, mode, depth, all) → ViewState
_SELECTION = "gx.selection"
# Drawing every node of a bigger graph makes `dot` run for minutes: offer DOT instead.
DRAW_ALL_LIMIT = 3000
STEPPER_LIMIT = 2000


@dataclass(frozen=True)
class Selection:
    source: str
    seed: int
    mode: str
    id: str


@dataclass(frozen=True)
class _Where:
    """What the current drawing shows: program, seed, mode and the depth/budget options."""

    source: str
    seed: int
    mode: str
    depth: int | None
    budget: int | None

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.source, self.seed, self.mode, self.depth, self.budget)


# -- cached data ----------------------------------------------------------------------
@st.cache_resource(max_entries=16, show_spinner="Tracing…")
def explored(source: str, seed: int = 0) -> tuple[Graph, dict[str, dict[str, ex.TensorStats]]]:
    """The program's graph and statistics of its saved tensors; frozen, shared by sessions."""

    def run() -> tuple[Graph, dict[str, dict[str, ex.TensorStats]]]:
        model, loss = build_source(source, seed)
        return ex.trace_with_stats(loss, model=model)

    return run_with_big_stack(run)


@st.cache_resource(max_entries=16, show_spinner=False)
def forward_of(source: str, seed: int = 0) -> ex.ForwardView:
    return ex.forward_view(explored(source, seed)[0])


def _graph(where: _Where) -> Graph:
    return (
        explored(where.source, where.seed)[0]
        if where.mode == "backward"
        else forward_of(where.source, where.seed).graph
    )


@st.cache_resource(max_entries=32, show_spinner="Finding repeated blocks…")
def _default_state(where: _Where) -> ex.ViewState:
    return ex.default_state(_graph(where), budget=where.budget, depth=where.depth)


def _skey(state: ex.ViewState) -> tuple[int, int, int, int]:
    # Streamlit would hash a state's thousands of paths on every call; Python caches the
    # hash of a frozenset, so this key costs nothing after the first use.
    return (len(state.expanded), hash(state.expanded), len(state.rolled), hash(state.rolled))


@st.cache_resource(max_entries=256, show_spinner=False)
def _plan(where: _Where, skey: tuple, _state: ex.ViewState) -> View:
    return ex.plan(_graph(where), _state, budget=where.budget)


@st.cache_data(max_entries=256, show_spinner=False)
def _dot(where: _Where, skey: tuple, _state: ex.ViewState, show_saved: bool, show_attrs: bool,
         cluster: bool) -> str:
    graph = _graph(where)
    colors = forward_of(where.source, where.seed).colors if where.mode == "forward" else None
    return to_dot(
        graph, _plan(where, skey, _state), show_saved=show_saved,
        show_attrs=show_attrs or where.mode == "forward", cluster=cluster, colors=colors,
    ).source


# -- session state --------------------------------------------------------------------
def _state(where: _Where) -> ex.ViewState:
    states = st.session_state.setdefault(_STATES, {})
    if where.key not in states:
        states[where.key] = _default_state(where)
    return states[where.key]


def _set_state(where: _Where, state: ex.ViewState) -> None:
    st.session_state.setdefault(_STATES, {})[where.key] = state


def _selection(where: _Where) -> Selection | None:
    sel = st.session_state.get(_SELECTION)
    if sel is None or (sel.source, sel.seed) != (where.source, where.seed):
        return None
    return sel


def _on_click(where: _Where) -> None:
    # Runs before the rerun, so the new drawing already shows the opened module.
    clicked = (st.session_state.get(VIEW_KEY) or {}).get("click")
    if not clicked:
        return
    st.session_state[_SELECTION] = Selection(where.source, where.seed, where.mode, clicked)
    if clicked.startswith(("mod/", "roll/")):
        _set_state(where, ex.expand(_state(where), clicked))


def _go_back(where: _Where, steps: int) -> None:
    _set_state(where, ex.back(_state(where), steps))


def _open(where: _Where, paths: list[str], mode: str | None = None) -> None:
    target = _Where(where.source, where.seed, mode or where.mode, where.depth, where.budget)
    state = _state(target)
    for p in paths:
        state = ex.expand(state, p)
    _set_state(target, state)
    if mode is not None:
        st.session_state["graph_mode"] = next(k for k, v in MODES.items() if v == mode)


# -- the explorer ---------------------------------------------------------------------
def _linked_ids(graph: Graph, sel: Selection, view: View | None) -> list[str]:
    """Autograd node ids the selection stands for (a node, a module, a rolled run)."""
    if sel.id.startswith(("mod/", "m/", "roll/")):
        return ex.autograd_nodes_of(graph, sel.id)
    if sel.id.startswith("fold/") and view is not None:
        item = next((i for i in view.items if i.id == sel.id), None)
        return list(item.members) if item else []
    return [sel.id] if sel.id in graph else []


def show_explorer(
    source: str, seed: int, mode: str, *, depth: int | None, draw_all: bool,
    show_saved: bool, show_attrs: bool, cluster: bool, stem: str, height: int = 680,
) -> None:
    """Search box, breadcrumb, the clickable graph, the inspector and the downloads.

    A fragment: a click, a search or a breadcrumb step reruns this panel alone, never the
    node table or the rest of the page.
    """
    graph = explored(source, seed)[0]
    if draw_all and len(graph) > DRAW_ALL_LIMIT:
        st.warning(f"{len(graph):,} nodes are too many to lay out in the page; showing the default "
                   "view. Download the DOT below to draw every node offline.")
        draw_all = False
    where = _Where(source, seed, mode, depth, None if draw_all else DEFAULT_BUDGET)
    _explorer(where, show_saved, show_attrs, cluster, stem, height)


@st.fragment
def _explorer(where: _Where, show_saved: bool, show_attrs: bool, cluster: bool, stem: str,
              height: int) -> None:
    with guard("Could not draw this view"):
        _explore(where, show_saved, show_attrs, cluster, stem, height)


def _explore(where: _Where, show_saved: bool, show_attrs: bool, cluster: bool, stem: str,
             height: int) -> None:
    graph, stats = explored(where.source, where.seed)
    fv = forward_of(where.source, where.seed) if where.mode == "forward" else None
    state = _state(where)
    skey = _skey(state)
    view = _plan(where, skey, state)
    dot = _dot(where, skey, state, show_saved, show_attrs, cluster)
    svg = svg_of(dot)

    query = st.text_input("Search ops, modules, parameters", key="graph_search",
                          placeholder="e.g. addmm, layers.3, conv1.weight, Linear")
    matches = ex.search(graph, query)
    to_items = (
        (lambda ids: ex.items_for(view, fv.nodes_for(ids)))
        if fv
        else (lambda ids: ex.items_for(view, ids))
    )
    highlight = to_items(matches)
    sel = _selection(where)
    if sel is not None and sel.mode != where.mode:  # the link: what was picked in the other view
        highlight = list(dict.fromkeys(highlight + to_items(_linked_ids(graph, sel, None))))
    _breadcrumb(where, state, query, matches, highlight)

    left, right = st.columns([3, 2])
    with left:
        graph_view(
            svg, key=VIEW_KEY, highlight=highlight, height=height,
            selected=sel.id if sel is not None and sel.mode == where.mode else None,
            focus=highlight[0] if highlight else _opened(view, state),
            on_click=functools.partial(_on_click, where),
        )
    with right:
        _inspector(where, graph, stats, sel, view)
    _downloads(stem, dot, svg, graph)


def _opened(view: View, state: ex.ViewState) -> str | None:
    """The first drawn item inside the module opened last, to pan there."""
    if not state.trail or state.trail[-1].startswith(("roll/", "close ")):
        return None
    path = state.trail[-1]
    return next(
        (
            i.id
            for i in view.items
            if i.module and (i.module == path or i.module.startswith(path + "."))
        ),
        None,
    )


def _breadcrumb(where: _Where, state: ex.ViewState, query: str, matches: list[str],
                highlight: list[str]) -> None:
    crumbs = ex.breadcrumb(state)
    shown = list(enumerate(crumbs))[-6:] if len(crumbs) > 1 else []
    cols = st.columns([1] * len(shown) + [4])
    for col, (i, label) in zip(cols, shown, strict=False):
        col.button(("⌂ " if i == 0 else "› ") + label, key=f"graph_crumb_{i}",
                   disabled=i == len(crumbs) - 1,
                   on_click=_go_back, args=(where, i), width="stretch")
    if query.strip():
        cols[-1].markdown(
            f'<div class="gradviz-search">{len(matches):,} nodes match '
            f'<code>{_html(query.strip())}</code> · '
            f"{len(highlight):,} drawn boxes highlighted</div>", unsafe_allow_html=True,
        )
        hidden = sorted(
            {m[4:] for m in highlight if m.startswith("mod/")}
            | {m for m in highlight if m.startswith("roll/")}
        )
        if hidden:
            cols[-1].button(f"Open the {len(hidden)} closed box{'es' if len(hidden) > 1 else ''} "
                            "holding matches",
                            key="graph_open_matches", on_click=_open, args=(where, hidden[:20]))


def _html(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, tuple | list):
        return "×".join(map(str, x)) or "scalar"
    return str(x)


def _stats_rows(named: list[tuple[str, dict[str, Any] | None]]) -> list[dict[str, str]]:
    keys = ("shape", "mean", "std", "min", "max", "norm")
    return [{"tensor": name, **{k: _fmt(s[k]) if s else "—" for k in keys}} for name, s in named]


def _inspector(where: _Where, graph: Graph, stats: dict, sel: Selection | None, view: View) -> None:
    if sel is None:
        st.info("Click a node to inspect it. Click a closed module (yellow) or a rolled run "
                "(orange) to open it.")
        return
    other = "forward" if where.mode == "backward" else "backward"
    if sel.mode != where.mode:
        st.caption(f"Selected in the {sel.mode} view; highlighted here.")
    try:
        info = ex.inspect(graph, sel.id, stats=stats, view=view if sel.mode == where.mode else None)
    except Exception as exc:  # noqa: BLE001 - e.g. a run id of the other view; say so, do not fail the page
        st.caption(f"Nothing to show for {sel.id}: {exc}")
        return
    shape = info.get("shape_text") or ", ".join(info.get("output_shapes", [])) or "—"
    st.markdown(
        f'<div class="gradviz-inspector" data-node="{_html(sel.id)}"><h4 '
        f'style="margin:0">{_html(str(info["label"]))}</h4><code>{_html(sel.id)}</code> · '
        f'{info["kind"]}'
        f'{" · in <code>" + _html(info["module"]) + "</code>" if info.get("module") else ""}'
        f"<br>shape <b>{_html(shape)}</b>"
        f"{' · ' + info['dtype'] if info.get('dtype') else ''}</div>",
        unsafe_allow_html=True,
    )
    if info["kind"] in ("module", "roll"):
        _module_panel(where, info, other)
    elif info["kind"] == "fold":
        st.write(f"A folded run of {len(info['members']):,} nodes:", info["ops"])
    else:
        stepper = _stepper(where, graph)
        if stepper is not None:
            info["gradients"] = ex.inspect(graph, sel.id, stepper)["gradients"]
        _node_panel(where, graph, info, other)


def _module_panel(where: _Where, info: dict[str, Any], other: str) -> None:
    st.markdown(f"**{info['module_type']}** · {info['nodes']:,} autograd nodes · "
                f"{info['param_count']:,} parameters")
    if info["kind"] == "roll":
        st.caption(f"{info['count']} blocks: {info['paths'][0]} … {info['paths'][-1]}")
    st.caption(f"in {', '.join(info['input_shapes']) or '—'} → out "
               f"{', '.join(info['output_shapes']) or '—'}")
    with st.expander(f"{len(info['ops'])} kinds of op"):
        st.dataframe([{"op": k, "count": v} for k, v in info["ops"].items()], hide_index=True)
    if info["params"]:
        with st.expander(f"{len(info['params'])} parameters"):
            st.dataframe(
                [{"parameter": p["name"], "shape": _fmt(p["shape"])} for p in info["params"][:200]],
                hide_index=True,
            )
    path = info["paths"][0] if info["kind"] == "roll" else info["module"]
    if st.button(f"Show its {info['nodes']:,} nodes in the {other} view", key="graph_show_other",
                 on_click=_open, args=(where, [path], other)):
        st.rerun()  # the view toggle lives outside this fragment


def _small_table(rows: list[dict[str, str]]) -> None:
    # A few rows of statistics: plain HTML draws at once, where an interactive grid per
    # table made every node click wait for its canvas (issue 14).
    st.table(rows, hide_index=True)


def _node_panel(where: _Where, graph: Graph, info: dict[str, Any], other: str) -> None:
    if info.get("grad_fn") and info["grad_fn"] != info["label"]:
        st.caption(f"autograd node {info['grad_fn']}")
    if info.get("value"):
        _small_table(_stats_rows([("value", info["value"])]))
    if info["saved"]:
        st.markdown("**Saved for backward**")
        _small_table(_stats_rows([(s["name"], s["stats"] or {
            "shape": s["shape"], "dtype": s["dtype"], "mean": None, "std": None, "min": None,
            "max": None, "norm": None}) for s in info["saved"]]))
    if info["attrs"]:
        st.caption(" · ".join(f"{k}={v}" for k, v in info["attrs"].items()))
    ins = ", ".join(f"{i['label']} ({i['id']})" for i in info["inputs"][:8])
    outs = ", ".join(f"{u['label']} ({u['id']})" for u in info["users"][:8])
    st.caption(f"inputs: {ins or '—'}  \nused by: {outs or '—'}")
    grads = info.get("gradients")
    if grads:
        st.markdown(f"**Backward step {grads['step'] + 1}**" + ("" if grads["agrees"] is None else
                    f" · NumPy check {'agrees' if grads['agrees'] else 'DISAGREES'}"))
        rows = [(f"grad_output {i}", g) for i, g in enumerate(grads["grad_outputs"])]
        rows += [
            (f"grad_input {i} → {t or '—'}", g)
            for i, (g, t) in enumerate(zip(grads["grad_inputs"], grads["to"], strict=False))
        ]
        if grads.get("grad"):
            rows.append((".grad", grads["grad"]))
        _small_table(_stats_rows(rows))
    if info.get("module") and st.button(f"Show module {info['module']} in the {other} view",
                                        key="graph_show_other",
                                        on_click=_open, args=(where, [info["module"]], other)):
        st.rerun()  # the view toggle lives outside this fragment


def _stepper(where: _Where, graph: Graph):
    if len(graph) > STEPPER_LIMIT:
        st.caption(f"Gradients: the recorded backward runs on programs up to {STEPPER_LIMIT:,} "
                   "nodes.")
        return None
    if not st.toggle("Gradients from a recorded backward (float64)", key="graph_grads"):
        return None
    from gradviz.app.backward_ui import stepper_for

    return stepper_for(where.source, where.seed)


# -- downloads, table, diff -----------------------------------------------------------
def _downloads(stem: str, dot: str, svg: str, graph: Graph) -> None:
    # PNG and JSON are made only when clicked: a 25k-node graph's JSON is megabytes.
    cols = st.columns(4)
    cols[0].download_button("DOT", dot, f"{stem}.dot", "text/vnd.graphviz", key="dl_dot")
    cols[1].download_button("SVG", svg, f"{stem}.svg", "image/svg+xml", key="dl_svg")
    cols[2].download_button("PNG", functools.partial(layout, dot, "png"), f"{stem}.png",
                            "image/png", key="dl_png")
    cols[3].download_button("JSON", functools.partial(_json_text, graph), f"{stem}.json",
                            "application/json", key="dl_json")


def _json_text(graph: Graph) -> str:
    return json.dumps(graph.to_json())


# A table of 25k rows is sent to the browser on every rerun, even folded away; the first
# rows are what a reader scans, and the JSON download holds every node.
TABLE_ROWS = 2_000


@st.cache_data(max_entries=8, show_spinner=False)
def _rows(source: str, seed: int) -> list[dict[str, Any]]:
    return node_rows(explored(source, seed)[0])[:TABLE_ROWS]


def show_node_table(source: str, seed: int) -> None:
    graph = explored(source, seed)[0]
    with st.expander(f"Node table ({len(graph):,} nodes)"):
        if len(graph) > TABLE_ROWS:
            st.caption(f"The first {TABLE_ROWS:,} nodes; the JSON download holds all "
                       f"{len(graph):,}.")
        st.dataframe(_rows(source, seed), hide_index=True, width="stretch")


@st.cache_resource(max_entries=16, show_spinner="Comparing the two runs…")
def _diff(a: str, seed_a: int, b: str, seed_b: int) -> ex.GraphDiff:
    return ex.diff(explored(a, seed_a)[0], explored(b, seed_b)[0])


@st.cache_data(max_entries=32, show_spinner=False)
def _diff_dot(a: str, seed_a: int, b: str, seed_b: int) -> str:
    d = _diff(a, seed_a, b, seed_b)
    state = ex.default_state(d.graph, roll=False)
    view = ex.plan(d.graph, state)
    return to_dot(d.graph, view, colors=ex.diff_item_colors(view, d),
                  title="green: only in B · red: only in A").source


def show_compare(sources: dict[str, str], label: str, seed: int) -> None:
    """Diff this program (run A) against another seed or program (run B)."""
    with st.expander("Compare with another seed or program"):
        cols = st.columns([3, 1, 1])
        other = cols[0].selectbox("Program B", list(sources), index=list(sources).index(label),
                                  key="graph_cmp_source")
        seed_b = cols[1].number_input("Seed B", 0, 10_000, seed + 1, key="graph_cmp_seed")
        on = cols[2].toggle("Show diff", key="graph_cmp_on")
        if not on:
            st.caption("Run A is the program above; B differs by seed (e.g. dynamic-net's random "
                       "depth) or program.")
            return
        d = _diff(sources[label], seed, sources[other], int(seed_b))
        m = st.columns(3)
        for col, (name, value) in zip(m, d.summary().items(), strict=True):
            col.metric(name, f"{value:,}")
        st.markdown(f'<div class="gradviz-diff">{_html(str(d))}</div>', unsafe_allow_html=True)
        graph_view(svg_of(_diff_dot(sources[label], seed, sources[other], int(seed_b))),
                   key=DIFF_KEY, height=520)

"""Streamlit glue for the Backward page: cached steppers, the controls, the step panel, the
gradient heatmaps and the mini-map (their data and specs come from gradviz.backward)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np
import streamlit as st

from gradviz.app import MODEL_KEY, svg_of
from gradviz.app.graph_view import graph_view
from gradviz.backward.flowview import minimap_spec, weigh_edges
from gradviz.backward.gradview import (
    as_matrix,
    exact,
    heatmap_spec,
    pooled,
    slice_dims,
    symmetric_limit,
    worst_entries,
)
from gradviz.backward.numbers import MAX_ELEMENTS, formula_lines, numbers_latex
from gradviz.backward.stepper import PROGRESS_COLORS, BackwardStepper, ErrorCheck, Step
from gradviz.zoo.sources import step_model, step_source, whole_network_check

__all__ = [
    "BUILT", "controls", "coverage_badge", "legend_markdown", "program_choices",
    "show_gradients", "show_graph", "show_minimap", "show_numbers", "show_param_table",
    "show_step",
    "step_keys", "stepper_for", "stepper_for_choice",
]


@st.cache_resource(max_entries=16, show_spinner="Running backward and the NumPy checks…")
def stepper_for(source: str, seed: int = 0) -> BackwardStepper:
    """A recorded backward in float64; plain data once built, so sessions can share it."""
    return step_source(source, seed)


BUILT = "built:"  # source key prefix of the model handed over by the Build & Train page


def program_choices(labels: dict[str, str]) -> dict[str, str]:
    """The programs to pick from: the Build page's model first when there is one."""
    built = st.session_state.get(MODEL_KEY)
    if not built:
        return labels
    what = built.get("spec") or built.get("preset")
    return {f"Built on Build & Train: {what}": BUILT + str(id(built["model"])), **labels}


def stepper_for_choice(source: str, seed: int) -> BackwardStepper:
    if not source.startswith(BUILT):
        return stepper_for(source, seed)
    built = st.session_state[MODEL_KEY]
    memo = st.session_state.setdefault("bw_built_steppers", {})
    key = (source, seed)
    if key not in memo:
        memo.clear()  # one built model at a time per session
        memo[key] = step_model(built["model"], built["preset"], seed)
    return memo[key]


def jump_to_clicked(stepper: BackwardStepper) -> None:
    """Click handler of the Backward page's graph: go to the step of the clicked node."""
    clicked = (st.session_state.get("bw_graph") or {}).get("click")
    pos = stepper.position_of(clicked) if isinstance(clicked, str) else None
    if pos is not None:
        st.session_state.bw_pos = pos


def legend_markdown() -> str:
    return " ".join(
        f'<span style="background:{c};padding:2px 6px;border-radius:4px;margin-right:4px">'
        f"{k}</span>"
        for k, c in PROGRESS_COLORS.items()
    )


def coverage_badge(stepper: BackwardStepper) -> None:
    summary = stepper.summary()
    cover = summary["coverage"]
    colour = "green" if cover == 1.0 else ("orange" if cover >= 0.95 else "red")
    agree = f"{summary['agreeing']}/{summary['numpy'] + summary['finite_differences']} agree"
    worst = summary["worst_check"]
    # The number beside "agree" is the measure that decided the closest call.
    closest = "" if worst is None else (
        f" :gray-badge[closest: {worst['node']}, {_check_text(worst)}]")
    st.markdown(f":{colour}-badge[NumPy coverage {cover:.0%}] :gray-badge[{agree}]{closest}")


def _check_text(worst: dict[str, Any]) -> str:
    return str(ErrorCheck(worst["measure"], worst["value"], worst["bound"]))


def _shape(arr: Any) -> str:
    if arr is None:
        return "—"
    return "scalar" if np.ndim(arr) == 0 else "×".join(map(str, np.shape(arr)))


_KEYS = st.components.v2.component(
    "gradviz.step_keys",
    html='<span class="gradviz-step-keys"></span>',
    js=(resources.files("gradviz") / "assets" / "step_keys" / "step_keys.js").read_text("utf-8"),
)


def step_keys(prev_key: str, next_key: str) -> None:
    """← and → press the buttons with these widget keys (the script is local, no CDN)."""
    _KEYS(key="bw_keys", data={"prev": prev_key, "next": next_key}, height=0)


def _move(delta: int, n: int) -> None:
    st.session_state.bw_pos = min(n - 1, max(0, st.session_state.bw_pos + delta))


def controls(stepper: BackwardStepper) -> int:
    """Previous/Next (also ← →), the step slider and Run-to-breakpoint; the position."""
    n = len(stepper)
    cols = st.columns([1, 1, 3, 2, 1])
    # Callbacks move the position before the rerun draws the buttons, so each button's
    # disabled state is already that of the new step (← must work right after →).
    cols[0].button("◀ Previous", key="bw_prev", disabled=st.session_state.bw_pos == 0,
                   help="or press ←", on_click=_move, args=(-1, n))
    cols[1].button("Next ▶", key="bw_next", disabled=st.session_state.bw_pos >= n - 1,
                   help="or press →", on_click=_move, args=(1, n))
    step_keys("bw_prev", "bw_next")
    target = cols[3].text_input("Breakpoint: op or module", key="bw_break",
                                placeholder="e.g. Convolution or fc1")
    if cols[4].button("Run to", key="bw_run") and target:
        start = st.session_state.bw_pos + 1
        found = stepper.find(label=target, start=start)
        found = found if found is not None else stepper.find(module=target, start=start)
        if found is None:
            st.error(f"No later step matches {target!r}: type part of an op name (Addmm) "
                     "or a module path (fc1).")
        else:
            st.session_state.bw_pos = found
    pos = st.session_state.bw_pos
    # The slider's key follows the position, so the buttons and keys can move it.
    pos = cols[2].slider("Step", 1, n, pos + 1, key=f"bw_slider_{pos}") - 1
    st.session_state.bw_pos = pos
    return pos


def _jump_to_picked() -> None:
    picked = (st.session_state.get("bw_minimap") or {}).get("selection", {}).get("pick") or []
    if picked and "step" in picked[0]:
        st.session_state.bw_pos = int(picked[0]["step"]) - 1


def show_minimap(stepper: BackwardStepper, pos: int) -> None:
    """The whole backward as a strip of steps; click one to go there."""
    spec = minimap_spec(stepper, pos)
    spec["params"] = [{"name": "pick", "select": {"type": "point", "fields": ["step"],
                                                   "on": "click", "clear": False}}]
    st.vega_lite_chart(spec, key="bw_minimap", on_select=_jump_to_picked,
                       selection_mode="pick", width="stretch")


def show_graph(stepper: BackwardStepper, pos: int) -> None:
    """The graph coloured by progress, edges weighted by the gradient norm so far."""
    step = stepper[pos]
    dot = stepper.graph.to_dot(colors=stepper.colors_at(pos), highlight=[step.node.id],
                               legend=False)
    # Centred on the current node; a click on a node jumps to its step.
    graph_view(svg_of(weigh_edges(dot.source, stepper, pos)), key="bw_graph",
               selected=step.node.id, focus=step.node.id, height=640,
               on_click=lambda: jump_to_clicked(stepper))
    st.markdown(legend_markdown() + " · edge width: gradient norm carried so far (log scale)",
                unsafe_allow_html=True)


def _edge_names(step: Step, stepper: BackwardStepper) -> tuple[str | None, ...]:
    return tuple(stepper.graph.node(n).label if n else None for n in step.next_ids)


def show_step(step: Step, stepper: BackwardStepper) -> None:
    node = step.node
    st.subheader(f"Step {step.index + 1}/{len(stepper)}: {node.label}")
    where = f" in module <code>{node.module}</code>" if node.module else ""
    st.markdown(f'<div class="gradviz-current" data-node="{node.id}">node '
                f"<code>{node.id}</code>{where} · kind {node.kind}</div>", unsafe_allow_html=True)
    if step.summed:
        st.info(f"Gradients summed here: {step.summed}.")
    if step.formula:
        st.latex(r"\begin{gathered}" + r" \\ ".join(formula_lines(step.formula))
                 + r"\end{gathered}")
    if step.reference_kind:
        ok = "agrees" if step.agrees else "DISAGREES"
        st.markdown(
            f'<div class="gradviz-check">NumPy check ({step.reference_kind}): {ok} — '
            f"{step.check} · max abs error {step.max_abs_error:.2e}, "
            f"max rel error {step.max_rel_error:.2e}</div>", unsafe_allow_html=True)
    elif node.kind == "op":
        st.warning("No NumPy reference for this op yet.")


def show_numbers(step: Step, stepper: BackwardStepper) -> None:
    """The formula again with this step's numbers, where its tensors are small."""
    lines = numbers_latex(step, _edge_names(step, stepper))
    if not lines:
        st.caption(f"This step's tensors have more than {MAX_ELEMENTS} entries: their "
                   "numbers are in the heatmaps below.")
        return
    st.markdown("**With this step's numbers** (4 significant digits; every digit under "
                "*Full-precision values*)")
    # A long row of numbers scrolls sideways instead of being cut at the column's edge.
    st.html("<style>.stMarkdown .katex-display{overflow-x:auto;overflow-y:hidden}</style>")
    for line in lines:
        st.latex(line)


def _slice(shape: tuple[int, ...], key: str) -> tuple[int, ...]:
    """A selector per leading axis of a tensor with more than two."""
    lead = slice_dims(shape)
    if not lead:
        return ()
    cols = st.columns(min(len(lead), 4) + 1)
    cols[0].caption(f"shape {'×'.join(map(str, shape))}: pick the matrix [i, …, :, :]")
    return tuple(int(cols[1 + d % 4].number_input(f"axis {d} (0–{n - 1})", 0, n - 1, 0,
                                                  key=f"{key}_ax{d}"))
                 for d, n in enumerate(lead))


def _heatmap(col: Any, mat: np.ndarray, title: str, limit: float, key: str) -> None:
    p = pooled(mat)
    if not p.exact:
        title += f" · {mat.shape[0]}×{mat.shape[1]} in blocks, largest |entry| each"
    # The keyed container gives the chart a stable class (st-key-…) to find it by.
    col.container(key=key).vega_lite_chart(heatmap_spec(p, limit=limit, title=title),
                                           width="content")


def _show_edge(head: str, g: np.ndarray, ref: np.ndarray | None, key: str) -> None:
    st.markdown(head)
    index = _slice(np.shape(g), key)
    t = as_matrix(g, index)
    if ref is None or np.shape(ref) != np.shape(g):
        _heatmap(st, t, "torch", symmetric_limit(t), key + "_t")
        return
    r = as_matrix(ref, index)
    diff = t - r
    cols = st.columns(3)
    limit = symmetric_limit(t, r)  # one scale for both, so equal colours mean equal values
    _heatmap(cols[0], t, "torch", limit, key + "_t")
    _heatmap(cols[1], r, "NumPy (same scale)", limit, key + "_n")
    dmax = float(np.max(np.abs(diff))) if diff.size else 0.0
    _heatmap(cols[2], diff, f"torch − NumPy (own scale, max {dmax:.1e})",
             symmetric_limit(diff), key + "_d")
    # Built only while open: thousands of exact rows per edge, sent and drawn at every
    # step even folded away, made a step click take seconds (issue 14).
    box = st.expander("Full-precision values", key=key + "_exact", on_change="rerun")
    if box.open:
        with box:
            st.caption("Where torch and NumPy differ most (every digit, whole tensor):")
            st.table(worst_entries(g, ref))
            _exact_table(t, r)


_EXACT_CELLS = 4096  # entries of a matrix listed with every digit


def _exact_table(t: np.ndarray, r: np.ndarray) -> None:
    flat_t, flat_r = t.reshape(-1)[:_EXACT_CELLS], r.reshape(-1)[:_EXACT_CELLS]
    cols = t.shape[1]
    pairs = enumerate(zip(flat_t, flat_r, strict=True))
    rows = [{"entry": f"[{k // cols}, {k % cols}]", "torch": exact(a), "NumPy": exact(b),
             "torch − NumPy": exact(a - b)} for k, (a, b) in pairs]
    more = "" if t.size <= _EXACT_CELLS else f" (first {_EXACT_CELLS} of {t.size})"
    st.caption(f"This matrix, entry by entry{more}:")
    st.dataframe(rows, hide_index=True, height=240)


def show_gradients(step: Step, stepper: BackwardStepper) -> None:
    """Each gradient the step sent: torch, NumPy and their difference as heatmaps."""
    names = _edge_names(step, stepper)
    incoming = next((g for g in step.grad_outputs if g is not None), None)
    if not step.grad_inputs:
        st.markdown("**A parameter or input**: the incoming gradient is accumulated into "
                    "`.grad`.")
        if incoming is not None:
            _show_edge(f"**grad_output** · shape {_shape(incoming)}", incoming, None,
                       f"bw_in_{step.index}")
        return
    box = st.expander(f"Incoming gradient (grad_output) · shape {_shape(incoming)}",
                      key=f"bw_in_{step.index}_open", on_change="rerun")
    if box.open and incoming is not None:  # drawn only when asked for, as above
        with box:
            _show_edge("", incoming, None, f"bw_in_{step.index}")
    for i, g in enumerate(step.grad_inputs):
        if g is None:
            continue
        ref = None if step.reference is None or i >= len(step.reference) else step.reference[i]
        to = names[i] if i < len(names) and names[i] else "edge"
        _show_edge(f"**grad_input {i}** → {to} · shape {_shape(g)}", g, ref,
                   f"bw_e_{step.index}_{i}")


@st.cache_data(max_entries=32, show_spinner="Whole-network NumPy backprop…")
def _whole_network(source: str, seed: int) -> list[dict] | None:
    rows = whole_network_check(source, seed)
    keep = ("name", "shape", "max_abs_diff", "max_rel_diff")
    return None if rows is None else [{k: r[k] for k in keep} for r in rows]


def show_param_table(stepper: BackwardStepper, source: str, seed: int) -> None:
    """Each parameter's gradient: torch beside a whole-network NumPy backprop."""
    rows = None if source.startswith(BUILT) else _whole_network(source, seed)
    if rows is None:
        st.caption("Whole-network NumPy backprop runs on the presets (their data is known); "
                   "for this program the per-node checks above are the reference.")
        st.dataframe([{"parameter": k, "shape": _shape(v),
                       "|grad| max": float(np.max(np.abs(v))) if v.size else 0.0}
                      for k, v in stepper.param_grads.items()], hide_index=True)
        return
    st.caption("torch.autograd vs a NumPy forward and backward written layer by layer "
               "(float64, dropout off, first 8 samples of the preset's data).")
    st.dataframe(
        [{"parameter": r["name"], "shape": "×".join(map(str, r["shape"])),
          "max |torch − NumPy|": r["max_abs_diff"], "relative": r["max_rel_diff"]} for r in rows],
        hide_index=True,
    )

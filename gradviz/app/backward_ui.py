"""Streamlit glue for the Backward page: cached steppers and the step panel."""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from gradviz.app import MODEL_KEY
from gradviz.backward.stepper import PROGRESS_COLORS, BackwardStepper, Step
from gradviz.zoo.sources import step_model, step_source, whole_network_check

__all__ = ["BUILT", "program_choices", "stepper_for", "stepper_for_choice", "show_step", "show_param_table", "legend_markdown", "coverage_badge"]

_MAX_CELLS = 12  # rows/columns of a gradient shown as numbers


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
        f'<span style="background:{c};padding:2px 6px;border-radius:4px;margin-right:4px">{k}</span>'
        for k, c in PROGRESS_COLORS.items()
    )


def coverage_badge(stepper: BackwardStepper) -> None:
    summary = stepper.summary()
    colour = "green" if summary["coverage"] == 1.0 else ("orange" if summary["coverage"] >= 0.95 else "red")
    agree = f"{summary['agreeing']}/{summary['numpy'] + summary['finite_differences']} agree"
    st.markdown(f":{colour}-badge[NumPy coverage {summary['coverage']:.0%}] :gray-badge[{agree}]")


def _table(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a[:_MAX_CELLS].reshape(1, -1)
    a = a.reshape(-1, a.shape[-1])
    return a[:_MAX_CELLS, :_MAX_CELLS]


def _shape(arr: Any) -> str:
    return "—" if arr is None else ("scalar" if np.ndim(arr) == 0 else "×".join(map(str, np.shape(arr))))


def _show_grads(title: str, torch_grads: tuple, numpy_grads: tuple | None, names: tuple) -> None:
    for i, g in enumerate(torch_grads):
        if g is None:
            continue
        ref = None if numpy_grads is None or i >= len(numpy_grads) else numpy_grads[i]
        head = f"**{title} {i}** → {names[i] if i < len(names) and names[i] else 'edge'} · shape {_shape(g)}"
        st.markdown(head + ("" if np.size(g) <= _MAX_CELLS**2 else " (first rows/columns)"))
        cols = st.columns(3 if ref is not None else 1)
        cols[0].caption("torch")
        cols[0].dataframe(_table(g), hide_index=True)
        if ref is not None and np.shape(ref) == np.shape(g):
            cols[1].caption("NumPy")
            cols[1].dataframe(_table(ref), hide_index=True)
            cols[2].caption("|torch − NumPy|")
            cols[2].dataframe(_table(np.abs(np.asarray(g) - np.asarray(ref))), hide_index=True)


def show_step(step: Step, stepper: BackwardStepper) -> None:
    node = step.node
    st.subheader(f"Step {step.index + 1}/{len(stepper)}: {node.label}")
    st.markdown(
        f'<div class="gradviz-current" data-node="{node.id}">node <code>{node.id}</code>'
        f"{' in module <code>' + node.module + '</code>' if node.module else ''} · kind {node.kind}</div>",
        unsafe_allow_html=True,
    )
    if step.summed:
        st.info(f"Gradients summed here: {step.summed}.")
    if step.formula:
        st.latex(step.formula)
        shapes = ", ".join(_shape(g) for g in step.grad_outputs if g is not None)
        st.caption(f"incoming gradient shape {shapes or '—'}; outgoing: " + ", ".join(_shape(g) for g in step.grad_inputs))
    if step.reference_kind:
        ok = "agrees" if step.agrees else "DISAGREES"
        st.markdown(
            f'<div class="gradviz-check">NumPy check ({step.reference_kind}): {ok} — '
            f"max abs error {step.max_abs_error:.2e}, max rel error {step.max_rel_error:.2e}</div>",
            unsafe_allow_html=True,
        )
    elif node.kind == "op":
        st.warning("No NumPy reference for this op yet.")
    names = tuple(stepper.graph.node(n).label if n else None for n in step.next_ids)
    with st.expander("Incoming gradients (grad_outputs)", expanded=False):
        _show_grads("grad_output", step.grad_outputs, None, ())
    with st.expander("Outgoing gradients (grad_inputs): torch vs NumPy", expanded=True):
        if step.grad_inputs:
            _show_grads("grad_input", step.grad_inputs, step.reference, names)
        else:
            st.write("A parameter: the incoming gradient is accumulated into `.grad`.")


@st.cache_data(max_entries=32, show_spinner="Whole-network NumPy backprop…")
def _whole_network(source: str, seed: int) -> list[dict] | None:
    rows = whole_network_check(source, seed)
    return None if rows is None else [{k: r[k] for k in ("name", "shape", "max_abs_diff", "max_rel_diff")} for r in rows]


def show_param_table(stepper: BackwardStepper, source: str, seed: int) -> None:
    """Each parameter's gradient: torch beside a whole-network NumPy backprop."""
    rows = None if source.startswith(BUILT) else _whole_network(source, seed)
    if rows is None:
        st.caption("Whole-network NumPy backprop runs on the presets (their data is known); "
                   "for this program the per-node checks above are the reference.")
        st.dataframe([{"parameter": k, "shape": _shape(v), "|grad| max": float(np.max(np.abs(v))) if v.size else 0.0}
                      for k, v in stepper.param_grads.items()], hide_index=True)
        return
    st.caption("torch.autograd vs a NumPy forward and backward written layer by layer "
               "(float64, dropout off, first 8 samples of the preset's data).")
    st.dataframe(
        [{"parameter": r["name"], "shape": "×".join(map(str, r["shape"])),
          "max |torch − NumPy|": r["max_abs_diff"], "relative": r["max_rel_diff"]} for r in rows],
        hide_index=True,
    )

"""Build & Train's gradient flow section: what the run's gradients did, per layer and step.

While a run trains, `LiveViews` redraws the flow so far and the network unit by unit (for
2-D inputs) at most once a `LIVE_EVERY`, from copies: `GradientFlow.snapshot()` of the
recorder and `Job.live.copy()` of the network, so nothing the page runs touches the
training thread's state. A click on a layer of the finished run's heatmap opens the
Backward page at that layer's parameter (`open_backward_if_asked`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import streamlit as st

from gradviz.app import MODEL_KEY
from gradviz.app.backward_ui import program_choices, stepper_for_choice
from gradviz.train.flow import GradientFlow
from gradviz.train.flow_view import PICK, flow_chart
from gradviz.train.jobs import Job, network_picture

__all__ = [
    "LIVE_EVERY", "LiveViews", "show_flow", "show_training_views", "open_backward_if_asked",
]

# Redrawing the flow chart and the neuron view costs ~30-80 ms: once a second is enough.
LIVE_EVERY = 1.0
_UNITS_CAPTION = ("Each unit's output over the input plane (blue +, orange −); edges are "
                  "the weights: blue positive, orange negative, thicker for larger ones.")
_PICK_KEY = "bt_flow_pick"
_GOTO = "bt_goto_layer"
BACKWARD_PAGE = "pages/3_Backward.py"


class LiveViews:
    """The flow so far and the network unit by unit, redrawn while `job` trains.

    Each keyed container is made once per script run (a key may appear only once); a
    redraw replaces the contents of the `st.empty` inside it. Create it where the views go,
    call `update` from the page's follow loop.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self._flow = st.container(key="bt_flow_live").empty()
        self._units = st.container(key="bt_units_live").empty() if job.live.enabled else None
        self._drawn = -math.inf

    def update(self) -> None:
        now = time.perf_counter()
        if now - self._drawn < LIVE_EVERY:
            return
        self._drawn = now
        flow = self.job.flow.snapshot()  # one consistent state, away from the recorder
        if len(flow.records) >= 2:
            with self._flow.container():
                st.caption(f"Gradient flow so far: {len(flow.records)} recorded of "
                           f"{flow.steps_seen:,} steps (log scale){_widened(flow)}")
                st.altair_chart(flow_chart(flow), width="stretch")
                for d in flow.diagnose():
                    st.warning(str(d))
        got = self.job.live.copy() if self._units is not None else None
        if got is None or self._units is None or self.job.data is None:
            return
        png = network_picture(got[1], self.job.data)
        if png is not None:
            self._units.image(png, width="content",
                              caption=f"The network at step {got[0]:,}. {_UNITS_CAPTION}")


def _widened(flow: GradientFlow) -> str:
    """Why a fast network's run has fewer records: the budget widened the stride."""
    if flow.stride <= flow.every or flow.budget is None:
        return ""
    return (f", now one step in {flow.stride:,}: recording is kept under "
            f"{flow.budget:.0%} of the training time")


def show_training_views(run: Any) -> None:
    """Below the curve and the picture: the network TF-Playground style (2-D inputs) and
    the run's gradient flow."""
    if run.network_png is not None:
        st.markdown("**The network, unit by unit**")
        st.container(key="bt_network_picture").image(
            run.network_png, width="content", caption=_UNITS_CAPTION)
    if run.flow is not None:
        show_flow(run.flow)


def show_flow(flow: GradientFlow) -> None:
    """The run's gradient flow: a layers × steps heatmap with per-layer lines, and what
    the diagnoses say (each names the layer and the fix). A click on a layer's row opens
    the Backward page there."""
    with st.expander("Gradient flow over this run", expanded=True):
        st.caption(f"Gradient norm of each parameter at {len(flow.records)} of "
                   f"{flow.steps_seen:,} steps (log scale){_widened(flow)}; hover for the "
                   "numbers, click a layer to step through its backward.")
        st.container(key="bt_flow").altair_chart(
            flow_chart(flow, pick=True), width="stretch", key=_PICK_KEY,
            on_select=_picked, selection_mode=PICK)
        problems = flow.diagnose()
        for d in problems:
            st.warning(str(d))
        if not problems:
            st.success("No vanishing, exploding or dead gradients, and no too-large steps.")


def _picked() -> None:
    """on_select of the heatmap: remember the clicked layer for the page run it starts
    (a callback cannot switch pages itself)."""
    event = st.session_state.get(_PICK_KEY) or {}
    points = (event.get("selection") or {}).get(PICK) or []
    layer = points[0].get("layer") if points else None
    if isinstance(layer, str):
        st.session_state[_GOTO] = layer


def open_backward_if_asked() -> None:
    """After a heatmap click: the Backward page on the handed-over model, at the step of the
    clicked parameter (its breakpoint box filled with the layer's module)."""
    layer = st.session_state.pop(_GOTO, None)
    if layer is None or not st.session_state.get(MODEL_KEY):
        return
    (label, source), *_ = program_choices({}).items()
    ss = st.session_state
    seed = int(ss.get("bw_seed", 0))
    stepper = stepper_for_choice(source, seed)  # kept in the session: Backward reuses it
    pos = next((s.index for s in stepper if s.node.kind == "param" and s.node.label == layer),
               None)
    module = layer.rpartition(".")[0]
    found = stepper.find(module=module) if pos is None and module else None
    ss.bw_source, ss.bw_for = label, (label, seed)
    ss.bw_pos = pos if pos is not None else (found or 0)
    ss.bw_break = module or layer
    st.switch_page(BACKWARD_PAGE)

"""Build & Train's gradient flow section: what the run's gradients did, per layer and step."""

from __future__ import annotations

from typing import Any

import streamlit as st

from gradviz.train.flow import GradientFlow
from gradviz.train.flow_view import flow_chart

__all__ = ["show_flow", "show_training_views"]


def show_training_views(run: Any) -> None:
    """Below the curve and the picture: the network TF-Playground style (2-D inputs) and
    the run's gradient flow."""
    if run.network_png is not None:
        st.markdown("**The network, unit by unit**")
        st.container(key="bt_network_picture").image(
            run.network_png, width="content",
            caption="Each unit's output over the input plane (blue +, orange −); edges are "
                    "the weights: blue positive, orange negative, thicker for larger ones.")
    if run.flow is not None:
        show_flow(run.flow)


def show_flow(flow: GradientFlow) -> None:
    """The run's gradient flow: a layers × steps heatmap with per-layer lines, and what
    the diagnoses say (each names the layer and the fix)."""
    with st.expander("Gradient flow over this run", expanded=True):
        st.caption(f"Gradient norm of each parameter at {len(flow.records)} of "
                   f"{flow.steps_seen:,} steps (log scale); hover for the numbers.")
        st.container(key="bt_flow").altair_chart(flow_chart(flow), width="stretch")
        problems = flow.diagnose()
        for d in problems:
            st.warning(str(d))
        if not problems:
            st.success("No vanishing, exploding or dead gradients, and no too-large steps.")

"""Backward page: step through backward node by node, each step checked against NumPy."""

import streamlit as st

from gradviz.app import guard, svg_of
from gradviz.app.backward_ui import (
    coverage_badge,
    jump_to_clicked,
    legend_markdown,
    program_choices,
    show_param_table,
    show_step,
    stepper_for_choice,
)
from gradviz.app.graph_view import graph_view
from gradviz.zoo.sources import source_labels

st.set_page_config(page_title="gradviz · Backward", layout="wide")
st.title("Step through backward")

sources = program_choices(source_labels(include_big=False))
with st.sidebar:
    label = st.selectbox("Program (float64)", list(sources), index=list(sources.values()).index("preset:mnist-cnn"), key="bw_source")
    seed = st.number_input("Seed", 0, 10_000, 0, key="bw_seed")

stepper = None
with guard("Could not run backward on this program"):
    stepper = stepper_for_choice(sources[label], int(seed))
if stepper is not None:
    if st.session_state.get("bw_for") != (label, seed):
        st.session_state.bw_for, st.session_state.bw_pos = (label, seed), 0
    coverage_badge(stepper)

    @st.fragment
    def walk() -> None:
        n = len(stepper)
        cols = st.columns([1, 1, 3, 2, 1])
        if cols[0].button("◀ Previous", key="bw_prev", disabled=st.session_state.bw_pos == 0):
            st.session_state.bw_pos -= 1
        if cols[1].button("Next ▶", key="bw_next", disabled=st.session_state.bw_pos >= n - 1):
            st.session_state.bw_pos += 1
        target = cols[3].text_input("Breakpoint: op or module", key="bw_break", placeholder="e.g. Convolution or fc1")
        if cols[4].button("Run to", key="bw_run") and target:
            found = stepper.find(label=target, start=st.session_state.bw_pos + 1)
            found = found if found is not None else stepper.find(module=target, start=st.session_state.bw_pos + 1)
            if found is None:
                st.error(f"No later step matches {target!r}: type part of an op name (Addmm) or a module path (fc1).")
            else:
                st.session_state.bw_pos = found
        pos = cols[2].slider("Step", 1, n, st.session_state.bw_pos + 1, key=f"bw_slider_{st.session_state.bw_pos}") - 1
        st.session_state.bw_pos = pos
        step = stepper[pos]
        left, right = st.columns([3, 2])
        with left:
            dot = stepper.graph.to_dot(colors=stepper.colors_at(pos), highlight=[step.node.id], legend=False)
            # Centred on the current node; a click on a node jumps to its step.
            graph_view(svg_of(dot.source), key="bw_graph", selected=step.node.id, focus=step.node.id,
                       height=640, on_click=lambda: jump_to_clicked(stepper))
            st.markdown(legend_markdown(), unsafe_allow_html=True)
        with right:
            show_step(step, stepper)

    walk()
    with st.expander("Parameter gradients: torch vs whole-network NumPy backprop"):
        show_param_table(stepper, sources[label], int(seed))

"""Backward page: step through backward node by node, each step checked against NumPy."""

import streamlit as st

from gradviz.app import backward_ui as ui
from gradviz.app import guard, keep_navigation, play_ui
from gradviz.zoo.sources import source_labels

keep_navigation()

st.set_page_config(page_title="gradviz · Backward", layout="wide")
st.title("Step through backward")
st.caption("Backward run node by node in the engine's order, each gradient checked against "
           "NumPy. Try first: press → (or Next ▶) and watch the gradient flow up the graph.")

sources = ui.program_choices(source_labels(include_big=False))
with st.sidebar:
    default = list(sources.values()).index("preset:mnist-cnn")
    label = st.selectbox("Program (float64)", list(sources), index=default, key="bw_source")
    st.caption(label.split(" — ", 1)[-1])  # the whole description, cut in the box above
    seed = st.number_input("Seed", 0, 10_000, 0, key="bw_seed")

stepper = None
with guard("Could not run backward on this program"):
    stepper = ui.stepper_for_choice(sources[label], int(seed))
if stepper is not None:
    if st.session_state.get("bw_for") != (label, seed):
        st.session_state.bw_for, st.session_state.bw_pos = (label, seed), 0
    ui.coverage_badge(stepper)

    @st.fragment
    def walk() -> None:
        pos = ui.controls(stepper)
        minimap = st.container()
        left, right = st.columns([3, 2])
        # The step's own details are sent first, so they show before the drawings redraw.
        with right:
            ui.show_step(stepper[pos], stepper)
        with left:
            ui.show_graph(stepper, pos)
        with minimap:
            ui.show_minimap(stepper, pos)
        ui.show_numbers(stepper[pos], stepper)
        ui.show_gradients(stepper[pos], stepper)

    play_ui.show_play(stepper, sources[label], int(seed))
    walk()
    with st.expander("Parameter gradients: torch vs whole-network NumPy backprop"):
        ui.show_param_table(stepper, sources[label], int(seed))

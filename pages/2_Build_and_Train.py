"""Build & Train page: pick a preset or edit its layer list, train it live, see what it learned."""

import streamlit as st

from gradviz.app import build_ui as ui
from gradviz.app import flow_ui, keep_navigation

keep_navigation()

st.set_page_config(page_title="gradviz · Build & Train", layout="wide")
st.title("Build & train")
st.caption("Build a network from a preset or a layer list and train it here. "
           "Try first: press Train and watch the loss fall.")
ui.init_state()
flow_ui.open_backward_if_asked()  # a click on a layer of the gradient flow heatmap

preset, seed, log = ui.sidebar()
st.caption(f"**{preset.name}** — {preset.description}. Loss: {preset.loss_name}.")

net_col, train_col = st.columns([3, 2], gap="large")
with net_col:
    network, spec = ui.network_panel(preset, seed)
with train_col:
    settings = ui.training_panel(preset, seed, network, spec)

if st.session_state.get("bt_job") is not None:
    ui.follow(st.session_state.bt_job, log)
ui.show_current(log)
ui.checkpoint_upload(settings)

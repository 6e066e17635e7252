"""Build & Train page: pick a preset or edit its layer list, train it live, see what it learned."""

import streamlit as st

from gradviz.app import build_ui as ui
from gradviz.app import guard

st.set_page_config(page_title="gradviz · Build & Train", layout="wide")
st.title("Build & train")
st.caption("Build a network from a preset or a layer list and train it here. "
           "Try first: press Train and watch the loss fall.")
ui.init_state()

with st.sidebar:
    name = st.selectbox(
        "Preset",
        list(ui.PRESETS),
        key="bt_preset",
        on_change=ui.reset_for_preset,
        format_func=ui.preset_label,
    )
    seed = int(st.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="bt_seed"))
    log = st.toggle("Loss curve on a log scale", key="bt_log")
preset = ui.PRESETS[name]
st.caption(f"**{preset.name}** — {preset.description}. Loss: {preset.loss_name}.")

net_col, train_col = st.columns([3, 2], gap="large")
with net_col:
    st.subheader("Network")
    network = st.radio(
        "Network", ui.NETWORKS, key="bt_network", horizontal=True, label_visibility="collapsed"
    )
    spec = preset.spec or ""
    if network == ui.NETWORKS[1]:
        spec = ui.layer_editor(preset)
    else:
        with guard("Could not show the network"):
            ui.preset_network(preset, seed)

with train_col:
    st.subheader("Training")
    data, data_label = ui.data_picker(preset, seed)
    optimizer = st.selectbox(
        "Optimizer",
        ui.OPTIMIZER_CHOICES,
        key="bt_optimizer",
        format_func=ui.optimizer_label(preset, network),
    )
    lr = st.text_input("Learning rate", key="bt_lr", help="e.g. 0.5 or 1e-4")
    unit = st.radio("Train for", ["steps", "epochs"], key="bt_unit", horizontal=True)
    amount = st.number_input(
        f"Number of {unit}", min_value=0, max_value=ui.MAX_AMOUNT, step=1, key="bt_amount"
    )
    settings = ui.Settings(
        name, network, spec, seed, optimizer, lr, unit, int(amount), data, data_label
    )
    resume = st.checkbox(
        "Continue from the current model",
        key="bt_continue",
        disabled=not ui.can_continue(settings),
        help="Train on from the current model (same preset or layer list); "
        "another optimizer starts fresh.",
    )
    settings = settings.continuing(resume)
    busy = st.session_state.get("bt_job") is not None
    cols = st.columns(3)
    build = cols[0].button("Build", key="bt_build", disabled=busy, width="stretch")
    go = cols[1].button("Train", key="bt_train", type="primary", disabled=busy, width="stretch")
    if build and not busy:
        with guard("Could not build the network"):
            ui.build_now(settings)
    if go and not busy:
        if data is None:
            st.error("No data to train on: upload readable MNIST files, or pick the preset's data.")
        else:
            with guard("Could not start training"):
                ui.start(settings)
    ui.show_notice()
    job = st.session_state.get("bt_job")
    if (
        cols[2].button("Stop training", key="bt_stop", disabled=job is None, width="stretch")
        and job is not None
    ):
        job.stop.set()

if st.session_state.get("bt_job") is not None:
    ui.follow(st.session_state.bt_job, log)
ui.show_current(log)

with st.expander("Upload a checkpoint"):
    upload = st.file_uploader("Checkpoint (.pt)", type=["pt", "pth"], key="bt_ckpt_file")
    if (
        st.button("Load into the selected network", key="bt_ckpt_load", disabled=upload is None)
        and upload
    ):
        with guard("Could not load the checkpoint"):
            ui.load_uploaded(upload, settings)
            st.rerun()

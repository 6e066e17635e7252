"""Streamlit widgets of the Build & Train page: settings, the layer editor, training, results.

Everything the page does apart from widgets (building, the training `Job` thread,
checkpoint uploads, reading MNIST) is `gradviz.train.jobs`, which runs without
Streamlit. The page script follows a job, redrawing the progress bar and the live loss
curve a few times a second. A click on Stop reruns the script (Streamlit interrupts the
running one at its next element update); the new run sets the job's
``threading.Event``, which `train` polls before every step, and collects the result.
Errors never replace what was built or trained before: the current model (`Run`) and the
hand-off to the other pages change only when a build, a run or a load succeeds.
"""

from __future__ import annotations

import math
import time
import zlib
from typing import Any

import pandas as pd
import streamlit as st

from gradviz.app import MODEL_KEY, guard
from gradviz.app.flow_ui import LiveViews, show_training_views
from gradviz.errors import GradvizError
from gradviz.train import jobs
from gradviz.train.data import TrainData
from gradviz.train.jobs import (
    DATA_CSV,
    DATA_IDX,
    DATA_PRESET,
    NETWORK_LAYERS,
    NETWORK_PRESET,
    NETWORKS,
    OPTIMIZER_CHOICES,
    OWN,
    Notice,
    Run,
    Settings,
    clean_rows,
    finish,
    layer_rows,
    read_digits,
    text_of_rows,
    thin_curve,
)
from gradviz.train.layer_kinds import layer_types
from gradviz.train.shapes import layer_table
from gradviz.zoo.presets import Preset, presets

__all__ = [
    "PRESETS",
    "DEFAULT_PRESET",
    "init_state",
    "reset_for_preset",
    "preset_label",
    "optimizer_label",
    "data_options",
    "sidebar",
    "network_panel",
    "preset_network",
    "layer_editor",
    "data_picker",
    "training_panel",
    "can_continue",
    "build_now",
    "start",
    "follow",
    "show_notice",
    "load_uploaded",
    "checkpoint_upload",
    "show_current",
]

PRESETS: dict[str, Preset] = presets()
DEFAULT_PRESET = "quadrant-sgd"
# The quadrant nets leave their plateau near step 4000 (seed 0): 6000 steps shows a learned
# boundary in a few seconds; the tutorial's 10 000 is one edit away.
STEP_CAP = 6000
MAX_AMOUNT = 1_000_000
_CURVE_POINTS = 1000  # points of a loss curve sent to the browser
_PERSIST = (
    "bt_preset", "bt_seed", "bt_network", "bt_spec", "bt_optimizer", "bt_lr", "bt_unit",
    "bt_amount", "bt_data", "bt_continue", "bt_log",
)  # fmt: skip


# --------------------------------------------------------------------------- state

_DEFAULT_KEYS = (
    "bt_lr",
    "bt_unit",
    "bt_amount",
    "bt_spec",
    "bt_optimizer",
    "bt_data",
    "bt_continue",
)


def _defaults(preset: Preset) -> dict[str, Any]:
    unit, amount = (
        ("epochs", preset.epochs)
        if preset.epochs
        else ("steps", min(preset.steps or 100, STEP_CAP))
    )
    return {
        "bt_lr": f"{preset.lr:g}",
        "bt_unit": unit,
        "bt_amount": int(amount),
        "bt_spec": _starting_spec(preset),
        "bt_optimizer": OWN,
        "bt_data": DATA_PRESET,
        "bt_continue": False,
    }


def _starting_spec(preset: Preset) -> str:
    if preset.spec is not None:
        return preset.spec
    # a preset written as code: start from one Linear layer, its inputs to its outputs
    data = preset.data(0)
    n_out = data.y.shape[1] if data.y.ndim == 2 else int(data.num_classes or 1)
    return f"{math.prod(preset.input_shape or data.X.shape[1:])}-{n_out}"


def init_state() -> None:
    """Set the page's state up once, and keep the settings while the user visits other pages.

    Streamlit drops a widget's value when a page without that widget runs; a plain copy
    (``bt_saved``) brings the settings back on return.
    """
    ss = st.session_state
    saved = ss.setdefault("bt_saved", {})
    for key in _PERSIST:
        if key in ss:
            saved[key] = ss[key]
        elif key in saved:
            ss[key] = saved[key]
    if ss.get("bt_preset") not in PRESETS:
        ss.bt_preset = DEFAULT_PRESET
    ss.setdefault("bt_seed", 0)
    ss.setdefault("bt_network", NETWORK_PRESET)
    ss.setdefault("bt_log", False)
    missing = [key for key in _DEFAULT_KEYS if key not in ss]
    if missing:
        defaults = _defaults(PRESETS[ss.bt_preset])
        for key in missing:
            ss[key] = defaults[key]


def reset_for_preset() -> None:
    """on_change of the preset picker: its own lr, step count, layer list and data."""
    for key, value in _defaults(PRESETS[st.session_state.bt_preset]).items():
        st.session_state[key] = value


def preset_label(name: str) -> str:
    return f"{name} — seed {PRESETS[name].seed_program}"


def optimizer_label(preset: Preset, network: str) -> Any:
    def label(option: str) -> str:
        if option != OWN:
            return option
        own = preset.optimizer or (
            "sgd" if network == NETWORK_LAYERS else f"by hand: {preset.update}"
        )
        return f"{OWN} ({own}, lr {preset.lr:g})"

    return label


def data_options(preset: Preset) -> list[str]:
    return [DATA_PRESET, DATA_IDX, DATA_CSV] if preset.digit_layout else [DATA_PRESET]


# ------------------------------------------------------------------------ network


def sidebar() -> tuple[Preset, int, bool]:
    """The preset picker, the seed and the log-scale toggle: (preset, seed, log)."""
    with st.sidebar:
        name = st.selectbox(
            "Preset", list(PRESETS), key="bt_preset", on_change=reset_for_preset,
            format_func=preset_label,
        )  # fmt: skip
        seed = int(
            st.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="bt_seed")
        )
        log = st.toggle("Loss curve on a log scale", key="bt_log")
    return PRESETS[name], seed, log


def network_panel(preset: Preset, seed: int) -> tuple[str, str]:
    """The network choice and its table: (network, spec text of the layer list)."""
    st.subheader("Network")
    network = st.radio(
        "Network", NETWORKS, key="bt_network", horizontal=True, label_visibility="collapsed"
    )
    if network == NETWORK_LAYERS:
        return network, layer_editor(preset)
    with guard("Could not show the network"):
        preset_network(preset, seed)
    return network, preset.spec or ""


@st.cache_data(max_entries=64, show_spinner=False)
def _parameter_rows(name: str, seed: int) -> list[dict[str, Any]]:
    model = PRESETS[name].build(seed)
    return [
        {
            "parameter": n,
            "shape": "×".join(map(str, p.shape)) or "scalar",
            "values": p.numel(),
            "dtype": str(p.dtype).removeprefix("torch."),
        }
        for n, p in model.named_parameters()
    ]


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


def preset_network(preset: Preset, seed: int) -> None:
    """The preset's own network: its layer table (when it has a layer list) and parameters."""
    if preset.spec is not None:
        rows = layer_table(preset.spec, preset.input_shape)
        st.dataframe(
            [
                {
                    "layer": r["layer"],
                    "output shape": _shape_text(r["output_shape"]),
                    "parameters": r["params"],
                }
                for r in rows
            ],
            width="stretch",
        )
    else:
        st.caption(
            "This preset's network is written as code (its own forward), so it has no layer list."
        )
    rows = _parameter_rows(preset.name, seed)
    with st.expander(f"{sum(r['values'] for r in rows):,} parameters in {len(rows)} tensors"):
        st.dataframe(rows, hide_index=True, width="stretch")


def layer_editor(preset: Preset) -> str:
    """A table editor and the text of the layer list, kept in step; returns the spec text.

    The text (``bt_spec``) is the source of truth; the table's key follows the text, so an
    edit in the table rewrites the text and the table starts fresh from it.
    """
    ss = st.session_state
    text = ss.bt_spec
    rows = layer_rows(text)
    shapes: list[dict[str, Any]] = []
    error = None
    try:
        shapes = layer_table(text, preset.input_shape)
    except GradvizError as exc:
        error = str(exc)
    table = pd.DataFrame(
        [
            {
                **row,
                "output shape": _shape_text(shapes[i]["output_shape"]) if i < len(shapes) else "",
                "parameters": shapes[i]["params"] if i < len(shapes) else None,
            }
            for i, row in enumerate(rows)
        ],
        columns=["type", "arguments", "output shape", "parameters"],
    )
    edited = st.data_editor(
        table,
        key=f"bt_layers_{zlib.crc32(text.encode()):08x}",
        num_rows="dynamic",
        width="stretch",
        column_config={
            "type": st.column_config.SelectboxColumn("layer", options=list(layer_types())),
            "arguments": st.column_config.TextColumn("arguments", help="e.g. out_features=10"),
            "output shape": st.column_config.TextColumn("output shape", disabled=True),
            "parameters": st.column_config.NumberColumn("parameters", disabled=True),
        },
    )
    new_rows = clean_rows(edited.to_dict("records"))
    if new_rows != clean_rows(rows):
        ss.bt_spec = text_of_rows(new_rows)
        st.rerun()  # shapes and parameter counts follow the edit at once
    st.text_area(
        "Layer list as text", key="bt_spec", height=90,
        help="'2-3-3-4 sigmoid', or layers separated by '->' or new lines: "
        "Conv2d(out_channels=10, kernel_size=5) -> ReLU",
    )  # fmt: skip
    if error:
        st.error(f"The layer list cannot be built: {error}")
    else:
        shape = _shape_text(preset.input_shape or ())
        st.caption(f"{sum(r['params'] for r in shapes):,} parameters; input {shape} per sample")
    return text


# ---------------------------------------------------------------------------- data


def _file_id(upload: Any) -> str:
    return str(getattr(upload, "file_id", None) or id(upload))


def data_picker(preset: Preset, seed: int) -> tuple[TrainData | None, str]:
    """The data to train on: the preset's, or uploaded MNIST for a digit preset.

    Returns ``(data, label)``; ``data`` is None while an upload is missing or unreadable
    (the reason is shown).
    """
    options = data_options(preset)
    choice = (
        st.radio("Data", options, key="bt_data", horizontal=True)
        if len(options) > 1
        else DATA_PRESET
    )
    if choice == DATA_PRESET:
        st.session_state.pop("bt_upload", None)  # an upload can be hundreds of MB: let it go
        data = preset.data(seed)
        test = f" + {len(data.X_test):,} test" if data.X_test is not None else ""
        st.caption(f"{data.n:,} samples{test}: {data.description}")
        return data, f"{data.name} ({data.n:,} samples{test})"
    if choice == DATA_IDX:
        cols = st.columns(2)
        files = {
            "images": cols[0].file_uploader("Training images (IDX)", key="bt_idx_images"),
            "labels": cols[1].file_uploader("Training labels (IDX)", key="bt_idx_labels"),
            "test_images": cols[0].file_uploader(
                "Test images (optional)", key="bt_idx_test_images"
            ),
            "test_labels": cols[1].file_uploader(
                "Test labels (optional)", key="bt_idx_test_labels"
            ),
        }
    else:
        cols = st.columns(2)
        files = {
            "train": cols[0].file_uploader("Training CSV", type=["csv", "gz"], key="bt_csv_train"),
            "test": cols[1].file_uploader(
                "Test CSV (optional)", type=["csv", "gz"], key="bt_csv_test"
            ),
        }
    required = ("images", "labels") if choice == DATA_IDX else ("train",)
    if any(files[k] is None for k in required):
        st.info(
            "Upload the training files (the test files are optional), or pick the preset's data."
        )
        return None, ""
    key = (preset.name, choice, *(_file_id(f) for f in files.values() if f is not None))
    cached = st.session_state.get("bt_upload")
    if cached is None or cached[0] != key:
        # read once per set of files; a failure is kept too, so reruns do not read it again
        try:
            with st.spinner("Reading the upload…"):
                st.session_state.bt_upload = (key, read_digits(preset, choice, files))
        except GradvizError as exc:
            st.session_state.bt_upload = (key, f"Cannot use this upload: {exc}")
    data = st.session_state.bt_upload[1]
    if isinstance(data, str):
        st.error(data)
        return None, ""
    test = f" + {len(data.X_test):,} test" if data.X_test is not None else ""
    st.caption(f"Uploaded MNIST: {data.n:,} training images{test}")
    return data, f"uploaded MNIST ({data.n:,} images{test})"


# ------------------------------------------------------------------------ training


def _settings(preset: Preset, seed: int, network: str, spec: str) -> Settings:
    """The data, optimizer, learning rate and amount widgets, read into `Settings`."""
    data, data_label = data_picker(preset, seed)
    optimizer = st.selectbox(
        "Optimizer", OPTIMIZER_CHOICES, key="bt_optimizer",
        format_func=optimizer_label(preset, network),
    )  # fmt: skip
    lr = st.text_input("Learning rate", key="bt_lr", help="e.g. 0.5 or 1e-4")
    unit = st.radio("Train for", ["steps", "epochs"], key="bt_unit", horizontal=True)
    amount = st.number_input(
        f"Number of {unit}", min_value=0, max_value=MAX_AMOUNT, step=1, key="bt_amount"
    )
    settings = Settings(
        preset.name, network, spec, seed, optimizer, lr, unit, int(amount), data, data_label
    )
    resume = st.checkbox(
        "Continue from the current model",
        key="bt_continue",
        disabled=not can_continue(settings),
        help="Train on from the current model (same preset or layer list); "
        "another optimizer starts fresh.",
    )
    return settings.continuing(resume)


def _buttons(settings: Settings) -> None:
    """Build, Train and Stop; a click acts at once, an error shows under the buttons."""
    busy = st.session_state.get("bt_job") is not None
    cols = st.columns(3)
    build = cols[0].button("Build", key="bt_build", disabled=busy, width="stretch")
    go = cols[1].button("Train", key="bt_train", type="primary", disabled=busy, width="stretch")
    if build and not busy:
        with guard("Could not build the network"):
            build_now(settings)
    if go and not busy:
        if settings.data is None:
            st.error("No data to train on: upload readable MNIST files, or pick the preset's data.")
        else:
            with guard("Could not start training"):
                start(settings)
    show_notice()
    job = st.session_state.get("bt_job")
    stop = cols[2].button("Stop training", key="bt_stop", disabled=job is None, width="stretch")
    if stop and job is not None:
        job.stop.set()


def training_panel(preset: Preset, seed: int, network: str, spec: str) -> Settings:
    """The training column: data, optimizer, amount and the buttons; returns the settings."""
    st.subheader("Training")
    settings = _settings(preset, seed, network, spec)
    _buttons(settings)
    return settings


def _keep(run: Run) -> None:
    st.session_state.bt_run = run
    st.session_state[MODEL_KEY] = run.handoff()


def can_continue(settings: Settings) -> bool:
    return jobs.can_continue(settings, st.session_state.get("bt_run"))


def build_now(settings: Settings) -> Run:
    """Build the network untrained and make it the current model."""
    run = jobs.build_run(settings, PRESETS[settings.preset])
    _keep(run)
    return run


def start(settings: Settings) -> jobs.Job:
    """Check the settings, then start training in the background (`follow` shows it)."""
    job = jobs.start_job(settings, PRESETS[settings.preset], st.session_state.get("bt_run"))
    st.session_state.bt_job = job
    return job


def _chart(points: list[tuple[int, float]], log: bool, where: Any = st) -> None:
    spec = {
        "mark": {"type": "line", "tooltip": True},
        "encoding": {
            "x": {"field": "step", "type": "quantitative"},
            # the loss axis fits the curve (no forced 0), so a slow tail stays visible
            "y": {
                "field": "loss",
                "type": "quantitative",
                "scale": {"zero": False, "type": "log" if log else "linear"},
            },
        },
        "height": 280,
    }
    steps, losses = thin_curve(points, log, _CURVE_POINTS)
    frame = pd.DataFrame({"step": steps, "loss": losses})
    where.vega_lite_chart(frame, spec, width="stretch")


def follow(job: jobs.Job, log: bool) -> None:
    """Show the job's progress until it ends, keep its result, then rerun the page.

    A click anywhere (Stop included) interrupts this loop at its next update; the thread
    goes on, and the next run of the page follows it again. The rerun at the end redraws
    the controls (Train enabled, Continue offered) around the new current model; a
    failure is kept as a notice for that run to show.
    """
    bar = st.progress(0.0, text="Starting…")
    chart, live = st.empty(), LiveViews(job)  # live: gradient flow and units so far
    while True:
        job.seen()
        finished = job.done  # read first, so the last update drawn is the final one
        step, total, curve = job.snapshot()
        elapsed = time.perf_counter() - job.started
        last = f" · loss {curve[-1][1]:.4g}" if curve else ""
        bar.progress(
            min(step / total, 1.0) if total else 0.0,
            text=f"Step {step:,}/{total:,}{last} · {elapsed:.1f}s",
        )
        if curve:
            _chart(curve, log, chart)
        if finished:
            break
        live.update()
        job.join(0.25)  # returns at once when the run ends
    job.join()
    del st.session_state["bt_job"]
    outcome = finish(job, PRESETS[job.settings.preset])
    if isinstance(outcome, Notice):
        st.session_state.bt_notice = (outcome.kind, outcome.text)
    else:
        _keep(outcome)
    st.rerun()


def show_notice() -> None:
    """The outcome of a run that ended in the previous page run (an error or a divergence)."""
    notice = st.session_state.pop("bt_notice", None)
    if notice is not None:
        kind, text = notice
        (st.error if kind == "error" else st.warning)(text)


# ---------------------------------------------------------------------- checkpoints


def load_uploaded(upload: Any, settings: Settings) -> Run:
    """Load an uploaded checkpoint into the selected network and make it the current model.

    Reading is `gradviz.train.jobs.load_upload` (weights_only=True); its `DataError`
    names the file and what to do.
    """
    name = getattr(upload, "name", "checkpoint")
    run = jobs.load_upload(upload.getvalue(), name, settings, PRESETS[settings.preset])
    _keep(run)
    return run


def checkpoint_upload(settings: Settings) -> None:
    """The expander that loads an uploaded checkpoint into the selected network."""
    with st.expander("Upload a checkpoint"):
        upload = st.file_uploader("Checkpoint (.pt)", type=["pt", "pth"], key="bt_ckpt_file")
        load = st.button(
            "Load into the selected network", key="bt_ckpt_load", disabled=upload is None
        )
        if load and upload:
            with guard("Could not load the checkpoint"):
                load_uploaded(upload, settings)
                st.rerun()


# -------------------------------------------------------------------------- results

_METRIC_NAMES = {
    "loss": "last batch loss",
    "train_loss": "training loss",
    "accuracy": "training accuracy",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy",
}


def show_current(log: bool) -> None:
    """The current model: metrics, loss curve, picture and checkpoint download."""
    run: Run | None = st.session_state.get("bt_run")
    if run is None:
        st.info("Build or train a network to see its loss curve and what it learned.")
        return
    what = (
        run.source.removeprefix("preset:")
        if run.source.startswith("preset:")
        else f"layer list on {run.preset}"
    )
    st.subheader(f"Current model: {what}")
    st.caption(
        f"{run.message} · data: {run.data_label} · seed {run.seed} · handed to the Graph and "
        "Backward pages"
    )
    if run.metrics:
        cols = st.columns(len(run.metrics))
        for col, (key, value) in zip(cols, run.metrics.items(), strict=True):
            shown = f"{value:.1%}" if "accuracy" in key else f"{value:.4g}"
            col.metric(_METRIC_NAMES.get(key, key), shown)
    left, right = st.columns(2)
    with left:
        if run.losses:
            st.markdown("**Loss curve**")
            _chart(list(enumerate(run.losses, start=1)), log)
        else:
            st.caption("No loss curve yet: train to draw one.")
    with right:
        if run.picture is not None and run.picture.spec is not None:
            st.markdown("**Decision boundary**")
            st.container(key="bt_boundary").vega_lite_chart(run.picture.spec, width="stretch")
            st.caption(run.picture.caption)
        elif run.picture is not None:
            st.image(run.picture.png, caption=run.picture.caption, width="stretch")
    show_training_views(run)
    st.download_button(
        "Download checkpoint", run.checkpoint, file_name=f"{run.preset}-{len(run.losses)}-steps.pt",
        mime="application/octet-stream", key="bt_download", on_click="ignore",
    )  # fmt: skip


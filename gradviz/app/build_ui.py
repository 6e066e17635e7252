"""Streamlit glue for the Build & Train page: settings, the layer editor, training, results.

Training runs in a background thread (`Job`) that never touches Streamlit: its callback
only records progress. The page script follows the job, redrawing the progress bar and
the live loss curve a few times a second. A click on Stop reruns the script (Streamlit
interrupts the running one at its next element update); the new run sets the job's
``threading.Event``, which `train` polls before every step, and collects the result.
Errors never replace what was built or trained before: the current model (`Run`) and the
hand-off to the other pages change only when a build, a run or a load succeeds.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from torch import nn

from gradviz.app import MODEL_KEY
from gradviz.errors import ArgumentError, DataError, GradvizError, SpecError
from gradviz.train.builder import build_network
from gradviz.train.layer_kinds import layer_types
from gradviz.train.shapes import layer_table
from gradviz.train.spec import parse_spec, spec_to_text
from gradviz.train.data import TrainData
from gradviz.train.mnist import load_mnist_csv, load_mnist_idx
from gradviz.train.plots import Picture, picture_for, predict, predicted_classes
from gradviz.train.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from gradviz.train.optimizers import OPTIMIZERS
from gradviz.train.results import TrainResult
from gradviz.train.training import train
from gradviz.zoo.presets import Preset, presets

__all__ = [
    "PRESETS",
    "DEFAULT_PRESET",
    "NETWORKS",
    "OWN",
    "OPTIMIZER_CHOICES",
    "Settings",
    "Run",
    "Job",
    "init_state",
    "reset_for_preset",
    "preset_label",
    "optimizer_label",
    "data_options",
    "preset_network",
    "layer_editor",
    "data_picker",
    "read_digits",
    "parse_lr",
    "build_now",
    "start",
    "follow",
    "show_notice",
    "load_uploaded",
    "show_current",
]

PRESETS: dict[str, Preset] = presets()
DEFAULT_PRESET = "quadrant-sgd"
# The quadrant nets leave their plateau near step 4000 (seed 0): 6000 steps shows a learned
# boundary in a few seconds; the tutorial's 10 000 is one edit away.
STEP_CAP = 6000
MAX_AMOUNT = 1_000_000
NETWORK_PRESET, NETWORK_LAYERS = "Preset's own code", "Layer list (editable)"
NETWORKS = (NETWORK_PRESET, NETWORK_LAYERS)
OWN = "preset's own"
OPTIMIZER_CHOICES = (OWN, *OPTIMIZERS)
DATA_PRESET, DATA_IDX, DATA_CSV = "Preset's data", "MNIST files (IDX)", "MNIST CSV"
_CURVE_POINTS = 1000  # points of a loss curve sent to the browser
# A run whose page stopped following it (tab closed, another page open) stops after this
# long, so an abandoned million-step run does not keep a core of the server busy.
ORPHAN_SECONDS = 60.0
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


def _layer_rows(text: str) -> list[dict[str, str]]:
    """Editable rows of a spec text; text that does not parse is split as well as it can be."""
    try:
        return [
            {
                "type": layer["type"],
                "arguments": ", ".join(f"{k}={v!r}" for k, v in layer.items() if k != "type"),
            }
            for layer in parse_spec(text)
        ]
    except SpecError:
        rows = []
        for segment in re.split(r"->|\n", text):
            m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*", segment, flags=re.S)
            if m:
                rows.append({"type": m.group(1), "arguments": (m.group(2) or "").strip()})
            elif segment.strip():
                rows.append({"type": "", "arguments": segment.strip()})
        return rows


def _cell(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _text_of_rows(rows: list[dict[str, str]]) -> str:
    segments = []
    for row in rows:
        kind, args = _cell(row.get("type")), _cell(row.get("arguments"))
        if kind or args:
            segments.append(f"{kind}({args})" if args else kind)
    try:
        return spec_to_text(segments)
    except SpecError:
        return " -> ".join(segments)  # kept as typed; the error under the table says why


def layer_editor(preset: Preset) -> str:
    """A table editor and the text of the layer list, kept in step; returns the spec text.

    The text (``bt_spec``) is the source of truth; the table's key follows the text, so an
    edit in the table rewrites the text and the table starts fresh from it.
    """
    ss = st.session_state
    text = ss.bt_spec
    rows = _layer_rows(text)
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
    new_rows = [
        {"type": _cell(r["type"]), "arguments": _cell(r["arguments"])}
        for r in edited.to_dict("records")
    ]
    if new_rows != [{"type": _cell(r["type"]), "arguments": _cell(r["arguments"])} for r in rows]:
        ss.bt_spec = _text_of_rows(new_rows)
        st.rerun()  # shapes and parameter counts follow the edit at once
    st.text_area(
        "Layer list as text", key="bt_spec", height=90,
        help="'2-3-3-4 sigmoid', or layers separated by '->' or new lines: Conv2d(out_channels=10, kernel_size=5) -> ReLU",
    )  # fmt: skip
    if error:
        st.error(f"The layer list cannot be built: {error}")
    else:
        st.caption(
            f"{sum(r['params'] for r in shapes):,} parameters; input {_shape_text(preset.input_shape or ())} per sample"
        )
    return text


# ---------------------------------------------------------------------------- data


def _file_id(upload: Any) -> str:
    return str(getattr(upload, "file_id", None) or id(upload))


def read_digits(preset: Preset, fmt: str, files: dict[str, Any]) -> TrainData:
    """Uploaded MNIST files laid out for a digit preset; a bad file raises `DataError`.

    ``files``: for IDX ``images``, ``labels`` and optionally ``test_images``/``test_labels``;
    for CSV ``train`` and optionally ``test``. Each is an uploaded file (``getvalue()``, ``name``).
    """

    def raw(key: str) -> tuple[bytes, str] | None:
        f = files.get(key)
        return None if f is None else (f.getvalue(), getattr(f, "name", key))

    if fmt == DATA_IDX:
        images, labels = raw("images"), raw("labels")
        if images is None or labels is None:
            raise DataError(
                "upload the training images and the training labels (IDX files, .gz is fine)"
            )
        img, lab = load_mnist_idx(images[0], labels[0], names=(images[1], labels[1]))
        test_images, test_labels = raw("test_images"), raw("test_labels")
        test: tuple[Any, Any] = (None, None)
        if (test_images is None) != (test_labels is None):
            raise DataError("upload both test files (images and labels), or neither")
        if test_images is not None and test_labels is not None:
            test = load_mnist_idx(
                test_images[0], test_labels[0], names=(test_images[1], test_labels[1])
            )
    elif fmt == DATA_CSV:
        train_csv = raw("train")
        if train_csv is None:
            raise DataError("upload a training CSV with rows label,p1,…,p784")
        img, lab = load_mnist_csv(train_csv[0], name=train_csv[1])
        test_csv = raw("test")
        test = (None, None) if test_csv is None else load_mnist_csv(test_csv[0], name=test_csv[1])
    else:
        raise ArgumentError("fmt", fmt, f"use {DATA_IDX!r} or {DATA_CSV!r}")
    return preset.prepare(img, lab, *test)


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


# ------------------------------------------------------------------------- settings


def parse_lr(text: str) -> float:
    """The learning rate as typed; `train` checks that it is positive and finite."""
    try:
        return float(str(text).strip())
    except ValueError:
        raise ArgumentError("lr", text, "write a number such as 0.5 or 1e-4") from None


@dataclass(frozen=True)
class Settings:
    """What the page's widgets say, in one place."""

    preset: str
    network: str
    spec: str
    seed: int
    optimizer: str
    lr: str
    unit: str
    amount: int
    data: TrainData | None
    data_label: str
    resume: bool = False

    @property
    def source(self) -> str:
        if self.network == NETWORK_PRESET:
            return f"preset:{self.preset}"
        try:
            return f"layers:{spec_to_text(self.spec)}"
        except SpecError:
            return f"layers:{self.spec}"

    def continuing(self, resume: bool) -> Settings:
        """The same settings, continuing from the current model or not."""
        return dataclasses.replace(self, resume=bool(resume))


@dataclass(eq=False)
class Run:
    """The current model: trained, built or loaded. Only replaced by a successful action."""

    source: str
    preset: str
    model: nn.Module
    seed: int
    losses: list[float]
    metrics: dict[str, float]
    message: str
    resume: TrainResult | Checkpoint | None
    picture: Picture | None
    checkpoint: bytes
    data_label: str
    stopped: bool = False

    def handoff(self) -> dict[str, Any]:
        """What the Graph and Backward pages read from ``st.session_state[MODEL_KEY]``."""
        out: dict[str, Any] = {"source": self.source, "model": self.model, "preset": self.preset}
        if self.source.startswith("layers:"):
            out["spec"] = self.source.removeprefix("layers:")
        return out


def _keep(run: Run) -> None:
    st.session_state.bt_run = run
    st.session_state[MODEL_KEY] = run.handoff()


def can_continue(settings: Settings) -> bool:
    run = st.session_state.get("bt_run")
    return run is not None and run.resume is not None and run.source == settings.source


def _evaluate(model: nn.Module, preset: Preset, data: TrainData) -> dict[str, float]:
    if data.labels is None:
        return {}
    out: dict[str, float] = {}
    for key, X, labels in (
        ("accuracy", data.X, data.labels),
        ("test_accuracy", data.X_test, data.labels_test),
    ):
        if X is not None and labels is not None:
            classes = predicted_classes(predict(model, X, preset))
            out[key] = float((classes == labels.numpy()).mean())
    return out


def _network(settings: Settings, preset: Preset, seed: int) -> nn.Module:
    if settings.network == NETWORK_PRESET:
        return preset.build(seed)
    return build_network(settings.spec, preset.input_shape, seed=seed)


def build_now(settings: Settings) -> Run:
    """Build the network untrained and make it the current model."""
    preset = PRESETS[settings.preset]
    model = _network(settings, preset, settings.seed)
    data = settings.data if settings.data is not None else preset.data(settings.seed)
    run = Run(
        source=settings.source, preset=preset.name, model=model, seed=settings.seed, losses=[],
        metrics=_evaluate(model, preset, data), message="built with its initial weights, not trained yet",
        resume=None, picture=picture_for(model, preset, data), checkpoint=save_checkpoint(model),
        data_label=settings.data_label,
    )  # fmt: skip
    _keep(run)
    return run


# ---------------------------------------------------------------------------- jobs


class Job:
    """One training run in a background thread; its callback only records progress.

    It stops when ``stop`` is set (the Stop button) or when no page has followed it for
    `ORPHAN_SECONDS` (`seen` is the page's heartbeat).
    """

    def __init__(self, settings: Settings, kwargs: dict[str, Any], expected: int) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.expected = expected
        self._lock = threading.Lock()
        self._step, self._total, self._curve = 0, expected, []  # curve: (step, loss) pairs
        self.result: TrainResult | None = None
        self.error: BaseException | None = None
        self.started = time.perf_counter()
        self._seen = time.monotonic()
        # a few hundred updates for the curve, and at least one every 50 steps for the bar
        every = max(1, min(expected // 500, 50))
        self._thread = threading.Thread(
            target=self._run, args=(kwargs, every), name="gradviz-train", daemon=True
        )
        self._thread.start()

    def _run(self, kwargs: dict[str, Any], every: int) -> None:
        try:
            self.result = train(
                **kwargs, callback=self._progress, callback_every=every, stop=self._should_stop
            )
        except BaseException as exc:  # handed to the page, which shows or re-raises it
            self.error = exc

    def _should_stop(self) -> bool:
        return self.stop.is_set() or time.monotonic() - self._seen > ORPHAN_SECONDS

    def seen(self) -> None:
        """The page is still showing this run."""
        self._seen = time.monotonic()

    def _progress(self, step: int, total: int, loss: float) -> None:
        with self._lock:
            self._step, self._total = step, total
            self._curve.append((step, loss))

    def snapshot(self) -> tuple[int, int, list[tuple[int, float]]]:
        with self._lock:
            return self._step, self._total, list(self._curve)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


def start(settings: Settings) -> Job:
    """Check the settings, then start training in the background (`follow` shows it)."""
    preset = PRESETS[settings.preset]
    lr = parse_lr(settings.lr)
    run = st.session_state.get("bt_run")
    resume = run.resume if settings.resume and can_continue(settings) else None
    seed = run.seed if resume is not None else settings.seed  # a continued run keeps its seed
    data = settings.data if settings.data is not None else preset.data(seed)
    optimizer = None if settings.optimizer == OWN else settings.optimizer
    kwargs: dict[str, Any] = {
        "seed": seed,
        "lr": lr,
        "data": data,
        "resume": resume,
        settings.unit: settings.amount,
    }
    batch = preset.batch_size
    if settings.network == NETWORK_LAYERS:
        # a built network trains like its preset: same data, loss, batch size and optimizer
        optimizer = optimizer or preset.optimizer or "sgd"
        momentum = preset.hyper.get("momentum") if optimizer == preset.optimizer else None
        kwargs.update(loss=preset.loss, loss_reduction=preset.loss_reduction, batch_size=batch, momentum=momentum)
        target: Any = _network(settings, preset, seed)
    else:
        target = preset.name
    kwargs["optimizer"] = optimizer
    used = optimizer or (preset.optimizer if preset.update == "optimizer" else None)
    if resume is not None and resume.settings.get("optimizer") != used:
        kwargs["resume"] = _without_optimizer_state(resume)
    n = data.n
    per_epoch = math.ceil(n / min(batch or n, n))
    amount = settings.amount if isinstance(settings.amount, int) else 0
    expected = amount * (per_epoch if settings.unit == "epochs" else 1)
    job = Job(settings, {"preset_or_name_or_model": target, **kwargs}, max(expected, 1))
    st.session_state.bt_job = job
    return job


def _without_optimizer_state(resume: TrainResult | Checkpoint) -> Checkpoint:
    """The weights and curve of a run, without its optimizer's state.

    Another optimizer starts fresh: torch would load SGD's state into Adam without a
    complaint and fail at the first step (no "betas" in the loaded groups).
    """
    ckpt = (
        resume
        if isinstance(resume, Checkpoint)
        else load_checkpoint(io.BytesIO(save_checkpoint(resume)))
    )
    return dataclasses.replace(ckpt, optimizer_state=None)


def _curve_frame(points: list[tuple[int, float]], log: bool) -> pd.DataFrame:
    steps = np.array([p[0] for p in points], dtype=np.int64)
    losses = np.array([p[1] for p in points], dtype=np.float64)
    if len(steps) > _CURVE_POINTS:
        pick = np.unique(np.linspace(0, len(steps) - 1, _CURVE_POINTS).astype(int))
        steps, losses = steps[pick], losses[pick]
    keep = np.isfinite(losses) & ((losses > 0) if log else True)  # a log axis has no 0
    return pd.DataFrame({"step": steps[keep], "loss": losses[keep]})


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
    where.vega_lite_chart(_curve_frame(points, log), spec, width="stretch")


def follow(job: Job, log: bool) -> None:
    """Show the job's progress until it ends, keep its result, then rerun the page.

    A click anywhere (Stop included) interrupts this loop at its next update; the thread
    goes on, and the next run of the page follows it again. The rerun at the end redraws
    the controls (Train enabled, Continue offered) around the new current model; a
    failure is kept as a notice for that run to show.
    """
    bar = st.progress(0.0, text="Starting…")
    chart = st.empty()
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
        job.join(0.25)  # returns at once when the run ends
    job.join()
    del st.session_state["bt_job"]
    _finish(job)
    st.rerun()


def _finish(job: Job) -> None:
    ss = st.session_state
    if job.error is not None:
        if not isinstance(job.error, GradvizError):
            raise job.error  # a bug, not a setting: show it as one
        ss.bt_notice = ("error", f"Could not train: {job.error}")
        return
    result = job.result
    if result is None:  # the thread ended with neither a result nor an error
        raise RuntimeError("the training thread ended without a result")
    if result.diverged:
        ss.bt_notice = ("warning", f"{result.message}. The model from before this run is kept.")
        return
    preset = PRESETS[job.settings.preset]
    data = result.data if result.data is not None else preset.data(result.seed)
    metrics = dict(result.metrics)
    _keep(
        Run(
            source=job.settings.source, preset=preset.name, model=result.model, seed=result.seed,
            losses=list(result.losses), metrics=metrics, message=result.message,
            resume=result, picture=picture_for(result.model, preset, data),
            checkpoint=save_checkpoint(result), data_label=job.settings.data_label, stopped=result.stopped,
        )
    )  # fmt: skip


def show_notice() -> None:
    """The outcome of a run that ended in the previous page run (an error or a divergence)."""
    notice = st.session_state.pop("bt_notice", None)
    if notice is not None:
        kind, text = notice
        (st.error if kind == "error" else st.warning)(text)


# ---------------------------------------------------------------------- checkpoints


def load_uploaded(upload: Any, settings: Settings) -> Run:
    """Load an uploaded checkpoint into the selected network and make it the current model.

    A checkpoint of another preset or another layer list raises `DataError` saying which
    network it belongs to.
    """
    preset = PRESETS[settings.preset]
    raw, name = upload.getvalue(), getattr(upload, "name", "checkpoint")
    buffer = io.BytesIO(raw)
    buffer.name = name  # so a message names the uploaded file
    ckpt = load_checkpoint(buffer)
    if settings.network == NETWORK_PRESET and ckpt.preset not in (None, preset.name):
        raise DataError(
            f"{name} was saved from preset {ckpt.preset}; pick {ckpt.preset} as the preset "
            f"(it is {preset.name} now) and load it again"
        )
    model = _network(settings, preset, ckpt.seed if settings.network == NETWORK_PRESET else 0)
    try:
        load_checkpoint(raw, model=model)
    except DataError as exc:
        origin = (
            f"preset {ckpt.preset}" if ckpt.preset
            else f"the layer list {spec_to_text(ckpt.spec)!r}" if ckpt.spec
            else "another network"
        )  # fmt: skip
        raise DataError(
            f"{name} holds weights of {origin}, not of the selected network: {exc}"
        ) from None
    data = settings.data if settings.data is not None else preset.data(ckpt.seed)
    run = Run(
        source=settings.source, preset=preset.name, model=model, seed=ckpt.seed,
        losses=list(ckpt.losses), metrics=_evaluate(model, preset, data),
        message=f"loaded {name}: trained {ckpt.step:,} step{'' if ckpt.step == 1 else 's'}", resume=ckpt,
        picture=picture_for(model, preset, data), checkpoint=raw, data_label=settings.data_label,
    )  # fmt: skip
    _keep(run)
    return run


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
        f"{run.message} · data: {run.data_label} · seed {run.seed} · handed to the Graph and Backward pages"
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
        if run.picture is not None:
            st.image(run.picture.png, caption=run.picture.caption, width="stretch")
    st.download_button(
        "Download checkpoint", run.checkpoint, file_name=f"{run.preset}-{len(run.losses)}-steps.pt",
        mime="application/octet-stream", key="bt_download", on_click="ignore",
    )  # fmt: skip

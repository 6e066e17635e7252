"""What the Build & Train page does, without Streamlit: settings, runs, training jobs, uploads.

The page reads its widgets into `Settings`, and everything it then does is here: build
a network (`build_run`), train it in a background thread (`start_job`, `Job`, `finish`),
load an uploaded checkpoint (`load_upload`) or uploaded MNIST files (`read_digits`).
Each returns a `Run` (the current model) or raises a `GradvizError` saying what to
change; the page only decides where to keep the run and how to show it. A `Job`'s
thread never touches the page: its callback only records progress under a lock.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from torch import nn

from gradviz.errors import ArgumentError, DataError, GradvizError, SpecError
from gradviz.train.builder import build_network
from gradviz.train.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from gradviz.train.data import TrainData
from gradviz.train.flow import GradientFlow
from gradviz.train.flow_view import neuron_png, neuron_view
from gradviz.train.live import JobCallback, LiveWeights
from gradviz.train.mnist import load_mnist_csv, load_mnist_idx
from gradviz.train.optimizers import OPTIMIZERS
from gradviz.train.plots import Picture, picture_for, predict, predicted_classes
from gradviz.train.results import TrainResult
from gradviz.train.spec import parse_spec, spec_to_text
from gradviz.train.training import train

if TYPE_CHECKING:
    from gradviz.train.recipe import Preset

__all__ = [
    "NETWORK_PRESET",
    "NETWORK_LAYERS",
    "NETWORKS",
    "OWN",
    "OPTIMIZER_CHOICES",
    "DATA_PRESET",
    "DATA_IDX",
    "DATA_CSV",
    "ORPHAN_SECONDS",
    "Settings",
    "Run",
    "Notice",
    "Job",
    "parse_lr",
    "read_digits",
    "evaluate_accuracy",
    "network_for",
    "build_run",
    "can_continue",
    "job_arguments",
    "start_job",
    "finish",
    "without_optimizer_state",
    "load_upload",
    "layer_rows",
    "clean_rows",
    "text_of_rows",
    "thin_curve",
]

NETWORK_PRESET, NETWORK_LAYERS = "Preset's own code", "Layer list (editable)"
NETWORKS = (NETWORK_PRESET, NETWORK_LAYERS)
OWN = "preset's own"
OPTIMIZER_CHOICES = (OWN, *OPTIMIZERS)
DATA_PRESET, DATA_IDX, DATA_CSV = "Preset's data", "MNIST files (IDX)", "MNIST CSV"
# A run whose page stopped following it (tab closed, another page open) stops after this
# long, so an abandoned million-step run does not keep a core of the server busy.
ORPHAN_SECONDS = 60.0


FLOW_BUDGET = 0.1  # the share of training time the page's gradient flow may take


def page_flow(expected: int) -> GradientFlow:
    """The recorder a page run of ``expected`` steps uses (also timed by bench_flow).

    At most ~200 evenly spread steps, and never more than `FLOW_BUDGET` of the training
    time: recording every step cost +40-190% per step on the seed nets, so the stride
    widens to what the budget allows (a tiny net's run keeps fewer records). It starts at 4
    or more: from there the recorder times skipped steps to compare the kept ones with.
    """
    return GradientFlow(every=max(4, expected // 200), capacity=200, budget=FLOW_BUDGET)


class Upload(Protocol):
    """An uploaded file as Streamlit hands it over (an io.BytesIO with a name works too)."""

    def getvalue(self) -> bytes: ...


# ------------------------------------------------------------------------ settings


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
        """Which network these settings train: ``preset:NAME`` or ``layers:SPEC``."""
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
    # What the run's gradients did, step by step (None: built or loaded, not trained here).
    flow: GradientFlow | None = None
    # TF-Playground's picture of a 2-D input network: each unit's output over the plane.
    network_png: bytes | None = None

    def handoff(self) -> dict[str, Any]:
        """What the Graph and Backward pages read of the model the page built."""
        out: dict[str, Any] = {"source": self.source, "model": self.model, "preset": self.preset}
        if self.source.startswith("layers:"):
            out["spec"] = self.source.removeprefix("layers:")
        return out


@dataclass(frozen=True)
class Notice:
    """A run that ended without a new model: ``kind`` is "error" or "warning"."""

    kind: str
    text: str


# ------------------------------------------------------------------ layer list rows


def layer_rows(text: str) -> list[dict[str, str]]:
    """Editable rows (type, arguments) of a spec text; text that does not parse is split
    as well as it can be, so the table still shows what was typed."""
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


def clean_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Rows as an editor returns them (None for empty cells) as stripped strings."""
    return [{"type": _cell(r.get("type")), "arguments": _cell(r.get("arguments"))} for r in rows]


def text_of_rows(rows: list[dict[str, Any]]) -> str:
    """The spec text of edited rows: canonical when it parses, else as typed."""
    segments = []
    for row in clean_rows(rows):
        kind, args = row["type"], row["arguments"]
        if kind or args:
            segments.append(f"{kind}({args})" if args else kind)
    try:
        return spec_to_text(segments)
    except SpecError:
        return " -> ".join(segments)  # kept as typed; the error under the table says why


def thin_curve(
    points: list[tuple[int, float]], log: bool, limit: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """(steps, losses) of a loss curve, at most ``limit`` evenly spread points, drawable
    on the axis: finite, and positive on a log axis (which has no 0)."""
    steps = np.array([p[0] for p in points], dtype=np.int64)
    losses = np.array([p[1] for p in points], dtype=np.float64)
    if len(steps) > limit:
        pick = np.unique(np.linspace(0, len(steps) - 1, limit).astype(int))
        steps, losses = steps[pick], losses[pick]
    keep = np.isfinite(losses) & ((losses > 0) if log else True)
    return steps[keep], losses[keep]


# ---------------------------------------------------------------------------- data


def _raw(files: Mapping[str, Upload | None], key: str) -> tuple[bytes, str] | None:
    f = files.get(key)
    return None if f is None else (f.getvalue(), getattr(f, "name", key))


def _idx_files(files: Mapping[str, Upload | None]) -> tuple[Any, Any, Any, Any]:
    images, labels = _raw(files, "images"), _raw(files, "labels")
    if images is None or labels is None:
        raise DataError(
            "upload the training images and the training labels (IDX files, .gz is fine)"
        )
    img, lab = load_mnist_idx(images[0], labels[0], names=(images[1], labels[1]))
    test_images, test_labels = _raw(files, "test_images"), _raw(files, "test_labels")
    if (test_images is None) != (test_labels is None):
        raise DataError("upload both test files (images and labels), or neither")
    if test_images is None or test_labels is None:
        return img, lab, None, None
    names = (test_images[1], test_labels[1])
    return img, lab, *load_mnist_idx(test_images[0], test_labels[0], names=names)


def _csv_files(files: Mapping[str, Upload | None]) -> tuple[Any, Any, Any, Any]:
    train_csv = _raw(files, "train")
    if train_csv is None:
        raise DataError("upload a training CSV with rows label,p1,…,p784")
    img, lab = load_mnist_csv(train_csv[0], name=train_csv[1])
    test_csv = _raw(files, "test")
    if test_csv is None:
        return img, lab, None, None
    return img, lab, *load_mnist_csv(test_csv[0], name=test_csv[1])


def read_digits(preset: Preset, fmt: str, files: Mapping[str, Upload | None]) -> TrainData:
    """Uploaded MNIST files laid out for a digit preset; a bad file raises `DataError`.

    ``files``: for IDX ``images``, ``labels`` and optionally ``test_images``/``test_labels``;
    for CSV ``train`` and optionally ``test``. Each has ``getvalue()`` and ``name``.
    """
    if fmt == DATA_IDX:
        return preset.prepare(*_idx_files(files))
    if fmt == DATA_CSV:
        return preset.prepare(*_csv_files(files))
    raise ArgumentError("fmt", fmt, f"use {DATA_IDX!r} or {DATA_CSV!r}")


# ------------------------------------------------------------------------- building


def evaluate_accuracy(model: nn.Module, preset: Preset, data: TrainData) -> dict[str, float]:
    """Training (and test) accuracy of a classifier; empty for unlabelled data."""
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


def network_for(settings: Settings, preset: Preset, seed: int) -> nn.Module:
    """A new network: the preset's own code, or the settings' layer list on its input."""
    if settings.network == NETWORK_PRESET:
        return preset.build(seed)
    return build_network(settings.spec, preset.input_shape, seed=seed)


def _data(settings: Settings, preset: Preset, seed: int) -> TrainData:
    return settings.data if settings.data is not None else preset.data(seed)


def build_run(settings: Settings, preset: Preset) -> Run:
    """The network built with its initial weights, untrained, as a `Run`."""
    model = network_for(settings, preset, settings.seed)
    data = _data(settings, preset, settings.seed)
    return Run(
        source=settings.source, preset=preset.name, model=model, seed=settings.seed, losses=[],
        metrics=evaluate_accuracy(model, preset, data),
        message="built with its initial weights, not trained yet", resume=None,
        picture=picture_for(model, preset, data), checkpoint=save_checkpoint(model),
        data_label=settings.data_label,
    )  # fmt: skip


# ----------------------------------------------------------------------------- jobs


class Job:
    """One training run in a background thread; its callback only records progress.

    It stops when ``stop`` is set (the Stop button) or when no page has called `seen`
    for ``orphan_seconds`` by ``clock``.
    """

    def __init__(
        self,
        settings: Settings,
        kwargs: dict[str, Any],
        expected: int,
        *,
        orphan_seconds: float = ORPHAN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.expected = expected
        self._lock = threading.Lock()
        self._step, self._total = 0, expected
        self._curve: list[tuple[int, float]] = []  # (step, loss) pairs
        self.result: TrainResult | None = None
        self.error: BaseException | None = None
        self.started = time.perf_counter()
        self._orphan_seconds, self._clock = orphan_seconds, clock
        self._seen = clock()
        # a few hundred updates for the curve, and at least one every 50 steps for the bar
        every = max(1, min(expected // 500, 50))
        self.flow = page_flow(expected)
        data = kwargs.get("data")
        self.data: TrainData | None = data if isinstance(data, TrainData) else None
        # weights for the live neuron view, which draws networks on 2-D inputs only
        self.live = LiveWeights(self.data is not None and tuple(self.data.X.shape[1:]) == (2,))
        self._thread = threading.Thread(
            target=self._run, args=(kwargs, every), name="gradviz-train", daemon=True
        )
        self._thread.start()

    def _run(self, kwargs: dict[str, Any], every: int) -> None:
        try:
            self.result = train(
                **kwargs, callback=JobCallback(self.flow, self._progress, self.live),
                callback_every=every,
                stop=self._should_stop,
            )
        except BaseException as exc:  # handed to the page, which shows or re-raises it
            self.error = exc

    def _should_stop(self) -> bool:
        return self.stop.is_set() or self.orphaned

    @property
    def orphaned(self) -> bool:
        """No page has followed this run for ``orphan_seconds``."""
        return self._clock() - self._seen > self._orphan_seconds

    def seen(self) -> None:
        """The page is still showing this run."""
        self._seen = self._clock()

    def _progress(self, step: int, total: int, loss: float) -> None:
        with self._lock:
            self._step, self._total = step, total
            self._curve.append((step, loss))

    def snapshot(self) -> tuple[int, int, list[tuple[int, float]]]:
        """(step, total, curve so far), read together under the job's lock."""
        with self._lock:
            return self._step, self._total, list(self._curve)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


def can_continue(settings: Settings, current: Run | None) -> bool:
    """Whether a run with these settings may continue from ``current`` (same network)."""
    return current is not None and current.resume is not None and current.source == settings.source


def without_optimizer_state(resume: TrainResult | Checkpoint) -> Checkpoint:
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


def job_arguments(
    settings: Settings, preset: Preset, current: Run | None
) -> tuple[dict[str, Any], int]:
    """The `train` keyword arguments for these settings, and the steps the run expects."""
    lr = parse_lr(settings.lr)
    go_on = settings.resume and current is not None and can_continue(settings, current)
    resume = current.resume if go_on and current is not None else None
    # a continued run keeps its seed, so its data and dropout masks go on as one run would
    seed = current.seed if resume is not None and current is not None else settings.seed
    data = _data(settings, preset, seed)
    optimizer = None if settings.optimizer == OWN else settings.optimizer
    kwargs: dict[str, Any] = {"seed": seed, "lr": lr, "data": data, settings.unit: settings.amount}
    batch = preset.batch_size
    if settings.network == NETWORK_LAYERS:
        # a built network trains like its preset: same data, loss, batch size and optimizer
        optimizer = optimizer or preset.optimizer or "sgd"
        momentum = preset.hyper.get("momentum") if optimizer == preset.optimizer else None
        kwargs.update(
            loss=preset.loss, loss_reduction=preset.loss_reduction, batch_size=batch,
            momentum=momentum, preset_or_name_or_model=network_for(settings, preset, seed),
        )  # fmt: skip
    else:
        kwargs["preset_or_name_or_model"] = preset.name
    kwargs["optimizer"] = optimizer
    used = optimizer or (preset.optimizer if preset.update == "optimizer" else None)
    if resume is not None and resume.settings.get("optimizer") != used:
        resume = without_optimizer_state(resume)
    kwargs["resume"] = resume
    per_epoch = math.ceil(data.n / min(batch or data.n, data.n))
    amount = settings.amount if isinstance(settings.amount, int) else 0
    expected = amount * (per_epoch if settings.unit == "epochs" else 1)
    return kwargs, max(expected, 1)


def start_job(
    settings: Settings, preset: Preset, current: Run | None, **job_options: Any
) -> Job:
    """Check the settings, then start training in the background; ``current`` may go on."""
    kwargs, expected = job_arguments(settings, preset, current)
    return Job(settings, kwargs, expected, **job_options)


def finish(job: Job, preset: Preset) -> Run | Notice:
    """The ended job's new `Run`, or a `Notice` when it kept the model from before.

    A `GradvizError` (a setting that does not work) becomes an error notice; any other
    exception is a bug and is raised again.
    """
    if job.error is not None:
        if not isinstance(job.error, GradvizError):
            raise job.error
        return Notice("error", f"Could not train: {job.error}")
    result = job.result
    if result is None:  # the thread ended with neither a result nor an error
        raise RuntimeError("the training thread ended without a result")
    if result.diverged:
        return Notice("warning", f"{result.message}. The model from before this run is kept.")
    data = result.data if result.data is not None else preset.data(result.seed)
    return Run(
        source=job.settings.source, preset=preset.name, model=result.model, seed=result.seed,
        losses=list(result.losses), metrics=dict(result.metrics), message=result.message,
        resume=result, picture=picture_for(result.model, preset, data),
        checkpoint=save_checkpoint(result), data_label=job.settings.data_label,
        stopped=result.stopped, flow=job.flow if job.flow.records else None,
        network_png=network_picture(result.model, data),
    )  # fmt: skip


def network_picture(model: nn.Module, data: TrainData) -> bytes | None:
    """The neuron view (`flow_view.neuron_png`) of a network on 2-D inputs, else None."""
    if tuple(data.X.shape[1:]) != (2,):
        return None
    try:
        return neuron_png(neuron_view(model, data.X))
    except (GradvizError, RuntimeError):  # a network the view cannot read unit by unit
        return None


# ---------------------------------------------------------------------- checkpoints


def _origin(ckpt: Checkpoint) -> str:
    if ckpt.preset:
        return f"preset {ckpt.preset}"
    if ckpt.spec:
        return f"the layer list {spec_to_text(ckpt.spec)!r}"
    return "another network"


def load_upload(raw: bytes, name: str, settings: Settings, preset: Preset) -> Run:
    """An uploaded checkpoint loaded into the selected network, as a `Run`.

    The bytes are read with ``torch.load(weights_only=True)`` only (a pickle that would
    run code is refused with a `DataError` naming the file). A checkpoint of another
    preset or another layer list raises `DataError` saying which network it belongs to.
    """
    buffer = io.BytesIO(raw)
    buffer.name = name  # so a message names the uploaded file
    ckpt = load_checkpoint(buffer)
    if settings.network == NETWORK_PRESET and ckpt.preset not in (None, preset.name):
        raise DataError(
            f"{name} was saved from preset {ckpt.preset}; pick {ckpt.preset} as the preset "
            f"(it is {preset.name} now) and load it again"
        )
    model = network_for(settings, preset, ckpt.seed if settings.network == NETWORK_PRESET else 0)
    try:
        load_checkpoint(raw, model=model)
    except DataError as exc:
        raise DataError(
            f"{name} holds weights of {_origin(ckpt)}, not of the selected network: {exc}"
        ) from None
    data = _data(settings, preset, ckpt.seed)
    steps = f"{ckpt.step:,} step{'' if ckpt.step == 1 else 's'}"
    return Run(
        source=settings.source, preset=preset.name, model=model, seed=ckpt.seed,
        losses=list(ckpt.losses), metrics=evaluate_accuracy(model, preset, data),
        message=f"loaded {name}: trained {steps}", resume=ckpt,
        picture=picture_for(model, preset, data), checkpoint=raw, data_label=settings.data_label,
    )  # fmt: skip

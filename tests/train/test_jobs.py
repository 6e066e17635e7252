"""The Build & Train page's logic without Streamlit: settings, runs, jobs, uploads, rows."""

from __future__ import annotations

import io
import os
import pathlib
import shlex
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradviz.errors import ArgumentError, DataError, GradvizError
from gradviz.train import jobs
from gradviz.train.checkpoints import load_checkpoint, save_checkpoint
from gradviz.train.spec import parse_spec, spec_to_text
from gradviz.zoo.presets import get_preset

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _settings(preset: str = "quadrant-sgd", **changes) -> jobs.Settings:
    base = dict(
        preset=preset, network=jobs.NETWORK_PRESET, spec="", seed=0, optimizer=jobs.OWN,
        lr="0.5", unit="steps", amount=5, data=None, data_label="",
    )  # fmt: skip
    base.update(changes)
    return jobs.Settings(**base)


def _wait(job: jobs.Job, seconds: float = 60) -> None:
    job.join(seconds)
    assert job.done, "the training thread did not end"


def _until_it_steps(job: jobs.Job) -> None:
    deadline = time.monotonic() + 60
    while job.snapshot()[0] == 0 and not job.done and time.monotonic() < deadline:
        time.sleep(0.02)


def _idx(data: np.ndarray) -> bytes:
    return (
        struct.pack(">BBBB", 0, 0, 8, data.ndim)
        + struct.pack(f">{data.ndim}I", *data.shape)
        + data.astype(np.uint8).tobytes()
    )


def _upload(name: str, content: bytes) -> io.BytesIO:
    f = io.BytesIO(content)
    f.name = name
    return f


# ---------------------------------------------------------------------- no Streamlit


def test_importing_jobs_does_not_import_streamlit():
    code = "import sys, gradviz.train.jobs; print('streamlit' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False", out.stderr


# --------------------------------------------------------------------------- settings


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_parse_lr_reads_every_number_as_typed(value):
    assert jobs.parse_lr(f"  {value!r} ") == value


@given(st.text().filter(lambda t: not _is_float(t)))
def test_parse_lr_names_the_argument_for_anything_else(text):
    with pytest.raises(ArgumentError, match="lr") as info:
        jobs.parse_lr(text)
    assert "write a number" in str(info.value)


def _is_float(text: str) -> bool:
    try:
        float(text.strip())
    except ValueError:
        return False
    return True


def test_settings_name_their_network_and_a_run_hands_it_over():
    s = _settings(network=jobs.NETWORK_LAYERS, spec="Linear(in_features=2, out_features=4)")
    assert s.source == "layers:2-4"  # canonical text, so equal layer lists are one source
    assert _settings().source == "preset:quadrant-sgd"
    assert s.continuing(True).resume and not s.continuing(True).continuing(False).resume
    run = jobs.build_run(s, get_preset("quadrant-sgd"))
    assert run.handoff() == {
        "source": "layers:2-4", "model": run.model, "preset": "quadrant-sgd", "spec": "2-4"
    }  # fmt: skip
    assert not run.losses and run.message.startswith("built") and run.resume is None
    assert 0 <= run.metrics["accuracy"] <= 1 and run.picture.kind == "boundary"
    reloaded = load_checkpoint(run.checkpoint)
    for key, value in run.model.state_dict().items():
        assert torch.equal(reloaded.model_state[key], value)


# ------------------------------------------------------------------------------ jobs


def test_a_job_stops_when_asked_and_keeps_its_steps():
    s = _settings(amount=10**6)
    job = jobs.Job(s, {"preset_or_name_or_model": "quadrant-sgd", "steps": 10**6}, 10**6)
    _until_it_steps(job)
    job.stop.set()
    _wait(job)
    assert job.error is None
    assert job.result.stopped and 0 < job.result.steps_done < 10**6
    assert len(job.result.losses) == job.result.steps_done
    step, total, curve = job.snapshot()
    assert total == 10**6 and curve and curve[-1][0] == step <= job.result.steps_done


def test_an_orphaned_job_stops_by_itself_when_no_page_follows_it():
    now = [0.0]
    lock = threading.Lock()

    def clock() -> float:
        with lock:
            return now[0]

    kwargs = {"preset_or_name_or_model": "quadrant-sgd", "steps": 10**6}
    job = jobs.Job(_settings(), kwargs, 10**6, orphan_seconds=5.0, clock=clock)
    _until_it_steps(job)
    job.seen()
    assert not job.orphaned
    with lock:
        now[0] = 4.0  # within the grace period: still running
    assert not job.orphaned and not job.done
    with lock:
        now[0] = 10.0  # no heartbeat for 10 s
    assert job.orphaned
    _wait(job)
    assert job.error is None and job.result.stopped and job.result.steps_done < 10**6


def test_start_and_finish_train_the_settings_and_continue_from_the_run():
    preset = get_preset("quadrant-sgd")
    job = jobs.start_job(_settings(amount=30), preset, None)
    _wait(job)
    first = jobs.finish(job, preset)
    assert isinstance(first, jobs.Run) and len(first.losses) == 30 and first.resume is not None
    go_on = _settings(amount=7, resume=True, optimizer="adam", lr="0.01")
    assert jobs.can_continue(go_on, first) and not jobs.can_continue(go_on, None)
    kwargs, expected = jobs.job_arguments(go_on, preset, first)
    assert expected == 7 and kwargs["optimizer"] == "adam"
    # another optimizer continues the weights and curve, with fresh optimizer state
    assert kwargs["resume"].optimizer_state is None and kwargs["resume"].step == 30
    job = jobs.start_job(go_on, preset, first)
    _wait(job)
    more = jobs.finish(job, preset)
    assert len(more.losses) == 37 and more.losses[:30] == first.losses


def test_a_layer_list_trains_like_its_preset():
    preset = get_preset("keras-dense-512")
    s = _settings(
        preset.name, network=jobs.NETWORK_LAYERS, spec="784-32-10 relu", unit="epochs", amount=2
    )
    kwargs, expected = jobs.job_arguments(s, preset, None)
    per_epoch = -(-kwargs["data"].n // preset.batch_size)
    assert expected == 2 * per_epoch and kwargs["batch_size"] == preset.batch_size
    assert kwargs["optimizer"] == preset.optimizer and kwargs["loss"] is preset.loss
    assert kwargs["preset_or_name_or_model"].spec == parse_spec("784-32-10 relu")


def test_finish_turns_setting_errors_into_notices_and_reraises_bugs():
    preset = get_preset("quadrant-sgd")
    job = jobs.start_job(_settings(amount=5, optimizer="nosuch"), preset, None)
    _wait(job)
    notice = jobs.finish(job, preset)
    assert isinstance(notice, jobs.Notice) and notice.kind == "error"
    assert "Could not train" in notice.text and "optimizer" in notice.text
    diverging = jobs.start_job(_settings(amount=50, lr="1e30"), preset, None)
    _wait(diverging)
    warned = jobs.finish(diverging, preset)
    assert isinstance(warned, jobs.Notice) and warned.kind == "warning" and "kept" in warned.text
    bug = jobs.Job(_settings(), {"preset_or_name_or_model": "quadrant-sgd", "steps": 1}, 1)
    _wait(bug)
    bug.error = ZeroDivisionError("a bug")
    with pytest.raises(ZeroDivisionError):
        jobs.finish(bug, preset)


# ------------------------------------------------------------------------------ data


def test_read_digits_lays_out_uploads_and_rejects_bad_files():
    preset = get_preset("scratch-784-250-10")
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (6, 28, 28)), np.arange(6) % 10
    data = jobs.read_digits(
        preset, jobs.DATA_IDX,
        {"images": _upload("i", _idx(images)), "labels": _upload("l", _idx(labels)),
         "test_images": _upload("ti", _idx(images[:2])),
         "test_labels": _upload("tl", _idx(labels[:2]))},
    )  # fmt: skip
    assert tuple(data.X.shape) == (6, 784) and data.X.dtype == torch.float64
    assert len(data.X_test) == 2
    csv = "\n".join(
        f"{lab}," + ",".join(map(str, img.ravel())) for img, lab in zip(images, labels, strict=True)
    )
    from_csv = jobs.read_digits(preset, jobs.DATA_CSV, {"train": _upload("t.csv", csv.encode())})
    assert torch.equal(from_csv.X, data.X)
    with pytest.raises(DataError, match="both test files"):
        jobs.read_digits(
            preset,
            jobs.DATA_IDX,
            {
                "images": _upload("i", _idx(images)),
                "labels": _upload("l", _idx(labels)),
                "test_images": _upload("ti", _idx(images)),
            },
        )
    with pytest.raises(DataError, match="wrong magic number"):
        jobs.read_digits(
            preset,
            jobs.DATA_IDX,
            {"images": _upload("i", csv.encode()), "labels": _upload("l", _idx(labels))},
        )
    with pytest.raises(DataError, match="training CSV"):
        jobs.read_digits(preset, jobs.DATA_CSV, {})
    with pytest.raises(ArgumentError, match="fmt"):
        jobs.read_digits(preset, "zip", {})


# ----------------------------------------------------------------------- checkpoints


class _ShellOnLoad:
    """Unpickled, this runs a shell command that creates ``marker``."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _malicious_checkpoint(marker: pathlib.Path) -> bytes:
    buf = io.BytesIO()
    payload = {"format": "gradviz-checkpoint", "model_state": _ShellOnLoad(marker), "step": 1}
    torch.save(payload, buf)
    return buf.getvalue()


def test_the_malicious_payload_really_runs_code_when_unpickled_unsafely(tmp_path):
    # the control: the same bytes do create the marker with weights_only=False, so the
    # test below shows the refusal, not a payload that never worked
    marker = tmp_path / "control"
    torch.load(io.BytesIO(_malicious_checkpoint(marker)), weights_only=False)
    assert marker.exists()


def test_an_uploaded_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    raw = _malicious_checkpoint(marker)
    with pytest.raises(DataError) as info:
        jobs.load_upload(raw, "evil.pt", _settings(), get_preset("quadrant-sgd"))
    message = str(info.value)
    assert isinstance(info.value, GradvizError)
    assert message.startswith("evil.pt: refused") and "posix.system" in message
    assert "weights_only=True" in message and "gradviz.save_checkpoint" in message
    assert "weights_only` set to `False" not in message  # torch's advice is not passed on
    assert not marker.exists()


def test_an_upload_round_trips_into_the_selected_network_or_says_whose_it_is():
    preset = get_preset("quadrant-sgd")
    job = jobs.start_job(_settings(amount=12), preset, None)
    _wait(job)
    trained = jobs.finish(job, preset)
    loaded = jobs.load_upload(trained.checkpoint, "q.pt", _settings(), preset)
    assert loaded.message == "loaded q.pt: trained 12 steps" and loaded.losses == trained.losses
    for a, b in zip(loaded.model.parameters(), trained.model.parameters(), strict=True):
        assert torch.equal(a, b)
    other = save_checkpoint(get_preset("keras-dense-512").build(0))
    whose = r"k.pt holds weights of the layer list .Linear\(in_features=784"
    with pytest.raises(DataError, match=whose):
        jobs.load_upload(other, "k.pt", _settings(), preset)
    with pytest.raises(DataError, match="saved from preset quadrant-sgd; pick quadrant-sgd"):
        jobs.load_upload(
            trained.checkpoint, "q.pt", _settings("quadrant-params"), get_preset("quadrant-params")
        )


# ---------------------------------------------------------------------- editor rows

_LAYERS = st.sampled_from(
    ["ReLU", "Tanh", "Linear(out_features=3)", "Linear(out_features=7, bias=False)",
     "Dropout(p=0.25)", "Softmax(dim=1)", "LayerNorm"]
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(_LAYERS, min_size=1, max_size=6))
def test_layer_rows_and_text_of_rows_round_trip(layers):
    text = spec_to_text(["Linear(in_features=2, out_features=4)", *layers])
    rows = jobs.layer_rows(text)
    assert len(rows) == len(parse_spec(text))
    assert jobs.text_of_rows(rows) == text
    # an editor hands back None for emptied cells; empty rows are dropped
    assert jobs.text_of_rows([*rows, {"type": None, "arguments": None}]) == text


def test_rows_of_text_that_does_not_parse_keep_what_was_typed():
    rows = jobs.layer_rows("Linear(out_features=3) -> Nonsense(1) -> ???")
    assert rows == [
        {"type": "Linear", "arguments": "out_features=3"},
        {"type": "Nonsense", "arguments": "1"},
        {"type": "", "arguments": "???"},
    ]
    # kept as typed (a row without a type shows its arguments in brackets) for the error
    assert jobs.text_of_rows(rows) == "Linear(out_features=3) -> Nonsense(1) -> (???)"


@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=3000),
    st.booleans(),
    st.integers(2, 1000),
)
def test_thin_curve_keeps_at_most_limit_drawable_points_in_order(losses, log, limit):
    points = list(enumerate(losses, start=1))
    steps, values = jobs.thin_curve(points, log, limit)
    assert len(steps) == len(values) <= limit
    assert np.all(np.diff(steps) > 0) and np.all(np.isfinite(values))
    if log:
        assert np.all(values > 0)
    lookup = dict(points)
    assert all(lookup[int(s)] == v for s, v in zip(steps, values, strict=True))
    drawable = [v for v in losses if np.isfinite(v) and (v > 0 or not log)]
    if len(losses) <= limit:
        assert len(values) == len(drawable)

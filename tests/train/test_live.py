"""Reading a run while it trains: the flow recorder's snapshot and the job's network copies."""

from __future__ import annotations

import threading
import time

import torch

from gradviz.errors import ArgumentError
from gradviz.train import jobs
from gradviz.train.flow import GradientFlow
from gradviz.train.flow_view import flow_chart, heatmap_frame
from gradviz.train.live import LiveWeights
from gradviz.train.training import train
from gradviz.zoo.presets import get_preset


def _settings(amount: int, preset: str = "quadrant-sgd") -> jobs.Settings:
    return jobs.Settings(
        preset=preset, network=jobs.NETWORK_PRESET, spec="", seed=0,
        optimizer=jobs.OWN, lr="0.5", unit="steps", amount=amount, data=None, data_label="",
    )  # fmt: skip


def _job(steps: int) -> jobs.Job:
    data = get_preset("quadrant-sgd").data(0)
    kwargs = {"preset_or_name_or_model": "quadrant-sgd", "steps": steps, "data": data}
    return jobs.Job(_settings(steps), kwargs, steps)


def test_a_snapshot_read_while_training_is_one_consistent_state_that_never_changes():
    # capacity 16 with every=1 decimates again and again while the reader reads
    flow = GradientFlow(every=1, capacity=16)
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            train("quadrant-sgd", steps=1000, callback=flow)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    reads = 0
    while not done.is_set() or reads < 3:
        snap = flow.snapshot()
        steps = [r.step for r in snap.records]
        # every view of one snapshot sees the same steps, however the recorder moved on
        for kind, stat in (("grad", "norm"), ("update", "norm"), ("act", "mean")):
            assert snap.series(stat, kind=kind)[0] == steps
        assert steps == sorted(set(steps)) and len(steps) <= 16
        frame = heatmap_frame(snap)
        assert set(frame["step"]) <= set(steps)
        flow_chart(snap).to_dict()
        snap.diagnose()
        time.sleep(0.01)
        assert [r.step for r in snap.records] == steps  # the copy stayed as it was
        reads += 1
    thread.join()
    assert not errors, errors
    assert flow.snapshot().steps_seen == 1000


def test_a_snapshot_holds_no_hooks_and_cannot_be_attached():
    flow = GradientFlow(every=1)
    train("quadrant-sgd", steps=5, callback=flow)
    snap = flow.snapshot()
    assert snap.params == flow.params and len(snap.records) == len(flow.records) == 5
    try:
        snap.attach()
    except ArgumentError as exc:
        assert "model" in str(exc)
    else:
        raise AssertionError("a snapshot attached to a network")


def test_live_weights_hand_over_a_network_of_the_readers_own():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    live = LiveWeights(enabled=True)
    live.attach(model)
    fired: list[int] = []
    model.register_forward_pre_hook(lambda m, a: fired.append(1))  # the recorder's, say
    assert live.copy() is None  # nothing handed over yet
    live.offer(7)
    with torch.no_grad():
        model[0].weight.add_(1.0)  # the next step moves the original on
    step, net = live.copy()
    assert step == 7 and net is not model
    assert not torch.equal(net[0].weight, model[0].weight)
    torch.testing.assert_close(net[0].weight + 1.0, model[0].weight)
    net(torch.zeros(4, 2))
    assert fired == []  # running the copy fires nothing on the trained network
    live.offer(8)  # the copy() above asked again
    live.offer(9)  # nobody asked since: no copy taken
    assert live.copy()[0] == 8


def test_a_job_on_two_inputs_hands_over_weights_at_step_boundaries():
    job = _job(4000)
    try:
        got = None
        deadline = time.monotonic() + 60
        while got is None and time.monotonic() < deadline and not job.done:
            got = job.live.copy()
            time.sleep(0.02)
        assert got is not None, "no weights handed over while the job ran"
        step, net = got
        assert 1 <= step <= 4000
        assert {n for n, _ in net.named_parameters()} == set(job.flow.params) != set()
    finally:
        job.stop.set()
        job.join(60)
    assert job.done and job.error is None


def test_a_job_not_on_two_inputs_copies_nothing():
    data = get_preset("regression-1-10-1").data(0)
    kwargs = {"preset_or_name_or_model": "regression-1-10-1", "steps": 20, "data": data}
    job = jobs.Job(_settings(20, "regression-1-10-1"), kwargs, 20)
    job.join(60)
    assert job.done and job.error is None and not job.live.enabled
    assert job.live.copy() is None


def test_heatmap_frame_is_the_positive_norm_rows_of_the_long_frame():
    import pandas as pd

    flow = GradientFlow(every=1)
    train("quadrant-sgd", steps=30, callback=flow)
    long = flow.frame("grad", "norm")
    want = long[long["value"] > 0][["step", "layer", "depth", "value"]].reset_index(drop=True)
    got = heatmap_frame(flow)
    assert len(got) == 30 * len(flow.params)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_a_pickable_flow_chart_selects_a_layer_on_click():
    from gradviz.train.flow_view import PICK

    flow = GradientFlow(every=1)
    train("quadrant-sgd", steps=5, callback=flow)
    params = flow_chart(flow, pick=True).to_dict().get("params", [])
    picks = [p for p in params if p["name"] == PICK]
    assert len(picks) == 1 and picks[0]["select"]["fields"] == ["layer"]
    assert picks[0]["select"]["on"] == "click"
    assert PICK not in str(flow_chart(flow).to_dict())

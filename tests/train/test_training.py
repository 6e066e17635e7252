"""Training: every preset trains, runs replay bit for bit, checkpoints continue the same curve."""

from __future__ import annotations

import io
import math
import threading

import numpy as np
import pytest
import torch

from gradviz.errors import ArgumentError, DataError, GradvizError
from gradviz.train.builder import build_network
from gradviz.train.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from gradviz.train.results import StopTraining, TrainResult
from gradviz.train.training import train
from gradviz.zoo.presets import PRESET_NAMES, get_preset


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_trains_a_few_steps(name):
    result = train(name, steps=6)
    assert isinstance(result, TrainResult)
    assert len(result.losses) == 6 and result.steps_done == 6 and result.total_steps == 6
    assert all(math.isfinite(v) for v in result.losses)
    assert min(result.losses[1:]) < result.losses[0]  # it learns something at once
    assert all(math.isfinite(v) for v in result.metrics.values())
    preset = get_preset(name)
    if preset.task == "classification":
        assert 0 <= result.metrics["accuracy"] <= 1
    if preset.data(0).has_test:
        assert "test_accuracy" in result.metrics
    assert result.model is not None and not result.stopped and not result.diverged
    assert (result.optimizer is None) == (preset.update != "optimizer")


def test_quadrant_sgd_reaches_the_tutorials_accuracy():
    result = train("quadrant-sgd")  # its own settings: lr 0.5, 10 000 full-batch steps
    assert result.steps_done == 10_000 and result.settings["lr"] == 0.5
    assert result.metrics["accuracy"] >= 0.93  # the tutorial reports 0.955
    assert result.losses[-1] < 0.3 < 2.5 < result.losses[0]


@pytest.mark.parametrize(
    "name", ["quadrant-sgd", "mnist-cnn", "dynamic-net", "scratch-784-250-10", "keras-dense-512"]
)
def test_runs_replay_bit_for_bit(name):
    a = train(name, steps=5, seed=3)
    b = train(name, steps=5, seed=3)
    assert a.losses == b.losses
    assert a.metrics == b.metrics
    c = train(name, steps=5, seed=4)
    assert c.losses != a.losses


def test_manual_and_optimizer_updates_agree():
    by_data = train("quadrant-params", steps=15)  # W.data = W.data − lr·W.grad
    by_sgd = train("quadrant-sgd", steps=15)
    np.testing.assert_allclose(by_data.losses, by_sgd.losses, rtol=1e-6)
    assert by_data.settings["update"] == "manual-data" and by_data.optimizer is None


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(
    ("name", "first", "second", "via"),
    [
        ("quadrant-sgd", 10, 10, "bytes"),
        ("keras-dense-512", 7, 9, "bytes"),  # 12 batches an epoch: resumes mid-epoch, crosses one
        ("mnist-cnn", 4, 3, "file"),  # dropout: the RNG state travels in the checkpoint
        ("dynamic-net", 4, 4, "result"),  # its depth draws travel in the module's extra state
        ("scratch-784-250-10", 3, 4, "buffer"),  # float64 NumPy weights
        ("two-layer-adam", 3, 3, "bytes"),  # Adam's moments
    ],
)
def test_a_continued_run_equals_one_uninterrupted_run(tmp_path, name, first, second, via):
    whole = train(name, steps=first + second, seed=2, evaluate=False)
    part = train(name, steps=first, seed=2, evaluate=False)
    if via == "bytes":
        resume = save_checkpoint(part)
    elif via == "file":
        resume = tmp_path / "run.pth"
        save_checkpoint(part, resume)
    elif via == "buffer":
        resume = io.BytesIO()
        save_checkpoint(part, part.optimizer, resume)
        resume.seek(0)
    else:
        resume = part
    rest = train(name, steps=second, seed=2, resume=resume, evaluate=False)
    assert rest.start_step == first and rest.steps_done == first + second
    assert rest.losses[:first] == part.losses
    assert rest.losses == whole.losses
    for p, q in zip(rest.model.parameters(), whole.model.parameters(), strict=True):
        assert torch.equal(p, q)
    if via == "result":  # continuing never changes the finished run
        assert part.steps_done == first and len(part.losses) == first


def test_checkpoint_into_a_new_network_and_optimizer_as_in_seed_001(tmp_path):
    result = train("mnist-cnn", steps=3, evaluate=False)
    path = tmp_path / "model.pth"
    save_checkpoint(result.model, result.optimizer, path)
    preset = get_preset("mnist-cnn")
    network = preset.build(seed=9)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.5)
    ckpt = load_checkpoint(path, model=network, optimizer=optimizer)
    assert isinstance(ckpt, Checkpoint)
    for p, q in zip(network.parameters(), result.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert optimizer.state_dict()["state"].keys() == result.optimizer.state_dict()["state"].keys()
    # a bare state_dict, as the tutorial saves model.pth, is a weights-only checkpoint
    torch.save(result.model.state_dict(), tmp_path / "bare.pth")
    bare = load_checkpoint(tmp_path / "bare.pth", model=preset.build(0))
    assert bare.optimizer_state is None and bare.step == 0
    assert isinstance(load_checkpoint(save_checkpoint(result)).build_model(), torch.nn.Module)


class _NotAllowed:
    """Something weights_only loading must refuse (arbitrary pickled objects)."""


def test_bad_checkpoints_raise_data_errors(tmp_path):
    with pytest.raises(DataError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(b"not a checkpoint at all")
    unsafe = io.BytesIO()
    torch.save({"format": "gradviz-checkpoint", "model_state": {}, "x": _NotAllowed()}, unsafe)
    with pytest.raises(DataError, match=r"refused: it holds a Python object .*_NotAllowed"):
        load_checkpoint(unsafe.getvalue())  # weights_only=True refuses the class
    ckpt = save_checkpoint(train("quadrant-sgd", steps=1, evaluate=False))
    with pytest.raises(DataError, match="do not fit this network"):
        load_checkpoint(ckpt, model=build_network("2-5-4 sigmoid"))
    with pytest.raises(ArgumentError, match="from preset quadrant-sgd"):
        train("quadrant-params", resume=ckpt, steps=1)
    with pytest.raises(DataError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(DataError, match="holds a list"):
        load_checkpoint(_saved([1, 2, 3]))


def _saved(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ------------------------------------------------------------------- progress and stopping


def test_callback_gets_progress_and_can_stop_the_run():
    seen = []
    result = train("regression-1-10-1", steps=7, callback=lambda s, t, v: seen.append((s, t, v)))
    assert [s for s, _, _ in seen] == list(range(1, 8))
    assert all(t == 7 for _, t, _ in seen) and [v for _, _, v in seen] == result.losses
    stopped = train("regression-1-10-1", steps=50, callback=lambda s, t, v: s >= 5)
    assert stopped.stopped and stopped.steps_done == 5 and len(stopped.losses) == 5

    def raises(step, total, value):
        if step == 3:
            raise StopTraining

    assert train("regression-1-10-1", steps=50, callback=raises).steps_done == 3
    every = []
    train("regression-1-10-1", steps=10, callback=lambda s, t, v: every.append(s), callback_every=4)
    assert every == [4, 8, 10]


def test_stop_is_polled_every_step():
    calls = []
    result = train("quadrant-sgd", steps=100, stop=lambda: len(calls) >= 4 or calls.append(1))
    assert result.stopped and result.steps_done == 4
    event = threading.Event()
    event.set()
    assert train("quadrant-sgd", steps=100, stop=event).steps_done == 0


def test_other_callback_errors_propagate_and_restore_the_process():
    threads = torch.get_num_threads()
    state = torch.get_rng_state()

    def boom(step, total, value):
        raise KeyError("app went away")

    with pytest.raises(KeyError):
        train("mnist-cnn", steps=3, callback=boom)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), state)


def test_a_diverging_run_ends_without_an_exception():
    result = train("two-layer-autograd", steps=50, lr=1.0)
    assert result.diverged and not math.isfinite(result.losses[-1])
    assert result.steps_done < 50
    assert "diverged" in result.message


# ------------------------------------------------------------------------- overriding


def test_overrides_and_plain_modules():
    adam = train("quadrant-params", steps=5, optimizer="Adam", lr=0.05)
    assert isinstance(adam.optimizer, torch.optim.Adam) and adam.settings["update"] == "optimizer"
    assert adam.optimizer.param_groups[0]["lr"] == 0.05
    mom = train("quadrant-sgd", steps=3, momentum=0.9)
    assert mom.optimizer.param_groups[0]["momentum"] == 0.9
    short = train("keras-dense-512", epochs=1, batch_size=500)
    assert short.steps_done == 3 and short.steps_per_epoch == 3 and len(short.test_losses) == 1
    data = get_preset("quadrant-sgd").data(0)
    net = build_network("2-8-4 relu", seed=0)
    mine = train(net, data=(data.X, data.labels), steps=30, lr=0.1)
    assert mine.model is net and mine.preset is None
    assert mine.losses[-1] < mine.losses[0] and "accuracy" in mine.metrics
    ckpt = load_checkpoint(save_checkpoint(mine))
    assert ckpt.spec == net.spec and ckpt.preset is None
    rebuilt = ckpt.build_model()
    assert all(
        torch.equal(p, q) for p, q in zip(rebuilt.parameters(), net.parameters(), strict=True)
    )
    reg = train(
        build_network("1-6-1 tanh", seed=0),
        data=(data.X[:, :1], data.X[:, 1:]),
        steps=3,
        loss="mse",
    )
    assert len(reg.losses) == 3
    assert "mse" in train("regression-1-10-1", steps=2, loss="mse").preset.loss_name


def test_a_summed_callable_loss_reports_whole_set_losses_on_its_own_scale():
    data = get_preset("quadrant-sgd").data(0)
    X, Y = data.X, data.X.flip(1)

    def summed(p, t):
        return torch.nn.functional.mse_loss(p, t, reduction="sum")

    def run(**kw):
        net = build_network("2-4-2 tanh", seed=0)
        return train(net, data=(X, Y), steps=4, batch_size=10, lr=0.01, **kw)

    named = run(loss="mse_sum")  # a loss name knows it is summed
    mine = run(loss=summed, loss_reduction="sum")
    assert mine.losses == named.losses
    assert mine.metrics["train_loss"] == pytest.approx(named.metrics["train_loss"], rel=1e-12)
    # Taken for a mean, the summed loss of the whole set is reported as is: len(X)/10
    # times the per-batch scale of the curve.
    as_mean = run(loss=summed)
    scaled = named.metrics["train_loss"] * len(X) / 10
    assert as_mean.metrics["train_loss"] == pytest.approx(scaled, rel=1e-6)
    with pytest.raises(ArgumentError, match="loss_reduction"):
        run(loss=summed, loss_reduction="total")
    with pytest.raises(ArgumentError, match="only a callable loss"):
        run(loss="mse", loss_reduction="sum")


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"lr": float("nan")}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"lr": 0}, "lr"),
        ({"lr": "0.1"}, "lr"),
        ({"lr": True}, "lr"),
        ({"steps": 0}, "steps"),
        ({"steps": -5}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"steps": "10"}, "steps"),
        ({"epochs": 0}, "epochs"),
        ({"steps": 3, "epochs": 1}, "epochs"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"batch_size": 0}, "batch_size"),
        ({"optimizer": "adamm"}, "optimizer"),
        ({"optimizer": 3}, "optimizer"),
        ({"momentum": 1.5}, "momentum"),
        ({"optimizer": "adam", "momentum": 0.9}, "momentum"),
        ({"callback": "print"}, "callback"),
        ({"stop": 5}, "stop"),
        ({"loss": "hinge"}, "loss"),
        ({"loss": 3}, "loss"),
        ({"threads": 0}, "threads"),
        ({"callback_every": 0}, "callback_every"),
        ({"data": "mnist.csv"}, "data"),
        ({"resume": 42}, "resume"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_fix(kwargs, argument):
    with pytest.raises(ArgumentError) as info:
        train("quadrant-sgd", **kwargs)
    assert info.value.argument == argument
    assert str(info.value).startswith(f"{argument}=")
    assert len(info.value.fix) > 10


def test_bad_targets_and_mismatched_updates():
    with pytest.raises(ArgumentError, match="did you mean 'quadrant-sgd'"):
        train("quadrant-sdg", steps=1)
    with pytest.raises(ArgumentError, match="preset_or_name_or_model"):
        train(42)
    with pytest.raises(ArgumentError, match="data"):
        train(build_network("2-3"))
    with pytest.raises(ArgumentError, match="NumPy"):
        train("two-layer-numpy", optimizer="sgd", steps=1)
    with pytest.raises(ArgumentError, match="optimizer='sgd'"):
        train("two-layer-autograd", momentum=0.5, steps=1)
    with pytest.raises(GradvizError):
        train(build_network("2-3"), data=(torch.zeros(4, 2), torch.zeros(3)))


def test_data_that_does_not_fit_is_a_data_error():
    with pytest.raises(DataError, match=r"\(N, 2\)"):
        train("quadrant-sgd", data=(torch.zeros(5, 3), torch.zeros(5, 4)), steps=1)
    net = build_network("2-3", seed=0)
    with pytest.raises(DataError, match="first step failed"):
        train(net, data=(torch.zeros(5, 2), torch.tensor([0, 1, 2, 7, 1])), steps=1)


def test_overlapping_runs_replay_and_restore_the_thread_setting():
    threads = torch.get_num_threads()
    alone = {name: train(name, steps=4, seed=1).losses for name in ["mnist-cnn", "quadrant-sgd"]}
    results: dict[str, list] = {}

    def run(key: str, name: str) -> None:
        results[key] = train(name, steps=4, seed=1).losses

    workers = [
        threading.Thread(target=run, args=(f"{name}-{i}", name))
        for i in range(2)
        for name in ["mnist-cnn", "quadrant-sgd"]
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for key, losses in results.items():
        assert losses == alone[key.rsplit("-", 1)[0]]
    assert torch.get_num_threads() == threads


def test_resume_with_another_optimizer_starts_its_state_fresh():
    from gradviz import train

    first = train("quadrant-sgd", steps=5, seed=0)
    cont = train("quadrant-sgd", steps=5, seed=0, resume=first, optimizer="adam", lr=0.01)
    assert cont.steps_done == 10 or len(cont.losses) == 10
    assert all(math.isfinite(v) for v in cont.losses)
    assert type(cont.optimizer).__name__ == "Adam"

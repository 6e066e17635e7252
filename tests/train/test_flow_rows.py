"""GradientFlow's two ways to reduce a step (batched rows for small nets, in place for large
ones) give the statistics computed directly, with missing and sparse gradients too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradviz.train import flow_rows
from gradviz.train.flow import GradientFlow


class _Net(nn.Module):
    """A hidden layer, an unused layer (no gradient) and a sparse embedding."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 3, sparse=True)
        self.hidden = nn.Linear(3, width)
        self.out = nn.Linear(width, 1)
        self.unused = nn.Linear(2, 2)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(self.emb(idx))))


def _run(width: int, steps: int, seed: int) -> tuple[GradientFlow, list, list, list]:
    torch.manual_seed(seed)
    net = _Net(width)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    grads, before, after = [], [], []
    idx = torch.randint(0, 10, (16,))
    with GradientFlow(net, optimizer=opt) as flow:
        for _ in range(steps):
            opt.zero_grad()
            net(idx).square().mean().backward()
            grads.append([None if p.grad is None else p.grad.to_dense().clone()
                          for p in net.parameters()])
            before.append([p.detach().clone() for p in net.parameters()])
            opt.step()
            after.append([p.detach().clone() for p in net.parameters()])
    return flow, grads, before, after


@settings(max_examples=16, deadline=None)
@given(width=st.integers(1, 40), steps=st.integers(1, 12), seed=st.integers(0, 99),
       batched=st.booleans(), in_numpy=st.booleans())
def test_both_ways_give_the_statistics_computed_directly(width, steps, seed, batched, in_numpy):
    with pytest.MonkeyPatch.context() as mp:
        if not batched:
            mp.setattr(flow_rows, "ROW_BYTES", 1)  # one row: reduced in place
        if not in_numpy:
            mp.setattr(flow_rows, "NUMPY_MOST", 0)  # batched rows reduced by torch
        flow, grads, before, after = _run(width, steps, seed)
    records = flow.records
    assert [r.step for r in records] == list(range(1, steps + 1))
    names = [n for n, _ in flow._model.named_parameters()]  # the registration order
    for r, gs, w0s, w1s in zip(records, grads, before, after, strict=True):
        for i, name in enumerate(names):
            g = gs[i]
            row = r.grad[i]
            if g is None:  # the unused layer
                assert name.startswith("unused") and np.isnan(row).all()
                continue
            assert row[0] == pytest.approx(float(g.norm()), rel=1e-5, abs=1e-12)
            assert row[1] == pytest.approx(float(g.abs().mean()), rel=1e-5, abs=1e-12)
            assert row[2] == pytest.approx(float(g.abs().max()), rel=1e-6)
            assert row[3] == pytest.approx(float((g == 0).double().mean()))
            ratio = float((w1s[i] - w0s[i]).norm() / w0s[i].norm())
            assert r.update_ratio[i] == pytest.approx(ratio, rel=1e-4, abs=1e-12)


def test_a_small_net_waits_in_rows_and_a_large_one_does_not():
    small = flow_rows._Rows([nn.Parameter(torch.zeros(3, 4))])
    large = flow_rows._Rows([nn.Parameter(torch.zeros(1000, 1000))])
    assert small.batched and small.count == flow_rows.MOST_ROWS
    assert not large.batched and large.count == 1 and set(large.buf) == {flow_rows.BEFORE}


def test_reading_while_rows_wait_gives_every_step_once():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    X, y = torch.randn(16, 4), torch.randn(16, 1)
    seen = []
    with GradientFlow(net, optimizer=opt) as flow:
        for step in range(150):  # more steps than rows: rows are reused after a reduce
            opt.zero_grad()
            ((net(X) - y) ** 2).mean().backward()
            opt.step()
            if step % 7 == 0:
                seen.append(len(flow.records))
    assert flow.steps == list(range(1, 151))
    assert seen == sorted(seen) and seen[0] == 1
    assert all(np.isfinite(r.grad).all() and np.isfinite(r.act[:, :4]).all()
               for r in flow.records)


def test_steps_waiting_to_be_reduced_stay_bounded_without_a_reader(monkeypatch):
    monkeypatch.setattr(flow_rows, "ROW_BYTES", 1)  # in place: the rows never run out
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    X, y = torch.randn(16, 4), torch.randn(16, 1)
    most = 0
    with GradientFlow(net, optimizer=opt) as flow:
        for _ in range(3 * flow_rows.MOST_ROWS):
            opt.zero_grad()
            ((net(X) - y) ** 2).mean().backward()
            opt.step()
            most = max(most, len(flow._ready))
    assert most <= flow_rows.MOST_ROWS
    assert flow.steps == list(range(1, 3 * flow_rows.MOST_ROWS + 1))


def _outputs(shape: tuple[int, ...], calls: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # ReLU-like outputs: zeros, and for some features every entry zero (a dead unit)
    outs = [torch.randn(shape, generator=g).clamp(min=0) for _ in range(calls)]
    if len(shape) >= 2:
        for o in outs:
            o[:, 0] = 0
    return outs


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=0, max_size=4).map(tuple),
    calls=st.integers(1, 5),
    seed=st.integers(0, 99),
)
def test_a_kept_small_output_gives_the_statistics_of_one_reduced_at_once(shape, calls, seed):
    outs = _outputs(shape, calls, seed)

    def table(keep: int) -> np.ndarray:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(flow_rows, "KEEP_OUTPUT", keep)
            entry = flow_rows._Entry(1, None, None, None,
                                     [flow_rows.act_call(0, o) for o in outs])
        for o in outs:
            o.add_(1.0)  # the module's output changed in place later (ReLU(inplace=True))
        try:
            return flow_rows.act_table([entry], 1, 5)[0]
        finally:
            for o in outs:
                o.sub_(1.0)

    kept, direct = table(10**9), table(-1)  # every output copied / none
    np.testing.assert_allclose(kept, direct, rtol=1e-6, equal_nan=True)
    x = torch.cat([o.reshape(-1) for o in outs]).double()
    assert kept[0, 0] == pytest.approx(float(x.mean()), rel=1e-6, abs=1e-12)
    assert kept[0, 2] == pytest.approx(float((x == 0).double().mean()))
    if len(shape) >= 2:
        assert kept[0, 3] >= 1 / shape[1] - 1e-12  # feature 0 is dead in every call

"""Programs that reach in-place writes into views (CopySlices), as_strided, the FFT family
and complex views, stepped in float64: every op node type they produce has a NumPy rule,
and every reference agrees with torch.

These are the shapes issue 15 met in user models: efficientnet's in-place dropout on a
flattened (viewed) tensor, slice assignment and index_put_ into views, an FFT filter and
round trip, the channels-last mean that swin_t and convnext_tiny restride with
as_strided_, and a shifted-window attention block written the way swin_t writes it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradviz import BackwardStepper
from gradviz.backward.rules import RULES

D = torch.float64


def _efficientnet_head():
    # torchvision's efficientnet classifier: Dropout(inplace=True) right after flatten,
    # a view of the pooled features, so the in-place mul lands in a CopySlices.
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(True))
    classifier = nn.Sequential(nn.Dropout(0.2, inplace=True), nn.Linear(8, 4))
    model = nn.ModuleDict({"features": features, "classifier": classifier}).to(D).train()
    x = torch.randn(2, 3, 5, 5, dtype=D)
    pooled = torch.flatten(F.adaptive_avg_pool2d(model["features"](x), 1), 1)
    return F.cross_entropy(model["classifier"](pooled), torch.tensor([1, 3]))


def _writes_into_views():
    x = torch.randn(4, 3, dtype=D, requires_grad=True)
    z = torch.randn(4, dtype=D, requires_grad=True)
    y = x.clone()
    y[1:3].mul_(2)  # in place on a slice
    y[:, 0] = z  # slice assignment: a copy_ into a select view
    y.t()[1].index_put_((torch.tensor([0, 2]),), z[:2], accumulate=True)
    y.diagonal().relu_()
    return (y * torch.arange(12.0, dtype=D).reshape(4, 3)).pow(2).sum()


def _fft_filter():
    x = torch.randn(3, 8, dtype=D, requires_grad=True)
    h = torch.randn(5, dtype=D, requires_grad=True)
    y = torch.fft.irfft(torch.fft.rfft(x) * torch.fft.rfft(h, n=8), n=8)
    spec = torch.fft.fft2(y.to(torch.complex128), norm="ortho")
    back = torch.fft.ifft(spec / (1 + spec.abs()))
    return y.pow(2).sum() + spec.abs().sum() + back.real.sum() + spec.imag.pow(2).sum()


def _complex_views():
    r = torch.rand(4, dtype=D, requires_grad=True)
    theta = torch.randn(4, dtype=D, requires_grad=True)
    x = torch.randn(4, 2, dtype=D, requires_grad=True)
    z = torch.polar(r + 0.5, theta) * torch.view_as_complex(x) - 1.5
    return torch.fft.hfft(z.conj()).pow(2).sum() + z.abs().pow(3).sum()


def _channels_last_pool():
    x = torch.randn(2, 5, 5, 4, dtype=D, requires_grad=True)
    return F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), 1).flatten(1).pow(2).sum()


class _WindowBlock(nn.Module):
    """One shifted-window attention block, as torchvision's swin_t builds it (3x3 windows)."""

    def __init__(self, c: int = 4, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.ws = heads, 3
        self.norm, self.qkv, self.proj = nn.LayerNorm(c), nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.table = nn.Parameter(torch.randn(25, heads))
        self.register_buffer("index", torch.randint(0, 25, (81,)))
        self.head = nn.Linear(2 * c, 3)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws, nw = self.ws, (h // self.ws) * (w // self.ws)
        x = torch.roll(F.pad(x, (0, 0, 0, 0, 0, 0)), shifts=(-1, -1), dims=(1, 2))
        x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nw, 9, c)
        qkv = self.qkv(x).reshape(b * nw, 9, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (c // self.heads) ** -0.5, qkv[1], qkv[2]
        bias = self.table[self.index].view(9, 9, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
        attn = F.softmax(q.matmul(k.transpose(-2, -1)) + bias, dim=-1)
        y = self.proj(attn.matmul(v).transpose(1, 2).reshape(b * nw, 9, c))
        y = y.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return torch.roll(y, shifts=(1, 1), dims=(1, 2))[:, :h, :w, :].contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attend(self.norm(x))
        merged = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :]], -1)
        pooled = F.adaptive_avg_pool2d(merged.permute(0, 3, 1, 2), 1).flatten(1)
        return self.head(pooled)


def _swin_like():
    torch.manual_seed(0)
    block = _WindowBlock().to(D)
    return block(torch.randn(2, 6, 6, 4, dtype=D)).pow(2).sum()


PROGRAMS = {
    "efficientnet head": (_efficientnet_head, {"CopySlices", "NativeBatchNormBackward0"}),
    "writes into views": (_writes_into_views, {"CopySlices", "CloneBackward0"}),
    "fft filter": (_fft_filter, {"FftR2CBackward0", "FftC2RBackward0", "FftC2CBackward0",
                                 "AbsBackward0", "ViewAsRealBackward0", "MulBackward0"}),
    "complex views": (_complex_views, {"PolarBackward0", "ViewAsComplexBackward0",
                                       "ConjBackward0", "FftC2RBackward0"}),
    "channels-last pool": (_channels_last_pool, {"AsStridedBackward1"}),
    "swin-like block": (_swin_like, {"AsStridedBackward1", "RollBackward0", "IndexBackward0"}),
}


def _op_types(stepper: BackwardStepper) -> set[str]:
    return {s.node.grad_fn for s in stepper.op_steps()}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_every_node_type_has_a_rule_and_agrees(name):
    torch.manual_seed(1)
    program, expected = PROGRAMS[name]
    stepper = BackwardStepper(program())
    types = _op_types(stepper)
    assert expected <= types, f"the program no longer reaches {expected - types}"
    # A new node type in these programs without a rule fails here, named.
    assert sorted(types - set(RULES)) == []
    assert stepper.summary()["missing"] == []
    bad = [(s.node.label, s.max_rel_error) for s in stepper.op_steps() if not s.agrees]
    assert bad == []


@settings(max_examples=20)
@given(
    rows=st.integers(1, 3),
    n=st.integers(1, 9),
    norm=st.sampled_from(["backward", "ortho", "forward"]),
    seed=st.integers(0, 2**16),
)
def test_fft_round_trip_steps_with_agreeing_references(rows, n, norm, seed):
    # irfft(rfft(x)) is x for every length: the stepper checks each transform on the way.
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, dtype=D, generator=gen, requires_grad=True)
    w = torch.randn(rows, n, dtype=D, generator=gen)
    y = torch.fft.irfft(torch.fft.rfft(x, norm=norm), n=n, norm=norm)
    torch.testing.assert_close(y, x)
    stepper = BackwardStepper((y * w).sum())
    assert {"FftR2CBackward0", "FftC2RBackward0"} <= _op_types(stepper)
    assert all(s.reference is not None and s.agrees for s in stepper.op_steps())
    (grad,) = stepper.param_grads.values()  # x is the one leaf
    torch.testing.assert_close(torch.from_numpy(grad), w)


def test_a_real_only_rule_still_refuses_complex_tensors():
    # Only rules written for complex tensors read them; the others report no reference
    # rather than misreading a complex gradient as real.
    assert not RULES["SinBackward0"].complex and RULES["FftR2CBackward0"].complex
    z = torch.view_as_complex(torch.randn(3, 2, dtype=D, requires_grad=True))
    stepper = BackwardStepper(torch.view_as_real(torch.sin(z)).sum())
    sin = next(s for s in stepper.op_steps() if s.node.grad_fn == "SinBackward0")
    assert sin.reference is None
    assert "SinBackward0" in stepper.summary()["missing"]

"""Padding and index-rearranging ops: constant, reflection and replication padding, pixel
(un)shuffle, tril/triu and nan_to_num. Each output entry is a copy of one input entry (or a
constant), so backward adds the gradient back onto the entry it was copied from.

Forward values come from the nodes' saved attributes: the pad amounts (``pad``/``padding``,
last dim first as ``F.pad`` takes them), ``upscale_factor``/``downscale_factor``,
``diagonal``, and the input ``self`` for nan_to_num (which entries were finite). Sizes
the nodes do not save are recovered from the incoming gradient's shape and the pads.

Circular padding (``mode="circular"``) has no node of its own in torch 2.13: it is built
from slice copies (CopySlices, SliceBackward0), whose rules are in ``inplace`` and ``index``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from gradviz.backward.rules._common import signed
from gradviz.backward.rules._examples import Draw, shape, tensor
from gradviz.backward.rules._registry import Case, RuleContext, rule

# ---------------------------------------------------------------- padding


def _unpad(
    g: np.ndarray, pads: Sequence[int], source: Callable[[np.ndarray, int], np.ndarray]
) -> np.ndarray:
    """Send `g` back through a pad of the last ``len(pads) // 2`` dims.

    `source(i, n)` maps each output position, shifted so the input starts at 0, to the
    input index it copied (anything outside [0, n) copied nothing). Padding acts on each
    dim independently, so the dims can be undone one at a time.
    """
    pads = [signed(p) for p in pads]
    for k in range(len(pads) // 2):
        ax = g.ndim - 1 - k
        lo, hi = pads[2 * k], pads[2 * k + 1]
        n = g.shape[ax] - lo - hi
        src = source(np.arange(g.shape[ax]) - lo, n)
        keep = (src >= 0) & (src < n)
        moved = np.moveaxis(g, ax, 0)
        out = np.zeros((n, *moved.shape[1:]))
        np.add.at(out, src[keep], moved[keep])
        g = np.moveaxis(out, 0, ax)
    return g


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    i = np.abs(i)  # mirror about index 0 (the edge itself is not repeated)
    return np.where(i > n - 1, 2 * (n - 1) - i, i)  # then about index n - 1


def _pads(draw: Draw, sides: Sequence[int], mode: str) -> list[int]:
    """Pad amounts for `sides` (the padded dims, first to last), in F.pad's last-dim-first order.

    Negative pads crop; the crops of one dim leave at least one entry (none for constant).
    Reflection pads stay below the size, so the mirrored index exists.
    """
    floor = 0 if mode == "constant" else 1
    pads: list[int] = []
    for n in reversed(sides):
        top = {"constant": 3, "reflect": n - 1, "replicate": n + 1}[mode]
        lo = draw(st.integers(floor - n, top), label="pad low")
        hi = draw(st.integers(floor - n - min(lo, 0), top), label="pad high")
        pads += [lo, hi]
    return pads


def _constant_pad_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=4)
    k = draw(st.integers(0, len(s)), label="padded dims")
    pads = _pads(draw, s[len(s) - k:], "constant")
    value = draw(st.sampled_from([0.0, 1.5]), label="value")
    x = tensor(draw, s)
    return Case(inputs=(x,), fn=lambda x: F.pad(x, pads, value=value))


@rule(
    "ConstantPadNdBackward0",
    formula=r"\bar{X}_{i} = \bar{Y}_{i + p_{\text{lo}}}\ \text{(per padded dim; the padding gets "
            r"nothing, cropped entries get 0)}",
    example=_constant_pad_example,
)
def _constant_pad(ctx: RuleContext):
    return (_unpad(ctx.grad, ctx["pad"], lambda i, n: i),)


def _mode_pad_example(mode: str, k: int):
    """F.pad in `mode` of the last `k` dims of a tensor with one or two leading (batch) dims."""

    def example(draw: Draw) -> Case:
        lead = shape(draw, min_dims=1, max_dims=2, max_side=2)
        sides = shape(draw, min_dims=k, max_dims=k, max_side=4 if k < 3 else 3)
        pads = _pads(draw, sides, mode)
        x = tensor(draw, lead + sides)
        return Case(inputs=(x,), fn=lambda x: F.pad(x, pads, mode=mode))

    return example


_REFLECT_FORMULA = (
    r"\bar{X}_i = \sum_{o\,:\ r(o - p_{\text{lo}}) = i} \bar{Y}_o,\quad "
    r"r(j) = n - 1 - \bigl|\, n - 1 - |j| \,\bigr|\ \text{(per padded dim)}"
)


def _reflection_pad(ctx: RuleContext):
    return (_unpad(ctx.grad, ctx["padding"], _reflect),)


_REPLICATE_FORMULA = (
    r"\bar{X}_i = \sum_{o\,:\ \operatorname{clip}(o - p_{\text{lo}},\, 0,\, n - 1) = i} \bar{Y}_o"
    r"\ \text{(per padded dim; the edge entries collect the padding)}"
)


def _replication_pad(ctx: RuleContext):
    return (_unpad(ctx.grad, ctx["padding"], lambda i, n: np.clip(i, 0, n - 1)),)


# torch spells these with a capital D (ReflectionPad1DBackward0), unlike the nn modules.
for _k in (1, 2, 3):
    rule(f"ReflectionPad{_k}DBackward0", formula=_REFLECT_FORMULA,
         example=_mode_pad_example("reflect", _k))(_reflection_pad)
    rule(f"ReplicationPad{_k}DBackward0", formula=_REPLICATE_FORMULA,
         example=_mode_pad_example("replicate", _k))(_replication_pad)


# ---------------------------------------------------------------- pixel (un)shuffle


def _pixel_shuffle_example(unshuffle: bool):
    def example(draw: Draw) -> Case:
        lead = shape(draw, min_dims=0, max_dims=2, max_side=2)
        r = draw(st.integers(1, 3), label="factor")
        c, h, w = shape(draw, min_dims=3, max_dims=3, max_side=3)
        if unshuffle:
            x = tensor(draw, (*lead, c, h * r, w * r))
            return Case(inputs=(x,), fn=lambda x: F.pixel_unshuffle(x, r))
        x = tensor(draw, (*lead, c * r * r, h, w))
        return Case(inputs=(x,), fn=lambda x: F.pixel_shuffle(x, r))

    return example


@rule(
    "PixelShuffleBackward0",
    formula=r"\bar{X}_{\ldots,\, c r^2 + i r + j,\, h,\, w} = \bar{Y}_{\ldots,\, c,\, h r + i,\, w "
            r"r + j}\ \text{(pixel\_unshuffle of } \bar{Y})",
    example=_pixel_shuffle_example(unshuffle=False),
)
def _pixel_shuffle(ctx: RuleContext):
    g, r = ctx.grad, int(ctx["upscale_factor"])
    *lead, c, hr, wr = g.shape
    b = len(lead)
    g = g.reshape(*lead, c, hr // r, r, wr // r, r)  # (..., c, h, i, w, j)
    g = g.transpose(*range(b), b, b + 2, b + 4, b + 1, b + 3)  # (..., c, i, j, h, w)
    return (g.reshape(*lead, c * r * r, hr // r, wr // r),)


@rule(
    "PixelUnshuffleBackward0",
    formula=r"\bar{X}_{\ldots,\, c,\, h r + i,\, w r + j} = \bar{Y}_{\ldots,\, c r^2 + i r + j,\, "
            r"h,\, w}\ \text{(pixel\_shuffle of } \bar{Y})",
    example=_pixel_shuffle_example(unshuffle=True),
)
def _pixel_unshuffle(ctx: RuleContext):
    g, r = ctx.grad, int(ctx["downscale_factor"])
    *lead, crr, h, w = g.shape
    b = len(lead)
    g = g.reshape(*lead, crr // (r * r), r, r, h, w)  # (..., c, i, j, h, w)
    g = g.transpose(*range(b), b, b + 3, b + 1, b + 4, b + 2)  # (..., c, h, i, w, j)
    return (g.reshape(*lead, crr // (r * r), h * r, w * r),)


# ---------------------------------------------------------------- masks


def _triangle_example(upper: bool):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=2, max_dims=4)
        k = draw(st.integers(-s[-2] - 1, s[-1] + 1), label="diagonal")
        x = tensor(draw, s)
        if draw(st.booleans(), label="in place"):
            return Case(inputs=(x,),
                        fn=lambda x: (x * 1.0).triu_(k) if upper else (x * 1.0).tril_(k))
        return Case(inputs=(x,), fn=lambda x: torch.triu(x, k) if upper else torch.tril(x, k))

    return example


@rule(
    "TrilBackward0",
    formula=r"\bar{X} = \operatorname{tril}_k(\bar{Y})\ \text{(zero above diagonal } k\text{, over "
            r"the last two dims)}",
    example=_triangle_example(upper=False),
)
def _tril(ctx: RuleContext):
    return (np.tril(ctx.grad, signed(ctx["diagonal"])),)


@rule(
    "TriuBackward0",
    formula=r"\bar{X} = \operatorname{triu}_k(\bar{Y})\ \text{(zero below diagonal } k\text{, over "
            r"the last two dims)}",
    example=_triangle_example(upper=True),
)
def _triu(ctx: RuleContext):
    return (np.triu(ctx.grad, signed(ctx["diagonal"])),)


def _nan_to_num_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0)
    x = tensor(draw, s, requires_grad=False)
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1), label="non-finite seed"))
    specials = rng.choice([np.nan, np.inf, -np.inf, 0.0], size=s, p=[0.2, 0.15, 0.15, 0.5])
    x = torch.where(torch.tensor(specials == 0.0), x, torch.tensor(specials)).requires_grad_()
    nan, posinf = draw(st.sampled_from([(None, None), (0.5, 2.0)]), label="replacements")
    if draw(st.booleans(), label="in place"):
        return Case(inputs=(x,), fn=lambda x: (x * 1.0).nan_to_num_(nan, posinf))
    return Case(inputs=(x,), fn=lambda x: torch.nan_to_num(x, nan, posinf))


@rule(
    "NanToNumBackward0",
    formula=r"\bar{x} = \bar{y}\,[x \text{ is finite}]\ \text{(replaced nan/}\pm\infty\text{ "
            r"entries get 0)}",
    example=_nan_to_num_example,
)
def _nan_to_num(ctx: RuleContext):
    return (np.where(np.isfinite(ctx["self"]), ctx.grad, 0.0),)

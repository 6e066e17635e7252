"""Softmax and losses: softmax/log_softmax, NLL, MSE, smooth L1 and Huber, binary
cross-entropy (with logits), multi-margin, soft margin and CTC loss.

Loss nodes save an integer ``reduction`` (0 none, 1 mean, 2 sum); their rules spread the
incoming gradient over every loss term. CTC follows torch's convention only on normalized
log-probabilities (see its note): the rule runs its own forward-backward recursion over
``log_probs``, targets and lengths rather than reading the alphas torch saved.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from gradviz.backward.rules._common import axis, shaped, sigmoid, signed, sp
from gradviz.backward.rules._examples import (
    Draw,
    leaf,
    seeded_rng,
    shape,
    suffix_shape,
    tensor,
    uniform,
)
from gradviz.backward.rules._registry import Case, RuleContext, rule

_MEAN, _SUM = 1, 2  # reduction codes saved by loss nodes (0 is 'none')

def _reduction_example(draw) -> str:
    return draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")


def _loss_scale(ctx: RuleContext, numel: int):
    """The incoming gradient spread over every loss term (divided by numel for 'mean')."""
    g = ctx.grad
    if ctx["reduction"] == _MEAN:
        return g / numel
    return g

# ---------------------------------------------------------------------------------------
# Softmax family
# ---------------------------------------------------------------------------------------


def _softmax_example(op):
    def example(draw) -> Case:
        s = shape(draw, min_dims=1)
        dim = draw(st.integers(-len(s), len(s) - 1))
        x = tensor(draw, s)
        return Case(inputs=(x,), fn=lambda x: op(x, dim))

    return example


_plain_softmax_example = _softmax_example(F.softmax)


@rule("SoftmaxBackward0",
      formula=r"y = \operatorname{softmax}(x):\quad \bar{x} = y \odot \big(\bar{y} - "
              r"\textstyle\sum_{d} \bar{y} \odot y\big)",
      example=_plain_softmax_example)
def _softmax(ctx: RuleContext):
    y, g = ctx["result"], ctx.grad
    ax = axis(ctx["dim"], y.ndim)
    return (y * (g - (g * y).sum(axis=ax, keepdims=True)),)


_log_softmax_example = _softmax_example(F.log_softmax)


@rule("LogSoftmaxBackward0",
      formula=r"y = \log\operatorname{softmax}(x):\quad \bar{x} = \bar{y} - e^{y} "
              r"\textstyle\sum_{d} \bar{y}",
      example=_log_softmax_example)
def _log_softmax(ctx: RuleContext):
    y, g = ctx["result"], ctx.grad
    ax = axis(ctx["dim"], y.ndim)
    return (g - np.exp(y) * g.sum(axis=ax, keepdims=True),)


def _safe_softmax_example(draw) -> Case:
    s = shape(draw, min_dims=2)
    x = tensor(draw, s)
    # Mask whole rows to -inf now and then: there the safe softmax outputs 0, not NaN.
    rows = torch.from_numpy(seeded_rng(draw).random(s[:-1]) < 0.3)
    return Case(inputs=(x,), fn=lambda x: torch._safe_softmax(
        x.masked_fill(rows.unsqueeze(-1), float("-inf")), -1))


@rule("SafeSoftmaxBackward0",
      formula=r"y = \operatorname{softmax}(x) \text{ (0 on all-}{-\infty}\text{ rows)}:\quad "
              r"\bar{x} = y \odot \big(\bar{y} - \textstyle\sum_{d} \bar{y} \odot y\big)",
      example=_safe_softmax_example)
def _safe_softmax(ctx: RuleContext):
    return _softmax(ctx)


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------


def _nll_example(spatial: bool):
    def example(draw) -> Case:
        n = draw(st.integers(1, 4))
        c = draw(st.integers(2, 5))
        s: tuple[int, ...]  # the input's shape, then the target's: their ranks vary
        ts: tuple[int, ...]
        if spatial:
            extra = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
            s, ts = (n, c) + extra, (n,) + extra
        elif draw(st.booleans()):
            s, ts = (n, c), (n,)
        else:
            s, ts = (c,), ()
        rng = seeded_rng(draw)
        target = torch.from_numpy(np.asarray(rng.integers(0, c, size=ts)))
        reduction = _reduction_example(draw)
        ignore = draw(st.sampled_from([-100, 0]))
        if ignore == 0 and reduction == "mean" and bool((target == 0).all()):
            ignore = -100  # an all-ignored mean is 0/0
        weight = None
        if draw(st.booleans()):
            weight = torch.tensor(rng.uniform(0.2, 2.0, size=c), dtype=torch.float64)
        x = tensor(draw, s)
        via_log_softmax = draw(st.booleans())

        def fn(x):
            inp = F.log_softmax(x, 1 if len(s) > 1 else 0) if via_log_softmax else x
            return F.nll_loss(inp, target, weight=weight, ignore_index=ignore, reduction=reduction)

        return Case(inputs=(x,), fn=fn)

    return example


def _nll(ctx: RuleContext):
    x, t = ctx["self"], ctx["target"].astype(np.int64)
    class_axis = 1 if x.ndim >= 2 else 0
    c = x.shape[class_axis]
    w = np.ones(c) if ctx["weight"] is None else ctx["weight"]
    ignore = signed(ctx["ignore_index"])
    keep = t != ignore
    safe_t = np.where(keep, t, 0)
    g = ctx.grad
    if ctx["reduction"] == _MEAN:
        g = g / ctx["total_weight"]
    # Each loss term is -w[t] * x[t]: only the target class of each sample gets gradient.
    per_sample = np.where(keep, -w[safe_t] * g, 0.0)
    onehot = np.moveaxis(np.eye(c)[safe_t], -1, class_axis)
    return (np.expand_dims(per_sample, class_axis) * onehot,)


@rule("NllLossBackward0",
      formula=r"\ell_i = -w_{t_i} x_{i, t_i}:\quad \bar{x}_{i, t_i} = -w_{t_i}\,\bar{\ell}_i"
              r"\ \big(/\textstyle\sum_{j} w_{t_j} \text{ for mean}\big),\ 0 \text{ elsewhere and "
              r"where } t_i = \text{ignore}",
      example=_nll_example(False))
def _nll_loss(ctx: RuleContext):
    return _nll(ctx)


@rule("NllLoss2DBackward0",
      formula=r"\ell_{i,h,w} = -w_{t} x_{i, t, h, w}:\quad \bar{x}_{i, t_{ihw}, h, w} = "
              r"-w_{t_{ihw}}\,\bar{\ell}_{ihw}"
              r"\ \big(/\textstyle\sum w_{t} \text{ for mean}\big)",
      example=_nll_example(True))
def _nll_loss_2d(ctx: RuleContext):
    return _nll(ctx)


def _pair_loss_example(op, **kwargs):
    def example(draw) -> Case:
        s = shape(draw, min_dims=0)
        reduction = _reduction_example(draw)
        x = tensor(draw, s)
        t = tensor(draw, s, requires_grad=draw(st.booleans()))
        extra = {k: draw(st.sampled_from(v)) for k, v in kwargs.items()}
        # Keep |x - t| off the switch point between the quadratic and linear pieces.
        kink = extra.get("beta", extra.get("delta"))
        if kink is not None:
            with torch.no_grad():
                near = ((x - t).abs() - kink).abs() < 1e-3
                x[near] += 1e-2
        return Case(inputs=(x, t), fn=lambda x, t: op(x, t, reduction=reduction, **extra))

    return example


_mse_example = _pair_loss_example(F.mse_loss)


@rule("MseLossBackward0",
      formula=r"\ell = (x - t)^{2}:\quad \bar{x} = 2 (x - t) \odot \bar{\ell}\ (/N \text{ for "
              r"mean}),\ \bar{t} = -\bar{x}",
      example=_mse_example)
def _mse(ctx: RuleContext):
    x, t = ctx["self"], ctx["target"]
    gx = 2.0 * (x - t) * _loss_scale(ctx, x.size)
    return shaped(ctx, 0, gx), shaped(ctx, 1, -gx)


_smooth_l1_example = _pair_loss_example(F.smooth_l1_loss, beta=[1.0, 0.5, 2.0])


@rule("SmoothL1LossBackward0",
      formula=r"d = x - t:\quad \bar{x} = \bar{\ell} \odot \begin{cases} d/\beta & |d| < \beta \\ "
              r"\operatorname{sign}(d) & \text{else} \end{cases},\ \bar{t} = -\bar{x}",
      example=_smooth_l1_example)
def _smooth_l1(ctx: RuleContext):
    x, t, beta = ctx["self"], ctx["target"], ctx["beta"]
    d = x - t
    slope = np.where(np.abs(d) < beta, d / beta, np.sign(d))
    gx = slope * _loss_scale(ctx, x.size)
    return shaped(ctx, 0, gx), shaped(ctx, 1, -gx)


_huber_example = _pair_loss_example(F.huber_loss, delta=[1.0, 0.5, 2.0])


@rule("HuberLossBackward0",
      formula=r"d = x - t:\quad \bar{x} = \bar{\ell} \odot \begin{cases} d & |d| < \delta \\ "
              r"\delta\operatorname{sign}(d) & \text{else} \end{cases},\ \bar{t} = -\bar{x}",
      example=_huber_example)
def _huber(ctx: RuleContext):
    x, t, delta = ctx["self"], ctx["target"], ctx["delta"]
    d = x - t
    slope = np.where(np.abs(d) < delta, d, delta * np.sign(d))
    gx = slope * _loss_scale(ctx, x.size)
    return shaped(ctx, 0, gx), shaped(ctx, 1, -gx)


def _bce_example(draw) -> Case:
    s = shape(draw, min_dims=0)
    reduction = _reduction_example(draw)
    p = tensor(draw, s, low=0.02, high=0.98)
    t = tensor(draw, s, low=0.0, high=1.0, requires_grad=draw(st.booleans()))
    weight = None
    if draw(st.booleans()):
        ws = s[len(s) - draw(st.integers(0, len(s))):]
        weight = torch.tensor(seeded_rng(draw).uniform(0.2, 2.0, size=ws), dtype=torch.float64)
    return Case(inputs=(p, t), fn=lambda p, t: F.binary_cross_entropy(
        p, t, weight=weight, reduction=reduction))


@rule("BinaryCrossEntropyBackward0",
      formula=r"\ell = -w\,(t \ln p + (1 - t)\ln(1 - p)):\quad \bar{p} = \bar{\ell} \odot "
              r"w\,\frac{p - t}{p(1 - p)},\ "
              r"\bar{t} = \bar{\ell} \odot w \ln\frac{1 - p}{p}\ \ (/N \text{ for mean})",
      example=_bce_example)
def _bce(ctx: RuleContext):
    p, t = ctx["self"], ctx["target"]
    g = _loss_scale(ctx, p.size)
    w = 1.0 if ctx["weight"] is None else ctx["weight"]
    # The denominator is floored at 1e-12 in the kernel, so p = 0 or 1 stays finite.
    gp = g * w * (p - t) / np.maximum(p * (1.0 - p), 1e-12)
    gt = None
    if ctx.input_shapes[1] is not None:
        gt = g * w * (np.log1p(-p) - np.log(p))
    return shaped(ctx, 0, gp), shaped(ctx, 1, gt)


def _bce_logits_example(draw) -> Case:
    s = shape(draw, min_dims=1)
    reduction = _reduction_example(draw)
    x = tensor(draw, s, low=-4.0, high=4.0)
    t = tensor(draw, s, low=0.0, high=1.0, requires_grad=draw(st.booleans()))
    rng = seeded_rng(draw)
    weight = pos_weight = None
    if draw(st.booleans()):
        weight = torch.tensor(rng.uniform(0.2, 2.0, size=s[-1:]), dtype=torch.float64)
    if draw(st.booleans()):
        pos_weight = torch.tensor(rng.uniform(0.2, 3.0, size=s[-1:]), dtype=torch.float64)
    return Case(inputs=(x, t), fn=lambda x, t: F.binary_cross_entropy_with_logits(
        x, t, weight=weight, pos_weight=pos_weight, reduction=reduction))


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


@rule("BinaryCrossEntropyWithLogitsBackward0",
      formula=r"\ell = -w\,(q\,t \ln\sigma(x) + (1 - t)\ln(1 - \sigma(x))):\quad "
              r"\bar{x} = \bar{\ell} \odot w\,((q t + 1 - t)\sigma(x) - q t),\ "
              r"\bar{t} = \bar{\ell} \odot w\,(\ln\sigma(-x) - q \ln\sigma(x))\ \ (/N \text{ for "
              r"mean})",
      example=_bce_logits_example)
def _bce_logits(ctx: RuleContext):
    x, t = ctx["self"], ctx["target"]
    g = _loss_scale(ctx, x.size)
    w = 1.0 if ctx["weight"] is None else ctx["weight"]
    q = 1.0 if ctx["pos_weight"] is None else ctx["pos_weight"]
    sig = np.exp(_log_sigmoid(x))
    qt = q * t
    gx = g * w * ((qt + 1.0 - t) * sig - qt)
    gt = None
    if ctx.input_shapes[1] is not None:
        gt = g * w * (_log_sigmoid(-x) - q * _log_sigmoid(x))
    return shaped(ctx, 0, gx), shaped(ctx, 1, gt)


def _multi_margin_example(draw) -> Case:
    n, c = draw(st.integers(1, 4)), draw(st.integers(2, 5))
    rng = seeded_rng(draw)
    target = torch.from_numpy(rng.integers(0, c, size=n))
    p = draw(st.sampled_from([1, 2]))
    margin = draw(st.sampled_from([1.0, 0.5]))
    weight = None
    if draw(st.booleans()):
        weight = torch.tensor(rng.uniform(0.2, 2.0, size=c), dtype=torch.float64)
    reduction = _reduction_example(draw)
    x = tensor(draw, (n, c))
    with torch.no_grad():  # keep every hinge margin - x_t + x_j off zero
        for _ in range(3):
            h = margin - x.gather(1, target[:, None]) + x
            x[h.abs() < 1e-3] += 1e-2
    return Case(inputs=(x,), fn=lambda x: F.multi_margin_loss(
        x, target, p=p, margin=margin, weight=weight, reduction=reduction))


@rule("MultiMarginLossBackward0",
      formula=r"h_{ij} = \max(0, m - x_{i t_i} + x_{ij}),\ \ell_i = \tfrac1C \textstyle\sum_{j \ne "
              r"t_i} w_{t_i} h_{ij}^{p}:\quad "
              r"\bar{x}_{ij} = \tfrac{\bar{\ell}_i}{C} w_{t_i} p\,h_{ij}^{p-1}\ (j \ne t_i),\ "
              r"\bar{x}_{i t_i} = -\textstyle\sum_{j \ne t_i} \bar{x}_{ij}",
      example=_multi_margin_example)
def _multi_margin(ctx: RuleContext):
    x, t = ctx["self"], ctx["target"].astype(np.int64)
    x2 = x.reshape(-1, x.shape[-1])
    t = t.reshape(-1)
    n, c = x2.shape
    p, m = ctx["p"], ctx["margin"]
    w = np.ones(c) if ctx["weight"] is None else ctx["weight"]
    g = ctx.grad
    if ctx["reduction"] == _MEAN:
        g = np.full(n, g / n)
    elif ctx["reduction"] == _SUM:
        g = np.full(n, g)
    else:
        g = g.reshape(n)
    rows = np.arange(n)
    h = m - x2[rows, t][:, None] + x2
    active = (h > 0) & (np.arange(c)[None, :] != t[:, None])
    slope = (1.0 if p == 1 else 2.0 * h) * active * w[t][:, None] / c
    gx = g[:, None] * slope
    gx[rows, t] = -gx.sum(axis=1)
    return (gx.reshape(x.shape),)


# ---------------------------------------------------------------------------------------
# Soft margin and CTC
# ---------------------------------------------------------------------------------------


def _soft_margin_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0)
    x = tensor(draw, s)
    t_shape = suffix_shape(draw, s)  # the target may broadcast into the input, not past it
    if draw(st.booleans(), label="signs"):
        t = torch.tensor(np.where(uniform(draw, t_shape, 0.0, 1.0) < 0.5, -1.0, 1.0))
    else:
        t = tensor(draw, t_shape, requires_grad=False)
    reduction = draw(st.sampled_from(["none", "mean", "sum"]), label="reduction")
    return Case(inputs=(x,), fn=lambda x: F.soft_margin_loss(x, t, reduction=reduction))


@rule(
    "SoftMarginLossBackward0",
    formula=r"\ell_i = \log(1 + e^{-t_i x_i}):\quad \bar{x}_i = -\bar{\ell}\,\frac{t_i}{1 + e^{t_i "
            r"x_i}}\ \ (\times 1/n \text{ for the mean})",
    example=_soft_margin_example,
)
def _soft_margin(ctx: RuleContext):
    x, t = ctx["self"], ctx["target"]
    # t / (1 + e^{tx}) = t * sigmoid(-tx)
    return (-t * sigmoid(-t * x) * _loss_scale(ctx, np.size(x)),)


def _log_alpha(emit: np.ndarray, ext: np.ndarray, blank: int) -> np.ndarray:
    """log alpha[t, s]: the log-probability of the path prefixes that emit l'_s at frame t
    (emit[t, s] = log-probability of l'_s at frame t)."""
    t_len, s_len = emit.shape
    # Paths step to the same or the next symbol of l', or skip one blank between two
    # different labels.
    skip = np.zeros(s_len, dtype=bool)
    skip[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    alpha = np.full((t_len, s_len), -np.inf)
    alpha[0, :2] = emit[0, :2]  # a path starts with the first blank or the first label
    for t in range(1, t_len):
        prev = alpha[t - 1]
        one, two = np.full(s_len, -np.inf), np.full(s_len, -np.inf)  # from s - 1 and s - 2
        one[1:], two[2:] = prev[:-1], prev[:-2]
        alpha[t] = emit[t] + np.logaddexp(np.logaddexp(prev, one), np.where(skip, two, -np.inf))
    return alpha


def _ctc_one(lp: np.ndarray, labels: np.ndarray, blank: int) -> tuple[float, np.ndarray]:
    """Negative log-likelihood and d nll / d lp of one sequence's lp (T, C) and labels.

    Forward-backward (Graves et al., 2006) over l' = (blank, l1, blank, ..., lL, blank);
    alpha and beta both include frame t's own probability.
    """
    ext = np.full(2 * len(labels) + 1, blank)
    ext[1::2] = labels
    emit = lp[:, ext]
    alpha = _log_alpha(emit, ext, blank)
    # beta is alpha of the problem reversed in time and in l' (which keeps l''s form).
    beta = _log_alpha(emit[::-1, ::-1], ext[::-1], blank)[::-1, ::-1]
    nll = -np.logaddexp.reduce(alpha[-1, -2:])  # paths end on the last label or blank
    # d nll / d lp[t, c] = -sum over s with l'_s = c of alpha beta / (p(l) y_t(c)).
    grad = np.zeros_like(lp)
    with np.errstate(over="ignore", invalid="ignore"):
        for c in np.unique(ext):
            both = np.logaddexp.reduce((alpha + beta)[:, ext == c], axis=1)
            grad[:, c] = -np.exp(both + nll - lp[:, c])
    return float(nll), grad


def _ctc_labels(ctx: RuleContext) -> list[np.ndarray]:
    """Each sequence's labels: targets padded to (N, S), or all concatenated in 1-D."""
    targets, lengths = np.asarray(ctx["targets"]), [int(n) for n in ctx["target_lengths"]]
    if targets.ndim == 2:
        return [targets[b, :n] for b, n in enumerate(lengths)]
    starts = np.cumsum([0, *lengths])
    return [targets[starts[b]: starts[b] + n] for b, n in enumerate(lengths)]


def _ctc(ctx: RuleContext):
    lp, g = ctx["log_probs"], ctx.grad  # lp: (T, N, C); g: the loss gradient, one per sequence
    blank, zero_infinity = int(ctx["blank"]), bool(ctx["zero_infinity"])
    grad = np.zeros_like(lp)
    for b, (labels, t_len) in enumerate(zip(_ctc_labels(ctx), ctx["input_lengths"], strict=True)):
        seq = lp[: int(t_len), b]
        nll, d = _ctc_one(seq, labels, blank)
        if np.isinf(nll) and zero_infinity:
            continue  # an impossible alignment: the loss is replaced by 0, so is its gradient
        # On normalized log-probabilities the op adds exp(lp) (see the note).
        normalized = np.all(np.abs(np.exp(seq).sum(axis=-1) - 1) <= 1e-5)
        grad[: int(t_len), b] = g[b] * (d + np.exp(seq) if normalized else d)
    return (grad,)


def _ctc_example(draw: Draw) -> Case:
    n, c = draw(st.integers(1, 3), label="batch"), draw(st.integers(2, 5), label="classes")
    t_max = draw(st.integers(1, 6), label="frames")
    blank = draw(st.integers(0, c - 1), label="blank")
    zero_infinity = draw(st.booleans(), label="zero_infinity")
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1), label="targets seed"))
    labels = [b for b in range(c) if b != blank]
    seqs, frames = [], []
    for _ in range(n):
        t_len = int(rng.integers(1, t_max + 1))
        s = list(rng.choice(labels, size=int(rng.integers(0, t_len + 1))))
        # A label sequence needs a frame per label and per repeat; longer ones have no
        # alignment (an infinite loss), which only zero_infinity makes differentiable.
        while not zero_infinity and len(s) + sum(a == b for a, b in itertools.pairwise(s)) > t_len:
            s.pop()
        seqs.append(s)
        frames.append(t_len)
    frames[0] = t_max  # the longest sequence fills the input
    width = max(max(len(s) for s in seqs), 1)
    padded = torch.tensor([s + [blank] * (width - len(s)) for s in seqs], dtype=torch.long)
    flat = torch.tensor([v for s in seqs for v in s], dtype=torch.long)
    targets = padded if draw(st.booleans(), label="padded targets") else flat
    input_lengths, target_lengths = torch.tensor(frames), torch.tensor([len(s) for s in seqs])
    reduction = draw(st.sampled_from(["none", "mean", "sum"]), label="reduction")
    # The leaf holds log-probabilities (normalized per frame), as ctc_loss expects.
    logits = uniform(draw, (t_max, n, c), -2.0, 2.0)
    lp = leaf(logits - sp.logsumexp(logits, axis=-1, keepdims=True))
    return Case(inputs=(lp,), fn=lambda lp: F.ctc_loss(
        lp, targets, input_lengths, target_lengths, blank, reduction, zero_infinity))


_CTC = (
    r"\ell = -\log \sum_{\pi \in \mathcal{B}^{-1}(l)} \prod_t e^{y_{t,\pi_t}}:\quad "
    r"\bar{y}_{t,c} = \bar{\ell}\Big(\big[\textstyle\sum_{c'} e^{y_{t,c'}} = 1\big]\, e^{y_{t,c}}"
    r" - e^{\ell - y_{t,c}} \sum_{s:\, l'_s = c} \alpha_t(s)\,\beta_t(s)\Big)\ \ (t < T_n)"
)
rule(
    "CtcLossBackward0",
    formula=_CTC,
    example=_ctc_example,
    note=("Torch's gradient is the derivative plus exp(log_probs) times the loss gradient, a "
          "term that vanishes through log_softmax or any other normalization upstream. The "
          "rule adds it where each frame's probabilities sum to 1 (within 1e-5) and returns "
          "the plain derivative elsewhere, where torch's extra term is a real error."),
)(_ctc)

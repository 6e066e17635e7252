"""Activation functions: sigmoid, the ReLU family (leaky, randomized, ELU, SELU, CELU,
GELU, SiLU, Mish, softplus), the hard variants, threshold, shrinkage, log-sigmoid, GLU and
PReLU. In-place forms (``relu_``, ``F.elu(inplace=True)``...) save their output rather than
their input, and have rules of their own that read it."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from gradviz.backward.rules._common import erf, shaped, sigmoid
from gradviz.backward.rules._examples import shape, tensor, unary_example
from gradviz.backward.rules._registry import Case, RuleContext, rule

# ---------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------


_sigmoid_rule_example = unary_example(torch.sigmoid)


@rule("SigmoidBackward0", formula=r"y = \sigma(x):\quad \bar{x} = \bar{y} \odot y (1 - y)",
      example=_sigmoid_rule_example)
def _sigmoid_rule(ctx: RuleContext):
    y = ctx["result"]
    return (ctx.grad * y * (1.0 - y),)


def _relu_example(draw) -> Case:
    return unary_example(lambda x: F.relu(x, inplace=True), away_from=0.0, inplace=True)(draw) \
        if draw(st.booleans()) else unary_example(torch.relu, away_from=0.0)(draw)


@rule("ReluBackward0", formula=r"y = \max(x, 0):\quad \bar{x} = \bar{y} \odot \mathbb{1}[y > 0]",
      example=_relu_example)
def _relu(ctx: RuleContext):
    return (np.where(ctx["result"] > 0, ctx.grad, 0.0),)


def _leaky_relu_example(draw) -> Case:
    slope = draw(st.sampled_from([0.01, 0.2, 1.5]))
    return unary_example(lambda x: F.leaky_relu(x, slope), away_from=0.0)(draw)


@rule("LeakyReluBackward0",
      formula=r"\bar{x} = \bar{y} \odot (\mathbb{1}[x > 0] + s\,\mathbb{1}[x \le 0])",
      example=_leaky_relu_example)
def _leaky_relu(ctx: RuleContext):
    g = ctx.grad
    return (np.where(ctx["self"] > 0, g, g * ctx["negative_slope"]),)


def _leaky_relu_inplace_example(draw) -> Case:
    slope = draw(st.sampled_from([0.01, 0.2]))
    return unary_example(lambda x: F.leaky_relu(x, slope, inplace=True), away_from=0.0,
                          inplace=True)(draw)


@rule("LeakyReluBackward1",
      formula=r"\text{(in place, from } y\text{)}\quad \bar{x} = \bar{y} \odot (\mathbb{1}[y > 0] "
              r"+ s\,\mathbb{1}[y \le 0])",
      example=_leaky_relu_inplace_example)
def _leaky_relu_inplace(ctx: RuleContext):
    g = ctx.grad
    return (np.where(ctx["result"] > 0, g, g * ctx["negative_slope"]),)


def _rrelu_example(draw) -> Case:
    lower, upper = draw(st.sampled_from([(0.125, 1 / 3), (0.1, 0.5), (0.2, 0.2)]))
    training = draw(st.booleans())
    torch.manual_seed(draw(st.integers(0, 1000)))
    return unary_example(lambda x: F.rrelu(x, lower, upper, training=training),
                          away_from=0.0)(draw)


@rule("RreluWithNoiseBackward0",
      formula=r"\bar{x} = \bar{y} \odot \begin{cases} 1 & x > 0 \\ a & x \le 0 \end{cases},\ "
              r"a \sim U(l, u) \text{ drawn in training (saved as noise), } a = \tfrac{l + u}{2} "
              r"\text{ in eval}",
      example=_rrelu_example)
def _rrelu(ctx: RuleContext):
    g, x = ctx.grad, ctx["self"]
    lower, upper = ctx["lower"], ctx["upper"]
    if ctx["training"] and upper - lower > 1e-6:
        return (g * ctx["noise"],)
    return (np.where(x > 0, g, g * (lower + upper) / 2.0),)


def _elu_example(draw) -> Case:
    kind = draw(st.sampled_from(["elu", "selu"]))
    if kind == "selu":
        return unary_example(F.selu, away_from=0.0)(draw)
    alpha = draw(st.sampled_from([1.0, 0.5, 2.0]))
    return unary_example(lambda x: F.elu(x, alpha), away_from=0.0)(draw)


@rule("EluBackward0",
      formula=r"y = \lambda\,(x \text{ if } x > 0 \text{ else } \alpha(e^{\beta x} - 1)):\quad "
              r"\bar{x} = \bar{y} \odot (\lambda \text{ if } x > 0 \text{ else } "
              r"\lambda\alpha\beta e^{\beta x})",
      example=_elu_example)
def _elu(ctx: RuleContext):
    g, x = ctx.grad, ctx["self"]
    scale, alpha, beta = ctx["scale"], ctx["alpha"], ctx["input_scale"]
    return (np.where(x <= 0, g * beta * alpha * scale * np.exp(x * beta), g * scale),)


def _elu_inplace_example(draw) -> Case:
    if draw(st.booleans()):
        return unary_example(lambda x: F.selu(x, inplace=True), away_from=0.0, inplace=True)(draw)
    return unary_example(lambda x: F.elu(x, 0.7, inplace=True), away_from=0.0, inplace=True)(draw)


@rule("EluBackward1",
      formula=r"\text{(in place, from } y\text{)}\quad \bar{x} = \bar{y} \odot (\lambda \text{ if "
              r"} y > 0 \text{ else } \beta (y + \lambda\alpha))",
      example=_elu_inplace_example)
def _elu_inplace(ctx: RuleContext):
    g, y = ctx.grad, ctx["result"]
    scale, alpha, beta = ctx["scale"], ctx["alpha"], ctx["input_scale"]
    # lambda*alpha*beta*e^{beta x} = beta*(y + lambda*alpha) on the negative side.
    return (np.where(y <= 0, g * beta * (y + scale * alpha), g * scale),)


def _celu_example(draw) -> Case:
    alpha = draw(st.sampled_from([1.0, 0.5, 2.0]))
    return unary_example(lambda x: F.celu(x, alpha), away_from=0.0)(draw)


@rule("CeluBackward0",
      formula=r"y = \max(0, x) + \min(0, \alpha(e^{x/\alpha} - 1)):\quad \bar{x} = \bar{y} \odot "
              r"(1 \text{ if } x > 0 \text{ else } e^{x/\alpha})",
      example=_celu_example)
def _celu(ctx: RuleContext):
    g, x, alpha = ctx.grad, ctx["self"], ctx["alpha"]
    return (np.where(x <= 0, g * np.exp(x / alpha), g),)


def _celu_inplace_example(draw) -> Case:
    alpha = draw(st.sampled_from([1.0, 0.5, 2.0]))
    def op(x):
        return F.celu(x, alpha, inplace=True)

    return unary_example(op, away_from=0.0, inplace=True)(draw)


@rule("CeluBackward1",
      formula=r"\text{(in place, from } y\text{)}\quad \bar{x} = \bar{y} \odot (1 \text{ if } y > "
              r"0 \text{ else } y/\alpha + 1)",
      example=_celu_inplace_example)
def _celu_inplace(ctx: RuleContext):
    g, y, alpha = ctx.grad, ctx["result"], ctx["alpha"]
    return (np.where(y <= 0, g * (y / alpha + 1.0), g),)


def _gelu_example(draw) -> Case:
    approximate = draw(st.sampled_from(["none", "tanh"]))
    return unary_example(lambda x: F.gelu(x, approximate=approximate), -4.0, 4.0)(draw)


@rule("GeluBackward0",
      formula=r"\text{none: } \bar{x} = \bar{y} \odot (\Phi(x) + x\,\varphi(x));\quad "
              r"\text{tanh: } u = \sqrt{2/\pi}(x + 0.044715x^{3}),\ "
              r"\bar{x} = \bar{y} \odot \big(\tfrac12(1 + \tanh u) + \tfrac12 x (1 - \tanh^{2} "
              r"u)\sqrt{2/\pi}(1 + 3 \cdot 0.044715 x^{2})\big)",
      example=_gelu_example)
def _gelu(ctx: RuleContext):
    g, x = ctx.grad, ctx["self"]
    if ctx["approximate"] == "tanh":
        k_beta = math.sqrt(2.0 / math.pi)
        k_kappa = 0.044715
        t = np.tanh(k_beta * (x + k_kappa * x ** 3))
        left = 0.5 * (1.0 + t)
        right = 0.5 * x * (1.0 - t * t) * k_beta * (1.0 + 3.0 * k_kappa * x * x)
        return (g * (left + right),)
    cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return (g * (cdf + x * pdf),)


@rule("SiluBackward0", formula=r"y = x\,\sigma(x):\quad \bar{x} = \bar{y} \odot \sigma(x)(1 + x(1 "
                               r"- \sigma(x)))",
      example=unary_example(F.silu))
def _silu(ctx: RuleContext):
    x = ctx["self"]
    s = sigmoid(x)
    return (ctx.grad * s * (1.0 + x * (1.0 - s)),)


@rule("MishBackward0",
      formula=r"y = x \tanh(\operatorname{softplus} x):\quad t = \tanh(\operatorname{softplus} "
              r"x),\ \bar{x} = \bar{y} \odot (t + x\,\sigma(x)(1 - t^{2}))",
      example=unary_example(F.mish))
def _mish(ctx: RuleContext):
    x = ctx["self"]
    t = np.tanh(np.logaddexp(0.0, x))
    return (ctx.grad * (t + x * sigmoid(x) * (1.0 - t * t)),)


def _softplus_example(draw) -> Case:
    beta = draw(st.sampled_from([1.0, 2.0, 0.5]))
    threshold = draw(st.sampled_from([20.0, 2.0]))
    # Keep beta*x off the threshold, where softplus switches to the identity.
    return unary_example(lambda x: F.softplus(x, beta, threshold), -4.0, 4.0,
                          away_from=threshold / beta, margin=1e-2)(draw)


@rule("SoftplusBackward0",
      formula=r"y = \tfrac1\beta \ln(1 + e^{\beta x}):\quad \bar{x} = \bar{y} \odot \sigma(\beta "
              r"x) \ (\bar{y} \text{ where } \beta x > t)",
      example=_softplus_example)
def _softplus(ctx: RuleContext):
    g, x = ctx.grad, ctx["self"]
    bx = x * ctx["beta"]
    return (np.where(bx > ctx["threshold"], g, g * sigmoid(bx)),)


def _hardtanh_example(draw) -> Case:
    lo, hi = draw(st.sampled_from([(-1.0, 1.0), (-0.5, 2.0), (0.0, 6.0)]))
    inplace = draw(st.booleans())
    x = tensor(draw, shape(draw, min_dims=0), low=-4.0, high=7.0)
    with torch.no_grad():
        for b in (lo, hi):
            near = (x - b).abs() < 1e-3
            x[near] = b + 2e-3
    if inplace:
        return Case(inputs=(x,), fn=lambda x: F.hardtanh(x * 1.0, lo, hi, inplace=True))
    return Case(inputs=(x,), fn=lambda x: F.hardtanh(x, lo, hi))


@rule("HardtanhBackward0",
      formula=r"y = \min(\max(x, lo), hi):\quad \bar{x} = \bar{y} \odot \mathbb{1}[lo < x < hi]",
      example=_hardtanh_example)
def _hardtanh(ctx: RuleContext):
    x = ctx["self"]
    inside = (x > ctx["min_val"]) & (x < ctx["max_val"])
    return (np.where(inside, ctx.grad, 0.0),)


def _hardswish_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0), low=-5.0, high=5.0)
    with torch.no_grad():
        for b in (-3.0, 3.0):
            near = (x - b).abs() < 1e-3
            x[near] = b + 2e-3
    return Case(inputs=(x,), fn=F.hardswish)


@rule("HardswishBackward0",
      formula=r"y = x \,\operatorname{relu6}(x + 3)/6:\quad \bar{x} = \bar{y} \odot "
              r"\begin{cases} 0 & x < -3 \\ x/3 + 1/2 & -3 \le x \le 3 \\ 1 & x > 3 \end{cases}",
      example=_hardswish_example)
def _hardswish(ctx: RuleContext):
    g, x = ctx.grad, ctx["self"]
    return (np.where(x < -3.0, 0.0, np.where(x <= 3.0, g * (x / 3.0 + 0.5), g)),)


def _hardsigmoid_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0), low=-5.0, high=5.0)
    with torch.no_grad():
        for b in (-3.0, 3.0):
            near = (x - b).abs() < 1e-3
            x[near] = b + 2e-3
    return Case(inputs=(x,), fn=F.hardsigmoid)


@rule("HardsigmoidBackward0",
      formula=r"y = \operatorname{relu6}(x + 3)/6:\quad \bar{x} = \tfrac16\,\bar{y} \odot "
              r"\mathbb{1}[-3 < x < 3]",
      example=_hardsigmoid_example)
def _hardsigmoid(ctx: RuleContext):
    x = ctx["self"]
    return (np.where((x > -3.0) & (x < 3.0), ctx.grad / 6.0, 0.0),)


def _threshold_example(draw) -> Case:
    th = draw(st.sampled_from([0.0, 0.5, -1.0]))
    return unary_example(lambda x: F.threshold(x, th, 2.0), away_from=th)(draw)


@rule("ThresholdBackward0",
      formula=r"y = x \text{ if } x > t \text{ else } v:\quad \bar{x} = \bar{y} \odot \mathbb{1}[x "
              r"> t]",
      example=_threshold_example)
def _threshold(ctx: RuleContext):
    return (np.where(ctx["self"] <= ctx["threshold"], 0.0, ctx.grad),)


def _threshold_inplace_example(draw) -> Case:
    th = draw(st.sampled_from([0.0, 0.5, -1.0]))
    return unary_example(lambda x: F.threshold(x, th, 2.0, inplace=True), away_from=th,
                          inplace=True)(draw)


@rule("ThresholdBackward1",
      formula=r"\text{(in place)}\quad \bar{x} = \bar{y} \odot \mathbb{1}[x > t]",
      example=_threshold_inplace_example)
def _threshold_inplace(ctx: RuleContext):
    # The in-place op saves a copy of its input, so the test reads x, not the output.
    return (np.where(ctx["self"] <= ctx["threshold"], 0.0, ctx.grad),)


def _shrink_example(op):
    def example(draw) -> Case:
        lambd = draw(st.sampled_from([0.5, 1.0]))
        x = tensor(draw, shape(draw, min_dims=0))
        with torch.no_grad():
            for b in (-lambd, lambd):
                near = (x - b).abs() < 1e-3
                x[near] = b + 2e-3
        return Case(inputs=(x,), fn=lambda x: op(x, lambd))

    return example


@rule("SoftshrinkBackward0", formula=r"\bar{x} = \bar{y} \odot \mathbb{1}[|x| > \lambda]",
      example=_shrink_example(F.softshrink))
def _softshrink(ctx: RuleContext):
    x, lam = ctx["self"], ctx["lambd"]
    return (np.where((x >= -lam) & (x <= lam), 0.0, ctx.grad),)


@rule("HardshrinkBackward0", formula=r"\bar{x} = \bar{y} \odot \mathbb{1}[|x| > \lambda]",
      example=_shrink_example(F.hardshrink))
def _hardshrink(ctx: RuleContext):
    x, lam = ctx["self"], ctx["lambd"]
    return (np.where((x >= -lam) & (x <= lam), 0.0, ctx.grad),)


@rule("LogSigmoidBackward0", formula=r"y = \ln \sigma(x):\quad \bar{x} = \bar{y} \odot \sigma(-x)",
      example=unary_example(F.logsigmoid, -5.0, 5.0))
def _log_sigmoid(ctx: RuleContext):
    return (ctx.grad * sigmoid(-ctx["self"]),)


def _glu_example(draw) -> Case:
    s = list(shape(draw, min_dims=1))
    dim = draw(st.integers(-len(s), len(s) - 1))
    s[dim] *= 2
    x = tensor(draw, tuple(s))
    return Case(inputs=(x,), fn=lambda x: F.glu(x, dim))


@rule("GluBackward0",
      formula=r"x = [a; b],\ y = a \odot \sigma(b):\quad \bar{a} = \bar{y} \odot \sigma(b),\ "
              r"\bar{b} = \bar{y} \odot a\,\sigma(b)(1 - \sigma(b))",
      example=_glu_example)
def _glu(ctx: RuleContext):
    x = ctx["self"]
    dim = ctx["dim"]
    if dim >= 2 ** 63:  # saved as an unsigned 64-bit int: -1 reads as 2**64 - 1
        dim -= 2 ** 64
    a, b = np.split(x, 2, axis=dim)
    s = sigmoid(b)
    g = ctx.grad
    return (np.concatenate([g * s, g * a * s * (1.0 - s)], axis=dim),)


def _prelu_example(draw) -> Case:
    n = draw(st.integers(0, 3))
    s = shape(draw, min_dims=n, max_dims=n) if n else ()
    channels = draw(st.sampled_from([1, s[1] if len(s) > 1 else 1]))
    x = tensor(draw, s, away_from=0.0)
    w = tensor(draw, (channels,), low=-0.5, high=0.5, requires_grad=draw(st.booleans()))
    return Case(inputs=(x, w), fn=F.prelu)


@rule("PreluKernelBackward0",
      formula=r"y = x \text{ if } x > 0 \text{ else } w x:\quad \bar{x} = \bar{y} \odot (1 \text{ "
              r"if } x > 0 \text{ else } w),\ "
              r"\bar{w} = \textstyle\sum \bar{y} \odot x\,\mathbb{1}[x \le 0]",
      example=_prelu_example)
def _prelu(ctx: RuleContext):
    g, x, w = ctx.grad, ctx["self"], ctx["weight"]
    positive = x > 0
    gx = np.where(positive, g, w * g)
    gw = np.where(positive, 0.0, x * g) if ctx.input_shapes[1] is not None else None
    return shaped(ctx, 0, gx), shaped(ctx, 1, gw)

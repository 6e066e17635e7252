"""Reductions and scans (sum, mean, max, prod, var, norm, cumsum, mode...): the gradient
spreads back over the reduced axes, weighted by how much each input moved the result."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from gradviz.backward.rules._common import add_along_axis, axes, axis, unreduce
from gradviz.backward.rules._examples import Draw, draw_dim, leaf, shape, tensor, uniform
from gradviz.backward.rules._registry import Case, RuleContext, rule


def _dims(draw: Draw, ndim: int) -> tuple[int, ...] | int:
    """Reduced dims: one int or a tuple of distinct dims, negative half the time."""
    n = max(ndim, 1)
    picked = draw(
        st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True), label="dims"
    )
    picked = [d - n if draw(st.booleans(), label="negative") else d for d in picked]
    if len(picked) == 1 and draw(st.booleans(), label="as int"):
        return picked[0]
    return tuple(picked)


def _keepdim(draw: Draw) -> bool:
    return draw(st.booleans(), label="keepdim")


def _with_ties(draw: Draw, s: tuple[int, ...]) -> torch.Tensor:
    """Values on a coarse grid half the time, so that max/min/median often tie."""
    if draw(st.booleans(), label="ties"):
        t = tensor(draw, s, low=-2.0, high=2.0, requires_grad=False).round()
        return t.requires_grad_()
    return tensor(draw, s)


def _count(shape: tuple[int, ...], dims: Any) -> int:
    """How many input elements fold into each output element."""
    return int(np.prod([shape[a] for a in axes(dims, len(shape))]))


def _reduced_sizes(ctx: RuleContext) -> tuple[int, ...]:
    return tuple(ctx["self_sym_sizes"])


# ---------------------------------------------------------------- sum and mean


def _sum_all_example(draw: Draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    if draw(st.booleans(), label="dtype"):
        return Case(inputs=(x,), fn=lambda x: x.sum(dtype=torch.float64))
    return Case(inputs=(x,), fn=lambda x: x.sum())


@rule(
    "SumBackward0",
    formula=r"y = \textstyle\sum_i x_i:\quad \bar{x}_i = \bar{y}",
    example=_sum_all_example,
)
def _sum_all(ctx: RuleContext):
    return (np.broadcast_to(ctx.grad, _reduced_sizes(ctx)).copy(),)


def _sum_dim_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=4, max_side=3)
    x = tensor(draw, s)
    dims, keep = _dims(draw, len(s)), _keepdim(draw)
    if draw(st.integers(0, 4), label="dim=None") == 0:
        return Case(inputs=(x,), fn=lambda x: x.sum(dim=None, keepdim=True))
    return Case(inputs=(x,), fn=lambda x: x.sum(dims, keepdim=keep))


@rule(
    "SumBackward1",
    formula=r"y = \textstyle\sum_{d \in D} x:\quad \bar{x} = \operatorname{expand}(\bar{y}) \text{ "
            r"along } D",
    example=_sum_dim_example,
)
def _sum_dim(ctx: RuleContext):
    return (unreduce(ctx.grad, _reduced_sizes(ctx), ctx["dim"], ctx["keepdim"]),)


def _mean_all_example(draw: Draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    return Case(inputs=(x,), fn=lambda x: x.mean())


@rule(
    "MeanBackward0",
    formula=r"y = \tfrac{1}{N}\textstyle\sum_i x_i:\quad \bar{x}_i = \bar{y} / N",
    example=_mean_all_example,
)
def _mean_all(ctx: RuleContext):
    return (np.broadcast_to(ctx.grad / ctx["self_sym_numel"], _reduced_sizes(ctx)).copy(),)


def _mean_dim_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=4, max_side=3)
    x = tensor(draw, s)
    dims, keep = _dims(draw, len(s)), _keepdim(draw)
    if draw(st.integers(0, 4), label="dim=None") == 0:
        return Case(inputs=(x,), fn=lambda x: x.mean(dim=None, keepdim=keep))
    return Case(inputs=(x,), fn=lambda x: x.mean(dims, keepdim=keep))


@rule(
    "MeanBackward1",
    formula=r"y = \tfrac{1}{N}\textstyle\sum_{d \in D} x:\quad \bar{x} = "
            r"\operatorname{expand}(\bar{y}) / N,\ \ N = \prod_{d\in D} n_d",
    example=_mean_dim_example,
)
def _mean_dim(ctx: RuleContext):
    sizes = _reduced_sizes(ctx)
    n = _count(sizes, ctx["dim"])
    return (unreduce(ctx.grad / n, sizes, ctx["dim"], ctx["keepdim"]),)


def _nansum_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1), label="nan seed"))
    values = tensor(draw, s, requires_grad=False)
    values[torch.tensor(rng.random(s) < 0.3)] = float("nan")
    x = values.requires_grad_()
    if draw(st.booleans(), label="all"):
        return Case(inputs=(x,), fn=lambda x: x.nansum())
    dims, keep = _dims(draw, len(s)), _keepdim(draw)
    return Case(inputs=(x,), fn=lambda x: x.nansum(dims, keepdim=keep))


@rule(
    "NansumBackward0",
    formula=r"y = \textstyle\sum_{x_i \neq \mathrm{NaN}} x_i:\quad \bar{x}_i = \bar{y}\,[x_i \neq "
            r"\mathrm{NaN}]",
    example=_nansum_example,
)
def _nansum(ctx: RuleContext):
    x = ctx["self"]
    g = unreduce(ctx.grad, x.shape, ctx["dim"], ctx["keepdim"])
    return (np.where(np.isnan(x), 0.0, g),)


# ---------------------------------------------------------------- max, min and friends


def _evenly(grad: np.ndarray, x: np.ndarray, value: np.ndarray) -> np.ndarray:
    """The gradient of a whole-tensor max/min/median, split evenly among tied entries."""
    mask = np.isnan(x) if np.isnan(value) else x == value
    return np.where(mask, grad / mask.sum(), 0.0)


def _whole_example(method: str):
    def example(draw: Draw) -> Case:
        x = _with_ties(draw, shape(draw, min_dims=0))
        return Case(inputs=(x,), fn=lambda x: getattr(x, method)())

    return example


_EVENLY = (r"y = {op}_i\,x_i:\quad \bar{{x}}_i = \bar{{y}}\,[x_i = y] \,/\, \#\{{j : x_j = y\}}\ "
           r"\text{{(ties share evenly)}}")


@rule("MaxBackward1", formula=_EVENLY.format(op=r"\max"), example=_whole_example("max"))
def _max_all(ctx: RuleContext):
    return (_evenly(ctx.grad, ctx["self"], ctx["result"]),)


@rule("MinBackward1", formula=_EVENLY.format(op=r"\min"), example=_whole_example("min"))
def _min_all(ctx: RuleContext):
    return (_evenly(ctx.grad, ctx["self"], ctx["result"]),)


@rule(
    "MedianBackward0",
    formula=_EVENLY.format(op=r"\operatorname{median}"),
    example=_whole_example("median"),
)
def _median_all(ctx: RuleContext):
    return (_evenly(ctx.grad, ctx["self"], ctx["result"]),)


@rule(
    "NanmedianBackward0",
    formula=_EVENLY.format(op=r"\operatorname{nanmedian}"),
    example=_whole_example("nanmedian"),
)
def _nanmedian_all(ctx: RuleContext):
    return (_evenly(ctx.grad, ctx["self"], ctx["result"]),)


def _at_indices(
    grad: np.ndarray, indices: np.ndarray, sizes: tuple[int, ...], dim: int, keepdim: bool
) -> np.ndarray:
    """Send each output's gradient to the one input its saved index points at."""
    if not sizes:
        return np.asarray(grad, dtype=np.float64).reshape(())
    d = axis(dim, len(sizes))
    if not keepdim:
        grad, indices = np.expand_dims(grad, d), np.expand_dims(indices, d)
    return add_along_axis(np.zeros(sizes), d, indices, grad)


def _by_index_example(method: str):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=0, max_dims=3)
        x = _with_ties(draw, s)
        d, keep = draw_dim(draw, len(s)), _keepdim(draw)
        if method == "kthvalue":
            k = draw(st.integers(1, s[d] if s else 1), label="k")
            return Case(inputs=(x,), fn=lambda x: x.kthvalue(k, d, keep)[0])
        return Case(inputs=(x,), fn=lambda x: getattr(x, method)(d, keep)[0])

    return example


_BY_INDEX = (r"(y, i) = {op}_d\,x:\quad \bar{{x}} = 0,\ \ \bar{{x}}[\ldots, i, \ldots] = "
             r"\bar{{y}}\ \text{{(the saved index picks the winner)}}")


def _by_index(ctx: RuleContext):
    return (_at_indices(ctx.grad, ctx["indices"], _reduced_sizes(ctx), ctx["dim"], ctx["keepdim"]),)


@rule("MaxBackward0", formula=_BY_INDEX.format(op=r"\max"), example=_by_index_example("max"))
def _max_dim(ctx: RuleContext):
    return _by_index(ctx)


@rule("MinBackward0", formula=_BY_INDEX.format(op=r"\min"), example=_by_index_example("min"))
def _min_dim(ctx: RuleContext):
    return _by_index(ctx)


@rule(
    "MedianBackward1",
    formula=_BY_INDEX.format(op=r"\operatorname{median}"),
    example=_by_index_example("median"),
)
def _median_dim(ctx: RuleContext):
    return _by_index(ctx)


@rule(
    "KthvalueBackward0",
    formula=_BY_INDEX.format(op=r"\operatorname{kthvalue}"),
    example=_by_index_example("kthvalue"),
)
def _kthvalue(ctx: RuleContext):
    return _by_index(ctx)


def _sort_example(stable: bool):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=1, max_dims=3)  # sorting a 0-dim tensor returns it unchanged
        x = _with_ties(draw, s)
        d = draw_dim(draw, len(s))
        descending = draw(st.booleans(), label="descending")
        if stable:
            flag = draw(st.booleans(), label="stable")
            return Case(
                inputs=(x,),
                fn=lambda x: torch.sort(x, dim=d, descending=descending, stable=flag)[0],
            )
        return Case(inputs=(x,), fn=lambda x: x.sort(d, descending)[0])

    return example


_SORT = (r"(y, i) = \operatorname{sort}_d\,x:\quad \bar{x}[\ldots, i_j, \ldots] = \bar{y}[\ldots, "
         r"j, \ldots]")


@rule("SortBackward0", formula=_SORT, example=_sort_example(False))
def _sort(ctx: RuleContext):
    return (_at_indices(ctx.grad, ctx["indices"], _reduced_sizes(ctx), ctx["dim"], True),)


# SortBackward1 is sort(stable=...), the overload that takes the keyword.
@rule("SortBackward1", formula=_SORT, example=_sort_example(True))
def _sort_stable(ctx: RuleContext):
    return (_at_indices(ctx.grad, ctx["indices"], _reduced_sizes(ctx), ctx["dim"], True),)


def _topk_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3)
    x = _with_ties(draw, s)
    d = draw_dim(draw, len(s))
    k = draw(st.integers(0, s[d] if s else 1), label="k")
    largest = draw(st.booleans(), label="largest")
    return Case(inputs=(x,), fn=lambda x: x.topk(k, d, largest)[0])


@rule(
    "TopkBackward0",
    formula=r"(y, i) = \operatorname{topk}_d\,x:\quad \bar{x} = 0,\ \ \bar{x}[\ldots, i_j, \ldots] "
            r"= \bar{y}[\ldots, j, \ldots]",
    example=_topk_example,
)
def _topk(ctx: RuleContext):
    return (_at_indices(ctx.grad, ctx["indices"], _reduced_sizes(ctx), ctx["dim"], True),)


def _amax_example(method: str):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=0, max_dims=3, max_side=3)
        x = _with_ties(draw, s)
        keep = _keepdim(draw)
        if draw(st.integers(0, 3), label="all dims") == 0:
            return Case(inputs=(x,), fn=lambda x: getattr(x, method)())
        dims = _dims(draw, len(s))
        return Case(inputs=(x,), fn=lambda x: getattr(x, method)(dims, keep))

    return example


def _share_ties(
    grad: np.ndarray, x: np.ndarray, result: np.ndarray, dims: Any, keepdim: bool
) -> np.ndarray:
    """Each output's gradient split evenly among the inputs equal to it along `dims`."""
    ax = axes(dims, x.ndim)
    g = unreduce(grad, x.shape, dims, keepdim)
    r = unreduce(result, x.shape, dims, keepdim)
    mask = x == r
    count = mask.sum(axis=ax, keepdims=True)
    return np.where(mask, g / count, 0.0)


_SHARE = (r"y = {op}_{{d \in D}}\,x:\quad \bar{{x}} = \bar{{y}}\,[x = y] \,/\, \#\{{\text{{ties "
          r"along }} D\}}")


@rule(
    "AmaxBackward0", formula=_SHARE.format(op=r"\operatorname{amax}"), example=_amax_example("amax")
)
def _amax(ctx: RuleContext):
    return (_share_ties(ctx.grad, ctx["self"], ctx["result"], ctx["dim"], ctx["keepdim"]),)


@rule(
    "AminBackward0", formula=_SHARE.format(op=r"\operatorname{amin}"), example=_amax_example("amin")
)
def _amin(ctx: RuleContext):
    return (_share_ties(ctx.grad, ctx["self"], ctx["result"], ctx["dim"], ctx["keepdim"]),)


def _aminmax_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3, max_side=3)
    x = _with_ties(draw, s)
    keep = _keepdim(draw)
    which = draw(st.sampled_from(["both", "min", "max"]), label="outputs used")
    dim = None if draw(st.booleans(), label="all dims") else draw_dim(draw, len(s))

    def fn(x):
        lo, hi = torch.aminmax(x, dim=dim, keepdim=keep)
        return {"both": (lo, hi), "min": (lo,), "max": (hi,)}[which]

    return Case(inputs=(x,), fn=fn)


@rule(
    "AminmaxBackward0",
    formula=r"(m, M) = \operatorname{aminmax}_d\,x:\quad \bar{x} = \bar{m}\,[x = m] / \#\{x = m\} "
            r"+ \bar{M}\,[x = M] / \#\{x = M\}",
    example=_aminmax_example,
)
def _aminmax(ctx: RuleContext):
    x = ctx["self"]
    dims = ctx["dim"]
    out = np.zeros(x.shape)
    for grad, value in zip(ctx.grad_outputs, (ctx["min"], ctx["max"]), strict=True):
        if grad is not None:
            out = out + _share_ties(grad, x, value, dims, ctx["keepdim"])
    return (out,)


def _cum_extreme_example(method: str):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=0, max_dims=3)
        x = _with_ties(draw, s)
        d = draw_dim(draw, len(s))
        return Case(inputs=(x,), fn=lambda x: getattr(x, method)(d)[0])

    return example


_CUM_EXTREME = (r"(y, i) = \operatorname{{{op}}}_d\,x:\quad \bar{{x}}[\ldots, k, \ldots] = "
                r"\textstyle\sum_{{j : i_j = k}} \bar{{y}}[\ldots, j, \ldots]")


def _cum_extreme(ctx: RuleContext):
    x = ctx["self"]
    g = ctx.grad
    if x.ndim == 0:
        return (g.copy(),)
    return (add_along_axis(np.zeros(x.shape), axis(ctx["dim"], x.ndim), ctx["indices"], g),)


@rule(
    "CummaxBackward0",
    formula=_CUM_EXTREME.format(op="cummax"),
    example=_cum_extreme_example("cummax"),
)
def _cummax(ctx: RuleContext):
    return _cum_extreme(ctx)


@rule(
    "CumminBackward0",
    formula=_CUM_EXTREME.format(op="cummin"),
    example=_cum_extreme_example("cummin"),
)
def _cummin(ctx: RuleContext):
    return _cum_extreme(ctx)


# ---------------------------------------------------------------- products


def _with_zeros(draw: Draw, s: tuple[int, ...]) -> torch.Tensor:
    """Values with no, one or several exact zeros: prod's gradient has a case for each."""
    t = tensor(draw, s, low=-1.5, high=1.5, requires_grad=False)
    zeros = draw(st.sampled_from([0, 0, 1, 2]), label="zeros")
    n = t.numel()
    for _ in range(min(zeros, n)):
        t.view(-1)[draw(st.integers(0, n - 1), label="zero at")] = 0.0
    return t.requires_grad_()


def _others_product(x: np.ndarray, ax: int) -> np.ndarray:
    """The product of every other entry along `ax`, exact where x has zeros."""
    x = np.moveaxis(x, ax, -1)
    ones = np.ones(x.shape[:-1] + (1,))
    before = np.cumprod(np.concatenate([ones, x[..., :-1]], axis=-1), axis=-1)
    after = np.flip(
        np.cumprod(np.concatenate([ones, np.flip(x, -1)[..., :-1]], axis=-1), axis=-1), -1
    )
    return np.moveaxis(before * after, -1, ax)


def _prod_all_example(draw: Draw) -> Case:
    x = _with_zeros(draw, shape(draw, min_dims=0, max_dims=3, max_side=3))
    return Case(inputs=(x,), fn=lambda x: x.prod())


@rule(
    "ProdBackward0",
    formula=r"y = \textstyle\prod_i x_i:\quad \bar{x}_i = \bar{y} \prod_{j \neq i} x_j",
    example=_prod_all_example,
)
def _prod_all(ctx: RuleContext):
    x = ctx["self"]
    others = _others_product(x.reshape(-1), 0).reshape(x.shape)
    return (ctx.grad * others,)


def _prod_dim_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3, max_side=3)
    x = _with_zeros(draw, s)
    d, keep = draw_dim(draw, len(s)), _keepdim(draw)
    return Case(inputs=(x,), fn=lambda x: x.prod(d, keep))


@rule(
    "ProdBackward1",
    formula=r"y = \textstyle\prod_{d} x:\quad \bar{x}_k = \bar{y} \prod_{j \neq k} x_j \text{ "
            r"along } d",
    example=_prod_dim_example,
)
def _prod_dim(ctx: RuleContext):
    x = ctx["self"]
    if x.ndim == 0:
        return (ctx.grad.reshape(()),)
    d = axis(ctx["dim"], x.ndim)
    g = unreduce(ctx.grad, x.shape, d, ctx["keepdim"])
    return (g * _others_product(x, d),)


# ---------------------------------------------------------------- spread: var and std


def _var_example(method: str):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=0, max_dims=3)
        x = tensor(draw, s)
        keep = _keepdim(draw)
        how = draw(st.sampled_from(["all", "dims", "unbiased"]), label="how")
        dims = None if how == "all" or not s else _dims(draw, len(s))
        n = _count(s, dims)
        # Keep N - correction > 0: otherwise the result is inf/nan and torch warns.
        correction = draw(st.sampled_from([c for c in (0, 1, 2, 0.5) if c < n]), label="correction")
        f = getattr(torch, method)
        if how == "all" and n > 1 and draw(st.booleans(), label="default"):
            return Case(inputs=(x,), fn=lambda x: f(x))
        if how == "unbiased":
            unbiased = n > 1 and draw(st.booleans(), label="unbiased")
            return Case(inputs=(x,), fn=lambda x: f(x, dims, unbiased=unbiased, keepdim=keep))
        return Case(inputs=(x,), fn=lambda x: f(x, dims, correction=correction, keepdim=keep))

    return example


def _var_grad(
    grad: np.ndarray, x: np.ndarray, dims: Any, correction: Any, keepdim: bool
) -> np.ndarray:
    c = 1.0 if correction is None else float(correction)
    n = _count(x.shape, dims)
    ax = axes(dims, x.ndim)
    centered = x - x.mean(axis=ax, keepdims=True) if ax else x - x
    with np.errstate(divide="ignore", invalid="ignore"):
        return (2.0 / (n - c)) * unreduce(grad, x.shape, dims, keepdim) * centered


def _std_grad(
    grad: np.ndarray, x: np.ndarray, std: np.ndarray, dims: Any, correction: Any, keepdim: bool
) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        var_grad = np.where(std == 0, 0.0, grad / (2.0 * std))
    return _var_grad(var_grad, x, dims, correction, keepdim)


@rule(
    "VarBackward0",
    formula=r"y = \tfrac{1}{N - c}\textstyle\sum (x - \mu)^2:\quad \bar{x} = \bar{y}\,\tfrac{2}{N "
            r"- c}\,(x - \mu)",
    example=_var_example("var"),
)
def _var(ctx: RuleContext):
    return (_var_grad(ctx.grad, ctx["self"], ctx["dim"], ctx["correction"], ctx["keepdim"]),)


@rule(
    "StdBackward0",
    formula=r"y = \sqrt{\tfrac{1}{N - c}\textstyle\sum (x - \mu)^2}:\quad \bar{x} = "
            r"\bar{y}\,\tfrac{x - \mu}{(N - c)\,y}",
    example=_var_example("std"),
)
def _std(ctx: RuleContext):
    return (
        _std_grad(
            ctx.grad, ctx["self"], ctx["result"], ctx["dim"], ctx["correction"], ctx["keepdim"]
        ),
    )


def _var_mean_example(method: str):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=1, max_dims=3)
        x = tensor(draw, s)
        keep = _keepdim(draw)
        dims = _dims(draw, len(s))
        n = _count(s, dims)
        correction = draw(st.sampled_from([c for c in (0, 1, 2) if c < n]), label="correction")
        which = draw(st.sampled_from([0, 1, 2]), label="outputs used")

        def fn(x):
            spread, mean = getattr(torch, method)(x, dims, correction=correction, keepdim=keep)
            return [(spread, mean), (spread,), (mean,)][which]

        return Case(inputs=(x,), fn=fn)

    return example


@rule(
    "VarMeanBackward0",
    formula=r"(v, \mu) = \operatorname{var\_mean}(x):\quad \bar{x} = \bar{v}\,\tfrac{2}{N - c}\,(x "
            r"- \mu) + \bar{\mu} / N",
    example=_var_mean_example("var_mean"),
)
def _var_mean(ctx: RuleContext):
    x, dims, keep = ctx["self"], ctx["dim"], ctx["keepdim"]
    g_var, g_mean = ctx.grad_outputs
    out = np.zeros(x.shape)
    if g_var is not None:
        out = out + _var_grad(g_var, x, dims, ctx["correction"], keep)
    if g_mean is not None:
        out = out + unreduce(g_mean / _count(x.shape, dims), x.shape, dims, keep)
    return (out,)


@rule(
    "StdMeanBackward0",
    formula=r"(s, \mu) = \operatorname{std\_mean}(x):\quad \bar{x} = \bar{s}\,\tfrac{x - \mu}{(N - "
            r"c)\,s} + \bar{\mu} / N",
    example=_var_mean_example("std_mean"),
)
def _std_mean(ctx: RuleContext):
    x, dims, keep = ctx["self"], ctx["dim"], ctx["keepdim"]
    g_std, g_mean = ctx.grad_outputs
    out = np.zeros(x.shape)
    if g_std is not None:
        out = out + _std_grad(g_std, x, ctx["result0"], dims, ctx["correction"], keep)
    if g_mean is not None:
        out = out + unreduce(g_mean / _count(x.shape, dims), x.shape, dims, keep)
    return (out,)


# ---------------------------------------------------------------- norms


def _norm_grad(
    grad: np.ndarray, x: np.ndarray, p: float, norm: np.ndarray, dims: Any, keepdim: bool
) -> np.ndarray:
    """d‖x‖_p/dx for any p, with the conventions autograd uses at zeros and ties."""
    p = float(p)
    g = unreduce(grad, x.shape, dims, keepdim)
    r = unreduce(norm, x.shape, dims, keepdim)
    if p == 0.0:
        return np.zeros(x.shape)
    if p == 1.0:
        return np.sign(x) * g
    if np.isinf(p):
        # amax/amin of |x|: the gradient is shared evenly by the entries that tie.
        mask = np.abs(x) == r
        count = mask.sum(axis=axes(dims, x.ndim), keepdims=True)
        return np.sign(x) * np.where(mask, g / count, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if p == 2.0:
            return np.where(r == 0, 0.0, x * (g / r))
        scaled = np.sign(x) * np.abs(x) ** (p - 1)
        if p < 1.0:
            scaled = np.where(x == 0, 0.0, scaled)
            return scaled * g * r ** (1 - p)
        return scaled * np.where(r == 0, 0.0, g / r ** (p - 1))


_NORM = (r"y = \|x\|_p:\quad \bar{x} = \bar{y}\,\frac{\operatorname{sign}(x)\,|x|^{p-1}}{y^{p-1}}\ "
         r"\ (p=2:\ \bar{y}\,x / y;\ p=1:\ \bar{y}\operatorname{sign}(x);\ p=\infty: \text{ties "
         r"share})")


def _norm_p(draw: Draw) -> float:
    return draw(
        st.sampled_from([2, 1, 2.0, 1.0, 3, 0.5, 1.5, float("inf"), float("-inf"), 0]), label="p"
    )


def _norm_input(draw: Draw, s: tuple[int, ...], p: float) -> torch.Tensor:
    if np.isinf(p):
        return _with_ties(draw, s)
    # Away from 0, where |x|^{p-1} blows up for p < 1.
    return tensor(draw, s, away_from=0.0, margin=0.05)


def _norm_example(variant: int):
    def example(draw: Draw) -> Case:
        s = shape(draw, min_dims=0 if variant in (0, 2) else 1, max_dims=3, max_side=3)
        p = _norm_p(draw)
        x = _norm_input(draw, s, p)
        aten = torch.ops.aten.norm
        if variant == 0:
            return Case(inputs=(x,), fn=lambda x: aten.Scalar(x, p))
        if variant == 2:
            return Case(inputs=(x,), fn=lambda x: aten.ScalarOpt_dtype(x, p, dtype=torch.float64))
        picked = _dims(draw, len(s))
        dims = [picked] if isinstance(picked, int) else list(picked)
        keep = _keepdim(draw)
        if variant == 1:
            return Case(inputs=(x,), fn=lambda x: aten.ScalarOpt_dim(x, p, dims, keep))
        return Case(
            inputs=(x,),
            fn=lambda x: aten.ScalarOpt_dim_dtype(x, p, dims, keep, dtype=torch.float64),
        )

    return example


def _norm_whole(ctx: RuleContext):
    return (_norm_grad(ctx.grad, ctx["self"], ctx["p"], ctx["result"], None, False),)


def _norm_dims(ctx: RuleContext):
    return (_norm_grad(ctx.grad, ctx["self"], ctx["p"], ctx["result"], ctx["dim"], ctx["keepdim"]),)


# NormBackward0..3 are the four overloads of aten::norm (whole / dims, with or without dtype).
@rule("NormBackward0", formula=_NORM, example=_norm_example(0))
def _norm0(ctx: RuleContext):
    return _norm_whole(ctx)


@rule("NormBackward1", formula=_NORM, example=_norm_example(1))
def _norm1(ctx: RuleContext):
    return _norm_dims(ctx)


@rule("NormBackward2", formula=_NORM, example=_norm_example(2))
def _norm2(ctx: RuleContext):
    return _norm_whole(ctx)


@rule("NormBackward3", formula=_NORM, example=_norm_example(3))
def _norm3(ctx: RuleContext):
    return _norm_dims(ctx)


def _vector_norm_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3, max_side=3)
    p = _norm_p(draw)
    x = _norm_input(draw, s, p)
    keep = _keepdim(draw)
    how = draw(st.sampled_from(["norm", "vector_norm", "all"]), label="how")
    if how == "all" or not s:
        return Case(inputs=(x,), fn=lambda x: torch.linalg.vector_norm(x, p))
    dims = _dims(draw, len(s))
    if how == "norm" and p != 0:
        return Case(inputs=(x,), fn=lambda x: x.norm(p, dims, keep))
    return Case(inputs=(x,), fn=lambda x: torch.linalg.vector_norm(x, p, dims, keep))


@rule("LinalgVectorNormBackward0", formula=_NORM, example=_vector_norm_example)
def _vector_norm(ctx: RuleContext):
    return (
        _norm_grad(ctx.grad, ctx["self"], ctx["ord"], ctx["result"], ctx["dim"], ctx["keepdim"]),
    )


# ---------------------------------------------------------------- log-sum-exp


def _logsumexp_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3)
    x = tensor(draw, s, low=-5.0, high=5.0)
    dims, keep = _dims(draw, len(s)), _keepdim(draw)
    return Case(inputs=(x,), fn=lambda x: x.logsumexp(dims, keep))


@rule(
    "LogsumexpBackward0",
    formula=r"y = \log\textstyle\sum_{D} e^{x}:\quad \bar{x} = \bar{y}\,e^{x - y}\ \text{(the "
            r"softmax of } x \text{ along } D)",
    example=_logsumexp_example,
)
def _logsumexp(ctx: RuleContext):
    x = ctx["self"]
    g = unreduce(ctx.grad, x.shape, ctx["dim"], ctx["keepdim"])
    y = unreduce(ctx["result"], x.shape, ctx["dim"], ctx["keepdim"])
    return (g * np.exp(x - y),)


# ---------------------------------------------------------------- scans


def _cumsum_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3)
    x = tensor(draw, s)
    d = draw_dim(draw, len(s))
    if draw(st.booleans(), label="dtype"):
        return Case(inputs=(x,), fn=lambda x: x.cumsum(d, dtype=torch.float64))
    return Case(inputs=(x,), fn=lambda x: torch.cumsum(x, d))


@rule(
    "CumsumBackward0",
    formula=r"y_j = \textstyle\sum_{i \le j} x_i:\quad \bar{x}_i = \sum_{j \ge i} \bar{y}_j\ "
            r"\text{(a reversed cumsum)}",
    example=_cumsum_example,
)
def _cumsum(ctx: RuleContext):
    g = ctx.grad
    if g.ndim == 0:
        return (g.copy(),)
    d = axis(ctx["dim"], g.ndim)
    return (np.flip(np.cumsum(np.flip(g, d), axis=d), d),)


def _cumprod_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3)
    x = _with_zeros(draw, s)
    d = draw_dim(draw, len(s))
    return Case(inputs=(x,), fn=lambda x: x.cumprod(d))


@rule(
    "CumprodBackward0",
    formula=r"y_j = \textstyle\prod_{i \le j} x_i:\quad \bar{x}_k = \sum_{j \ge k} \bar{y}_j "
            r"\prod_{i \le j,\, i \neq k} x_i",
    example=_cumprod_example,
)
def _cumprod(ctx: RuleContext):
    x, g = ctx["self"], ctx.grad
    if x.ndim == 0:
        return (g.copy(),)
    d = axis(ctx["dim"], x.ndim)
    xs, gs = np.moveaxis(x, d, -1), np.moveaxis(g, d, -1)
    out = np.empty_like(xs)
    # Leaving x_k out of each running product by setting it to 1 stays exact with zeros.
    for k in range(xs.shape[-1]):
        without_k = xs.copy()
        without_k[..., k] = 1.0
        running = np.cumprod(without_k, axis=-1)
        out[..., k] = (gs[..., k:] * running[..., k:]).sum(axis=-1)
    return (np.moveaxis(out, -1, d),)


def _logcumsumexp_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3)
    x = tensor(draw, s)
    d = draw_dim(draw, len(s))
    return Case(inputs=(x,), fn=lambda x: x.logcumsumexp(d))


@rule(
    "LogcumsumexpBackward0",
    formula=r"y_j = \log\textstyle\sum_{i \le j} e^{x_i}:\quad \bar{x}_k = \sum_{j \ge k} "
            r"\bar{y}_j\, e^{x_k - y_j}",
    example=_logcumsumexp_example,
)
def _logcumsumexp(ctx: RuleContext):
    x, y, g = ctx["self"], ctx["result"], ctx.grad
    if x.ndim == 0:
        return (g.copy(),)
    d = axis(ctx["dim"], x.ndim)
    xs, ys, gs = (np.moveaxis(a, d, -1) for a in (x, y, g))
    n = xs.shape[-1]
    later = np.triu(np.ones((n, n), dtype=bool))  # later[k, j]: j >= k
    # -inf where j < k, so that exp() gives exact zeros there and never overflows.
    exponent = np.where(later, xs[..., :, None] - ys[..., None, :], -np.inf)
    terms = gs[..., None, :] * np.exp(exponent)
    return (np.moveaxis(terms.sum(axis=-1), -1, d),)


# ---------------------------------------------------------------- mode


def _mode_example(draw: Draw) -> Case:
    s = shape(draw, min_dims=0, max_dims=3)
    # Values on a coarse grid, so that they repeat (and modes tie: the saved index decides).
    x = leaf(np.round(uniform(draw, s, -2.0, 2.0)))
    n = max(len(s), 1)
    d = draw(st.integers(-n, n - 1), label="dim")
    keep = draw(st.booleans(), label="keepdim")
    return Case(inputs=(x,), fn=lambda x: torch.mode(x, d, keep)[0])


@rule(
    "ModeBackward0",
    formula=r"(y, i) = \operatorname{mode}_d\,x:\quad \bar{x} = 0,\ \ \bar{x}[\ldots, i, \ldots] = "
            r"\bar{y}\ \text{(the saved index picks the entry)}",
    example=_mode_example,
)
def _mode(ctx: RuleContext):
    sizes = tuple(ctx["self_sym_sizes"])
    g, idx = ctx.grad, ctx["indices"]
    if not sizes:
        return (np.reshape(g, ()),)
    d = axis(ctx["dim"], len(sizes))
    if not ctx["keepdim"]:
        g, idx = np.expand_dims(g, d), np.expand_dims(idx, d)
    return (add_along_axis(np.zeros(sizes), d, idx, g),)

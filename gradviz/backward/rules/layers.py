"""Normalization, embedding, dropout and attention layers: batch/layer/group norm,
embedding and embedding bags, native dropout, and CPU scaled dot-product attention."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from gradviz.backward.rules._common import shaped, signed
from gradviz.backward.rules._examples import distinct_values, seeded_rng, shape, tensor
from gradviz.backward.rules._registry import Case, RuleContext, rule

# ---------------------------------------------------------------------------------------
# Normalization
# ---------------------------------------------------------------------------------------


def _batch_norm_example(draw) -> Case:
    n = draw(st.integers(2, 4))
    c = draw(st.integers(1, 4))
    spatial = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2))))
    x = tensor(draw, (n, c) + spatial, requires_grad=True)
    affine = draw(st.booleans())
    w = tensor(draw, (c,), low=0.5, high=2.0, requires_grad=draw(st.booleans())) if affine else None
    b = tensor(draw, (c,), requires_grad=draw(st.booleans())) if affine else None
    training = draw(st.booleans())
    track = draw(st.booleans()) or not training
    rng = seeded_rng(draw)
    rm = torch.tensor(rng.normal(size=c), dtype=torch.float64) if track else None
    rv = torch.tensor(rng.uniform(0.5, 2.0, size=c), dtype=torch.float64) if track else None
    eps = draw(st.sampled_from([1e-5, 0.1]))

    def fn(x, w=None, b=None):
        mean = None if rm is None else rm.clone()
        var = None if rv is None else rv.clone()
        return F.batch_norm(x, mean, var, w, b, training=training, eps=eps)

    return Case(inputs=(x,) if w is None else (x, w, b), fn=fn)


@rule("NativeBatchNormBackward0",
      formula=r"\hat{x} = (x - \mu_c)\,r_c,\ y = \gamma_c \hat{x} + \beta_c:\quad "
              r"\bar{\beta}_c = \textstyle\sum \bar{y},\ \bar{\gamma}_c = \textstyle\sum \bar{y} "
              r"\odot \hat{x},\ "
              r"\bar{x} = \gamma_c r_c \big(\bar{y} - \tfrac{1}{M}\bar{\beta}_c - "
              r"\tfrac{1}{M}\hat{x}\,\bar{\gamma}_c\big) "
              r"\text{ (training: batch } \mu, r\text{); eval: } \bar{x} = \gamma_c r_c\,\bar{y}",
      example=_batch_norm_example)
def _batch_norm(ctx: RuleContext):
    x, g = ctx["input"], ctx.grad
    c = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, c) + (1,) * (x.ndim - 2)
    training = ctx["training"]
    if training:
        mean, invstd = ctx["result1"], ctx["result2"]
    else:
        mean = ctx["running_mean"]
        invstd = 1.0 / np.sqrt(ctx["running_var"] + ctx["eps"])
    w = np.ones(c) if ctx["weight"] is None else ctx["weight"]
    mean, invstd, wb = mean.reshape(bshape), invstd.reshape(bshape), w.reshape(bshape)
    xhat = (x - mean) * invstd
    gbeta = g.sum(axis=axes)
    ggamma = (g * xhat).sum(axis=axes)
    if training:
        m = x.size // c
        # The batch mean and variance depend on every x too: two extra terms.
        gx = wb * invstd * (g - gbeta.reshape(bshape) / m - xhat * ggamma.reshape(bshape) / m)
    else:
        gx = g * wb * invstd
    return shaped(ctx, 0, gx), shaped(ctx, 1, ggamma), shaped(ctx, 2, gbeta)


def _layer_norm_example(draw) -> Case:
    s = shape(draw, min_dims=1, max_dims=3)
    k = draw(st.integers(1, len(s)))
    normalized = s[len(s) - k:]
    x = tensor(draw, s)
    affine = draw(st.sampled_from(["none", "weight", "both"]))
    w = tensor(draw, normalized, low=0.5, high=2.0, requires_grad=draw(st.booleans())) \
        if affine != "none" else None
    b = tensor(draw, normalized, requires_grad=draw(st.booleans())) if affine == "both" else None
    eps = draw(st.sampled_from([1e-5, 0.1]))
    inputs = tuple(t for t in (x, w, b) if t is not None)

    def fn(x, *params):
        weight = params[0] if params else None
        bias = params[1] if len(params) > 1 else None
        return F.layer_norm(x, normalized, weight, bias, eps)

    return Case(inputs=inputs, fn=fn)


@rule("NativeLayerNormBackward0",
      formula=r"\hat{x} = (x - \mu) r \text{ over the last dims},\ y = \gamma \odot \hat{x} + "
              r"\beta:\quad "
              r"\bar{\beta} = \textstyle\sum_{\text{rows}} \bar{y},\ \bar{\gamma} = "
              r"\textstyle\sum_{\text{rows}} \bar{y} \odot \hat{x},\ "
              r"\bar{x} = r\big(\hat{g} - \overline{\hat{g}} - \hat{x}\,\overline{\hat{g} \odot "
              r"\hat{x}}\big),\ \hat{g} = \gamma \odot \bar{y}",
      example=_layer_norm_example)
def _layer_norm(ctx: RuleContext):
    x, g = ctx["input"], ctx.grad
    k = len(ctx["normalized_shape"])
    axes = tuple(range(x.ndim - k, x.ndim))
    lead = tuple(range(x.ndim - k))
    mean, rstd = ctx["result1"], ctx["result2"]
    xhat = (x - mean) * rstd
    w = ctx["weight"]
    gh = g if w is None else g * w
    gx = rstd * (gh - gh.mean(axis=axes, keepdims=True)
                 - xhat * (gh * xhat).mean(axis=axes, keepdims=True))
    gw = (g * xhat).sum(axis=lead) if ctx.input_shapes[1] is not None else None
    gb = g.sum(axis=lead) if len(ctx.input_shapes) > 2 and ctx.input_shapes[2] is not None else None
    return shaped(ctx, 0, gx), shaped(ctx, 1, gw), shaped(ctx, 2, gb)


def _group_norm_example(draw) -> Case:
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 2))
    n = draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2))))
    if c // groups * math.prod(spatial) == 1:
        spatial += (2,)  # a group of one value has no variance to normalize by
    x = tensor(draw, (n, c) + spatial)
    affine = draw(st.booleans())
    w = tensor(draw, (c,), low=0.5, high=2.0, requires_grad=draw(st.booleans())) if affine else None
    b = tensor(draw, (c,), requires_grad=draw(st.booleans())) if affine else None
    inputs = (x,) if w is None else (x, w, b)
    return Case(inputs=inputs, fn=lambda x, w=None, b=None: F.group_norm(x, groups, w, b))


@rule("NativeGroupNormBackward0",
      formula=r"\hat{x} = (x - \mu_{n,g}) r_{n,g},\ y = \gamma_c \hat{x} + \beta_c:\quad "
              r"\bar{x} = r\big(\hat{g} - \overline{\hat{g}} - \hat{x}\,\overline{\hat{g} \odot "
              r"\hat{x}}\big) \text{ per (sample, group)},\ \hat{g} = \gamma_c \bar{y}",
      example=_group_norm_example)
def _group_norm(ctx: RuleContext):
    x, g = ctx["input"], ctx.grad
    n, c, groups = x.shape[0], x.shape[1], ctx["group"]
    grouped = (n, groups, c // groups, -1)
    xg, gg = x.reshape(grouped), g.reshape(grouped)
    mean = ctx["result1"].reshape(n, groups, 1, 1)
    rstd = ctx["result2"].reshape(n, groups, 1, 1)
    xhat = (xg - mean) * rstd
    w = ctx["weight"]
    gh = gg if w is None else gg * w.reshape(1, groups, c // groups, 1)
    gx = rstd * (gh - gh.mean(axis=(2, 3), keepdims=True)
                 - xhat * (gh * xhat).mean(axis=(2, 3), keepdims=True))
    gw = (gg * xhat).sum(axis=(0, 3)).reshape(c)
    gb = gg.sum(axis=(0, 3)).reshape(c)
    return shaped(ctx, 0, gx.reshape(x.shape)), shaped(ctx, 1, gw), shaped(ctx, 2, gb)


# ---------------------------------------------------------------------------------------
# Embedding and dropout
# ---------------------------------------------------------------------------------------


def _embedding_example(draw) -> Case:
    num, dim = draw(st.integers(2, 6)), draw(st.integers(1, 4))
    idx_shape = shape(draw, min_dims=0, max_dims=2)
    # Few rows, many lookups: repeated indices must accumulate.
    idx = torch.from_numpy(np.asarray(seeded_rng(draw).integers(0, num, size=idx_shape)))
    padding_idx = draw(st.sampled_from([None, 0, -1]))
    scale = draw(st.booleans())
    w = tensor(draw, (num, dim))
    return Case(inputs=(w,), fn=lambda w: F.embedding(
        idx, w, padding_idx=padding_idx, scale_grad_by_freq=scale))


@rule("EmbeddingBackward0",
      formula=r"y_{i} = W_{t_i}:\quad \bar{W}_{r} = \textstyle\sum_{i:\,t_i = r} \bar{y}_{i}"
              r"\ \ (0 \text{ for the padding row; } / \#\{i: t_i = r\} \text{ if "
              r"scale\_grad\_by\_freq})",
      example=_embedding_example)
def _embedding(ctx: RuleContext):
    idx = ctx["indices"].astype(np.int64).reshape(-1)
    num = ctx["weight_sym_argsize_0"]
    g = ctx.grad
    rows = g.reshape(idx.size, -1)
    if ctx["scale_grad_by_freq"]:
        counts = np.bincount(idx, minlength=num)
        rows = rows / counts[idx][:, None]
    gw = np.zeros((num, rows.shape[1]))
    np.add.at(gw, idx, rows)
    pad = signed(ctx["padding_idx"])
    if pad != -1:
        gw[pad] = 0.0
    return (gw,)


def _embedding_bag_example(draw) -> Case:
    num, dim = draw(st.integers(2, 6)), draw(st.integers(1, 4))
    rng = seeded_rng(draw)
    total = draw(st.integers(1, 8))
    idx = torch.from_numpy(rng.integers(0, num, size=total))
    bags = draw(st.integers(1, 3))
    cuts = rng.integers(0, total + 1, size=bags - 1)
    offsets = torch.from_numpy(np.sort(np.concatenate([[0], cuts])))
    mode = draw(st.sampled_from(["sum", "mean", "max"]))
    psw = None
    if mode == "sum" and draw(st.booleans()):
        psw = tensor(draw, (total,), requires_grad=draw(st.booleans()))
    w = tensor(draw, (num, dim))
    if mode == "max":
        distinct_values(w, draw)
    padding_idx = draw(st.sampled_from([None, 0]))
    inputs = (w,) if psw is None else (w, psw)
    return Case(inputs=inputs, fn=lambda w, p=None: F.embedding_bag(
        idx, w, offsets, mode=mode, per_sample_weights=p, padding_idx=padding_idx))


@rule("EmbeddingBagBackward0",
      formula=r"y_b = \operatorname{reduce}_{i \in b}\,(s_i W_{t_i}):\quad "
              r"\bar{W}_{t_i} \mathrel{+}= s_i \bar{y}_{b(i)} \ (\text{sum}),\ \bar{y}_{b(i)}/|b| "
              r"\ (\text{mean}),\ "
              r"\bar{y}_b \text{ at the argmax row (max)};\ \bar{s}_i = \bar{y}_{b(i)} \cdot "
              r"W_{t_i}",
      example=_embedding_bag_example)
def _embedding_bag(ctx: RuleContext):
    idx = ctx["indices"].astype(np.int64)
    bag_of = ctx["result1"].astype(np.int64)  # offset2bag: the bag of each lookup
    bag_size = ctx["result2"].astype(np.int64)
    num = ctx["weight_sym_argsize_0"]
    mode = ctx["mode"]
    pad = signed(ctx["padding_idx"])
    g = ctx.grad
    gw = np.zeros((num, g.shape[1]))
    real = idx != pad
    if mode == 2:  # max: each bag's gradient goes to the row that won each column
        winners = ctx["result3"].astype(np.int64)
        cols = np.broadcast_to(np.arange(g.shape[1]), winners.shape)
        won = np.broadcast_to(bag_size[:, None] > 0, winners.shape)  # empty bags: no winner
        np.add.at(gw, (winners[won], cols[won]), g[won])
        return gw, None
    rows = g[bag_of]
    if mode == 1:
        rows = rows / np.maximum(bag_size[bag_of], 1)[:, None]
    psw = ctx["per_sample_weights"]
    if psw is not None:
        rows = rows * psw[:, None]
    np.add.at(gw, idx[real], rows[real])
    gpsw = None
    if len(ctx.input_shapes) > 1 and ctx.input_shapes[1] is not None:
        gpsw = np.where(real, (g[bag_of] * ctx["weight"][idx]).sum(axis=1), 0.0)
    return gw, gpsw


def _native_dropout_example(draw) -> Case:
    x = tensor(draw, shape(draw, min_dims=0))
    p = draw(st.sampled_from([0.2, 0.5, 0.9]))
    torch.manual_seed(draw(st.integers(0, 1000)))
    return Case(inputs=(x,), fn=lambda x: torch.native_dropout(x, p, True)[0])


@rule("NativeDropoutBackward0",
      formula=r"y = x \odot m / (1 - p):\quad \bar{x} = \bar{y} \odot m / (1 - p)",
      example=_native_dropout_example)
def _native_dropout(ctx: RuleContext):
    p = ctx["p"]
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    return (ctx.grad * ctx["result1"].astype(np.float64) * scale,)


# ---------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------


def _sdpa_example(draw) -> Case:
    if draw(st.integers(0, 3)) == 0:
        # Through nn.MultiheadAttention, with a key padding mask now and then.
        heads = draw(st.integers(1, 2))
        embed = heads * draw(st.integers(1, 3))
        n, length = draw(st.integers(1, 2)), draw(st.integers(1, 4))
        torch.manual_seed(draw(st.integers(0, 1000)))
        mha = torch.nn.MultiheadAttention(embed, heads, batch_first=True, dtype=torch.float64)
        x = tensor(draw, (n, length, embed))
        kpm = None
        if length > 1 and draw(st.booleans()):
            kpm = torch.zeros(n, length, dtype=torch.bool)
            kpm[:, -1] = True
        return Case(inputs=(x,), fn=lambda x: mha(x, x, x, need_weights=False,
                                                  key_padding_mask=kpm)[0])
    b, h = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kv_heads = h if not draw(st.booleans()) else 1
    lq, lk, e = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    q = tensor(draw, (b, h, lq, e))
    k = tensor(draw, (b, kv_heads, lk, e), requires_grad=draw(st.booleans()))
    v = tensor(draw, (b, kv_heads, lk, e), requires_grad=draw(st.booleans()))
    scale = draw(st.sampled_from([None, 0.3]))
    masking = draw(st.sampled_from(["none", "causal", "bool", "float"]))
    mask, causal = None, masking == "causal"
    rng = seeded_rng(draw)
    if masking == "bool":
        keep = rng.random((lq, lk)) < 0.7
        keep[:, 0] = True  # no query may lose every key (its row would be 0/0)
        mask = torch.from_numpy(keep)
    elif masking == "float":
        mask = torch.tensor(rng.normal(size=(b, 1, lq, lk)), dtype=torch.float64)
    return Case(inputs=(q, k, v), fn=lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=kv_heads != h))


@rule("ScaledDotProductFlashAttentionForCpuBackward0",
      formula=r"S = s\,QK^{\top} + M,\ P = \operatorname{softmax}(S),\ O = PV:\quad "
              r"\bar{V} = P^{\top}\bar{O},\ \bar{P} = \bar{O}V^{\top},\ \bar{S} = P \odot (\bar{P} "
              r"- \operatorname{rowsum}(\bar{P} \odot P)),\ "
              r"\bar{Q} = s\,\bar{S}K,\ \bar{K} = s\,\bar{S}^{\top}Q",
      example=_sdpa_example)
def _sdpa(ctx: RuleContext):
    q, k, v = ctx["query"], ctx["key"], ctx["value"]
    g = ctx.grad
    scale = ctx["scale"] if ctx["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
    # Grouped-query attention: each key/value head serves a block of query heads.
    rep = q.shape[1] // k.shape[1]
    kk, vv = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    s = scale * q @ np.swapaxes(kk, -1, -2)
    if ctx["attn_mask"] is not None:
        s = s + ctx["attn_mask"]
    if ctx["is_causal"]:
        lq, lk = s.shape[-2:]
        s = np.where(np.tril(np.ones((lq, lk), dtype=bool)), s, -np.inf)
    top = s.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.exp(s - top)
    total = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    gv = np.swapaxes(p, -1, -2) @ g
    gp = g @ np.swapaxes(vv, -1, -2)
    gs = p * (gp - (gp * p).sum(axis=-1, keepdims=True))
    gq = scale * gs @ kk
    gk = scale * np.swapaxes(gs, -1, -2) @ q

    def fold(a):  # sum the gradients of the query heads that shared one key/value head
        return a.reshape(a.shape[0], -1, rep, *a.shape[2:]).sum(axis=2)

    return shaped(ctx, 0, gq), shaped(ctx, 1, fold(gk)), shaped(ctx, 2, fold(gv))


def _weight_norm_example(draw) -> Case:
    v_shape = shape(draw, min_dims=1, max_dims=3)
    dim = draw(st.sampled_from(sorted({0, len(v_shape) - 1})))  # the fused kernel's two dims
    g_shape = tuple(n if i == dim else 1 for i, n in enumerate(v_shape))
    v = tensor(draw, v_shape, low=0.5, high=2.0)
    g = tensor(draw, g_shape, requires_grad=draw(st.booleans()))
    both = draw(st.booleans())

    def fn(v, g):
        w, norm = torch._weight_norm_interface(v, g, dim)
        return (w, norm) if both else w

    return Case(inputs=(v, g), fn=fn)


@rule("WeightNormInterfaceBackward0",
      formula=r"n = \lVert v \rVert_{\text{dims} \ne d},\ w = g\,v / n:\quad "
              r"\bar{g} = \textstyle\sum_{\ne d} \bar{w} \odot v / n,\ "
              r"\bar{v} = \frac{g}{n}\big(\bar{w} - v\,\bar{g}/n\big) + \bar{n}\,v/n",
      example=_weight_norm_example)
def _weight_norm(ctx: RuleContext):
    v, g, dim = ctx["v"], ctx["g"], ctx["dim"]
    # As the op's decomposition: the norm runs over every axis whose index is not `dim`
    # (dim=-1, weight_norm's "whole tensor", keeps none).
    axes = tuple(i for i in range(v.ndim) if i != dim)
    norm = np.sqrt((v * v).sum(axis=axes, keepdims=True))
    gw = ctx.grad
    gg = (gw * v).sum(axis=axes, keepdims=True) / norm
    gv = g / norm * (gw - v * gg / norm)
    gn = ctx.grad_outputs[1] if len(ctx.grad_outputs) > 1 else None
    if gn is not None:
        gv = gv + gn.reshape(norm.shape) * v / norm
    return shaped(ctx, 0, gv), shaped(ctx, 1, gg.reshape(g.shape))

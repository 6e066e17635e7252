"""Views of a recorded `GradientFlow` as data and charts, and a TF-Playground neuron view.

The charts are Altair (Vega-Lite) specs, so Streamlit shows them interactively
(``st.altair_chart``) and the CLI exports the same spec to SVG/PNG with vl-convert.
The neuron view is plain data (one small image per hidden unit over a 2-D input plane,
weights per edge) with a Pillow renderer.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gradviz.errors import ArgumentError
from gradviz.train.flow import GRAD_STATS, GradientFlow

__all__ = [
    "heatmap_frame",
    "flow_chart",
    "PICK",
    "chart_bytes",
    "NeuronView",
    "neuron_view",
    "neuron_png",
]


def heatmap_frame(flow: GradientFlow, stat: str = "norm") -> Any:
    """Long-form frame ``step, layer, depth, value`` of one gradient statistic (> 0 only,
    so a log colour scale never meets 0 or NaN)."""
    import pandas as pd

    if stat not in GRAD_STATS:
        raise ArgumentError("stat", stat, f"use one of {', '.join(GRAD_STATS)}")
    # One series, not `flow.frame()`: that builds every statistic of every kind as Python
    # dicts first, 10x the work of a chart the page redraws while training.
    steps, values = flow.series(stat)
    names = list(flow.params)
    n = len(names)
    df = pd.DataFrame({
        "step": np.repeat(np.asarray(steps, dtype=np.int64), n),
        "layer": np.tile(np.asarray(names, dtype=object), len(steps)),
        "depth": np.tile(np.arange(n, dtype=np.int64), len(steps)),
        "value": values.reshape(-1),
    })
    return df[df["value"] > 0].reset_index(drop=True)


# Name of the click selection `flow_chart(pick=True)` puts on the heatmap's layers.
PICK = "layer_pick"


def flow_chart(
    flow: GradientFlow, stat: str = "norm", *, width: int = 560, pick: bool = False
) -> Any:
    """A layers × steps heatmap (log colour) above per-layer lines (log y), as one chart.

    Layers run from the input side (top) to the output side, as `GradientFlow.params`.
    ``pick``: a click on a heatmap cell selects its layer (a point selection named
    `PICK` on the field ``layer``), for a page to act on.
    """
    import altair as alt

    df = heatmap_frame(flow, stat)
    order = list(flow.params)
    title = f"gradient {stat.replace('_', ' ')}"
    heat = (
        alt.Chart(df, title=f"{title} per layer and step (log colour)")
        .mark_rect()
        .encode(
            x=alt.X("step:O", title="step", axis=alt.Axis(labelOverlap=True)),
            y=alt.Y("layer:N", sort=order, title=None),
            color=alt.Color("value:Q", scale=alt.Scale(type="log", scheme="viridis"), title=stat),
            tooltip=["layer:N", "step:Q", alt.Tooltip("value:Q", format=".3e")],
        )
        .properties(width=width, height=max(60, 18 * len(order)))
    )
    if pick:
        heat = heat.add_params(alt.selection_point(name=PICK, fields=["layer"], on="click"))
    lines = (
        alt.Chart(df, title=f"{title} over training")
        .mark_line()
        .encode(
            x=alt.X("step:Q", title="step"),
            y=alt.Y("value:Q", scale=alt.Scale(type="log"), title=stat),
            color=alt.Color("layer:N", sort=order, legend=alt.Legend(columns=1)),
            tooltip=["layer:N", "step:Q", alt.Tooltip("value:Q", format=".3e")],
        )
        .properties(width=width, height=220)
    )
    return alt.vconcat(heat, lines).resolve_scale(color="independent")


def chart_bytes(chart: Any, fmt: str) -> bytes:
    """An Altair chart as ``"svg"`` or ``"png"`` bytes (needs vl-convert-python)."""
    if fmt not in ("svg", "png"):
        raise ArgumentError("fmt", fmt, 'use "svg" or "png"')
    try:
        import vl_convert as vlc
    except ImportError:
        raise ArgumentError(
            "fmt", fmt, "exporting a chart needs vl-convert: pip install vl-convert-python"
        ) from None
    spec = chart.to_json()
    if fmt == "svg":
        return vlc.vegalite_to_svg(spec).encode()
    return bytes(vlc.vegalite_to_png(spec, scale=1.5))


# ------------------------------------------------------------------- neuron view


@dataclass(frozen=True, eq=False)
class NeuronView:
    """Each unit's output over a grid on the 2-D input plane, and the weights between.

    ``columns[k]``: (units × grid × grid) images, column 0 the two inputs;
    ``names[k]``: the module each column was read from; ``edges[k]``: weights
    (units of column k+1 × units of column k) or None where no weight connects them;
    ``bounds``: ``(x0, x1, y0, y1)`` of the plane (image row 0 is y1, the top).
    """

    columns: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    edges: tuple[np.ndarray | None, ...]
    bounds: tuple[float, float, float, float]


def _plane(bounds: tuple[float, float, float, float], grid: int) -> torch.Tensor:
    x0, x1, y0, y1 = bounds
    xs = torch.linspace(x0, x1, grid, dtype=torch.float64)
    ys = torch.linspace(y1, y0, grid, dtype=torch.float64)  # top row first, as images read
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def _bounds(X: Any) -> tuple[float, float, float, float]:
    if X is None:
        return (-1.0, 1.0, -1.0, 1.0)
    x = torch.as_tensor(X, dtype=torch.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ArgumentError("X", tuple(x.shape), "give the 2-D inputs, shape (N, 2)")
    lo, hi = x.min(0).values, x.max(0).values
    pad = 0.1 * (hi - lo).clamp(min=1e-6)
    lo, hi = lo - pad, hi + pad
    return (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))


def _weight_of(module: nn.Module, n_in: int, n_out: int) -> np.ndarray | None:
    for p in module.parameters(recurse=False):
        if p.ndim == 2 and tuple(p.shape) == (n_out, n_in):
            return p.detach().double().numpy().copy()
        if p.ndim == 2 and tuple(p.shape) == (n_in, n_out):
            return p.detach().double().numpy().T.copy()
        if p.ndim == 2 and tuple(p.shape) == (n_in + 1, n_out):  # a folded bias row
            return p.detach().double().numpy()[:-1].T.copy()
    return None


def neuron_view(
    model: nn.Module, X: Any = None, *, grid: int = 24, bounds: Any = None
) -> NeuronView:
    """Run ``model`` on a ``grid`` × ``grid`` plane of 2-D inputs and keep every unit's output.

    A module with weights starts a new column; the parameter-free modules right after it
    (an activation) replace that column's images with their output, so a column shows
    what a layer's units send on. ``X`` (the data) sets the plane's bounds.
    """
    if not isinstance(model, nn.Module):
        raise ArgumentError("model", model, "give the nn.Module with 2 inputs")
    if not isinstance(grid, int) or isinstance(grid, bool) or not 2 <= grid <= 256:
        raise ArgumentError("grid", grid, "use a whole number from 2 to 256, e.g. grid=24")
    box = tuple(float(v) for v in bounds) if bounds is not None else _bounds(X)
    if len(box) != 4:
        raise ArgumentError("bounds", bounds, "give (x0, x1, y0, y1)")
    inputs = _plane(box, grid)
    p = next(iter(model.parameters()), None)
    if p is not None:
        inputs = inputs.to(p.dtype)
    seen: list[tuple[str, nn.Module, torch.Tensor]] = []
    handles = []
    for name, m in model.named_modules():
        if name and not any(m.children()):
            handles.append(m.register_forward_hook(
                lambda mod, a, out, name=name: seen.append((name, mod, out))
                if isinstance(out, torch.Tensor) else None
            ))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            final = model(inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not seen or seen[-1][2] is not final:
        seen.append(("output", model, final))
    return _columns(seen, inputs, grid, box)


def _columns(
    seen: list[tuple[str, nn.Module, torch.Tensor]],
    inputs: torch.Tensor,
    grid: int,
    box: tuple[float, float, float, float],
) -> NeuronView:
    n = grid * grid
    columns = [inputs.T.reshape(2, grid, grid).double().numpy()]
    names: list[str] = ["input"]
    edges: list[np.ndarray | None] = [None]
    for name, mod, out in seen:
        if out.ndim != 2 or out.shape[0] != n:
            continue
        image = out.detach().double().T.reshape(out.shape[1], grid, grid).numpy()
        has_weights = any(True for _ in mod.parameters(recurse=False))
        if has_weights or len(columns) == 1 or image.shape[0] != columns[-1].shape[0]:
            edges.append(_weight_of(mod, columns[-1].shape[0], image.shape[0]))
            columns.append(image)
            names.append(name)
        else:  # an activation after the layer: show what the units send on
            columns[-1], names[-1] = image, name
    return NeuronView(tuple(columns), tuple(names), tuple(edges[1:]), box)


def _unit_rgb(image: np.ndarray) -> np.ndarray:
    """Orange for negative, blue for positive, white at 0 (TF Playground's colours)."""
    scale = max(float(np.abs(image).max()), 1e-12)
    v = np.clip(image / scale, -1, 1)[..., None]
    white = np.array([255.0, 255.0, 255.0])
    blue, orange = np.array([8.0, 119.0, 189.0]), np.array([245.0, 147.0, 34.0])
    rgb = np.where(v >= 0, white + v * (blue - white), white - v * (orange - white))
    return rgb.astype(np.uint8)


def neuron_png(view: NeuronView, *, cell: int = 48, gap: int = 56) -> bytes:
    """The neuron view as a PNG: a column of unit images per layer, edges coloured by sign
    (blue +, orange −) and as thick as the weight's size."""
    from PIL import Image, ImageDraw

    if not isinstance(view, NeuronView):
        raise ArgumentError("view", view, "give the NeuronView from neuron_view()")
    tallest = max(c.shape[0] for c in view.columns)
    width = len(view.columns) * cell + (len(view.columns) - 1) * gap + 20
    height = tallest * (cell + 8) + 20
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)

    def top_left(k: int, u: int) -> tuple[int, int]:
        n = view.columns[k].shape[0]
        y0 = 10 + (tallest - n) * (cell + 8) // 2
        return 10 + k * (cell + gap), y0 + u * (cell + 8)

    for k, w in enumerate(view.edges):
        if w is None:
            continue
        biggest = max(float(np.abs(w).max()), 1e-12)
        for j in range(w.shape[0]):
            for i in range(w.shape[1]):
                (xa, ya), (xb, yb) = top_left(k, i), top_left(k + 1, j)
                colour = (8, 119, 189) if w[j, i] >= 0 else (245, 147, 34)
                thick = 1 + int(4 * abs(w[j, i]) / biggest)
                ends = [(xa + cell, ya + cell // 2), (xb, yb + cell // 2)]
                draw.line(ends, fill=colour, width=thick)
    for k, col in enumerate(view.columns):
        for u in range(col.shape[0]):
            tile = Image.fromarray(_unit_rgb(col[u]))
            tile = tile.resize((cell, cell), Image.Resampling.NEAREST)
            img.paste(tile, top_left(k, u))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()

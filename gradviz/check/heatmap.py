"""A matrix as an SVG heatmap (diverging colours around 0), with no plotting library."""

from __future__ import annotations

import html

import numpy as np

__all__ = ["heatmap_svg"]


def _colour(v: float, scale: float) -> str:
    t = 0.0 if scale == 0 else max(-1.0, min(1.0, v / scale))
    # white at 0, red for positive, blue for negative
    if t >= 0:
        r, g, b = 255, int(255 * (1 - 0.75 * t)), int(255 * (1 - 0.8 * t))
    else:
        r, g, b = int(255 * (1 + 0.8 * t)), int(255 * (1 + 0.6 * t)), 255
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap_svg(matrix: np.ndarray, title: str = "", *, cell: int = 22, scale: float | None = None,
                row_labels: tuple[str, ...] = (), col_labels: tuple[str, ...] = ()) -> str:
    """SVG of `matrix` (2-D; 1-D becomes one row); `scale` fixes the colour range (±scale)."""
    m = np.atleast_2d(np.asarray(matrix, dtype=float))
    finite = m[np.isfinite(m)]
    scale = float(np.max(np.abs(finite))) if scale is None and finite.size else (scale or 0.0)
    left = 8 + 7 * max((len(r) for r in row_labels), default=0)
    top = 24 + (14 if col_labels else 0)
    width, height = left + cell * m.shape[1] + 8, top + cell * m.shape[0] + 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="gradviz-heatmap" width="{width}" '
             f'height="{height}" font-family="Helvetica" font-size="10">',
             f'<text x="{left}" y="14" font-size="12">{html.escape(title)}</text>']
    for j, label in enumerate(col_labels[: m.shape[1]]):
        parts.append(f'<text x="{left + j * cell + cell / 2}" y="{top - 4}" '
                     f'text-anchor="middle">{html.escape(label)}</text>')
    for i in range(m.shape[0]):
        if i < len(row_labels):
            parts.append(f'<text x="{left - 4}" y="{top + i * cell + cell * 0.65}" '
                         f'text-anchor="end">{html.escape(row_labels[i])}</text>')
        for j in range(m.shape[1]):
            v = m[i, j]
            fill = _colour(v, scale) if np.isfinite(v) else "#ffe066"
            parts.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell - 1}" '
                         f'height="{cell - 1}" fill="{fill}"><title>[{i},{j}] = '
                         f'{v:.6g}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)

"""Where a recorded backward stands and how much gradient flowed where.

`minimap_spec` draws every step of a `BackwardStepper` as one strip, coloured by its
NumPy check and marking the current step; `weigh_edges` widens and darkens the edges of a
DOT drawing by the norm of the gradient each carried so far. Both read only the
recording, so they work on any stepper and need no Streamlit.
"""

from __future__ import annotations

import math
import re
import weakref
from typing import Any

import numpy as np

from gradviz.backward.stepper import PROGRESS_COLORS, BackwardStepper, Step
from gradviz.errors import ArgumentError

__all__ = ["edge_flows", "minimap_rows", "minimap_spec", "step_status", "weigh_edges"]

FLOW_COLOR = "#1864ab"  # edges that carried gradient; unlike the red of the current node
IDLE_COLOR = "#ced4da"  # edges that carried nothing yet
MIN_WIDTH, MAX_WIDTH = 1.0, 7.0


def step_status(step: Step) -> str:
    """A finished step's key in PROGRESS_COLORS, by its NumPy check (as colors_at does)."""
    if step.agrees is None:
        return "no reference"
    if not step.agrees:
        return "disagrees"
    if step.reference_kind == "finite differences":
        return "finite differences"
    return "agrees"


def _check_position(stepper: BackwardStepper, position: int) -> None:
    if not 0 <= position < len(stepper):
        raise ArgumentError("position", position, f"pass a step index from 0 to {len(stepper) - 1}")


def minimap_rows(stepper: BackwardStepper, position: int) -> list[dict[str, Any]]:
    """One row per step: its number, op, module, state (done steps by their check, the
    current one, upcoming ones) and its NumPy error as text."""
    _check_position(stepper, position)
    rows = []
    for s in stepper:
        state = "current" if s.index == position else (
            "upcoming" if s.index > position else step_status(s))
        c = s.check
        err = "—" if c is None else f"{c.value:.1e} ({c.measure})"
        rows.append({"step": s.index + 1, "op": s.node.label, "module": s.node.module or "",
                     "state": state, "check": step_status(s), "error": err})
    return rows


def minimap_spec(
    stepper: BackwardStepper, position: int, *, width: int | str = "container"
) -> dict[str, Any]:
    """A Vega-Lite strip of the whole backward: one cell per step in engine order.

    Done steps are coloured by their NumPy check, the current step yellow with a dark
    outline, later steps grey; hovering a cell names its op, module and error.
    """
    rows = minimap_rows(stepper, position)
    states = list(PROGRESS_COLORS)
    return {
        "data": {"values": rows},
        "mark": {"type": "rect", "stroke": "white", "strokeWidth": 0.5},
        "width": width,
        "height": 22,
        "encoding": {
            "x": {"field": "step", "type": "ordinal", "title": None,
                  "axis": {"values": _ticks(len(rows)), "labelAngle": 0, "ticks": False}},
            # A rect on a band axis needs its vertical extent spelled out.
            "y": {"value": 0},
            "y2": {"value": 22},
            "color": {"field": "state", "type": "nominal", "title": None,
                      "scale": {"domain": states, "range": [PROGRESS_COLORS[k] for k in states]},
                      "legend": None},  # the page's legend names the colours
            "stroke": {"condition": {"test": "datum.state === 'current'", "value": "#212529"},
                       "value": "white"},
            "strokeWidth": {"condition": {"test": "datum.state === 'current'", "value": 2.5},
                            "value": 0.5},
            "tooltip": [{"field": k} for k in ("step", "op", "module", "check", "error")],
        },
        "config": {"view": {"stroke": None}},
        # Stretch sideways only: the strip keeps its height and its step-number axis.
        "autosize": {"type": "fit-x", "contains": "padding"},
        "usermeta": {"embedOptions": {"renderer": "svg"}},
    }


def _ticks(n: int) -> list[int]:
    step = max(1, math.ceil(n / 12))
    return sorted({1, *range(step, n + 1, step), n})


# Per stepper, computed once: a weak key, so a stepper evicted from the app's cache goes.
_FLOWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _all_flows(stepper: BackwardStepper) -> tuple[tuple[int, str, str, float], ...]:
    # (step index, source id as drawn, target id, L2 norm) for every edge that carried a
    # gradient; the DOT edge runs forward, from the input (next node) to the node.
    if stepper in _FLOWS:
        return _FLOWS[stepper]
    flows = []
    for s in stepper:
        for nxt, g in zip(s.next_ids, s.grad_inputs, strict=False):
            if nxt is not None and g is not None:
                g = np.asarray(g, dtype=np.float64)
                flows.append((s.index, nxt, s.node.id, float(np.linalg.norm(g)) if g.size else 0.0))
    _FLOWS[stepper] = tuple(flows)
    return _FLOWS[stepper]


def edge_flows(stepper: BackwardStepper, position: int) -> dict[tuple[str, str], float]:
    """(source, target) of each drawn edge → norm of the gradient it carried in the steps
    up to `position`: the DOT edge `source -> target` runs forward, the gradient back."""
    _check_position(stepper, position)
    out: dict[tuple[str, str], float] = {}
    for index, src, dst, norm in _all_flows(stepper):
        if index <= position:
            # Two edges between one pair (x * x) carry separate gradients; they add up.
            out[(src, dst)] = math.hypot(out.get((src, dst), 0.0), norm)
    return out


def _width(norm: float, lo: float, hi: float) -> float:
    # Log scale: gradient norms across a network span many orders of magnitude.
    if norm <= 0 or hi <= lo:
        return MIN_WIDTH if norm <= 0 else MAX_WIDTH
    t = (math.log10(norm) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    return MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * min(1.0, max(0.0, t))


_EDGE = re.compile(r"^(\s*)(\w+) -> (\w+)(?: \[(.*)\])?\s*$")


def weigh_edges(dot_source: str, stepper: BackwardStepper, position: int) -> str:
    """`dot_source` (a drawing of the stepper's graph) with each edge's width and colour
    set by the gradient norm it carried up to `position`, on one log scale for the whole
    backward, and its norm as the edge's tooltip; edges yet to carry stay thin and grey."""
    flows = edge_flows(stepper, position)
    every = [n for *_, n in _all_flows(stepper) if n > 0]
    lo, hi = (min(every), max(every)) if every else (1.0, 1.0)
    lines = []
    for line in dot_source.split("\n"):
        m = _EDGE.match(line)
        if not m:
            lines.append(line)
            continue
        indent, src, dst, attrs = m.groups()
        norm = flows.get((src, dst))
        extra = (f'color="{IDLE_COLOR}"' if norm is None else
                 f'color="{FLOW_COLOR}" penwidth={_width(norm, lo, hi):.2f} '
                 f'tooltip="gradient norm {norm:.4g}"')
        lines.append(f"{indent}{src} -> {dst} [{(attrs + ' ') if attrs else ''}{extra}]")
    return "\n".join(lines)

"""`step_widget(loss)`: step through backward in a notebook, node by node in engine order.

The graph is the app's graph component (`GraphView`), each step drawn like a frame of the
backward animation: progress colours, the current node outlined, edges wider and redder by
the gradient they carried. Beside it, the current step's incoming and outgoing gradients
and the NumPy reference with its error. Controls are plain ipywidgets: back, step, play
(it runs in the browser), speed, a step slider and jump-to-node; a click on a node jumps
to its step.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as w
import numpy as np
import torch
import traitlets
from torch import nn

from gradviz.backward.animate import FrameMaker
from gradviz.backward.stepper import BackwardStepper, Step
from gradviz.draw.items import DEFAULT_BUDGET
from gradviz.errors import ArgumentError
from gradviz.notebook.widget import GraphView, svg_of

__all__ = ["SPEEDS", "StepWidget", "step_html", "step_widget"]

# Label → milliseconds per step while playing.
SPEEDS = {"0.25×": 3200, "0.5×": 1600, "1×": 800, "2×": 400, "4×": 200, "8×": 100}
_CELLS = 6  # rows/columns of a gradient shown as numbers


def _e(text: Any) -> str:
    return html.escape(str(text))


def _shape(a: Any) -> str:
    if a is None:
        return "—"
    return "scalar" if np.ndim(a) == 0 else "×".join(map(str, np.shape(a)))


def _table(arr: Any) -> str:
    a = np.asarray(arr, dtype=np.float64)
    a = a.reshape(1, -1) if a.ndim < 2 else a.reshape(-1, a.shape[-1])
    cut = a[:_CELLS, :_CELLS]
    rows = "".join("<tr>" + "".join(f"<td>{v:.4g}</td>" for v in row) + "</tr>" for row in cut)
    more = " …" if a.shape[0] > _CELLS or a.shape[1] > _CELLS else ""
    return f'<table class="gvs-num">{rows}</table>{more}'


def _norm(a: Any) -> str:
    return f"{float(np.linalg.norm(np.asarray(a, dtype=np.float64).ravel())):.4g}"


def _grads(title: str, grads: Sequence[Any], refs: Sequence[Any] | None,
           names: Sequence[Any]) -> str:
    parts = []
    for i, g in enumerate(grads):
        if g is None:
            continue
        ref = refs[i] if refs is not None and i < len(refs) else None
        to = names[i] if i < len(names) and names[i] else "edge"
        head = f"<b>{title} {i}</b> → {_e(to)} · shape {_shape(g)} · ‖·‖ {_norm(g)}"
        cells = f"<div><i>torch</i>{_table(g)}</div>"
        if ref is not None and np.shape(ref) == np.shape(g):
            err = float(np.max(np.abs(np.asarray(g) - np.asarray(ref)))) if np.size(g) else 0.0
            cells += f"<div><i>NumPy</i>{_table(ref)}</div>"
            head += f" · max |torch − NumPy| {err:.2e}"
        parts.append(f'<div class="gvs-grad">{head}<div class="gvs-pair">{cells}</div></div>')
    return "".join(parts) or "<i>none</i>"


def step_html(step: Step, stepper: BackwardStepper) -> str:
    """The panel beside the graph: the step's node, formula, check and gradients (HTML; the
    formula in $$…$$ for MathJax)."""
    node = step.node
    where = f" in module <code>{_e(node.module)}</code>" if node.module else ""
    out = [
        f"<h4>Step {step.index + 1}/{len(stepper)}: {_e(node.label)}</h4>",
        f'<div class="gradviz-current" data-node="{_e(node.id)}">node <code>{_e(node.id)}</code>'
        f"{where} · kind {_e(node.kind)}</div>",
    ]
    if step.summed:
        out.append(f"<p>Gradients summed here: {_e(step.summed)}.</p>")
    if step.formula:
        out.append(f"<div>$${step.formula}$$</div>")
    if step.reference_kind:
        verdict = "agrees" if step.agrees else "DISAGREES"
        out.append(
            f'<div class="gradviz-check">NumPy check ({_e(step.reference_kind)}): {verdict} — '
            f"{_e(str(step.check))} · max abs error {step.max_abs_error:.2e}, "
            f"max rel error {step.max_rel_error:.2e}</div>"
        )
    elif node.kind == "op":
        out.append('<div class="gradviz-check">No NumPy reference for this op yet.</div>')
    names = [stepper.graph.node(n).label if n else None for n in step.next_ids]
    out.append("<h5>Incoming gradients (grad_outputs)</h5>"
               + _grads("grad_output", step.grad_outputs, None, ()))
    if step.grad_inputs:
        out.append("<h5>Outgoing gradients (grad_inputs): torch vs NumPy</h5>"
                   + _grads("grad_input", step.grad_inputs, step.reference, names))
    else:
        out.append(f"<p>A parameter: the incoming gradient is accumulated into "
                   f"<code>{_e(node.label)}.grad</code>.</p>")
    return f'<div class="gvs-panel">{"".join(out)}</div>'


_STYLE = """<style>
.gvs-panel { font-size: 13px; max-height: 640px; overflow: auto; }
.gvs-panel h4 { margin: 0 0 4px; } .gvs-panel h5 { margin: 8px 0 2px; }
.gvs-grad { margin: 4px 0; } .gvs-pair { display: flex; gap: 12px; }
table.gvs-num td { padding: 0 4px; font-family: monospace; font-size: 11px; text-align: right; }
</style>"""


class StepWidget(w.VBox):
    """Backward, one step at a time. `position`: the current step (0-based); `current`: its
    `Step`. `step()`, `back()`, `jump(...)` move; the Play button plays in the browser."""

    position = traitlets.Int(0)

    def __init__(self, stepper: BackwardStepper, *, height: int = 600,
                 budget: int | None = DEFAULT_BUDGET, speed: str = "1×") -> None:
        if speed not in SPEEDS:
            raise ArgumentError("speed", speed, f"use one of {', '.join(SPEEDS)}")
        self.stepper = stepper
        self._frame = FrameMaker(stepper, budget=budget)
        n = len(stepper)
        self.graph_view = GraphView(height=height)
        self.back_button = w.Button(description="◀ Back", tooltip="previous step")
        self.step_button = w.Button(description="Step ▶", tooltip="next step")
        self.play = w.Play(value=1, min=1, max=n, step=1, interval=SPEEDS[speed],
                           description="play")
        self.speed = w.Dropdown(options=list(SPEEDS), value=speed, description="speed",
                                layout=w.Layout(width="150px"))
        self.slider = w.IntSlider(value=1, min=1, max=n, description="step",
                                  continuous_update=False)
        self.target = w.Text(placeholder="node id, op or module", description="jump to",
                             continuous_update=False, layout=w.Layout(width="260px"))
        self.jump_button = w.Button(description="Jump", tooltip="go to the step of that node")
        self.message = w.HTML()
        self.panel = w.HTMLMath(layout=w.Layout(width="44%"))
        w.jslink((self.play, "value"), (self.slider, "value"))  # playing runs in the browser
        self.back_button.on_click(lambda _b: self.back())
        self.step_button.on_click(lambda _b: self.step())
        self.jump_button.on_click(lambda _b: self._jump_typed())
        # continuous_update=False: the value arrives on Enter or on leaving the box.
        self.target.observe(lambda _c: self._jump_typed(), names="value")
        self.speed.observe(lambda c: setattr(self.play, "interval", SPEEDS[c["new"]]),
                           names="value")
        self.slider.observe(lambda c: setattr(self, "position", c["new"] - 1), names="value")
        self.graph_view.observe(self._on_click, names="selected")
        controls = w.HBox([self.back_button, self.step_button, self.play, self.speed, self.slider])
        jump = w.HBox([self.target, self.jump_button, self.message])
        body = w.HBox([w.Box([self.graph_view], layout=w.Layout(width="56%")), self.panel])
        super().__init__([w.HTML(_STYLE), controls, jump, body])
        self._show(0)

    @property
    def current(self) -> Step:
        return self.stepper[self.position]

    def step(self, by: int = 1) -> StepWidget:
        """Move `by` steps (negative: back), staying within the run."""
        self.position = min(len(self.stepper) - 1, max(0, self.position + int(by)))
        return self

    def back(self) -> StepWidget:
        return self.step(-1)

    def jump(self, target: int | str) -> StepWidget:
        """Go to a step index, or to the step of a node id ("n5"), else to the first step
        whose op label or module path matches `target` ("Addmm", "fc1")."""
        if isinstance(target, int) and not isinstance(target, bool):
            if not 0 <= target < len(self.stepper):
                raise ArgumentError("target", target,
                                    f"use a step index from 0 to {len(self.stepper) - 1}")
            self.position = target
            return self
        if not isinstance(target, str) or not target.strip():
            raise ArgumentError("target", target,
                                "pass a step index, a node id such as 'n5', an op or a module")
        t = target.strip()
        found = self.stepper.position_of(t)
        if found is None:
            found = self.stepper.find(label=t)
        if found is None:
            found = self.stepper.find(module=t)
        if found is None:
            raise ArgumentError("target", target,
                                "no step runs that node, op or module; type a node id (n5), "
                                "part of an op name (Addmm) or a module path (fc1)")
        self.position = found
        return self

    @traitlets.observe("position")
    def _moved(self, change: Mapping[str, Any]) -> None:
        self._show(change["new"])

    def _show(self, pos: int) -> None:
        step = self.stepper[pos]
        frame = self._frame(pos)
        with self.graph_view.hold_sync():
            self.graph_view.svg = svg_of(frame.dot)
            self.graph_view.selected = step.node.id
            self.graph_view.focus = step.node.id
        self.slider.value = pos + 1
        self.back_button.disabled = pos == 0
        self.step_button.disabled = pos == len(self.stepper) - 1
        self.panel.value = step_html(step, self.stepper)

    def _on_click(self, change: Mapping[str, Any]) -> None:
        clicked = change["new"]
        pos = self.stepper.position_of(clicked) if isinstance(clicked, str) else None
        if pos is not None and pos != self.position:
            self.position = pos

    def _jump_typed(self) -> None:
        if not self.target.value.strip():
            return
        try:
            self.jump(self.target.value)
            self.message.value = ""
        except ArgumentError as exc:
            self.message.value = f'<span style="color:#c92a2a">{_e(exc.fix)}</span>'


def step_widget(
    loss: torch.Tensor | BackwardStepper,
    *,
    model: nn.Module | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
    height: int = 600,
    budget: int | None = DEFAULT_BUDGET,
    speed: str = "1×",
) -> StepWidget:
    """Step through the backward of `loss` (a scalar tensor, or a `BackwardStepper` already
    recorded) in a notebook. model/params name the parameters, as for `BackwardStepper`.
    speed: the starting play speed, one of `SPEEDS`."""
    if isinstance(loss, BackwardStepper):
        stepper = loss
    elif isinstance(loss, torch.Tensor):
        stepper = BackwardStepper(loss, model=model, params=params)
    else:
        raise ArgumentError("loss", type(loss).__name__,
                            "pass the loss tensor or a BackwardStepper")
    if not isinstance(height, int) or isinstance(height, bool) or not 200 <= height <= 4000:
        raise ArgumentError("height", height, "use a whole number of pixels from 200 to 4000")
    return StepWidget(stepper, height=height, budget=budget, speed=speed)

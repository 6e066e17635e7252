"""Read a recorded `GradientFlow` and say what is wrong, in which layer, and what to try.

Every check looks at the later half of the kept steps (the state the network is in now,
not its first steps: a sigmoid net at initialisation often shows a 10⁴× spread in gradient
size that training removes) and takes the median there, so one noisy step never warns.
Depth is judged on the gradient reaching each layer's output (see `_signal`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradviz.errors import ArgumentError

__all__ = ["Diagnosis", "KINDS", "THRESHOLDS", "diagnose"]

KINDS = ("non-finite", "vanishing", "exploding", "dead-relu", "lr-too-large")

# vanishing/exploding: gradient RMS ratio between the last and the first weight layer;
# dead: share of units (or gradient entries) that are exactly zero;
# update_ratio: ‖Δw‖/‖w‖ per step (≈1e-3 is the usual healthy size).
THRESHOLDS = {"vanishing": 100.0, "exploding": 100.0, "dead": 0.5, "update_ratio": 0.1}


@dataclass(frozen=True)
class Diagnosis:
    """One finding: ``layer`` (parameter or module name), ``kind`` (one of `KINDS`),
    the measured ``value`` against its ``threshold``, and a ``message`` with the fix.
    ``steps``: the first and last step the finding was judged on."""

    layer: str
    kind: str
    value: float
    threshold: float
    message: str
    steps: tuple[int, int] = (0, 0)

    def __str__(self) -> str:
        return f"{self.kind} at {self.layer}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "kind": self.kind,
            "value": self.value if math.isfinite(self.value) else None,
            "threshold": self.threshold,
            "message": self.message,
            "steps": list(self.steps),
        }


def _window(n: int) -> slice:
    return slice(n // 2, n)


def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def _weights(flow: Any) -> list[int]:
    """Depth indices of the weight matrices/kernels (two dims > 1), if there are two, else
    all parameters. Shapes, not names: seed 002 calls its biases b1, b2 (shape (1, 3))."""
    mats = [i for i, shape in enumerate(flow.shapes) if sum(d > 1 for d in shape) >= 2]
    return mats if len(mats) >= 2 else list(range(len(flow.params)))


def _signal(flow: Any, window: slice) -> tuple[list[str], np.ndarray, str]:
    """Per-layer backward signal, input side first: names, (steps × layers), what it is.

    Preferred: the norm of the gradient reaching each leaf module's output (the signal a
    vanishing gradient starves). Weight gradients would hide it: the last layer of a deep
    sigmoid net sees nearly constant inputs, so its weight gradient is small too.
    Without two hooked modules (loose Parameters), gradient RMS of the weight tensors.
    """
    _, act = flow.series("grad_norm", kind="act")
    mods = [j for j in flow.module_depth if np.isfinite(act[window, j]).any()]
    if len(mods) >= 3:
        # not the output layer's own dL/dy: a squashing function inside that layer (the
        # sigmoid in quadrant-softmax's MyLayer) makes it large however well the hidden
        # layers pass the signal on; compare where the signal enters the last layer
        mods = mods[:-1]
    if len(mods) >= 2:
        names = [flow.modules[j] for j in mods]
        return names, act[window][:, mods], "norm of the gradient at the layer's output"
    _, norm = flow.series("norm")
    sizes = np.sqrt(np.maximum(np.array(flow.sizes, dtype=np.float64), 1.0))
    layers = _weights(flow)
    rms = (norm[window] / sizes)[:, layers]
    return [flow.params[d] for d in layers], rms, "RMS of the weight gradient"


def _depth_checks(
    flow: Any, window: slice, span: tuple[int, int], limits: dict[str, float]
) -> list[Diagnosis]:
    names, signal, what = _signal(flow, window)
    if len(names) < 2:
        return []
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = _median(signal[:, -1] / signal[:, 0])
    if not math.isfinite(ratio):
        return []
    first, last = names[0], names[-1]
    where = f"({what}, median of steps {span[0]}–{span[1]})"
    if ratio > limits["vanishing"]:
        return [Diagnosis(
            first, "vanishing", ratio, limits["vanishing"],
            f"gradients reaching {first} are {ratio:.3g}× smaller than at {last} {where}: "
            "the first layers barely learn. Use ReLU/GELU instead of sigmoid/tanh, add "
            "BatchNorm/LayerNorm or residual connections, or initialise with "
            "nn.init.xavier_/kaiming_",
            span,
        )]
    if ratio < 1.0 / limits["exploding"]:
        grow = 1.0 / ratio
        return [Diagnosis(
            first, "exploding", grow, limits["exploding"],
            f"gradients grow {grow:.3g}× from {last} back to {first} {where}. Initialise "
            "smaller (nn.init.xavier_), add normalization, clip with "
            "torch.nn.utils.clip_grad_norm_, or lower the lr",
            span,
        )]
    return []


def _dead_checks(flow: Any, span: tuple[int, int], window: slice, limit: float) -> list[Diagnosis]:
    out: list[Diagnosis] = []
    relus = [j for j, m in enumerate(flow.modules) if "relu" in flow.module_types[j].lower()]
    if relus:
        _, dead = flow.series("dead_share", kind="act")
        for j in relus:
            share = _median(dead[window, j])
            if share > limit:
                out.append(Diagnosis(
                    flow.modules[j], "dead-relu", share, limit,
                    f"{share:.0%} of the units of {flow.modules[j]} output 0 for every "
                    f"sample (median of steps {span[0]}–{span[1]}) and get no gradient. "
                    "Lower the lr, use LeakyReLU/GELU, or initialise with "
                    "nn.init.kaiming_ and a small positive bias",
                    span,
                ))
        return out
    # no ReLU module to watch (F.relu, clamp, a custom Function): zero gradient entries
    _, zero = flow.series("zero_share")
    for d in _weights(flow):
        share = _median(zero[window, d])
        if share > limit and flow.sizes[d] > 1:
            name = flow.params[d]
            out.append(Diagnosis(
                name, "dead-relu", share, limit,
                f"{share:.0%} of the gradient entries of {name} are exactly 0 (median of "
                f"steps {span[0]}–{span[1]}): the units it feeds (or is fed by) are dead or "
                "its inputs are 0. Lower the lr, use LeakyReLU/GELU, or check the inputs",
                span,
            ))
    return out


def _lr_checks(flow: Any, span: tuple[int, int], window: slice, limit: float) -> list[Diagnosis]:
    _, ratio = flow.series(kind="update")
    worst, worst_d = -math.inf, -1
    # weights only: a bias starts at 0, so its relative change says nothing about the lr
    # (RMSprop moves keras-dense-512's zero-initialised biases by 0.2-0.4 of their size)
    for d in _weights(flow):
        value = _median(ratio[window, d])
        if math.isfinite(value) and value > worst:
            worst, worst_d = value, d
    if worst <= limit:
        return []
    name = flow.params[worst_d]
    return [Diagnosis(
        name, "lr-too-large", worst, limit,
        f"each step changes {name} by {worst:.3g} of its size (‖Δw‖/‖w‖, median of steps "
        f"{span[0]}–{span[1]}; about 1e-3 is healthy): the learning rate is too large. "
        "Divide the lr by 10, or use a scheduler/warm-up",
        span,
    )]


def _nonfinite(flow: Any, norm: np.ndarray, steps: list[int]) -> list[Diagnosis]:
    # an absent gradient leaves every statistic NaN; a NaN gradient still has a zero share
    _, zero = flow.series("zero_share")
    bad = np.isinf(norm) | (np.isnan(norm) & np.isfinite(zero))
    if not bad.any():
        return []
    row, d = map(int, np.argwhere(bad)[0])
    name = flow.params[d]
    return [Diagnosis(
        name, "non-finite", float(norm[row, d]), math.inf,
        f"the gradient of {name} became {norm[row, d]} at step {steps[row]}. Lower the lr, "
        "clip with torch.nn.utils.clip_grad_norm_, and look for log(0) or division by 0",
        (steps[row], steps[row]),
    )]


def diagnose(flow: Any, **thresholds: float) -> list[Diagnosis]:
    """Findings for a recorded `GradientFlow`, most serious first (see `KINDS`).

    ``thresholds`` override `THRESHOLDS` (``vanishing=100``, ``exploding=100``,
    ``dead=0.5``, ``update_ratio=0.1``). An empty list means nothing looked wrong.
    """
    unknown = set(thresholds) - set(THRESHOLDS)
    if unknown:
        name = sorted(unknown)[0]
        raise ArgumentError(name, thresholds[name], f"known thresholds: {', '.join(THRESHOLDS)}")
    limits = {**THRESHOLDS, **{k: float(v) for k, v in thresholds.items()}}
    steps, norm = flow.series("norm")
    if not steps:
        return []
    found = _nonfinite(flow, norm, steps)
    window = _window(len(steps))
    span = (steps[window][0], steps[-1])
    found += _depth_checks(flow, window, span, limits)
    found += _dead_checks(flow, span, window, limits["dead"])
    found += _lr_checks(flow, span, window, limits["update_ratio"])
    return found

"""Function Lab: check a custom autograd Function from source code, inside the sandbox.

`run_lab` (app side) sends the source to a sandboxed child (`gradviz.check.sandbox.parent`), where
`check_source` execs it, finds the Function class, runs `check_function`, and traces the
Function's graph on one input. Only JSON comes back: the report (`FunctionReport.to_dict`)
and the graph (`Graph.to_json`), which the app draws itself.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gradviz.check import FunctionReport, check_function
from gradviz.check._util import OnClones, is_leaf_in_place
from gradviz.check.sandbox.child import run_user_code
from gradviz.check.sandbox.parent import Limits, SandboxResult, run_sandboxed
from gradviz.check.shapes import parse_shapes as parse_cli_shapes
from gradviz.errors import ArgumentError, GradvizError
from gradviz.graph.model import Graph
from gradviz.graph.tracing import trace

__all__ = ["LabResult", "check_source", "run_lab", "parse_shapes", "LAB_LIMITS"]

# Hypothesis and a torch import fit well inside these; a runaway snippet does not.
LAB_LIMITS = Limits(cpu_seconds=60, wall_seconds=90, memory_mb=4096)


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """"4x3, 3" → [(4, 3), (3,)] (the CLI's syntax), kept small enough for a browser run."""
    if not isinstance(text, str) or not text.strip():
        raise ArgumentError("shapes", text, "give one shape per input, e.g. '5' or '4x3, 3'")
    shapes = parse_cli_shapes(text.replace("×", "x"))
    for dims in shapes:
        if any(d < 1 or d > 64 for d in dims) or len(dims) > 4:
            raise ArgumentError("shapes", text, f"{dims}: use up to 4 sizes between 1 and 64")
    return shapes


def check_source(payload: dict[str, Any]) -> dict[str, Any]:
    """Sandbox task: exec the user's source, check its Function, trace it on one input."""
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    run_user_code(payload["source"], namespace)
    name = payload["class_name"]
    fn = namespace.get(name)
    if fn is None:
        base = torch.autograd.Function
        found = [k for k, v in namespace.items()
                 if isinstance(v, type) and issubclass(v, base) and v is not base]  # fmt: skip
        raise LookupError(
            f"the code defines no {name!r}; Function classes found: {', '.join(found) or 'none'}"
        )
    shapes = [tuple(s) for s in payload["shapes"]]
    examples = int(payload.get("max_examples", 100))
    report = check_function(fn, shapes=shapes, max_examples=examples, seed=payload.get("seed"))
    inputs = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    graph = None
    try:
        try:
            out = fn.apply(*inputs)
        except RuntimeError as error:
            if not is_leaf_in_place(error):
                raise
            # An in-place Function (ctx.mark_dirty) may not change a leaf: give it clones, as
            # check_function does; the graph then shows the CloneBackward step too.
            out = OnClones(fn).apply(*inputs)
        graph = trace(out, params={f"input {i}": t for i, t in enumerate(inputs)}).to_json()
    except Exception:  # the report already says what is wrong; the picture is optional
        graph = None
    return {"report": report.to_dict(), "graph": graph}


class _Warm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0).to(grad.dtype)


def warm_up() -> None:
    """What a spare sandbox child runs before it waits for a user's code: one small check
    and trace, so Hypothesis, torch's autograd and the report code are loaded and warm."""
    check_function(_Warm, shapes=[(3,)], max_examples=10, seed=0)
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    trace(_Warm.apply(x), params={"input 0": x}).to_json()


@dataclass(frozen=True)
class LabResult:
    """What the lab shows: the report, the Function's graph, or a clear sandbox message."""

    report: FunctionReport | None
    graph: Graph | None
    sandbox: SandboxResult

    @property
    def error(self) -> str | None:
        return None if self.sandbox.ok else self.sandbox.error


def run_lab(
    source: str,
    class_name: str,
    shapes: str | list[tuple[int, ...]],
    *,
    max_examples: int = 100,
    seed: int | None = 0,
    limits: Limits | None = None,
    on_wait: Callable[[int], None] | None = None,
) -> LabResult:
    """Check `class_name` defined in `source` in a sandboxed child; never runs it here.

    `on_wait(busy)` is called if every sandbox slot is taken and the check must queue.
    """
    if not isinstance(source, str) or not source.strip():
        raise ArgumentError("source", source, "paste a torch.autograd.Function subclass's code")
    if not isinstance(class_name, str) or not class_name.isidentifier():
        raise ArgumentError("class_name", class_name, "give the Function's class name, e.g. MyReLU")
    shape_list = parse_shapes(shapes) if isinstance(shapes, str) else [tuple(s) for s in shapes]
    if not isinstance(max_examples, int) or not 1 <= max_examples <= 2000:
        raise ArgumentError("max_examples", max_examples, "use a whole number from 1 to 2000")
    payload = {"source": source, "class_name": class_name, "shapes": [list(s) for s in shape_list],
               "max_examples": max_examples, "seed": seed}
    result = run_sandboxed("lab.check", payload, limits or LAB_LIMITS, on_wait=on_wait)
    if not result.ok:
        return LabResult(None, None, result)
    try:
        report = FunctionReport.from_dict(result.value["report"])
        graph = Graph.from_json(result.value["graph"]) if result.value.get("graph") else None
    except (KeyError, TypeError, ValueError, GradvizError) as exc:
        raise GradvizError(f"the sandboxed check returned data gradviz cannot read: {exc}") from exc
    return LabResult(report, graph, result)

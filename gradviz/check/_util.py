"""Shared pieces of the checker: the failure exceptions and small tensor helpers.

Each property that fails raises its own exception type, so Hypothesis tells the failing
properties apart and shrinks a separate counterexample for each. User code is only ever
called through ``attempt``, which returns the error instead of raising it: our exception is
then raised outside any ``except`` block, so its origin is the property alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from gradviz.check._numerics import JacobianResult, Layout, Violation
from gradviz.check._report import CHECKS, Entry, Failure

__all__ = ["FAILED", "VERSION_ONLY", "Callee", "CheckFailed", "OnClones", "attempt", "describe",
           "entry_of", "example_line", "is_leaf_in_place", "jacobian_message", "same", "to_numpy",
           "where_changed"]


def is_leaf_in_place(error: BaseException | None) -> bool:
    """Whether `error` is autograd refusing an in-place Function (ctx.mark_dirty) on a leaf."""
    return isinstance(error, RuntimeError) and "leaf Variable that requires grad" in str(error)


class OnClones:
    """An in-place Function (ctx.mark_dirty), called on clones of its tensor arguments.

    autograd refuses in-place changes to a leaf that requires grad, and every check
    differentiates with respect to fresh leaves. A clone is one identity step from its
    leaf, so gradients still reach the leaf, and the caller's tensors stay as they were.
    """

    IN_PLACE_NOTE = ("forward changes its input in place (ctx.mark_dirty): it was called on clones "
                     "of the inputs, so inputs_unchanged could not see changes to them")

    def __init__(self, function: Any) -> None:
        self.function = function
        self.__name__ = function.__name__

    def apply(self, *args: Any) -> Any:
        return self.function.apply(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.function, name)


# What the checks call: the user's Function class, or that class wrapped to run on clones.
Callee = type[torch.autograd.Function] | OnClones


class CheckFailed(Exception):
    """A property does not hold on the current example."""

    secondary = False  # a weaker form of the same finding, reported only when alone

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.check}: {failure.message}")
        self.failure = failure


# One exception type per property: Hypothesis shrinks each one separately.
FAILED: dict[str, type[CheckFailed]] = {
    name: type(f"{name.title().replace('_', '')}Failed", (CheckFailed,), {}) for name in CHECKS
}
# An in-place op that left the values as they were (e.g. clamp_ on inputs already in range)
# shrinks on its own, so the changed-values counterexample is not lost to it.
VERSION_ONLY = type("InputsVersionFailed", (CheckFailed,), {"secondary": True})


def attempt(thunk: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return thunk(), None
    except Exception as error:  # the user's code raised: reported as a property, never re-raised
        return None, error


def describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(torch.equal(torch.nan_to_num(a, nan=0.5), torch.nan_to_num(b, nan=0.5))
                    and torch.equal(a.isnan(), b.isnan()))
    return bool(torch.equal(a, b))


def where_changed(name: str, before: torch.Tensor, after: torch.Tensor) -> str:
    if before.shape != after.shape:
        return f"{name} changed shape from {tuple(before.shape)} to {tuple(after.shape)}"
    diff = (
        (before != after) & ~(before.isnan() & after.isnan())
        if before.is_floating_point()
        else before != after
    )
    idx = torch.nonzero(diff)
    if len(idx) == 0:
        return f"{name} kept its values but its version counter moved (an in-place op ran on it)"
    first = tuple(int(i) for i in idx[0])
    label = f"{name}[{','.join(map(str, first))}]" if first else name
    return (f"{label} changed from {before[first].item():.6g} to {after[first].item():.6g}"
            f" ({len(idx)} entr{'y' if len(idx) == 1 else 'ies'} changed)")


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.dtype == torch.bfloat16:
            value = value.to(torch.float32)
        return value.cpu().numpy().copy()
    return np.asarray(value)


def example_line(inputs: Sequence[np.ndarray], dtype: torch.dtype,
                 tensor_flags: Sequence[bool]) -> str:
    """An ``@example(...)`` line that replays these inputs exactly (floats print round-trip)."""
    parts = []
    for array, is_tensor in zip(inputs, tensor_flags, strict=True):
        array = np.asarray(array)
        if array.size > 64:
            return "(inputs too large for an @example line; rerun with the seed)"
        if not is_tensor:
            parts.append(repr(array.item()) if array.ndim == 0 else repr(array.tolist()))
        elif array.dtype.kind == "f":
            parts.append(f"torch.tensor({array.astype(np.float64).tolist()!r}, "
                         f"dtype=torch.{str(dtype).split('.')[-1]})")
        else:
            parts.append(f"torch.tensor({array.tolist()!r}, dtype=torch.{array.dtype})")
    return f"@example(inputs=({', '.join(parts)},))"


def entry_of(v: Violation) -> Entry:
    return Entry(v.where, v.actual, v.central, v.tolerance, v.low, v.high)


def jacobian_message(result: JacobianResult, layout: Layout, x: np.ndarray) -> str:
    v, nearby = result.violations[0], result.nearby
    wrong = max(len(result.violations), result.suspects if v.column is not None else 0)
    count = f"{wrong} entr{'y' if wrong == 1 else 'ies'} outside tolerance"
    if v.column is not None:
        at = f"at {layout.column(v.column)} = {x[v.column]:.6g}"
        if v.kink:
            seen = f" (or the slopes at {nearby} nearby points)" if nearby else ""
            return (f"backward gives {v.where} = {v.actual:.6g} {at}, a kink or tie, but a "
                    f"gradient there must lie between the one-sided slopes {v.low:.6g} .. "
                    f"{v.high:.6g}{seen}; {count}")
        seen = f" (the same at {nearby} nearby points)" if nearby else ""
        return (f"backward gives {v.where} = {v.actual:.6g} {at}, but the function's slope there "
                f"is {v.central:.6g}{seen}; {count}")
    seen = f" (also at {nearby} nearby points)" if nearby else ""
    tie = (": the inputs tie here, and a tie rule must not hand the full gradient to every tied "
           "input"
           if v.tie else "")
    return (f"backward gives {v.where} = {v.actual:.6g} (its gradient entries summed along that "
            f"direction), but the function changes at a rate of {v.low:.6g} .. {v.high:.6g} that "
            f"way{seen}{tie}; {count}")

"""What the stepper reads besides the NumPy rules: torch's gradients as NumPy views, finite
differences of custom Functions, and the page-size switch for computing references."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from gradviz.backward.rules import to_numpy
from gradviz.graph.tracing import is_accumulate

__all__ = ["FD_FORMULA", "finite_difference", "numpy_view", "small_pages"]

_FD_EPS = 1e-6

_pages_lock = threading.Lock()
_pages_pauses = 0
_pages_was: bool | None = None


@contextlib.contextmanager
def small_pages(active: bool = True) -> Iterator[None]:
    """Turn off NumPy's transparent-huge-page advice while references are computed.

    The references keep a float64 copy of every gradient, so each large array is fresh
    memory. Advised huge pages are compacted for at fault time on kernels set to
    ``defrag=madvise`` (this VM): 768 MB of fresh arrays took 1.9 s of CPU with the advice
    and 0.3 s without (torch's allocator never asks). Counted like
    `gradviz.graph.model.gc_paused`, since Streamlit sessions record on several threads; the
    setting only changes speed.
    """
    global _pages_pauses, _pages_was
    # A private NumPy switch (2.x: numpy._core); absent elsewhere, and then nothing changes.
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    multiarray = getattr(core, "multiarray", None)
    toggle = getattr(multiarray, "_set_madvise_hugepage", None) if active else None
    if toggle is None:
        yield
        return
    with _pages_lock:
        if _pages_pauses == 0:
            _pages_was = toggle(False)
        _pages_pauses += 1
    try:
        yield
    finally:
        with _pages_lock:
            _pages_pauses -= 1
            if _pages_pauses == 0 and _pages_was is not None:
                toggle(_pages_was)


_VIEWABLE = (torch.float32, torch.float64, torch.float16)


def numpy_view(t: torch.Tensor) -> np.ndarray:
    """torch's gradient `t` as NumPy, read-only and sharing its memory where NumPy reads
    its dtype as is; otherwise (bfloat16, complex, lazy zeros) converted by `to_numpy`.

    The cheap attribute checks first (is_cpu, not .device.type; setflags, not .flags):
    a 25k-node chain reads 25k of these.
    """
    if t.requires_grad:
        t = t.detach()
    if t.is_cpu and t.dtype in _VIEWABLE and not (t._is_zerotensor() or t.is_neg()):
        a = t.numpy()
        a.setflags(write=False)  # the recording's own gradient: not to be edited
        return a
    return to_numpy(t)


FD_FORMULA = (r"\bar{x}_j \approx \sum_i \bar{y}_i\,\frac{f_i(x + \epsilon e_j) "
               r"- f_i(x - \epsilon e_j)}{2\epsilon}")


def finite_difference(
    fn: Any, grad_outputs: Sequence[Any]
) -> tuple[np.ndarray | None, ...] | None:
    """Central differences of a custom Function, when its saved tensors are its inputs.

    The Function's inputs are not kept by autograd; many Functions (the tutorial's MyReLU)
    save exactly their inputs, which is recognised by matching shapes with the edges.
    """
    try:
        saved = tuple(fn.saved_tensors)
    except RuntimeError:
        return None
    shapes: list[tuple[int, ...] | None] = []
    for nxt, i in fn.next_functions:
        if nxt is None:
            shapes.append(None)
        elif is_accumulate(nxt):
            shapes.append(tuple(nxt.variable.shape))
        else:
            shapes.append(tuple(nxt._input_metadata[i].shape))
    if len(saved) != len(shapes) or any(
        s is not None and tuple(t.shape) != s for t, s in zip(saved, shapes, strict=True)
    ):
        return None
    cls = fn._forward_cls
    inputs = [t.detach().to(torch.float64).clone() for t in saved]
    gouts = [None if g is None else g.detach().to(torch.float64) for g in grad_outputs]

    def f(xs):
        with torch.no_grad():
            out = cls.apply(*xs)
        outs = out if isinstance(out, tuple) else (out,)
        return sum(float((o.to(torch.float64) * g).sum())
                   for o, g in zip(outs, gouts, strict=False)
                   if g is not None and isinstance(o, torch.Tensor))

    result: list[np.ndarray | None] = []
    for k, shape in enumerate(shapes):
        if shape is None:
            result.append(None)
            continue
        grad = np.zeros(int(np.prod(shape)) if shape else 1)
        flat = inputs[k].reshape(-1)
        for j in range(flat.numel()):
            orig = float(flat[j])
            flat[j] = orig + _FD_EPS
            up = f(inputs)
            flat[j] = orig - _FD_EPS
            down = f(inputs)
            flat[j] = orig
            grad[j] = (up - down) / (2 * _FD_EPS)
        result.append(grad.reshape(shape))
    return tuple(result)



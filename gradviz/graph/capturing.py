"""`capture(model)`: which module made each autograd node, recorded as cheaply as a forward
allows, for `trace` to read.

A forward hook pair per module cost more than the forward of a small layer (a 25 000-layer
chain ran 2-4× slower), and walking each module's outputs to tag nodes cost as much again.
So a capture only notes, per module call, the autograd sequence number at entry and at exit
(a node's `_sequence_nr()` is its thread's creation counter): the module that made a node is
the innermost call open when its number was handed out. The notes of a thread form one
`CaptureRecord`; the outputs of each outermost call carry it in their node's metadata, and
`trace` reads the numbers of the nodes it walks against it. Only the model's own modules
get a wrapped ``forward`` (an instance attribute, removed on exit); nothing process-wide
changes, so sessions on other threads capture other models at once.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from gradviz.errors import ArgumentError
from gradviz.graph.model import gc_paused

__all__ = ["MODULE_TAG", "CaptureRecord", "capture", "module_of"]

# Key under which capture() stores its record in the metadata of an outermost call's output.
MODULE_TAG = "gradviz.module"


class CaptureRecord:
    """One thread's module calls in one `capture`: the innermost open module from each
    sequence number on (`seqs` ascending, `paths` beside them), and each path's type name."""

    __slots__ = ("seqs", "paths", "stack", "types")

    def __init__(self, types: Mapping[str, str]) -> None:
        self.seqs: list[int] = []
        self.paths: list[str | None] = []
        self.stack: list[str | None] = []
        self.types = types

    def owner(self, seq: int) -> str | None | bool:
        """The module path that made the node numbered `seq`, None for an op outside every
        module of the capture, False when `seq` lies outside this record."""
        seqs = self.seqs
        if not seqs or seq < seqs[0] or seq >= seqs[-1]:
            return False
        return self.paths[bisect.bisect_right(seqs, seq) - 1]


def module_of(records: list[CaptureRecord], seq: int) -> str | None:
    """The path that made node `seq` by the first record that covers it (None: no module)."""
    for rec in records:
        found = rec.owner(seq)
        if found is not False:
            return found  # type: ignore[return-value]
    return None


def _probe_sequence_nr() -> int:
    # Older torch has no getter: make a throwaway node and read its number.
    probe = torch.zeros((), requires_grad=True).clone()
    return int(probe.grad_fn._sequence_nr())  # type: ignore[union-attr]


_sequence_nr = getattr(torch._C._autograd, "_get_sequence_nr", _probe_sequence_nr)


def _mark(output: Any, rec: CaptureRecord) -> None:
    """Put `rec` on the nodes of an outermost call's output tensors, where trace finds it."""
    if isinstance(output, torch.Tensor):
        fn = output.grad_fn
        if fn is not None:
            fn.metadata[MODULE_TAG] = rec  # type: ignore[index]
        return
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        for value in output:
            _mark(value, rec)


def _wrapped(
    forward: Any, path: str | None, local: threading.local, types: Mapping, open_: list[bool]
) -> Any:
    seq = _sequence_nr

    def call(*args: Any, **kwargs: Any) -> Any:
        if not open_[0]:  # left installed under another capture's wrapper: record nothing
            return forward(*args, **kwargs)
        try:
            rec = local.rec
        except AttributeError:  # this thread's first call in the capture
            rec = local.rec = CaptureRecord(types)
        seqs, paths, stack = rec.seqs, rec.paths, rec.stack
        seqs.append(seq())
        paths.append(path)
        stack.append(path)
        try:
            out = forward(*args, **kwargs)
        finally:
            stack.pop()
            seqs.append(seq())
            paths.append(stack[-1] if stack else None)
        if not stack:
            _mark(out, rec)
        return out

    call.__wrapped__ = forward  # type: ignore[attr-defined]  # inspect.signature sees through
    return call


@contextlib.contextmanager
def capture(model: nn.Module) -> Iterator[nn.Module]:
    """Record, for a forward of `model` run inside the block, which module made each
    autograd node: the innermost submodule whose forward was running (ops the top-level
    forward makes itself stay untagged). `trace` reads it to cluster and collapse by module.

    Each module's ``forward`` is wrapped by an instance attribute for the block and
    restored on exit, also on error; hooks and the class are left alone.
    """
    if not isinstance(model, nn.Module):
        raise ArgumentError(
            "model",
            type(model).__name__,
            "capture() takes the nn.Module whose forward you run inside the block",
        )
    local = threading.local()  # each thread keeps its own record of open modules
    modules = list(model.named_modules())
    types = {path: type(m).__name__ for path, m in modules if path}
    installed: list[tuple[nn.Module, Any, Any]] = []
    open_ = [True]  # read by every wrapper; False once this capture has ended
    # The GC is paused for the block: 80k nodes surviving a forward trigger full collections
    # that traverse every live object (measured: they doubled the time of a capture).
    with gc_paused():
        try:
            for path, module in modules:
                state = module.__dict__
                previous = state.get("forward", _ABSENT)
                call = _wrapped(module.forward, path or None, local, types, open_)
                state["forward"] = call
                installed.append((module, previous, call))
            yield model
        finally:
            open_[0] = False
            for module, previous, call in reversed(installed):
                state = module.__dict__
                if state.get("forward") is call:
                    if previous is _ABSENT:
                        del state["forward"]
                    else:
                        state["forward"] = previous


_ABSENT = object()

"""Torch-side glue for CopySlices: read the view geometry and the wrapped node it hides.

An in-place op on a view (``y[1:3].mul_(2)``, ``y[:, 0] = z``, dropout(inplace=True) on a
flattened tensor) leaves a CopySlices node on the base. It wraps the op's own node (here
MulBackward0, CopyBackwards) and the view's geometry, none of which torch 2.13 exposes
to Python. Compiled autograd does: tracing a backward through the node calls
``copy_slices_prologue`` with the base's and the view's sizes, strides and storage
offsets, then the wrapped node by name with its saved values, packed in the order
torch's code generator sorts them (inputs by name, then outputs by name). So this runs
one traced backward through the node alone and reads those calls. Nothing here computes
a gradient for the reference: the wrapped node's NumPy rule does.
"""

from __future__ import annotations

import functools
import operator
import os
import threading
import warnings
from typing import Any

import torch

__all__ = ["copy_slices_saved"]


@functools.cache
def _saved_names() -> dict[str, tuple[str, ...]]:
    """Saved-value names of every generated backward node, in compiled autograd's order."""
    # torchgen ships inside the torch wheel without a py.typed marker, so mypy sees no types.
    import torchgen  # type: ignore[import-untyped]
    from torchgen.packaged.autograd.load_derivatives import (  # type: ignore[import-untyped]
        load_derivatives,
    )

    base = os.path.join(os.path.dirname(torchgen.__file__), "packaged")
    infos, _ = load_derivatives(
        os.path.join(base, "autograd", "derivatives.yaml"),
        os.path.join(base, "ATen", "native", "native_functions.yaml"),
        os.path.join(base, "ATen", "native", "tags.yaml"),
    )
    names: dict[str, tuple[str, ...]] = {}
    for per_key in infos.values():
        for info in per_key.values():
            if info.op:
                ins = sorted(str(s.nctype.name) for s in info.all_saved_inputs)
                outs = sorted(str(s.nctype.name) for s in info.all_saved_outputs)
                names[info.op] = (*ins, *outs)
    return names


# What the traced backward ran with, per thread: compiled autograd caches the compiled
# graph by the node's structure, so a later trace of a same-shaped node reruns the first
# `run` closure, which must report to the current caller, not to the first one.
_RECORD = threading.local()


def _run_recorded(gm: Any) -> Any:
    def run(inputs, sizes, scalars, hooks, packed_data):  # the traced backward's inputs
        _RECORD.found = {"gm": gm, "inputs": list(inputs), "sizes": list(sizes),
                         "scalars": list(scalars)}
        return gm(inputs, sizes, scalars, hooks, packed_data)

    return run


def _trace(node: Any, grad: torch.Tensor) -> dict[str, Any]:
    """Run compiled autograd through `node` alone; return its FX graph and runtime inputs."""
    from torch._dynamo import compiled_autograd

    edges = [torch.autograd.graph.GradientEdge(f, i) for f, i in node.next_functions if f]
    set_compiler = torch._C._dynamo.compiled_autograd.set_autograd_compiler
    instance = functools.partial(compiled_autograd.AutogradCompilerInstance, _run_recorded)
    _RECORD.found = None
    prior = set_compiler(instance, False)
    try:
        with warnings.catch_warnings():
            # Tracing reads .grad of the node's non-leaf inputs to fake them; nothing is lost.
            warnings.filterwarnings("ignore", "The .grad attribute of a Tensor that is not a leaf",
                                    UserWarning)
            torch.autograd.grad([torch.autograd.graph.GradientEdge(node, 0)], edges, [grad],
                                retain_graph=True, allow_unused=True)
    finally:
        set_compiler(*prior)
    found, _RECORD.found = _RECORD.found, None
    if found is None:
        raise ValueError("CopySlices: compiled autograd did not trace the node")
    return found


def _value(arg: Any, run: dict[str, Any]) -> Any:
    """A traced argument as the value it had when the backward ran."""
    if isinstance(arg, torch.fx.Node):
        if arg.op == "call_function" and arg.target is operator.getitem:
            source, index = arg.args
            if isinstance(source, torch.fx.Node) and source.op == "placeholder":
                return run[source.name][index]
        target = arg.target  # a function for call_function nodes, a name for the others
        if (arg.op == "call_function" and callable(target)
                and getattr(target, "__name__", "") in _UNWRAP):
            # A size that changed between traces comes in as a (0, n) tensor meaning n.
            return target(_value(arg.args[0], run))
        raise ValueError(f"CopySlices: cannot read the traced value {arg.format_node()}")
    if isinstance(arg, (list, tuple)):
        return type(arg)(_value(a, run) for a in arg)
    return arg


_UNWRAP = {"unwrap_maybe_dynamic_int", "unwrap_maybe_dynamic_float"}


def copy_slices_saved(node: Any, grad: torch.Tensor) -> dict[str, Any]:
    """What a CopySlices node hides: ``base`` and ``view`` geometry (sizes, strides,
    storage offset), the wrapped node's name ``fn`` and its saved values ``fn_saved``
    (torch values, by the names its ``_saved_*`` attributes would have)."""
    run = _trace(node, grad.detach().clone())
    gm = run["gm"]
    calls = [n for n in gm.graph.nodes if n.op == "call_function"]
    prologue = next(n for n in calls if getattr(n.target, "__name__", "") == "copy_slices_prologue")
    geometry = [_value(a, run) for a in prologue.args[1:]]
    # The wrapped node is the call that receives the prologue's contiguous gradient slice.
    slices = {u for u in prologue.users if u.target is operator.getitem and u.args[1] == 2}
    inner = next(n for n in calls if isinstance(n.args[0], (list, tuple))
                 and any(a in slices for a in n.args[0]))
    name = getattr(inner.target, "__name__", str(inner.target)).split("::")[-1]
    packed = [_value(a, run) for a in inner.args[2:]]
    generated = _saved_names()
    # Hand-written nodes (CopyBackwards) pack options their NumPy rules do not read.
    saved_names = generated.get(name, ())
    if name not in generated:
        packed = []
    if len(saved_names) != len(packed):
        raise ValueError(f"CopySlices wraps {name}, whose {len(packed)} saved values "
                         f"do not match the names {saved_names}")
    return {
        "base": (tuple(geometry[0]), tuple(geometry[1]), int(geometry[2])),
        "view": (tuple(geometry[3]), tuple(geometry[4]), int(geometry[5])),
        "fn": name,
        "fn_saved": dict(zip(saved_names, packed, strict=True)),
    }

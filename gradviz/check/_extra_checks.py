"""The optional properties: aliasing, forward-mode jvp, vmap, double backward, raw backward.

A mixin of ``_Example`` (see ``_runner``): each method checks one property of the example
whose forward already ran, and raises through ``self.fail`` when it does not hold.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from gradviz.check._numerics import (
    Evaluator,
    Layout,
    as_outputs,
    compare_directions,
    compare_jacobian,
)
from gradviz.check._report import Entry
from gradviz.check._util import (
    Callee,
    CheckFailed,
    attempt,
    describe,
    entry_of,
    jacobian_message,
    to_numpy,
)

if TYPE_CHECKING:  # _runner imports this module at run time
    from gradviz.check._runner import Runner

__all__ = ["ExampleState", "ExtraChecks"]


class ExampleState(Protocol):
    """What the mixin's methods use of the per-example runner (``_Example``): mypy checks,
    where ``_Example`` calls them, that it provides all of it."""

    r: Runner
    fn: Callee
    inputs: tuple[Any, ...]
    diff: tuple[int, ...]
    outs: tuple[Any, ...]
    out_pos: tuple[int, ...]
    rng: np.random.Generator

    def fail(self, check: str, message: str, *, inputs: Sequence[Any] | None = None,
             entries: Sequence[Entry] = (),
             jacobians: tuple[np.ndarray, np.ndarray, Layout] | None = None,
             severity: str = "failure", kind: type[CheckFailed] | None = None) -> CheckFailed: ...

    def selected(self, check: str) -> bool: ...

    def evaluator(self, layout: Layout) -> Evaluator: ...

    def configure_numerics(self) -> torch.dtype: ...


class ExtraChecks:
    """Properties beyond the core ones; mixed into the per-example runner (``_Example``).
    Each method takes ``self`` as an `ExampleState`, the part of ``_Example`` it uses."""

    def check_aliasing(self: ExampleState, us: Sequence[torch.Tensor]) -> None:
        r = self.r
        x = self.inputs
        pairs = [(a, b) for a in self.diff for b in self.diff
                 if a < b and x[a].shape == x[b].shape and x[a].dtype == x[b].dtype]
        if not pairs:
            if len(self.diff) > 1:
                r.notes.setdefault("aliasing",
                                   "aliasing not checked: no two inputs share shape and dtype")
            return
        self.selected("aliasing")
        tol = r.tolerance()
        for a, b in pairs[:2]:
            shared = self.inputs[a].detach().clone().requires_grad_(True)
            args = [v.detach().clone().requires_grad_(True) if i in self.diff else v
                    for i, v in enumerate(self.inputs)]
            args[a] = args[b] = shared
            separate = list(args)
            separate[a] = self.inputs[a].detach().clone().requires_grad_(True)
            separate[b] = self.inputs[a].detach().clone().requires_grad_(True)
            aliased_inputs = list(self.inputs)
            aliased_inputs[b] = self.inputs[a]
            label = f"the same tensor as {r.name(a)} and {r.name(b)}"
            results = []
            for call_args in (args, separate):
                outs, error = attempt(partial(_outputs_of, self.fn, call_args))
                if error is not None:
                    raise self.fail("aliasing",
                                    f"forward raised {describe(error)} when given {label}",
                                    inputs=aliased_inputs)
                diff_outs = [outs[k] for k in self.out_pos if k < len(outs)]
                if len(diff_outs) != len(self.out_pos) or not all(
                        isinstance(o, torch.Tensor) and o.requires_grad for o in diff_outs):
                    raise self.fail("aliasing", f"outputs changed when given {label}",
                                    inputs=aliased_inputs)
                wrt = [shared] if call_args is args else [separate[a], separate[b]]
                others = [call_args[p] for p in self.diff if p not in (a, b)]
                grads, error = attempt(partial(
                    torch.autograd.grad, diff_outs, wrt + others, [u.clone() for u in us],
                    allow_unused=True, materialize_grads=True))
                if error is not None:
                    raise self.fail("aliasing",
                                    f"backward raised {describe(error)} when given {label}",
                                    inputs=aliased_inputs)
                results.append((diff_outs, grads))
            (outs_a, grads_a), (outs_s, grads_s) = results
            for k, (oa, os_) in enumerate(zip(outs_a, outs_s, strict=True)):
                if not torch.allclose(oa.detach(), os_.detach(), rtol=tol.value_rtol,
                                      atol=tol.value_atol, equal_nan=True):
                    raise self.fail("aliasing", (
                        f"forward gives different outputs for {label} than for two equal copies "
                        f"(output {k}); forward must not modify one input while reading the other"),
                        inputs=aliased_inputs)
            summed = grads_s[0] + grads_s[1]
            rest = [p for p in self.diff if p not in (a, b)]
            pairs_to_check = [(f"grad of {r.name(a)}", grads_a[0], summed)] + [
                (f"grad of {r.name(p)}", ga, gs)
                for p, ga, gs in zip(rest, grads_a[1:], grads_s[2:], strict=True)
            ]
            for what, got, want in pairs_to_check:
                allowed = tol.value_atol + tol.linear_rtol * 10 * want.abs()
                close = (((got - want).abs() <= allowed) | (got == want)
                         | (got.isnan() & want.isnan()))
                if not bool(close.all()):
                    g, w = to_numpy(got).astype(np.float64), to_numpy(want).astype(np.float64)
                    idx = (np.unravel_index(int(np.nanargmax(np.abs(g - w))), g.shape)
                           if g.size else ())
                    raise self.fail("aliasing", (
                        f"with {label}, backward gives {what} = {g[idx]:.6g} but two equal copies "
                        f"give {w[idx]:.6g} in total; backward must not depend on whether inputs "
                        "are the same object (no `is` checks, no in-place changes to saved "
                        "tensors)"),
                        inputs=aliased_inputs)

    def check_jvp(self: ExampleState, layout: Layout) -> None:
        self.selected("jvp")
        import torch.autograd.forward_ad as fwad

        _warm_up_forward_ad(fwad)

        direction = self.rng.normal(size=layout.n)
        direction /= max(np.abs(direction).max(initial=0.0), 1e-300)
        tangents = []
        for p, (a, b, _) in zip(self.diff, layout.in_spans(), strict=True):
            part = direction[a:b].reshape(self.inputs[p].shape)
            tangents.append(torch.tensor(part, dtype=torch.float64).to(self.inputs[p].dtype))

        def run() -> list[np.ndarray]:
            with fwad.dual_level():
                args = list(self.inputs)
                for p, t in zip(self.diff, tangents, strict=True):
                    args[p] = fwad.make_dual(self.inputs[p].detach().clone(), t)
                outs = as_outputs(self.fn.apply(*args))
                flat = []
                for k in self.out_pos:
                    tangent = fwad.unpack_dual(outs[k]).tangent
                    flat.append(np.zeros(outs[k].numel()) if tangent is None
                                else to_numpy(tangent).astype(np.float64).ravel())
                return flat

        flat, error = attempt(run)
        if error is not None:
            raise self.fail("jvp", f"forward-mode AD raised {describe(error)}")
        values = np.concatenate(flat)[None, :]
        evaluate = self.evaluator(layout)
        x = layout.flat_inputs(self.inputs)
        found = compare_directions(evaluate, x, direction[None, :], values, ["a random tangent"],
                                   self.r.tolerance(), self.rng)
        if found:
            v = found[0]
            output = v.where.removeprefix("d ").split(" along ")[0]
            raise self.fail("jvp", (
                f"for a random tangent, jvp gives {output} a tangent of {v.actual:.6g}, but "
                f"finite differences along that tangent give {v.central:.6g} "
                f"(one-sided {v.low:.6g} .. {v.high:.6g})"), entries=[entry_of(f) for f in found])

    def check_vmap(self: ExampleState, layout: Layout) -> None:
        self.selected("vmap")
        tol = self.r.tolerance()
        rows = [list(self.inputs)]
        for scale in (-1.0, 0.5):
            rows.append([v * scale if i in self.diff else v for i, v in enumerate(self.inputs)])
        batched = [torch.stack([row[i] for row in rows]) if i in self.diff else v
                   for i, v in enumerate(self.inputs)]
        in_dims = tuple(0 if i in self.diff else None for i in range(len(self.inputs)))
        got, error = attempt(
            lambda: as_outputs(torch.func.vmap(self.fn.apply, in_dims=in_dims)(*batched)))
        if error is not None:
            raise self.fail("vmap", f"vmap over the Function raised {describe(error)}")
        for b, row in enumerate(rows):
            with torch.no_grad():
                want, error = attempt(partial(_outputs_of, self.fn, row))
            if error is not None:
                raise self.fail("runs", f"forward raised {describe(error)}", inputs=row)
            for k, w in enumerate(want):
                if not isinstance(w, torch.Tensor):
                    continue
                g = got[k][b] if k < len(got) and isinstance(got[k], torch.Tensor) else None
                close = g is not None and g.shape == w.shape and (
                    torch.allclose(g.detach().to(torch.float64), w.to(torch.float64),
                                   rtol=tol.value_rtol, atol=tol.value_atol, equal_nan=True)
                    if w.is_floating_point() else torch.equal(g, w))
                if not close:
                    raise self.fail("vmap", (
                        f"vmap gives a different output {k} for batch entry {b} than calling the "
                        "Function on that entry alone; check the vmap staticmethod (or "
                        "generate_vmap_rule)"), inputs=row)

    def check_double_backward(self: ExampleState, layout: Layout,
                              us: Sequence[torch.Tensor]) -> None:
        self.selected("double_backward")
        r = self.r
        k = len(self.inputs)
        count = len(self.diff)
        u_pos = tuple(range(k, k + len(us)))

        def vjp(*args: Any, graph: bool = False) -> tuple[torch.Tensor, ...]:
            with torch.enable_grad():
                xs = list(args[:k])
                for p in self.diff:
                    if not xs[p].requires_grad:
                        xs[p] = xs[p].detach().requires_grad_(True)
                outs = as_outputs(self.fn.apply(*xs))
                grads = torch.autograd.grad([outs[q] for q in self.out_pos],
                                            [xs[p] for p in self.diff], list(args[k:]),
                                            create_graph=graph, allow_unused=True,
                                            materialize_grads=True)
            return tuple(grads)

        leaves = [v.detach().clone().requires_grad_(True) if i in self.diff else v
                  for i, v in enumerate(self.inputs)]
        u_leaves = [u.detach().clone().requires_grad_(True) for u in us]
        grads, error = attempt(lambda: vjp(*leaves, *u_leaves, graph=True))
        if error is not None:
            raise self.fail("double_backward",
                            f"backward with create_graph=True raised {describe(error)}")
        h_layout = Layout(
            in_pos=self.diff + u_pos,
            in_shapes=layout.in_shapes + tuple(tuple(u.shape) for u in us),
            in_names=layout.in_names + tuple(f"grad_{n}" for n in layout.out_names),
            out_pos=tuple(range(count)), out_shapes=layout.in_shapes,
            out_names=tuple(f"grad_{n}" for n in layout.in_names),
        )
        wrt = [leaves[p] for p in self.diff] + u_leaves
        if not any(g.requires_grad for g in grads):
            raise self.fail("double_backward", (
                "backward's result carries no autograd graph, so its own gradient cannot be taken "
                "(did backward use .detach(), NumPy or @once_differentiable?)"))
        analytical = _hessian_batched(grads, wrt, h_layout.n)
        if analytical is None:
            rows = []
            for g in grads:
                for e in range(g.numel()):
                    if not g.requires_grad:
                        rows.append(np.zeros(h_layout.n))
                        continue
                    onehot = torch.zeros(g.numel(), dtype=g.dtype)
                    onehot[e] = 1
                    second, error = attempt(partial(
                        torch.autograd.grad, g, wrt, onehot.reshape(g.shape),
                        retain_graph=True, allow_unused=True, materialize_grads=True))
                    if error is not None:
                        raise self.fail("double_backward",
                                        f"double backward raised {describe(error)}")
                    flat = [to_numpy(s).astype(np.float64).ravel() for s in second]
                    rows.append(np.concatenate(flat))
            analytical = np.stack(rows) if rows else np.zeros((0, h_layout.n))
        base = list(self.inputs) + [u.detach().clone() for u in us]
        numeric = self.configure_numerics() if r.numeric_dtype is None else r.numeric_dtype
        evaluate = Evaluator(vjp, base, h_layout, numeric, r.tolerance(), r.vjp_batch, grad=True)
        x = h_layout.flat_inputs(base)
        result = compare_jacobian(evaluate, x, analytical, r.tolerance(), self.rng)
        if result.violations:
            raise self.fail("double_backward", jacobian_message(result, h_layout, x),
                            entries=[entry_of(v) for v in result.violations],
                            jacobians=(analytical, result.central, h_layout))

    def check_raw_backward(self: ExampleState, us: Sequence[torch.Tensor]) -> None:
        r = self.r
        node = self.outs[self.out_pos[0]].grad_fn
        if node is None or not hasattr(node, "apply"):
            return
        grads: list[torch.Tensor | None] = []
        by_pos = dict(zip(self.out_pos, us, strict=True))
        for k, out in enumerate(self.outs):
            if k in by_pos:
                grads.append(by_pos[k].clone())
            elif isinstance(out, torch.Tensor):
                grads.append(torch.zeros_like(out))
            else:
                grads.append(None)
        with torch.no_grad():  # as the engine runs it
            raw, error = attempt(lambda: node.apply(*grads))
        if error is not None:
            return  # the engine call already ran this backward; a direct call may differ in details
        raw = as_outputs(raw)
        problems = []
        for p in self.diff:
            if p >= len(raw) or not isinstance(raw[p], torch.Tensor):
                continue
            g, x = raw[p], self.inputs[p]
            name = r.name(p)
            if tuple(g.shape) != tuple(x.shape):
                dims = _reduced_dims(tuple(g.shape), tuple(x.shape))
                problems.append(
                    f"backward returns shape {tuple(g.shape)} for {name}, whose shape is "
                    f"{tuple(x.shape)}; autograd sums it{dims} for you, so the missing reduction "
                    "goes unnoticed until someone calls backward directly. Fix: return "
                    f"grad.sum_to_size({name}.shape)")
            if g.dtype != x.dtype:
                problems.append(
                    f"backward returns {str(g.dtype).split('.')[-1]} for {name}, which is "
                    f"{str(x.dtype).split('.')[-1]}; autograd casts it back silently and the "
                    f"precision is lost. Fix: compute the gradient in {name}'s dtype (drop the "
                    ".float()/.to() cast)")
        if not problems:
            return
        message = "; ".join(problems)
        if r.strict_warning == "raw_backward":
            raise self.fail("raw_backward", message, severity="warning")
        if "raw_backward" not in r.warnings:
            warned = self.fail("raw_backward", message, severity="warning")
            r.warnings["raw_backward"] = warned.failure


def _outputs_of(fn: Callee, args: Sequence[Any]) -> tuple[Any, ...]:
    return as_outputs(fn.apply(*args))


_FORWARD_AD_READY = False


def _warm_up_forward_ad(fwad: Any) -> None:
    """The first make_dual imports torch's jvp decompositions, which warn about torch.jit.script
    (torch's own deprecation, not the user's): import them once with that warning silenced."""
    global _FORWARD_AD_READY
    if _FORWARD_AD_READY:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with fwad.dual_level():
            fwad.make_dual(torch.zeros(1), torch.zeros(1))
    _FORWARD_AD_READY = True


def _reduced_dims(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    extra = len(got) - len(want)
    if extra < 0:
        return ""
    pairs = zip(got[extra:], want, strict=True)
    dims = list(range(extra)) + [extra + i for i, (a, b) in enumerate(pairs) if b == 1 and a != 1]
    return f" over dims {tuple(dims)}" if dims else ""


def _hessian_batched(grads: Sequence[torch.Tensor], wrt: Sequence[torch.Tensor],
                     n: int) -> np.ndarray | None:
    """All rows of backward's Jacobian in one vmapped autograd call (one-hot grad_outputs),
    or None when the double backward cannot run under vmap: the caller then loops."""
    live = [g for g in grads if g.requires_grad]
    total = sum(g.numel() for g in grads)
    if not live or total == 0:
        return None
    eye = torch.eye(total, dtype=live[0].dtype)
    outs, cotangents, offset = [], [], 0
    for g in grads:
        if g.requires_grad:
            outs.append(g)
            cotangents.append(eye[:, offset:offset + g.numel()].reshape(total, *g.shape))
        offset += g.numel()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vmap's "falling back to a slow path" notes
            second = torch.autograd.grad(outs, list(wrt), cotangents, retain_graph=True,
                                         allow_unused=True, is_grads_batched=True)
    except Exception:  # the user's backward under vmap: any failure means "loop instead"
        return None
    flat = []
    for s, w in zip(second, wrt, strict=True):
        if s is None:  # backward's result does not depend on this one
            flat.append(np.zeros((total, w.numel())))
        elif tuple(s.shape) != (total, *w.shape):
            return None
        else:
            flat.append(to_numpy(s).astype(np.float64).reshape(total, -1))
    rows = np.concatenate(flat, axis=1) if flat else np.zeros((total, 0))
    return rows if rows.shape == (total, n) else None

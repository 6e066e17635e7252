"""``check_function`` and ``assert_function_ok``: argument checks, the Hypothesis run, the
report."""

from __future__ import annotations

import inspect
import math
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Flaky, HypothesisException
from hypothesis.strategies import SearchStrategy

from gradviz.check import strategies as gst
from gradviz.check._numerics import as_outputs
from gradviz.check._report import CHECKS, Failure, FunctionReport
from gradviz.check._runner import Runner
from gradviz.check._util import CheckFailed, OnClones, attempt, describe, is_leaf_in_place
from gradviz.errors import ArgumentError

__all__ = ["ALL_CHECKS", "DEFAULT_CHECKS", "assert_function_ok", "check_function"]

ALL_CHECKS: tuple[str, ...] = tuple(CHECKS)
# Everything except double_backward, which needs a differentiable backward; reference, jvp and
# vmap run when there is a reference, a jvp or a vmap rule to check.
DEFAULT_CHECKS: tuple[str, ...] = tuple(c for c in ALL_CHECKS if c != "double_backward")

_DTYPES = {"float64": torch.float64, "double": torch.float64, "float32": torch.float32,
           "float": torch.float32, "float16": torch.float16, "half": torch.float16,
           "bfloat16": torch.bfloat16}
_MAX_NUMEL = 4096
_MAX_JACOBIAN = 1 << 20
_WARNING_EXAMPLES = 30


def _check_scalars(max_examples: Any, seed: Any, reference: Any) -> None:
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples <= 0:
        raise ArgumentError("max_examples", max_examples, "pass a positive int, e.g. "
                            "max_examples=100")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ArgumentError("seed", seed, "pass an int, or None for a fresh random seed")
    if reference is not None and not callable(reference):
        raise ArgumentError("reference", reference, "pass a function taking the same inputs as "
                            "forward")


def check_function(
    fn: type[torch.autograd.Function],
    *,
    shapes: Sequence[tuple[int, ...]] | None = None,
    inputs: SearchStrategy[Any] | None = None,
    reference: Callable[..., Any] | None = None,
    dtype: torch.dtype = torch.float64,
    max_examples: int = 100,
    seed: int | None = None,
    checks: Iterable[str] | None = None,
) -> FunctionReport:
    """Property-tests the ``torch.autograd.Function`` subclass ``fn`` with Hypothesis.

    ``shapes`` lists one shape per tensor input (inputs are drawn with zeros and ties, see
    :mod:`gradviz.check.strategies`); ``inputs`` is a strategy of input tuples instead (floating
    tensors are differentiated, anything else is passed as is); with neither, every input
    of ``forward`` gets the same small drawn shape. ``reference`` is a plain function the
    forward must match. ``checks`` picks properties by name (see ``ALL_CHECKS``; the
    default is ``DEFAULT_CHECKS``), or ``"all"`` for every one that applies (``reference``
    with a reference, ``jvp``/``vmap`` when the Function defines them). Kinks and ties are
    not bugs: there the gradient only has to lie between the one-sided slopes. Each failing
    property comes back with its own shrunk counterexample; ``seed`` makes a run
    reproducible (a random one is drawn and reported when omitted).
    """
    fn = _check_fn(fn)
    dtype = _check_dtype(dtype)
    _check_scalars(max_examples, seed, reference)
    names = _input_names(fn)
    if shapes is not None and inputs is not None:
        raise ArgumentError("inputs", inputs, "pass either shapes= or inputs=, not both")
    if inputs is not None:
        if not isinstance(inputs, SearchStrategy):
            raise ArgumentError("inputs", inputs, "pass a Hypothesis strategy of input tuples, "
                                "e.g. inputs=gradviz.check.strategies."
                                "function_inputs(shapes=[(3,)])")
        strategy, shape_list = inputs, None
    else:
        shape_list = _check_shapes(fn, shapes, names)
        strategy = _default_strategy(fn, shape_list, names, dtype)
    if checks is not None and not isinstance(checks, (str, bytes)) and isinstance(checks, Iterable):
        checks = list(checks)
    selected, notes = _check_checks(fn, checks, reference)
    called: Any = fn
    if shape_list is not None:
        called = _preflight(fn, shape_list, dtype)
    seed = secrets.randbelow(2**32) if seed is None else seed

    runner = Runner(called, dtype=dtype, checks=selected, reference=reference, input_names=names)
    if isinstance(called, OnClones):
        runner.notes["in_place"] = OnClones.IN_PLACE_NOTE
    failures, flaky = _search(runner, strategy, max_examples=max_examples, seed=seed)
    examples = runner.examples
    warnings = []
    for check, first in sorted(runner.warnings.items(), key=lambda kv: ALL_CHECKS.index(kv[0])):
        runner.strict_warning = check
        shrunk, _ = _search(runner, strategy, max_examples=min(max_examples, _WARNING_EXAMPLES),
                            seed=seed)
        runner.examples = examples
        warnings.append(next((w for w in shrunk if w.check == check), first))
    runner.strict_warning = None
    if flaky:
        notes.append("a failure did not reproduce when Hypothesis replayed it: the Function is "
                     "nondeterministic (randomness, global state or ctx changed between calls)")
    if "aliasing" in runner.ran:  # some examples had a matching pair after all
        runner.notes.pop("aliasing", None)
    notes.extend(runner.notes.values())
    return FunctionReport(
        function=fn.__name__,
        failures=tuple(failures),
        examples_run=examples,
        warnings=tuple(warnings),
        kinks_seen=runner.kinks_seen,
        kinks=tuple(runner.kinks),
        checks_run=tuple(c for c in ALL_CHECKS if c in runner.ran),
        seed=seed,
        dtype=str(dtype).split(".")[-1],
        notes=tuple(notes),
        reproduce=_reproduce(fn, shape_list, inputs is not None, dtype, max_examples, seed, checks),
    )


def assert_function_ok(fn: type[torch.autograd.Function], **kwargs: Any) -> FunctionReport:
    """``check_function(fn, **kwargs)``, raising ``AssertionError`` with the report when a
    property fails.

    For any pytest suite: ``assert_function_ok(MyReLU, shapes=[(5,)], seed=0)``.
    """
    report = check_function(fn, **kwargs)
    if not report.ok:
        raise AssertionError(str(report))
    return report


# ----------------------------------------------------------------------------- the search


def _search(runner: Runner, strategy: SearchStrategy[Any], *, max_examples: int,
            seed: int) -> tuple[list[Failure], bool]:
    """Runs the properties under Hypothesis; returns one shrunk failure per failing property."""

    @settings(
        max_examples=max_examples, deadline=None, database=None, derandomize=False,
        report_multiple_bugs=True, suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet, phases=(Phase.explicit, Phase.generate, Phase.shrink),
        print_blob=False,
    )
    @hypothesis_seed(seed)
    @given(strategy)
    def function_properties(example: Any) -> None:
        runner.run(example)

    try:
        function_properties()
    except Exception as error:  # noqa: BLE001 - sorted out below; anything unknown is re-raised
        found, flaky, others = _unpack(error)
        found.sort(key=lambda pair: pair[0])
        if others:  # not a property failing: a strategy problem, or a bug of ours
            other = others[0]
            if isinstance(other, HypothesisException):
                raise ArgumentError("inputs", strategy, "Hypothesis could not draw inputs: "
                                    f"{describe(other)}") from other
            if other is error:
                raise
            raise other from error
        by_check: dict[str, Failure] = {}
        for _, failure in found:
            by_check.setdefault(failure.check, failure)
        ordered = sorted(by_check.values(), key=lambda f: ALL_CHECKS.index(f.check))
        return ordered, flaky
    return [], False


def _unpack(error: BaseException) -> tuple[list[tuple[bool, Failure]], bool, list[BaseException]]:
    found: list[tuple[bool, Failure]] = []
    others: list[BaseException] = []
    flaky = isinstance(error, Flaky)
    stack = [error]
    while stack:
        current = stack.pop(0)
        if isinstance(current, CheckFailed):
            found.append((current.secondary, current.failure))
        elif isinstance(current, BaseExceptionGroup):
            flaky = flaky or isinstance(current, Flaky)
            stack.extend(current.exceptions)
        elif isinstance(current, Flaky):
            flaky = True
        else:
            others.append(current)
    return found, flaky, others


# ----------------------------------------------------------------------------- arguments


def _check_fn(fn: Any) -> type[torch.autograd.Function]:
    base = torch.autograd.Function
    if isinstance(fn, type) and issubclass(fn, base) and fn is not base:
        if fn.forward is base.forward:
            raise ArgumentError("fn", fn, f"{fn.__name__} defines no forward; add @staticmethod "
                                "def forward(ctx, ...)")
        if fn.backward is base.backward and fn.vjp is base.vjp:
            raise ArgumentError("fn", fn, f"{fn.__name__} defines no backward; add @staticmethod "
                                "def backward(ctx, grad_output)")
        return fn
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, base):
        raise ArgumentError("fn", fn, f"pass the class {owner.__name__} itself, not "
                            f"{owner.__name__}.apply")
    if isinstance(fn, base):
        raise ArgumentError("fn", fn, f"pass the class {type(fn).__name__}, not an instance of it")
    raise ArgumentError("fn", fn, "pass a torch.autograd.Function subclass (a class with static "
                        "forward and backward)")


def _check_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, str):
        key = dtype.removeprefix("torch.")
        if key in _DTYPES:
            return _DTYPES[key]
    elif dtype in _DTYPES.values():
        return dtype
    raise ArgumentError("dtype", dtype, "pass torch.float64 (default), torch.float32, "
                        "torch.float16 or torch.bfloat16")


def _uses_ctx(fn: type[torch.autograd.Function]) -> bool:
    return fn.setup_context is torch.autograd.Function.setup_context


def _forward_params(fn: type[torch.autograd.Function]) -> tuple[list[inspect.Parameter], bool]:
    """Positional parameters of forward after ctx, and whether it takes *args."""
    try:
        params = list(inspect.signature(fn.forward).parameters.values())
    except (TypeError, ValueError):
        return [], True
    if _uses_ctx(fn) and params:
        params = params[1:]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return positional, any(p.kind == p.VAR_POSITIONAL for p in params)


def _input_names(fn: type[torch.autograd.Function]) -> tuple[str, ...]:
    params, _ = _forward_params(fn)
    return tuple(p.name for p in params)


def _check_shapes(fn: type[torch.autograd.Function], shapes: Any,
                  names: Sequence[str]) -> list[tuple[int, ...]] | None:
    params, var = _forward_params(fn)
    required = [p for p in params if p.default is p.empty]
    if shapes is None:
        if var or not required:
            what = "takes *args" if var else "has no required inputs"
            raise ArgumentError("shapes", None, f"{fn.__name__}.forward {what}; pass one shape per "
                                "input, e.g. shapes=[(3,), (3,)]")
        return None
    if isinstance(shapes, (str, bytes)) or not isinstance(shapes, (list, tuple)):
        raise ArgumentError("shapes", shapes, "pass a list with one shape per input, e.g. "
                            "shapes=[(4, 3), (3,)]")
    if (
        shapes
        and all(isinstance(s, int) and not isinstance(s, bool) for s in shapes)
        and len(required) != len(shapes)
    ):
        raise ArgumentError("shapes", shapes, "pass a list of shapes, e.g. "
                            f"shapes=[{tuple(shapes)!r}]")
    checked = [gst.check_shape(f"shapes[{i}]", s) for i, s in enumerate(shapes)]
    if not checked:
        raise ArgumentError("shapes", shapes, "pass at least one shape")
    if not var and not len(required) <= len(checked) <= len(params):
        want = (
            f"{len(required)}"
            if len(required) == len(params)
            else f"{len(required)} to {len(params)}"
        )
        raise ArgumentError("shapes", shapes, f"{fn.__name__}.forward takes {want} inputs "
                            f"({', '.join(p.name for p in params)}); pass one shape per input")
    total = sum(math.prod(s) for s in checked)
    if total > _MAX_NUMEL:
        raise ArgumentError("shapes", shapes, f"the inputs hold {total} numbers; property tests "
                            f"gain nothing from big tensors, keep them under {_MAX_NUMEL} (e.g. "
                            "sides of 2 to 8)")
    return checked


def _default_strategy(fn: type[torch.autograd.Function], shapes: list[tuple[int, ...]] | None,
                      names: Sequence[str], dtype: torch.dtype) -> SearchStrategy[Any]:
    if shapes is not None:
        return gst.function_inputs(shapes=shapes, dtype=dtype)
    params, _ = _forward_params(fn)
    count = len([p for p in params if p.default is p.empty])
    shared = gst.shapes(min_dims=1, max_dims=2, min_side=1, max_side=4)
    return shared.flatmap(lambda s: gst.function_inputs(shapes=[s] * count, dtype=dtype))


def _defines(fn: type[torch.autograd.Function], name: str) -> bool:
    return getattr(fn, name) is not getattr(torch.autograd.Function, name)


def _check_checks(fn: type[torch.autograd.Function], checks: Any,
                  reference: Any) -> tuple[list[str], list[str]]:
    notes: list[str] = []
    has_jvp = _defines(fn, "jvp")
    has_vmap = bool(getattr(fn, "generate_vmap_rule", False)) or _defines(fn, "vmap")
    if checks is None or checks == "all":
        # "all": every property this Function can be held to, double backward included.
        chosen = set(DEFAULT_CHECKS if checks is None else ALL_CHECKS)
        if reference is None:
            chosen.discard("reference")
        if not has_jvp:
            chosen.discard("jvp")
        if not has_vmap:
            chosen.discard("vmap")
        return [c for c in ALL_CHECKS if c in chosen], notes
    if isinstance(checks, (str, bytes)) or not isinstance(checks, Iterable):
        raise ArgumentError(
            "checks",
            checks,
            f"pass a list of names, e.g. checks=[{checks!r}]"
            if isinstance(checks, str)
            else "pass a list of check names",
        )
    chosen = set()
    for name in checks:
        if name not in CHECKS:
            raise ArgumentError("checks", checks, f"unknown check {name!r}; known: "
                                f"{', '.join(ALL_CHECKS)}")
        chosen.add(name)
    if "reference" in chosen and reference is None:
        # Finite differences stand in for a hand-written backward, but nothing numerical can
        # say what the forward's values should be: only an independent implementation can.
        raise ArgumentError("checks", checks, "'reference' compares forward's values with an "
                            "independent implementation, which nothing numerical can replace; "
                            "pass reference=<a plain function>, drop 'reference', or use "
                            "checks='all' (every check that applies)")
    if "jvp" in chosen and not has_jvp:
        raise ArgumentError("checks", checks, f"{fn.__name__} defines no jvp staticmethod; add one "
                            "or drop 'jvp'")
    if "vmap" in chosen and not has_vmap:
        raise ArgumentError("checks", checks, f"{fn.__name__} declares no vmap support "
                            "(generate_vmap_rule = True or a vmap staticmethod); add it or drop "
                            "'vmap'")
    chosen.add("runs")
    return [c for c in ALL_CHECKS if c in chosen], notes


def _preflight(fn: type[torch.autograd.Function], shapes: list[tuple[int, ...]],
               dtype: torch.dtype) -> Any:
    """Calls forward once on random inputs, so a shape mistake is an argument error, not a
    'bug'. Returns what the checks call: `fn`, or `OnClones(fn)` for an in-place Function."""
    generator = torch.Generator().manual_seed(0)
    args = [
        torch.randn(s, generator=generator, dtype=torch.float64).to(dtype).requires_grad_(True)
        for s in shapes
    ]
    called: Any = fn
    outs, error = attempt(lambda: as_outputs(called.apply(*args)))
    if is_leaf_in_place(error):
        called = OnClones(fn)
        outs, error = attempt(lambda: as_outputs(called.apply(*args)))
    if error is not None:
        raise ArgumentError("shapes", shapes, f"{fn.__name__}.forward raised {describe(error)} on "
                            "random inputs of these shapes; pass the shapes forward expects")
    diff = [
        o for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point() and o.requires_grad
    ]
    if not diff:
        raise ArgumentError("fn", fn, f"{fn.__name__}.forward returned no floating-point tensor "
                            "that requires grad; there is no gradient to check")
    entries = sum(o.numel() for o in diff) * sum(a.numel() for a in args)
    if entries > _MAX_JACOBIAN:
        raise ArgumentError("shapes", shapes, f"the Jacobian would have {entries} entries; use "
                            "smaller shapes")
    return called


def _reproduce(fn: type[torch.autograd.Function], shapes: list[tuple[int, ...]] | None,
               custom: bool,
               dtype: torch.dtype, max_examples: int, seed: int, checks: Any) -> str:
    parts = [fn.__name__]
    if shapes is not None:
        parts.append(f"shapes={shapes!r}")
    elif custom:
        parts.append("inputs=<the same strategy>")
    if dtype != torch.float64:
        parts.append(f"dtype=torch.{str(dtype).split('.')[-1]}")
    if max_examples != 100:
        parts.append(f"max_examples={max_examples}")
    parts.append(f"seed={seed}")
    if checks is not None:
        parts.append(f"checks={checks if isinstance(checks, str) else list(checks)!r}")
    return f"check_function({', '.join(parts)})"

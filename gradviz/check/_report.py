"""What a check of a custom autograd Function found.

Plain frozen dataclasses with a readable ``str`` (worst entries with indices, both values and
the tolerance; never a whole Jacobian) and a JSON-safe ``to_dict``/``from_dict``: the app
runs checks in a sandboxed child process and ships the report back as JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CHECKS", "Entry", "Failure", "FunctionReport", "Kink"]

# Every property a check can test, in the order the report lists them.
CHECKS: dict[str, str] = {
    "runs": "forward and backward run without raising",
    "inputs_unchanged": "forward and backward leave their inputs untouched (values and version "
    "counter)",
    "finite": "outputs and gradients are finite where the inputs are",
    "reference": "forward equals the reference function",
    "grad_output_unchanged": "backward does not modify grad_output in place",
    "jacobian": "vector-Jacobian products match central differences; at kinks and ties "
    "the gradient lies between the one-sided limits",
    "linearity": "backward is linear in grad_output, and zero in gives zero out",
    "deterministic": "backward gives the same result when run twice",
    "aliasing": "the same tensor passed twice gives the same outputs and summed gradients",
    "jvp": "forward-mode jvp matches the directional derivative",
    "vmap": "vmap over the Function matches a loop over the batch",
    "double_backward": "the backward's own derivatives match finite differences of backward",
    "raw_backward": "backward itself returns each input's shape and dtype "
    "(autograd hides missing reductions and dtype casts)",
}

_WORST = 5  # entries shown per failure in str(report)
# entries compare backward with finite differences
_DERIVATIVES = {"jacobian", "jvp", "double_backward"}


@dataclass(frozen=True)
class Entry:
    """One compared number: where it sits, what the Function gave, what was expected.

    ``low``/``high`` is the allowed interval when a kink or tie widened it beyond
    ``expected ± tolerance``.
    """

    where: str
    actual: float
    expected: float
    tolerance: float
    low: float | None = None
    high: float | None = None

    def allowed(self) -> str:
        if self.low is not None and self.high is not None:
            return f"[{_num(self.low - self.tolerance)}, {_num(self.high + self.tolerance)}]"
        return f"[{_num(self.expected - self.tolerance)}, {_num(self.expected + self.tolerance)}]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "where": self.where, "actual": _float_out(self.actual),
            "expected": _float_out(self.expected), "tolerance": _float_out(self.tolerance),
            "low": None if self.low is None else _float_out(self.low),
            "high": None if self.high is None else _float_out(self.high),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        return cls(
            where=data["where"], actual=_float_in(data["actual"]),
            expected=_float_in(data["expected"]), tolerance=_float_in(data["tolerance"]),
            low=None if data.get("low") is None else _float_in(data["low"]),
            high=None if data.get("high") is None else _float_in(data["high"]),
        )


@dataclass(frozen=True, eq=False)
class Failure:
    """One property that does not hold, with the shrunk counterexample.

    ``inputs`` are the Function's inputs (NumPy) on which the property fails, after
    Hypothesis shrank them. For ``jacobian`` failures ``analytical`` and ``numerical``
    hold the two Jacobians (rows: output entries ``rows``; columns: input entries
    ``columns``) at that point, small enough to draw as heatmaps. ``severity`` is
    ``"warning"`` for findings that autograd papers over (see ``raw_backward``).
    """

    check: str
    message: str
    inputs: tuple[np.ndarray, ...]
    entries: tuple[Entry, ...] = ()
    analytical: np.ndarray | None = None
    numerical: np.ndarray | None = None
    rows: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    example: str = ""
    severity: str = "failure"

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check, "message": self.message,
            "inputs": [_array_out(a) for a in self.inputs],
            "entries": [e.to_dict() for e in self.entries],
            "analytical": None if self.analytical is None else _array_out(self.analytical),
            "numerical": None if self.numerical is None else _array_out(self.numerical),
            "rows": list(self.rows), "columns": list(self.columns),
            "example": self.example, "severity": self.severity,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Failure:
        return cls(
            check=data["check"], message=data["message"],
            inputs=tuple(_array_in(a) for a in data["inputs"]),
            entries=tuple(Entry.from_dict(e) for e in data.get("entries", ())),
            analytical=None if data.get("analytical") is None else _array_in(data["analytical"]),
            numerical=None if data.get("numerical") is None else _array_in(data["numerical"]),
            rows=tuple(data.get("rows", ())), columns=tuple(data.get("columns", ())),
            example=data.get("example", ""), severity=data.get("severity", "failure"),
        )

    def describe(self, indent: str = "  ") -> str:
        # Plain ASCII: the report goes to terminals of any encoding (gradviz check).
        mark = "WARN" if self.severity == "warning" else "FAIL"
        lines = [f"{mark} {self.check}: {self.message}"]
        if self.entries:
            width = max(len(e.where) for e in self.entries[:_WORST])
            got, want = (
                ("analytical", "numerical") if self.check in _DERIVATIVES else ("got", "expected")
            )
            lines.append(
                f"{indent}  {'entry':<{width}}  {got:>12}  {want:>12}  {'tolerance':>10}  allowed"
            )
            for e in self.entries[:_WORST]:
                lines.append(
                    f"{indent}  {e.where:<{width}}  {_num(e.actual):>12}  {_num(e.expected):>12}  "
                    f"{e.tolerance:>10.2g}  {e.allowed()}"
                )
            if len(self.entries) > _WORST:
                lines.append(f"{indent}  ... {len(self.entries) - _WORST} more")
        shown = ", ".join(_array_text(a) for a in self.inputs)
        lines.append(f"{indent}shrunk inputs: ({shown})")
        if self.example:
            lines.append(f"{indent}{self.example}")
        return "\n".join(indent + line if i else line for i, line in enumerate(lines))


@dataclass(frozen=True)
class Kink:
    """A point where the function has a kink or tie: information, not a failure."""

    where: str
    value: float
    left: float
    right: float
    analytical: float

    def __str__(self) -> str:
        return (f"{self.where} at {_num(self.value)}: backward gives {_num(self.analytical)}, "
                f"one-sided slopes {_num(self.left)} (left) and {_num(self.right)} (right)")

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "value": _float_out(self.value), "left": _float_out(self.left),
                "right": _float_out(self.right), "analytical": _float_out(self.analytical)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Kink:
        return cls(data["where"], _float_in(data["value"]), _float_in(data["left"]),
                   _float_in(data["right"]), _float_in(data["analytical"]))


@dataclass(frozen=True, eq=False)
class FunctionReport:
    """Everything ``check_function`` found. ``ok`` is true when no property failed;
    ``warnings`` never make it false."""

    function: str
    failures: tuple[Failure, ...]
    examples_run: int
    warnings: tuple[Failure, ...] = ()
    kinks_seen: int = 0
    kinks: tuple[Kink, ...] = ()
    checks_run: tuple[str, ...] = ()
    seed: int | None = None
    dtype: str = "float64"
    notes: tuple[str, ...] = ()
    reproduce: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        head = (
            "ok"
            if self.ok
            else f"FAILED {', '.join(dict.fromkeys(f.check for f in self.failures))}"
        )
        counts = f"{len(self.failures)} failure{'s' * (len(self.failures) != 1)}"
        if self.warnings:
            counts += f", {len(self.warnings)} warning{'s' * (len(self.warnings) != 1)}"
        lines = [
            f"{self.function}: {head} ({counts}) after {self.examples_run} examples",
            f"  dtype {self.dtype}, seed {self.seed}; checks: {', '.join(self.checks_run)}",
        ]
        for finding in (*self.failures, *self.warnings):
            lines.append("  " + finding.describe("  "))
        if self.kinks_seen:
            lines.append(f"  kinks/ties: {self.kinks_seen} examples touched one (not bugs: "
                         "backward stayed between the one-sided slopes)")
            lines.extend(f"    e.g. {k}" for k in self.kinks[:2])
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.reproduce and (self.failures or self.warnings):
            lines.append(f"  reproduce: {self.reproduce}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: plain lists, strings for non-finite floats
        (``json.dumps(allow_nan=False)`` works)."""
        return {
            "function": self.function, "ok": self.ok,
            "failures": [f.to_dict() for f in self.failures],
            "examples_run": self.examples_run,
            "warnings": [w.to_dict() for w in self.warnings],
            "kinks_seen": self.kinks_seen, "kinks": [k.to_dict() for k in self.kinks],
            "checks_run": list(self.checks_run), "seed": self.seed, "dtype": self.dtype,
            "notes": list(self.notes), "reproduce": self.reproduce,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FunctionReport:
        return cls(
            function=data["function"],
            failures=tuple(Failure.from_dict(f) for f in data["failures"]),
            examples_run=int(data["examples_run"]),
            warnings=tuple(Failure.from_dict(w) for w in data.get("warnings", ())),
            kinks_seen=int(data.get("kinks_seen", 0)),
            kinks=tuple(Kink.from_dict(k) for k in data.get("kinks", ())),
            checks_run=tuple(data.get("checks_run", ())), seed=data.get("seed"),
            dtype=data.get("dtype", "float64"), notes=tuple(data.get("notes", ())),
            reproduce=data.get("reproduce", ""),
        )


# ----------------------------------------------------------------------------- helpers

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _float_out(value: float) -> float | str:
    value = float(value)
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _float_in(value: Any) -> float:
    return _NONFINITE[value] if isinstance(value, str) else float(value)


def _array_out(array: np.ndarray) -> dict[str, Any]:
    array = np.asarray(array)
    if array.dtype.kind == "f":
        data: list[Any] = [_float_out(v) for v in array.ravel().tolist()]
    elif array.dtype.kind in "biu":
        data = array.ravel().tolist()
    else:
        data = [repr(v) for v in array.ravel().tolist()]
    return {"dtype": str(array.dtype), "shape": list(array.shape), "data": data}


def _array_in(data: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(data["dtype"]) if data["dtype"] != "object" else np.dtype(object)
    values = [_float_in(v) for v in data["data"]] if dtype.kind == "f" else data["data"]
    return np.asarray(values, dtype=dtype).reshape(data["shape"])


def _num(value: float) -> str:
    value = float(value)
    if value == 0:
        return "0"
    return f"{value:.6g}"


def _array_text(array: np.ndarray) -> str:
    array = np.asarray(array)
    if array.ndim == 0:
        return _num(float(array)) if array.dtype.kind == "f" else repr(array.item())
    return np.array2string(array, precision=6, threshold=24, edgeitems=3,
                           separator=", ", max_line_width=10_000)

"""``gradviz check path/to/file.py:ClassName --shapes 4x3,3``: property-test a custom Function.

Exit codes: 0 when every property holds (warnings allowed), 1 when a bug was found, 2 on
bad arguments (missing file, unknown class, not a Function, malformed shapes), each with a
one-line message on stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import uuid
from pathlib import Path
from typing import Any, NoReturn

import torch

from gradviz.check import ALL_CHECKS, check_function
from gradviz.check.shapes import parse_shapes
from gradviz.errors import ArgumentError, GradvizError

__all__ = ["check_command", "load_function", "parse_shapes"]

_DTYPES = ("float64", "float32", "float16", "bfloat16")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would exit; we return 2 with one line
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gradviz check",
        description="Property-test a custom torch.autograd.Function with Hypothesis "
        "(kink-aware Jacobian, grad_output and input immutability, determinism, ...).",
    )
    parser.add_argument("target", help="path/to/file.py:ClassName")
    parser.add_argument("--shapes", help="one shape per input, e.g. 4x3,3 ('()' for a scalar); "
                        "default: one small shared shape for every input")
    parser.add_argument("--max-examples", type=int, default=100, help="Hypothesis examples "
                        "(default 100)")
    parser.add_argument("--seed", type=int, default=None, help="seed, for a reproducible run")
    parser.add_argument("--dtype", choices=_DTYPES, default="float64", help="dtype of the inputs")
    parser.add_argument("--checks", help="'all' (every check that applies) or a comma-separated "
                        f"subset of: {', '.join(ALL_CHECKS)}")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def check_command(argv: list[str]) -> int:
    """Runs ``gradviz check`` with ``argv`` (the words after ``check``); returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as error:
        print(f"gradviz check: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help
        return 0 if done.code in (0, None) else 2
    try:
        fn = load_function(args.target)
        shapes = parse_shapes(args.shapes) if args.shapes is not None else None
        checks: list[str] | str | None = None
        if args.checks and args.checks.strip() == "all":
            checks = "all"
        elif args.checks:
            checks = [c.strip() for c in args.checks.split(",") if c.strip()]
        report = check_function(fn, shapes=shapes, max_examples=args.max_examples, seed=args.seed,
                                dtype=getattr(torch, args.dtype), checks=checks)
    except GradvizError as error:
        print(f"gradviz check: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        print(report)
    return 0 if report.ok else 1


def load_function(target: str) -> type[torch.autograd.Function]:
    """Imports ``path/to/file.py:ClassName`` and returns the class (a Function subclass)."""
    path_text, sep, name = target.rpartition(":")
    if not sep or not path_text or not name:
        raise ArgumentError("target", target, "write path/to/file.py:ClassName")
    path = Path(path_text)
    if not path.is_file():
        raise ArgumentError("target", target, f"file not found: {path}")
    module = _import(path)
    if not hasattr(module, name):
        found = [n for n, v in vars(module).items() if _is_function(v)]
        hint = (
            f"Functions in the file: {', '.join(found)}"
            if found
            else "the file defines no Function subclass"
        )
        raise ArgumentError("target", target, f"{path.name} has no class {name!r}; {hint}")
    fn = getattr(module, name)
    if not _is_function(fn):
        raise ArgumentError("target", target, f"{name} is not a torch.autograd.Function subclass")
    return fn


def _is_function(value: Any) -> bool:
    return (
        isinstance(value, type)
        and issubclass(value, torch.autograd.Function)
        and value is not torch.autograd.Function
    )


def _import(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"gradviz_check_{uuid.uuid4().hex}", path)
    if spec is None or spec.loader is None:
        raise ArgumentError("target", str(path), "cannot import this file; pass a .py file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # so the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's file: report, don't crash
        raise ArgumentError("target", str(path), f"importing it raised {type(error).__name__}: "
                            f"{error}") from error
    finally:
        if sys.path and sys.path[0] == folder:
            sys.path.pop(0)
    return module


if __name__ == "__main__":
    sys.exit(check_command(sys.argv[1:]))

"""Trace a user's own Python file from the command line: ``file.py`` or ``file.py:name``.

The file runs in this process (it is the user's own code, on their own machine; the web
app never does this). Convention: ``name`` is a tensor, or a function returning a tensor,
a tuple of tensors, or ``(model, tensor)``. Without a name, gradviz calls ``main()`` if
the file defines it, else uses a tensor named ``loss``, ``output``, ``out`` or ``y``.
Module-level ``nn.Module`` objects name the parameters; when the file defines ``model``,
the function runs under ``capture(model)`` so ops are clustered by module.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import uuid
from typing import Any

import torch
from torch import nn

from gradviz.errors import ArgumentError, GradvizError, ProgramError
from gradviz.graph.model import Graph
from gradviz.graph.tracing import capture, run_with_big_stack, trace

__all__ = ["load_program", "trace_program"]

_DEFAULT_NAMES = ("loss", "output", "out", "y")


def _import_file(path: pathlib.Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"gradviz_user_{uuid.uuid4().hex[:8]}", path)
    if spec is None or spec.loader is None:
        raise ArgumentError("program", str(path), "pass a Python file ending in .py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ProgramError(f"running {path} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(path.parent))
    return module


def load_program(spec: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Run ``file.py[:name]`` and return (outputs, trace keyword arguments)."""
    file_part, _, name = spec.partition(":") if not pathlib.Path(spec).exists() else (spec, "", "")
    path = pathlib.Path(file_part)
    if not path.is_file():
        raise ArgumentError("program", spec, "give an existing .py file, optionally with :name "
                            "(e.g. net.py:main), or an example name")
    module = _import_file(path)
    modules = {
        k: v for k, v in vars(module).items() if isinstance(v, nn.Module) and not k.startswith("_")
    }
    model = modules.get("model")
    if not name:
        if callable(getattr(module, "main", None)):
            name = "main"
        else:
            name = next(
                (n for n in _DEFAULT_NAMES if isinstance(getattr(module, n, None), torch.Tensor)),
                "",
            )
    if not name:
        raise ProgramError(
            f"{path} defines no main() and no tensor named {', '.join(_DEFAULT_NAMES)}: "
            f"name what to draw, e.g. `gradviz render {path}:my_loss -o out.svg`"
        )
    if not hasattr(module, name):
        raise ArgumentError("name", name, f"{path} has no attribute {name!r}")
    target = getattr(module, name)
    if callable(target) and not isinstance(target, (torch.Tensor, nn.Module)):
        try:
            if model is not None:
                with capture(model):
                    target = target()
            else:
                target = target()
        except GradvizError:
            raise
        except Exception as exc:
            raise ProgramError(f"{path}:{name}() failed: {type(exc).__name__}: {exc}") from exc
    if isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], nn.Module):
        model, target = target
    outputs = target if isinstance(target, (tuple, list)) else (target,)
    kwargs: dict[str, Any] = {}
    if model is not None:
        kwargs["model"] = model
    elif modules:
        kwargs["params"] = {
            f"{var}.{n}": p for var, m in modules.items() for n, p in m.named_parameters()
        }
    return tuple(outputs), kwargs


def trace_program(spec: str) -> Graph:
    """Run and trace ``file.py[:name]`` (see the module docstring for the convention)."""

    def run() -> Graph:
        outputs, kwargs = load_program(spec)
        return trace(*outputs, **kwargs)

    return run_with_big_stack(run)

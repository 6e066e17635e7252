"""Checkpoints: save model and optimizer state dicts, read them back with weights_only=True.

Reading never unpickles arbitrary objects: `load_checkpoint` always calls
``torch.load(..., weights_only=True)``, so an uploaded file cannot run code on the server.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import torch
from torch import nn

from gradviz.errors import ArgumentError, DataError
from gradviz.train.builder import build_network
from gradviz.train.recipe import get_preset
from gradviz.train.results import TrainResult

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint"]

_CHECKPOINT_FORMAT = "gradviz-checkpoint"


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A saved run: model and optimizer state dicts (seed 001), plus where the run stood."""

    model_state: Mapping[str, Any]
    optimizer_state: Mapping[str, Any] | None = None
    step: int = 0
    losses: tuple[float, ...] = ()
    test_losses: tuple[tuple[int, float], ...] = ()
    seed: int = 0
    preset: str | None = None
    spec: Any = None
    input_shape: tuple[int, ...] | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    rng_state: torch.Tensor | None = None

    def build_model(self) -> nn.Module:
        """A new network (the preset's, or built from the stored spec) with these weights."""
        if self.preset is not None:
            model = get_preset(self.preset).build(self.seed)
        elif self.spec is not None:
            model = build_network(self.spec, self.input_shape, seed=0)
        else:
            raise ArgumentError(
                "checkpoint",
                "model",
                "this checkpoint holds only weights; build the network yourself "
                "and pass it: load_checkpoint(src, model=net)",
            )
        _load_model_state(model, self.model_state)
        return model


def _load_model_state(model: nn.Module, state: Mapping[str, Any]) -> None:
    try:
        model.load_state_dict(dict(state))
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        raise DataError(
            "checkpoint: its weights do not fit this network "
            f"({'; '.join(line.strip() for line in first[:3])}); load it into the network "
            "it was saved from"
        ) from None


def _checkpoint_dict(result_or_model: Any, optimizer: Any) -> dict[str, Any]:
    if isinstance(result_or_model, TrainResult):
        r = result_or_model
        model, opt = r.model, optimizer if optimizer is not None else r.optimizer
        preset = r.preset.name if r.preset is not None else None
        step, losses, test_losses = r.steps_done, list(r.losses), list(r.test_losses)
        seed, settings, rng = r.seed, dict(r.settings), r.rng_state
    elif isinstance(result_or_model, nn.Module):
        model, opt, preset = result_or_model, optimizer, None
        step, losses, test_losses, seed, settings, rng = 0, [], [], 0, {}, None
    else:
        raise ArgumentError(
            "result_or_model", result_or_model, "give a TrainResult or an nn.Module"
        )
    if opt is not None and not isinstance(opt, torch.optim.Optimizer):
        raise ArgumentError("optimizer", opt, "give a torch.optim optimizer or None")
    spec = getattr(model, "spec", None)
    shape = getattr(model, "input_shape", None)
    return {
        "format": _CHECKPOINT_FORMAT,
        "version": 1,
        "model_state": model.state_dict(),
        "optimizer_state": opt.state_dict() if opt is not None else None,
        "step": step,
        "losses": losses,
        "test_losses": [list(t) for t in test_losses],
        "seed": seed,
        "preset": preset,
        "spec": spec if isinstance(spec, list) else None,
        "input_shape": list(shape) if shape is not None else None,
        "settings": {k: v for k, v in settings.items() if isinstance(v, (int, float, str))},
        "rng_state": rng,
    }


def _is_destination(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) or hasattr(value, "write")


@overload
def save_checkpoint(result_or_model: TrainResult | nn.Module) -> bytes: ...
@overload
def save_checkpoint(
    result_or_model: TrainResult | nn.Module, optimizer: Any = None, path_or_buffer: Any = None
) -> bytes | None: ...


def save_checkpoint(
    result_or_model: TrainResult | nn.Module, optimizer: Any = None, path_or_buffer: Any = None
) -> bytes | None:
    """Save model and optimizer state dicts (as seed 001 does) and where the run stood.

    ``save_checkpoint(result, path)`` also works (a result carries its optimizer). With
    no destination the checkpoint is returned as bytes (for a download button).
    """
    if path_or_buffer is None and _is_destination(optimizer):
        optimizer, path_or_buffer = None, optimizer
    payload = _checkpoint_dict(result_or_model, optimizer)
    if path_or_buffer is None:
        buf = io.BytesIO()
        torch.save(payload, buf)
        return buf.getvalue()
    if isinstance(path_or_buffer, (str, os.PathLike)):
        try:
            torch.save(payload, Path(path_or_buffer))
        except OSError as exc:
            raise ArgumentError(
                "path_or_buffer",
                str(path_or_buffer),
                f"cannot write there ({exc.strerror}); pick a writable path",
            ) from None
        return None
    if hasattr(path_or_buffer, "write"):
        torch.save(payload, path_or_buffer)
        return None
    raise ArgumentError(
        "path_or_buffer",
        path_or_buffer,
        "give a file path, a writable binary buffer, or nothing to get bytes",
    )


def _read_checkpoint_source(source: Any) -> tuple[Any, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), "<checkpoint bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: no such checkpoint file; check the path")
        return path, str(path)
    if hasattr(source, "read"):
        return source, str(getattr(source, "name", "<checkpoint file>"))
    raise ArgumentError(
        "path_or_buffer", source, "give a checkpoint path, its bytes or a binary file object"
    )


_READ_ERRORS = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    zipfile.BadZipFile,
    ValueError,
    OSError,
    AttributeError,
    ImportError,
    TypeError,
)


def _unpickle(src: Any, label: str) -> Any:
    """``torch.load`` restricted to tensors and plain containers (weights_only=True).

    A pickle that would build any other object (a ``__reduce__`` calling os.system, say)
    is refused by torch before anything runs; the refusal becomes a `DataError`.
    """
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refused(label, str(exc)) from None
    except _READ_ERRORS as exc:
        raise _unreadable(label, exc) from None


def _refused(label: str, text: str) -> DataError:
    """The error for a pickle torch's weights-only reader stopped.

    torch's own message suggests weights_only=False, which on a server would let an
    uploaded file run code; the message here says what was refused and how to save a
    file gradviz reads instead.
    """
    found = re.search(r"GLOBAL (\S+)", text)
    if found is None:  # not an object gradviz refused: bytes that are no pickle at all
        operand = re.search(r"Unsupported operand \S+", text)
        return _unreadable(label, ValueError(operand.group(0) if operand else "not a tensor file"))
    return DataError(
        f"{label}: refused: it holds a Python object other than tensors ({found.group(1)}), "
        "and unpickling it could run code on this machine; gradviz only reads tensors "
        "(torch.load with weights_only=True). Save the weights with "
        "gradviz.save_checkpoint or torch.save(model.state_dict(), path)"
    )


def _unreadable(label: str, exc: BaseException) -> DataError:
    msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return DataError(
        f"{label}: not a readable PyTorch checkpoint ({msg}); save one with "
        "gradviz.save_checkpoint or torch.save(model.state_dict(), path)"
    )


def _checkpoint_of(obj: Any, label: str) -> Checkpoint:
    if isinstance(obj, Mapping) and obj.get("format") == _CHECKPOINT_FORMAT:
        try:
            return Checkpoint(
                model_state=obj["model_state"],
                optimizer_state=obj.get("optimizer_state"),
                step=int(obj.get("step", 0)),
                losses=tuple(float(v) for v in obj.get("losses", [])),
                test_losses=tuple((int(s), float(v)) for s, v in obj.get("test_losses", [])),
                seed=int(obj.get("seed", 0)),
                preset=obj.get("preset"),
                spec=obj.get("spec"),
                input_shape=tuple(obj["input_shape"]) if obj.get("input_shape") else None,
                settings=dict(obj.get("settings") or {}),
                rng_state=obj.get("rng_state"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{label}: a damaged gradviz checkpoint ({exc}); save it again"
            ) from None
    if (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) for k in obj)
        and any(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        return Checkpoint(model_state=dict(obj))
    raise DataError(
        f"{label}: holds a {type(obj).__name__}, not model weights; give a "
        "gradviz checkpoint or a saved state_dict"
    )


def _load_into(
    ckpt: Checkpoint,
    label: str,
    model: nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
) -> None:
    if model is not None:
        if not isinstance(model, nn.Module):
            raise ArgumentError("model", model, "give the nn.Module to load the weights into")
        _load_model_state(model, ckpt.model_state)
    if optimizer is not None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ArgumentError("optimizer", optimizer, "give a torch.optim optimizer")
        if ckpt.optimizer_state is None:
            raise DataError(f"{label}: holds no optimizer state; train with the fresh optimizer")
        try:
            optimizer.load_state_dict(copy.deepcopy(dict(ckpt.optimizer_state)))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise DataError(
                f"{label}: its optimizer state does not fit this optimizer ({exc})"
            ) from None


def load_checkpoint(
    path_or_buffer: Any,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> Checkpoint:
    """Read a checkpoint safely (``torch.load(..., weights_only=True)``).

    Given ``model``/``optimizer`` (e.g. a new network and optimizer, as seed 001 makes),
    their states are loaded. A bare ``state_dict`` file (seed 001's ``model.pth``) is
    accepted as a checkpoint of weights only.
    """
    src, label = _read_checkpoint_source(path_or_buffer)
    ckpt = _checkpoint_of(_unpickle(src, label), label)
    _load_into(ckpt, label, model, optimizer)
    return ckpt

def _as_checkpoint(resume: Any) -> Checkpoint:
    if isinstance(resume, Checkpoint):
        return resume
    if not (
        isinstance(resume, (TrainResult, bytes, bytearray, memoryview, str, os.PathLike))
        or hasattr(resume, "read")
    ):
        raise ArgumentError(
            "resume",
            resume,
            "give a Checkpoint, a TrainResult, or a checkpoint's path, bytes or file object",
        )
    if isinstance(resume, TrainResult):
        # in memory: deep copies, so continuing never changes the finished result
        payload = _checkpoint_dict(resume, None)
        return Checkpoint(
            model_state=copy.deepcopy(payload["model_state"]),
            optimizer_state=copy.deepcopy(payload["optimizer_state"]),
            step=payload["step"],
            losses=tuple(payload["losses"]),
            test_losses=tuple((s, v) for s, v in payload["test_losses"]),
            seed=payload["seed"],
            preset=payload["preset"],
            spec=payload["spec"],
            settings=payload["settings"],
            input_shape=tuple(payload["input_shape"]) if payload["input_shape"] else None,
            rng_state=None if resume.rng_state is None else resume.rng_state.clone(),
        )
    return load_checkpoint(resume)

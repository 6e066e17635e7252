"""A training job's network as a page may read it while it trains: copies, never the original.

The training thread owns the network; a page that ran it (the neuron view's forward hooks)
would race the optimizer and fire hooks on the trained model. `LiveWeights` keeps a copy
of the network made before the first step (before any recorder hook is on it) and, when a
reader asks, the weights of one step boundary; the reader gets a network of its own.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import torch
from torch import nn

__all__ = ["LiveWeights", "JobCallback"]


class LiveWeights:
    """Weights handed from the training thread to readers, one step boundary at a time.

    ``enabled=False`` (a network the page does not draw live) makes every call a no-op.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = bool(enabled)
        self._lock = threading.Lock()
        self._model: nn.Module | None = None
        self._skeleton: nn.Module | None = None
        self._weights: tuple[int, dict[str, torch.Tensor]] | None = None
        self._wanted = threading.Event()
        if self.enabled:
            self._wanted.set()  # the first progress update hands weights over

    def attach(self, model: nn.Module) -> None:
        """On the training thread, before the first step: remember the network."""
        if self.enabled:
            skeleton = copy.deepcopy(model)
            with self._lock:
                self._model, self._skeleton = model, skeleton

    def offer(self, step: int) -> None:
        """On the training thread between two steps: copy the weights if a reader asked."""
        model = self._model
        if model is None or not self._wanted.is_set():
            return
        self._wanted.clear()
        with torch.no_grad():
            weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        with self._lock:
            self._weights = (step, weights)

    def copy(self) -> tuple[int, nn.Module] | None:
        """(step, a network of the caller's own with that step's weights), or None before
        the first hand-over; asks for fresher weights at the next progress update."""
        with self._lock:
            got, skeleton = self._weights, self._skeleton
        if not self.enabled or skeleton is None:
            return None
        self._wanted.set()
        if got is None:
            return None
        net = copy.deepcopy(skeleton)  # the skeleton is never run, so copying it is safe
        net.load_state_dict(got[1])
        return got[0], net


class JobCallback:
    """One `train` callback for a job: the gradient flow, its progress, the live weights."""

    def __init__(self, flow: Any, progress: Any, live: LiveWeights) -> None:
        self.flow, self.progress, self.live = flow, progress, live

    def attach(self, model: nn.Module, optimizer: Any = None) -> None:
        self.live.attach(model)  # first: the copy must not carry the recorder's hooks
        self.flow.attach(model, optimizer)

    def detach(self) -> None:
        self.flow.detach()

    def __call__(self, step: int, total: int, loss: float) -> None:
        self.flow(step, total, loss)
        self.progress(step, total, loss)
        self.live.offer(step)

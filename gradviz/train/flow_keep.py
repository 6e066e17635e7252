"""Which recorded steps a `GradientFlow` keeps, and its small argument helpers (no hooks)."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
from torch import nn

from gradviz.errors import ArgumentError

__all__: list[str] = []


class _Keeper:
    """Which steps to keep, within ``capacity`` records (no torch: tested on its own)."""

    def __init__(self, capacity: int, every: int, mode: str) -> None:
        self.capacity, self.mode, self.stride = capacity, mode, every
        self.records: deque[Any] | list[Any] = deque(maxlen=capacity) if mode == "ring" else []
        self.first: int | None = None

    def wants(self, step: int) -> bool:
        if self.first is None:
            return True
        return (step - self.first) % self.stride == 0

    def push(self, step: int, record: Any) -> None:
        if self.first is None:
            self.first = step
        self.records.append(record)
        if self.mode == "decimate" and len(self.records) > self.capacity:
            self.stride *= 2
            self.records = [r for r in self.records if (r.step - self.first) % self.stride == 0]

    def copy(self) -> _Keeper:
        """The same kept records in a list (or deque) of its own."""
        twin = _Keeper(self.capacity, self.stride, self.mode)
        twin.first = self.first
        if self.mode == "ring":
            twin.records = deque(self.records, maxlen=self.capacity)
        else:
            twin.records = list(self.records)
        return twin


class _Pacer:
    """How much of the training time the recorder took since the stride last changed."""

    def __init__(self, budget: Any) -> None:
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                   or not 0 < budget <= 1):
            raise ArgumentError("budget", budget, "use a share of training time in (0, 1], "
                                "e.g. budget=0.1, or None to record at the stride given")
        self.budget = None if budget is None else float(budget)
        self.spent = 0.0  # seconds inside the recorder since `since`
        self.since: float | None = None

    def start(self) -> float:
        now = time.perf_counter()
        if self.since is None:
            self.since = now
        return now

    def add(self, start: float) -> None:
        self.spent += time.perf_counter() - start

    def over(self) -> bool:
        """True (and the count restarts, to judge the next stride alone) when recording took
        more than its budget of the training time; always False without a budget."""
        if self.budget is None or self.since is None:
            return False
        now = time.perf_counter()
        if self.spent <= self.budget * (now - self.since - self.spent):
            return False
        self.since, self.spent = now, 0.0
        return True


def _check_positive(name: str, value: Any, example: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ArgumentError(name, value, f"use a whole number ≥ 1, e.g. {name}={example}")
    return int(value)


def _leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    leaves = [(n, m) for n, m in model.named_modules() if n and not any(m.children())]
    return leaves or [("(model)", model)]

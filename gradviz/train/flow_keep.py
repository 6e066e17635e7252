"""Which recorded steps a `GradientFlow` keeps, its budget pacer, and small helpers (no hooks)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
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

    def next_wanted(self, after: int) -> int:
        """The first step after ``after`` that `wants` (the stride as it is now)."""
        if self.first is None or after < self.first:
            return after + 1
        return self.first + ((after - self.first) // self.stride + 1) * self.stride

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
    """How much of the training time recording takes, judged from whole steps.

    Most of a recorded step's cost is where no clock inside the recorder sees it: autograd
    calling the Python hooks, undoing their registration, and the caches the record evicted,
    which slow the next step too (on a tiny net the clocks inside saw under half of it: +24%
    measured against a budget of 0.1). So the clock is read at every step boundary, and
    recording is charged all the time above what a "clean" step takes — the median of
    skipped steps in the far half of the stride (at least two after a kept one) — plus the
    clocked work done on other threads (a page reading the record), the first record's
    step above a clean one, and the read still to come (as long as the latest one, which is
    timed early in the run for this). The charge is counted from the run's start, so
    strides that were too narrow are paid back by a stride chosen for `AIM` of the budget.
    Below stride 4 there are no clean steps: there the clocked time inside the recorder
    stands in (an under-count) until it alone doubles the stride.
    """

    CLEAN = 8  # clean intervals before their median is trusted
    KEPT = 4  # and kept intervals
    WARM = 2  # the first intervals of a run carry one-off costs (allocation, first hooks)
    AIM = 0.5  # a wider stride is chosen for this share of the budget: see `widen`
    SAMPLES = 64  # clean intervals kept to judge a step without recording by

    def __init__(self, budget: Any) -> None:
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                   or not 0 < budget <= 1):
            raise ArgumentError("budget", budget, "use a share of training time in (0, 1], "
                                "e.g. budget=0.1, or None to record at the stride given")
        self.budget = None if budget is None else float(budget)
        self.spent = 0.0  # seconds clocked inside the recorder since `since`
        self.since: float | None = None
        self.thread: int | None = None  # the training thread: the one running the steps
        self._last: float | None = None
        self._pos = 0  # steps since the last kept one (0: this one is kept)
        self._ticks = 0
        self.elsewhere = 0.0  # seconds clocked on other threads, in the whole run
        self._run: tuple[float, int] | None = None  # (time, tick) where the run's count starts
        # the latest clean intervals, with their distance from the last kept step
        self._clean: deque[tuple[int, float]] = deque(maxlen=self.SAMPLES)
        self._window: tuple[float, int] | None = None  # the same, for the stride now
        self._kept = 0  # kept steps in the window
        # kept steps before the run's count starts (the first record: its one-off costs,
        # first hooks and buffers, are recording's too): their time and number
        self._early, self._early_n = 0.0, 0
        self.read: float | None = None  # seconds the latest reduction of records took

    def start(self) -> float:
        now = time.perf_counter()
        if self.since is None:
            self.since = now
        if self._last is None:  # the first record starts before any step boundary
            self._last, self._pos = now, 0
        return now

    def add(self, start: float, read: bool = False) -> None:
        """Clock recording work begun at ``start``; ``read``: a reduction of records."""
        spent = time.perf_counter() - start
        self.spent += spent
        if read:
            self.read = spent
        if self.thread is not None and threading.get_ident() != self.thread:
            self.elsewhere += spent

    def wants_read(self, waiting: int) -> bool:
        """Whether to reduce the ``waiting`` records now, to time a read before judging."""
        return self.budget is not None and self.read is None and waiting >= self.KEPT

    def step(self, kept: bool) -> None:
        """A step boundary: the previous step's interval ends, the next (``kept``?) starts.

        Kept short: it runs at every training step. Totals come from the clock at the
        window's start and at `widen`; only clean intervals are timed one by one."""
        now = time.perf_counter()
        self._ticks += 1
        if self._pos >= 2 and self._last is not None:
            self._clean.append((self._pos, now - self._last))
        elif self._pos == 0 and self._run is None and self._last is not None:
            self._early += now - self._last
            self._early_n += 1
        self._last = now
        if kept:
            self._pos = 0
            if self._run is None and self._ticks > self.WARM:
                self.thread = threading.get_ident()
                self._run = self._window = (now, self._ticks)
            elif self._window is not None:
                self._kept += 1
        else:
            self._pos += 1

    def widen(self, stride: int) -> int:
        """The factor (1, 2, 4, ...) to widen ``stride`` by so recording stays within its
        budget of the training time; always 1 without a budget. A change restarts the count,
        to judge the new stride alone."""
        if self.budget is None or self.since is None:
            return 1
        if stride >= 4:
            # a step without recording: the median of those in the far half of the stride,
            # as a record slows the steps after it for a while (caches, ~60 µs over 30 steps
            # of a tiny net), so the mean of all skipped steps hid part of the recording (+21%
            # against a 0.1 budget); a low quantile charged the noise of a larger net's steps
            far = sorted(t for pos, t in self._clean if pos >= max(2, stride // 2))
            if (len(far) < self.CLEAN or self._kept < self.KEPT or self._run is None
                    or self._window is None or self._last is None):
                return 1
            base = far[len(far) // 2]
            run_n = self._ticks - self._run[1]
            # the first record and the read still to come (about what the latest one took)
            # happen outside the run's count (on single-neuron ~1/5 of recording's cost)
            charged = (max(0.0, self._last - self._run[0] - run_n * base) + self.elsewhere
                       + max(0.0, self._early - self._early_n * base) + (self.read or 0.0))
            if base <= 0 or charged <= self.budget * run_n * base:
                return 1
            n = self._ticks - self._window[1]
            per_record = max(0.0, self._last - self._window[0] - n * base) / self._kept
            need = per_record / (self.AIM * self.budget * base)  # steps per record
            factor = 2 ** max(1, math.ceil(math.log2(max(need, 1) / stride)))
        else:
            now = time.perf_counter()
            # not from the first steps alone: one-off costs, or one preemption in a clocked
            # stretch, would double the stride of a recorder well within its budget
            if self._ticks <= 2 * self.WARM or self.spent <= self.budget * (
                    now - self.since - self.spent):
                return 1
            factor = 2
        self.since, self.spent = time.perf_counter(), 0.0
        if self._last is not None:
            self._window, self._kept = (self._last, self._ticks), 0
        return factor


def _check_positive(name: str, value: Any, example: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ArgumentError(name, value, f"use a whole number ≥ 1, e.g. {name}={example}")
    return int(value)


def _leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    leaves = [(n, m) for n, m in model.named_modules() if n and not any(m.children())]
    return leaves or [("(model)", model)]


class _Chained:
    """A recorder plus the caller's callback, as one `train` callback."""

    def __init__(self, flow: Any, callback: Callable[[int, int, float], Any]) -> None:
        self.flow, self.callback = flow, callback

    def attach(self, model: nn.Module, optimizer: Any = None) -> None:
        self.flow.attach(model, optimizer)

    def detach(self) -> None:
        self.flow.detach()

    def __call__(self, step: int, total: int, loss: float) -> Any:
        self.flow(step, total, loss)
        return self.callback(step, total, loss)

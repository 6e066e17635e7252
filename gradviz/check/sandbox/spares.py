"""Spare sandbox children: started ahead, fenced in, task imported, waiting for a payload.

A child's start (Python, the fences, importing torch and the task, the first check's
warm-up) costs seconds; the user's own run often well under one. An app that asks for it
(`parent.keep_spare`) keeps one spare per kind of run: a call takes it, hands it the
payload, and a replacement starts in the background. Each spare serves exactly one run
and is then ended like any child, so nothing one user's code did reaches the next user.
Generic over the child type: `parent` supplies how to start and how to stop one.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

C = TypeVar("C")


class SparePool(Generic[C]):
    """At most one waiting child per key (the bytes of the run's first request line)."""

    def __init__(self, start: Callable[[bytes], C], alive: Callable[[C], bool],
                 stop: Callable[[C], None]) -> None:
        self._start, self._alive, self._stop = start, alive, stop
        self._lock = threading.Lock()
        self._waiting: dict[bytes, C] = {}
        self._starting: set[bytes] = set()
        self._wanted: set[bytes] = set()
        atexit.register(self.clear)

    def want(self, key: bytes) -> None:
        """Keep a spare for runs with this first line from now on (starts one now)."""
        with self._lock:
            self._wanted.add(key)
        self._refill(key)

    def take(self, key: bytes) -> C | None:
        """The waiting spare for `key` (and a replacement started), or None."""
        with self._lock:
            child = self._waiting.pop(key, None)
        if key in self._wanted:
            self._refill(key)
        if child is not None and not self._alive(child):
            self._stop(child)
            return None
        return child

    def clear(self) -> None:
        """Stop wanting spares and end every waiting one (also at interpreter exit)."""
        with self._lock:
            self._wanted.clear()
            waiting, self._waiting = list(self._waiting.values()), {}
        for child in waiting:
            self._stop(child)

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _refill(self, key: bytes) -> None:
        with self._lock:
            if key in self._waiting or key in self._starting:
                return
            self._starting.add(key)
        threading.Thread(target=self._start_one, args=(key,), daemon=True,
                         name="gradviz-spare-sandbox").start()

    def _start_one(self, key: bytes) -> None:
        child: C | None = None
        try:
            child = self._start(key)
        finally:
            with self._lock:
                self._starting.discard(key)
                keep = child is not None and key in self._wanted and key not in self._waiting
                if keep and child is not None:
                    self._waiting[key] = child
        if child is not None and not keep:
            self._stop(child)

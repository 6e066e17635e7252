"""Spare sandbox children: started ahead, fenced in, task imported, waiting for a payload.

A child's start (Python, the fences, importing torch and the task, the first check's
warm-up) costs seconds; the user's own run often well under one. An app that asks for it
(`parent.keep_spare`) keeps one spare per kind of run: a call takes it, hands it the
payload, and a replacement starts in the background. Each spare serves exactly one run
and is then ended like any child, so nothing one user's code did reaches the next user.
A spare holds one of the process's sandbox slots (`slots.claim_now`), from its start to
the end of the run it serves: it starts only when a slot is free, and a run that finds
none free ends an idle spare (`evict`) instead of waiting behind it. Generic over the
child type: `parent` supplies how to start and how to stop one.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

C = TypeVar("C")
Release = Callable[[], None]


class SparePool(Generic[C]):
    """At most one waiting child per key (the bytes of the run's first request line)."""

    def __init__(self, start: Callable[[bytes], C], alive: Callable[[C], bool],
                 stop: Callable[[C], None], claim: Callable[[], Release | None]) -> None:
        self._start, self._alive, self._stop, self._claim = start, alive, stop, claim
        self._lock = threading.Lock()
        self._waiting: dict[bytes, tuple[C, Release]] = {}
        self._starting: set[bytes] = set()
        self._wanted: set[bytes] = set()
        atexit.register(self.clear)

    def want(self, key: bytes) -> None:
        """Keep a spare for runs with this first line from now on (starts one now)."""
        with self._lock:
            self._wanted.add(key)
        self._refill(key)

    def take(self, key: bytes) -> tuple[C, Release] | None:
        """The waiting spare for `key` with its slot's release (the caller now owns both,
        and a replacement starts if a slot is free), or None."""
        with self._lock:
            spare = self._waiting.pop(key, None)
        self.refill()
        if spare is not None and not self._alive(spare[0]):
            self._end(spare)
            return None
        return spare

    def refill(self) -> None:
        """Start a spare for every wanted key that has none, while slots are free."""
        with self._lock:
            keys = sorted(self._wanted)
        for key in keys:
            self._refill(key)

    def evict(self) -> bool:
        """End one idle spare, freeing its slot for a run; False when none waits."""
        with self._lock:
            if not self._waiting:
                return False
            spare = self._waiting.pop(next(iter(self._waiting)))
        self._end(spare)
        return True

    def clear(self) -> None:
        """Stop wanting spares and end every waiting one (also at interpreter exit)."""
        with self._lock:
            self._wanted.clear()
            waiting, self._waiting = list(self._waiting.values()), {}
        for spare in waiting:
            self._end(spare)

    def _end(self, spare: tuple[C, Release]) -> None:
        child, release = spare
        try:
            self._stop(child)
        finally:
            release()

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _refill(self, key: bytes) -> None:
        with self._lock:
            if key not in self._wanted or key in self._waiting or key in self._starting:
                return
            release = self._claim()
            if release is None:  # every slot is in use: the next run's end tries again
                return
            self._starting.add(key)
        threading.Thread(target=self._start_one, args=(key, release), daemon=True,
                         name="gradviz-spare-sandbox").start()

    def _start_one(self, key: bytes, release: Release) -> None:
        child: C | None = None
        try:
            child = self._start(key)
        finally:
            with self._lock:
                self._starting.discard(key)
                keep = child is not None and key in self._wanted and key not in self._waiting
                if keep and child is not None:
                    self._waiting[key] = (child, release)
            if child is None:
                release()
        if child is not None and not keep:
            self._end((child, release))

"""A cap on how many sandbox children run at once in this process (one Streamlit server).

Each child may take gigabytes of address space and a core; without a cap, many users
checking at once would exhaust the machine. Calls beyond the cap wait their turn.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import TypedDict

from gradviz.errors import GradvizError

__all__ = ["DEFAULT_MAX_SANDBOXES", "MAX_SANDBOXES_ENV_VAR", "max_sandboxes", "sandbox_slot"]

MAX_SANDBOXES_ENV_VAR = "GRADVIZ_MAX_SANDBOXES"
DEFAULT_MAX_SANDBOXES = 2


class _Slots(TypedDict):
    size: int  # the cap the semaphore was made for
    semaphore: threading.Semaphore | None
    busy: int


_lock = threading.Lock()
_state: _Slots = {"size": 0, "semaphore": None, "busy": 0}


class SandboxSlotsError(GradvizError, ValueError):
    """GRADVIZ_MAX_SANDBOXES holds something that is not a whole number from 1 up."""


def max_sandboxes() -> int:
    """The cap from ``GRADVIZ_MAX_SANDBOXES`` (default 2)."""
    text = os.environ.get(MAX_SANDBOXES_ENV_VAR, "").strip()
    if not text:
        return DEFAULT_MAX_SANDBOXES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise SandboxSlotsError(
            f"{MAX_SANDBOXES_ENV_VAR}={text!r}: use a whole number of sandboxes that may run "
            f"at once, at least 1 (default {DEFAULT_MAX_SANDBOXES})"
        )
    return value


def _semaphore() -> threading.Semaphore:
    size = max_sandboxes()
    with _lock:
        # A changed setting takes effect for new calls; holders release their own semaphore.
        semaphore = _state["semaphore"]
        if _state["size"] != size or semaphore is None:
            semaphore = threading.Semaphore(size)
            _state["size"], _state["semaphore"] = size, semaphore
        return semaphore


def busy() -> int:
    """How many sandbox children are running now."""
    with _lock:
        return _state["busy"]


def claim_now() -> Callable[[], None] | None:
    """One slot if one is free right now, as the function that gives it back; else None.

    For spare children: an idle spare holds a slot too, so the cap bounds every child
    this process has, not only the running ones."""
    semaphore = _semaphore()
    return semaphore.release if semaphore.acquire(blocking=False) else None


@contextlib.contextmanager
def sandbox_slot(
    on_wait: Callable[[int], None] | None = None,
    make_room: Callable[[], object] | None = None,
    held: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold one of the slots for the body: `held` (the release of a slot claimed earlier,
    e.g. a spare's) or a newly taken one. If none is free, ask `make_room()` (end an idle
    spare), then call ``on_wait(busy)`` and wait, asking again while waiting."""
    release = held if held is not None else _take(on_wait, make_room)
    with _lock:
        _state["busy"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["busy"] -= 1
        release()


def _take(on_wait: Callable[[int], None] | None,
          make_room: Callable[[], object] | None) -> Callable[[], None]:
    semaphore = _semaphore()
    if semaphore.acquire(blocking=False):
        return semaphore.release
    if make_room is not None:
        make_room()
        if semaphore.acquire(blocking=False):
            return semaphore.release
    if on_wait is not None:
        on_wait(busy())
    # A spare still starting holds a slot; once it waits idle, make_room can end it.
    while not semaphore.acquire(timeout=0.05):
        if make_room is not None:
            make_room()
    return semaphore.release

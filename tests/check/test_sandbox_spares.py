"""Spare sandbox children: started ahead, each serves one run, fenced like a fresh child."""

from __future__ import annotations

import os
import pathlib
import subprocess
import time
from collections.abc import Iterator

import pytest
from test_sandbox import sessions_alive

from gradviz.check.sandbox import parent, slots
from gradviz.check.sandbox.parent import Limits, keep_spare, run_sandboxed
from gradviz.errors import ArgumentError

LIMITS = Limits(wall_seconds=4, cpu_seconds=20, memory_mb=1024)
LEAVE_A_MARK = (
    "import json, os\n"
    "seen = getattr(json, 'gradviz_mark', None)\n"
    "json.gradviz_mark = inputs\n"
    "open('left-here.txt', 'w').write(str(inputs))\n"
    "result = {'seen': seen, 'files': sorted(os.listdir('.'))}\n"
)


@pytest.fixture(autouse=True)
def _fresh_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("GRADVIZ_DISABLE_USER_CODE", raising=False)
    parent._SPARES.clear()
    yield
    parent._SPARES.clear()


def _children() -> int:
    """Sandbox children of this process alive now (their outer processes)."""
    count = 0
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = pathlib.Path(f"/proc/{entry}/status").read_text()
            cmdline = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("PPid:"))
        count += ppid == os.getpid() and b"sandbox/child.py" in cmdline
    return count


def _wait_for_spare(timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while parent._SPARES.waiting() == 0:
        assert time.monotonic() < end, "no spare child came up"
        time.sleep(0.05)


def test_each_spare_serves_one_run_and_nothing_reaches_the_next():
    keep_spare("exec", LIMITS)
    results = []
    for k in range(3):
        _wait_for_spare()
        result = run_sandboxed("exec", {"code": LEAVE_A_MARK, "inputs": k}, LIMITS)
        assert result.ok, str(result)
        results.append(result.value)
    # No module state and no file of an earlier run: every run had a process of its own.
    assert [r["seen"] for r in results] == [None, None, None]
    assert all("left-here.txt" in r["files"] and len(r["files"]) == 1 for r in results)


def test_a_spare_is_fenced_like_a_fresh_child():
    fresh = run_sandboxed("exec", {"code": "result = 1"}, LIMITS)
    keep_spare("exec", LIMITS)
    _wait_for_spare()
    spare = run_sandboxed("exec", {"code": "result = 1"}, LIMITS)
    assert fresh.ok and spare.ok
    applied = {name: p.applied for name, p in fresh.protections.items()}
    assert {name: p.applied for name, p in spare.protections.items()} == applied


def test_wall_time_counts_from_the_hand_over_not_from_the_spare_start():
    keep_spare("exec", LIMITS)
    _wait_for_spare()
    time.sleep(LIMITS.wall_seconds + 1)  # longer than a run may take, spent waiting
    result = run_sandboxed("exec", {"code": "result = 2"}, LIMITS)
    assert result.ok and result.value == 2, str(result)
    busy = run_sandboxed("exec", {"code": "while True: pass"}, LIMITS)
    assert busy.kind == "timeout"  # and a run that overstays is still stopped


def test_other_limits_get_a_fresh_child_and_clear_ends_the_spares(spawned_sessions):
    keep_spare("exec", LIMITS)
    _wait_for_spare()
    other = Limits(wall_seconds=5, cpu_seconds=5, memory_mb=512)
    assert run_sandboxed("exec", {"code": "result = 3"}, other).value == 3
    assert parent._SPARES.waiting() == 1  # the spare is for LIMITS only
    parent._SPARES.clear()
    assert parent._SPARES.waiting() == 0
    end = time.monotonic() + 10  # a killed group's last members take a moment to go
    while spawned_sessions() and time.monotonic() < end:
        time.sleep(0.05)
    assert spawned_sessions() == []


def test_a_spare_holds_a_slot_so_the_cap_bounds_every_child(monkeypatch):
    import threading

    monkeypatch.setenv("GRADVIZ_MAX_SANDBOXES", "1")
    keep_spare("exec", LIMITS)
    _wait_for_spare()
    assert slots.claim_now() is None  # the idle spare holds the one slot
    other = Limits(wall_seconds=5, cpu_seconds=5, memory_mb=512)
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _children())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # A run of another kind ends the idle spare rather than wait behind it ...
        assert run_sandboxed("exec", {"code": "result = 4"}, other).value == 4
        # ... and the spare comes back in the freed slot for the next run of its kind.
        _wait_for_spare()
        assert run_sandboxed("exec", {"code": "result = 5"}, LIMITS).value == 5
    finally:
        stop.set()
        watcher.join()
    assert peak[0] == 1  # never the spare and a run's child at once


def test_keep_spare_names_the_task_it_does_not_know():
    with pytest.raises(ArgumentError, match="task=.*use one of"):
        keep_spare("lab.nope")


@pytest.fixture
def spawned_sessions(monkeypatch: pytest.MonkeyPatch):
    """A function listing live processes in the sessions of children started in the test."""
    pids: list[int] = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        pids.append(proc.pid)
        return proc

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    return lambda: [p for pid in pids for p in sessions_alive(pid)]

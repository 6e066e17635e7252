"""The cap on concurrent sandboxes: calls beyond GRADVIZ_MAX_SANDBOXES wait their turn."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradviz.check.sandbox import slots
from gradviz.check.sandbox.parent import Limits, run_sandboxed
from gradviz.errors import GradvizError

QUICK = Limits(wall_seconds=15, cpu_seconds=5, memory_mb=512)


@pytest.fixture(autouse=True)
def _user_code_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADVIZ_DISABLE_USER_CODE", raising=False)


def test_default_cap_is_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(slots.MAX_SANDBOXES_ENV_VAR, raising=False)
    assert slots.max_sandboxes() == 2


@given(st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=8))
def test_a_bad_cap_is_refused_with_the_fix(text: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(slots.MAX_SANDBOXES_ENV_VAR, text)
        stripped = text.strip()
        if not stripped:
            assert slots.max_sandboxes() == 2
            return
        try:
            valid = int(stripped) >= 1
        except ValueError:
            valid = False
        if valid:
            assert slots.max_sandboxes() == int(stripped)
        else:
            with pytest.raises(GradvizError, match="GRADVIZ_MAX_SANDBOXES=.*at least 1"):
                slots.max_sandboxes()


def test_no_more_than_the_cap_run_at_once_and_the_rest_are_told_to_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(slots.MAX_SANDBOXES_ENV_VAR, "2")
    peak, waits, done = [0], [], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], slots.busy())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    results = [None] * 5

    def one(i: int) -> None:
        code = f"import time\ntime.sleep(0.8)\nresult = {i}"
        results[i] = run_sandboxed("exec", {"code": code}, QUICK, on_wait=waits.append)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    watcher.join()
    assert [r.value for r in results] == [0, 1, 2, 3, 4]
    assert peak[0] == 2
    assert len(waits) >= 3 and all(busy == 2 for busy in waits), waits
    assert slots.busy() == 0


def test_on_wait_must_be_callable() -> None:
    with pytest.raises(GradvizError, match="on_wait"):
        run_sandboxed("exec", {"code": ""}, QUICK, on_wait=3)  # type: ignore[arg-type]

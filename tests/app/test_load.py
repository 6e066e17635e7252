"""Load: 8 real browser sessions at once against one real Streamlit server (issue 13).

Every session walks every page with inputs of its own (a program on Graph, a number of
backward steps, a number of training steps, a Function in the lab) and checks it sees its
own results, never another session's, and no exception. All eight then press "Run checks"
together: the server must run at most GRADVIZ_MAX_SANDBOXES sandboxes at once (watched in
its process tree) and tell the queued sessions they are waiting.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import threading
import time

import pytest

from gradviz.app import graph_sources
from gradviz.app.serving import running_app
from gradviz.zoo.functions import function_examples
from gradviz.zoo.sources import step_source, trace_source

ROOT = pathlib.Path(__file__).resolve().parents[2]
SESSIONS = 8
CAP = 2
PROGRAMS = ["two-layer-relu", "single-neuron", "two-layer-sigmoid", "quadrant-params"]
LAB = ["relu", "abs", "relu_forgot_mask", "sigmoid", "relu_wrong_threshold", "exp",
       "sigmoid_wrong_sign", "clamp"]  # fmt: skip
EXCEPTION = '[data-testid="stException"]'


@pytest.fixture(scope="module")
def server():
    """A server of its own, so its sandbox children can be counted in its process tree."""
    log_path = ROOT / "tests" / f".streamlit-load-{os.getpid()}.log"
    env = {**os.environ, "GRADVIZ_MAX_SANDBOXES": str(CAP)}
    env.pop("GRADVIZ_DISABLE_USER_CODE", None)
    with open(log_path, "w") as log, running_app(ROOT / "streamlit_app.py", cwd=ROOT, env=env,
                                                 log=log) as (url, proc):
        yield url, proc.pid
    log_path.unlink(missing_ok=True)


def _sandboxes_of(pid: int) -> int:
    """Sandbox children (outer processes) the server `pid` is running right now."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = pathlib.Path(f"/proc/{entry}/status").read_text()
            cmdline = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
        if int(ppid) == pid and b"sandbox/child.py" in cmdline:
            count += 1
    return count


async def _no_exception(page) -> None:
    errors = page.locator(EXCEPTION)
    assert await errors.count() == 0, await errors.first.inner_text()


async def _enter(page, label: str, value: str) -> None:
    box = page.locator(f'input[aria-label="{label}"]')
    await box.fill(value)
    await box.press("Enter")
    await page.wait_for_function(
        "([l, v]) => document.querySelector(`input[aria-label=\"${l}\"]`).value === v",
        arg=[label, value],
    )


async def _graph(page, url: str, i: int, expected: dict[str, int]) -> None:
    name = PROGRAMS[i % len(PROGRAMS)]
    await page.goto(f"{url}/Graph")
    await page.wait_for_selector(".gv-root svg g.node")
    box = page.get_by_test_id("stSidebarUserContent").get_by_test_id("stSelectbox")
    await box.filter(has_text="Program").click()
    await page.keyboard.type(name)
    await page.get_by_role("option", name=re.compile(rf"^{re.escape(name)} ")).first.click()
    nodes = page.locator('[data-testid="stMetric"]', has_text="nodes").locator(
        '[data-testid="stMetricValue"]'
    )
    await page.wait_for_function(
        "([sel, want]) => document.querySelector(sel)?.innerText === want",
        arg=['[data-testid="stMetric"] [data-testid="stMetricValue"]', f"{expected[name]:,}"],
        timeout=180_000,
    )
    assert (await nodes.first.inner_text()) == f"{expected[name]:,}"
    await _no_exception(page)


async def _backward(page, url: str, i: int, node_ids: list[str]) -> None:
    await page.goto(f"{url}/Backward")
    await page.wait_for_selector(".gradviz-current", timeout=180_000)
    clicks = 1 + i % 4
    for k in range(1, clicks + 1):
        await page.get_by_role("button", name="Next ▶").click()
        await page.wait_for_selector(f'.gradviz-current[data-node="{node_ids[k]}"]')
    current = await page.locator(".gradviz-current").get_attribute("data-node")
    assert current == node_ids[clicks]
    await _no_exception(page)


async def _train(page, url: str, i: int) -> None:
    steps = str(20 + i)
    await page.goto(f"{url}/Build_and_Train")
    await page.get_by_role("button", name="Train", exact=True).wait_for(timeout=180_000)
    await _enter(page, "Number of steps", steps)
    await page.get_by_role("button", name="Train", exact=True).click()
    await page.get_by_text(f"{steps}/{steps} steps in").first.wait_for(timeout=180_000)
    others = [str(20 + j) for j in range(SESSIONS) if j != i]
    text = await page.locator("body").inner_text()
    assert not any(f"{n}/{n} steps" in text for n in others), "another session's run shows"
    await _no_exception(page)


async def _lab_prepare(page, url: str, i: int) -> None:
    example = function_examples()[LAB[i]]
    await page.goto(f"{url}/Function_Lab")
    await page.get_by_role("button", name="Run checks").wait_for(timeout=180_000)
    await page.get_by_label("Your Function").fill(example.source)
    await page.get_by_label("Class name").fill(example.class_name)
    await page.get_by_label("Class name").press("Enter")
    await _enter(page, "Hypothesis examples", "10")


async def _lab_check(page, i: int) -> bool:
    """Press Run checks; True if this session was told it had to wait for a sandbox."""
    example = function_examples()[LAB[i]]
    await page.get_by_role("button", name="Run checks").click()
    verdict = page.locator(".gradviz-lab-verdict")
    await verdict.wait_for(timeout=600_000)
    assert example.class_name in await verdict.inner_text()
    assert await verdict.get_attribute("data-ok") == str(example.correct).lower()
    await _no_exception(page)
    return await page.get_by_text("This check waited").count() > 0


async def _session(browser, url: str, i: int, barrier: asyncio.Barrier, data: dict) -> bool:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(180_000)
    try:
        # Each session takes the pages in its own order, so they all run at once.
        tours = [
            lambda: _graph(page, url, i, data["nodes"]),
            lambda: _backward(page, url, i, data["steps"]),
            lambda: _train(page, url, i),
        ]
        for k in range(len(tours)):
            await tours[(i + k) % len(tours)]()
        await _lab_prepare(page, url, i)
        await barrier.wait()  # every session presses "Run checks" at the same moment
        return await _lab_check(page, i)
    finally:
        await context.close()


async def _drive(url: str, data: dict) -> list[bool]:
    from conftest import CHROMIUM, CHROMIUM_ARGS
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        barrier = asyncio.Barrier(SESSIONS)
        try:
            return await asyncio.gather(
                *[_session(browser, url, i, barrier, data) for i in range(SESSIONS)]
            )
        finally:
            await browser.close()


@pytest.mark.browser
def test_eight_sessions_at_once_across_all_pages(server) -> None:
    url, pid = server
    sources = {label.split(" ")[0]: key for label, key in graph_sources().items()}
    data = {
        "nodes": {name: len(trace_source(sources[name], 0)) for name in PROGRAMS},
        "steps": [step.node.id for step in step_source("preset:mnist-cnn")],
    }
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _sandboxes_of(pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    outcome: dict = {}

    def drive() -> None:  # its own thread and event loop, away from any sync Playwright
        try:
            outcome["waited"] = asyncio.run(_drive(url, data))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            outcome["error"] = exc

    start = time.monotonic()
    driver = threading.Thread(target=drive)
    driver.start()
    driver.join()
    stop.set()
    watcher.join()
    took = time.monotonic() - start
    if "error" in outcome:
        raise outcome["error"]
    waited = outcome["waited"]
    print(f"\n8 sessions in {took:.0f} s; peak sandboxes {peak[0]}; {sum(waited)} sessions waited")
    assert 1 <= peak[0] <= CAP
    assert sum(waited) >= 1, "no session was told it was waiting for a sandbox"

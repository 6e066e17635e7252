"""App latency (issue 14): what a learner waits for in the real app, in a real browser.

A real `streamlit run` server (started as tests/conftest.py starts it) and Debian's
Chromium driven by Playwright, on the default programs:
  (a) Graph page opened → the graph's SVG drawn: on a fresh server (cold: imports, trace,
      layout) and on a server that already showed it (warm: a new browser session);
  (b) Graph page: click a node → its details in the inspector;
  (c) Backward page (mnist-cnn): click "Next ▶" → the step counter and details show the
      next step, and → its gradient heatmaps drawn;
  (d) Function Lab: "Run checks" on a built-in example → the verdict shown.
The peer, measured in the same run with the same browser: a bare Streamlit app whose button
only adds one to a counter — the floor any click in any Streamlit app pays (websocket
round trip, script rerun, React render).
Targets (issue 14): cold ≤ 3 s, node click ≤ 300 ms, step ≤ 300 ms, lab check ≤ 2 s.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_app.py [--runs 5] [--cold-runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator

from gradviz.app.serving import running_app

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]  # fmt: skip
TIMEOUT_MS = 180_000
PEER_APP = """
import streamlit as st
st.session_state.setdefault("n", 0)
def add():
    st.session_state.n += 1
st.button("Add one", key="add", on_click=add)
st.markdown(f'<div class="peer-count" data-n="{st.session_state.n}">{st.session_state.n}</div>',
            unsafe_allow_html=True)
"""


@contextlib.contextmanager
def server(script: pathlib.Path, cwd: pathlib.Path) -> Iterator[str]:
    """`streamlit run script` on a free port, as the browser tests start it; its URL."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with running_app(script, cwd=cwd, env=env) as (url, _):
        yield url


@contextlib.contextmanager
def new_page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        yield page
    finally:
        context.close()


def _timed(action: Callable[[], None], done: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    done()
    return time.perf_counter() - start


# -- (a) the first graph --------------------------------------------------------------
def open_graph(page, url: str) -> float:
    return _timed(lambda: page.goto(f"{url}/Graph"),
                  lambda: page.wait_for_selector(".gv-root svg g.node", state="visible"))


def cold_graph(browser, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        with server(ROOT / "streamlit_app.py", ROOT) as url, new_page(browser) as page:
            out.append(open_graph(page, url))
    return out


def warm_graph(browser, url: str, runs: int) -> list[float]:
    with new_page(browser) as page:
        open_graph(page, url)  # warm-up: traced and laid out once in this process
    out = []
    for _ in range(runs):
        with new_page(browser) as page:
            out.append(open_graph(page, url))
    return out


# -- (b) a node click -------------------------------------------------------------------
def _node(page, node_id: str):
    return page.locator(".gv-root g.node", has=page.locator(f'title:text-is("{node_id}")'))


def node_clicks(browser, url: str, runs: int) -> list[float]:
    from gradviz import trace_example

    graph = trace_example("mnist-cnn")
    ops = [n.id for n in graph.nodes if n.kind == "op"][:2]
    with new_page(browser) as page:
        page.goto(f"{url}/Graph")
        page.wait_for_selector(".gv-root svg g.node", state="visible")
        page.locator(".gv-toolbar button[data-act=fit]").click()  # every node in view
        out = []
        for i in range(runs + 2):  # the first two (one per node) are the warm-up
            node = ops[i % 2]
            took = _timed(lambda n=node: _node(page, n).click(),
                          lambda n=node: page.wait_for_selector(
                              f'.gradviz-inspector[data-node="{n}"]'))
            if i >= 2:
                out.append(took)
        return out


# -- (c) a backward step ----------------------------------------------------------------
def steps(browser, url: str, runs: int) -> tuple[list[float], list[float]]:
    from gradviz.zoo.sources import step_source

    stepper = step_source("preset:mnist-cnn")
    shown, drawn = [], []
    with new_page(browser) as page:
        page.goto(f"{url}/Backward")
        page.wait_for_selector(f'.gradviz-current[data-node="{stepper[0].node.id}"]')
        for i in range(1, min(runs + 2, len(stepper))):  # step 1 is the warm-up
            start = time.perf_counter()
            page.get_by_role("button", name="Next ▶").click()
            page.wait_for_selector(f'.gradviz-current[data-node="{stepper[i].node.id}"]')
            page.get_by_text(f"Step {i + 1}/{len(stepper)}").wait_for()
            mid = time.perf_counter()
            cells = (f'[class*="st-key-bw_e_{i}_"] path[aria-roledescription="rect mark"], '
                     f'.st-key-bw_in_{i}_t path[aria-roledescription="rect mark"]')
            page.locator(f"{cells} >> visible=true").first.wait_for()
            end = time.perf_counter()
            if i >= 2:
                shown.append(mid - start)
                drawn.append(end - start)
    return shown, drawn


# -- (d) the Function Lab -----------------------------------------------------------------
def _pick_example(page, name: str) -> None:
    box = page.get_by_test_id("stSelectbox").filter(has_text="Load an example")
    box.click()
    page.get_by_role("option", name=f"{name} — ").first.click()


def _set_seed(page, seed: int) -> None:
    box = page.locator('input[aria-label="Seed"]')
    box.fill(str(seed))
    box.press("Enter")
    page.wait_for_function(
        "s => document.querySelector('input[aria-label=\"Seed\"]').value === s", arg=str(seed))


def lab_checks(browser, url: str, runs: int) -> tuple[list[float], list[float]]:
    """(first check of an example with this seed: in the sandbox, the same check again)."""
    examples = [("relu", "MyReLU"), ("abs", "MyAbs")]
    fresh, again = [], []
    with new_page(browser) as page:
        page.goto(f"{url}/Function_Lab")
        page.get_by_role("button", name="Run checks").wait_for()
        # The first is the warm-up (the sandbox's first start); then a new seed each time.
        plan = [(i, 1000 + i, fresh) for i in range(runs + 1)]
        # The seeds checked above, backwards: each check shows another example than the
        # last, so the verdict waited for is never the one already on the page.
        plan += [(i, 999 + runs - i, again) for i in range(runs)]
        for i, seed, out in plan:
            name, cls = examples[(seed - 1000) % 2]
            _pick_example(page, name)
            page.wait_for_function(
                "c => document.querySelector('input[aria-label=\"Class name\"]').value === c",
                arg=cls)
            _set_seed(page, seed)
            took = _timed(lambda: page.get_by_role("button", name="Run checks").click(),
                          lambda c=cls: page.locator(".gradviz-lab-verdict", has_text=c)
                          .last.wait_for())
            if i >= 1 or out is again:
                out.append(took)
    return fresh, again


# -- the peer ---------------------------------------------------------------------------
def peer_clicks(browser, runs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        script = pathlib.Path(tmp) / "peer_app.py"
        script.write_text(PEER_APP, encoding="utf-8")
        with server(script, pathlib.Path(tmp)) as url, new_page(browser) as page:
            page.goto(url)
            page.wait_for_selector('.peer-count[data-n="0"]')
            out = []
            for i in range(1, runs + 2):
                took = _timed(lambda: page.get_by_role("button", name="Add one").click(),
                              lambda n=i: page.wait_for_selector(f'.peer-count[data-n="{n}"]'))
                if i >= 2:
                    out.append(took)
            return out


# -- the table --------------------------------------------------------------------------
def _row(name: str, times: list[float], target: float | None, peer: float | None) -> str:
    med = statistics.median(times)
    spread = f"{min(times) * 1000:,.0f}–{max(times) * 1000:,.0f}"
    tgt = "—" if target is None else f"≤ {target * 1000:,.0f}"
    met = "—" if target is None else ("met" if med <= target else "NOT met")
    ratio = "—" if peer is None else f"{med / peer:,.1f}×"
    return (f"| {name:<44} | {med * 1000:>8,.0f} | {spread:>15} | {len(times):>2} | {tgt:>7} "
            f"| {met:<7} | {ratio:>8} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per warm measure")
    parser.add_argument("--cold-runs", type=int, default=5, help="fresh servers for (a)")
    parser.add_argument("--only", choices=["cold", "warm", "click", "step", "lab"],
                        action="append", help="measure only these (repeatable)")
    args = parser.parse_args()
    want = set(args.only or ["cold", "warm", "click", "step", "lab"])
    skip: list[float] = []
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        peer = peer_clicks(browser, args.runs)
        cold = cold_graph(browser, args.cold_runs) if "cold" in want else skip
        with server(ROOT / "streamlit_app.py", ROOT) as url:
            warm = warm_graph(browser, url, args.runs) if "warm" in want else skip
            clicks = node_clicks(browser, url, args.runs) if "click" in want else skip
            shown, drawn = steps(browser, url, args.runs) if "step" in want else (skip, skip)
            lab, lab_again = lab_checks(browser, url, args.runs) if "lab" in want else (skip, skip)
        browser.close()
    floor = statistics.median(peer)
    print("\nApp latency, real server + Chromium (ms; median, min–max over n runs; "
          "× = median / the bare Streamlit click)\n")
    print(f"| {'measure':<44} | {'median':>8} | {'spread':>15} | {'n':>2} | {'target':>7} "
          f"| {'status':<7} | {'× floor':>8} |")
    print(f"|{'-' * 46}|{'-' * 10}|{'-' * 17}|{'-' * 4}|{'-' * 9}|{'-' * 9}|{'-' * 10}|")
    rows = [
        ("peer: bare Streamlit button → counter", peer, None, None),
        ("(a) cold: fresh server, open Graph → SVG", cold, 3.0, floor),
        ("(a) warm: new session, open Graph → SVG", warm, 3.0, floor),
        ("(b) Graph: node click → inspector", clicks, 0.3, floor),
        ("(c) Backward: Next → step counter, details", shown, 0.3, floor),
        ("(c) Backward: Next → its heatmaps drawn", drawn, None, floor),
        ("(d) Lab: Run checks → verdict, first time", lab, 2.0, floor),
        ("(d) Lab: the same example checked again", lab_again, 2.0, floor),
    ]
    for row in rows:
        if row[1]:
            print(_row(*row))


if __name__ == "__main__":
    main()

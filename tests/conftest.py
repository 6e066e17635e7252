"""Shared test settings: a Hypothesis profile that is reproducible on CI."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI replays the same examples every run (no flaky landings); locally every run explores
# new ones. Deadlines are off: a 2-core CI machine under load is not a bug.
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


# -- the real app in a real browser ------------------------------------------------------

import pathlib  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def app_url():
    """The real app, started with `streamlit run` on 127.0.0.1 for this test session."""
    from gradviz.app.serving import running_app  # imports Streamlit: only when wanted

    log_path = ROOT / "tests" / f".streamlit-{os.getpid()}.log"
    with open(log_path, "w") as log, running_app(ROOT / "streamlit_app.py", cwd=ROOT,
                                                 log=log) as (url, _):
        yield url
    log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def browser():
    if not shutil.which(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium (the README's test "
                           "command does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(90_000)
    yield pg
    context.close()


@pytest.fixture()
def screenshot():
    """save(page, name): keep a screenshot for the README in docs/screenshots/."""

    def save(page, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))

    return save

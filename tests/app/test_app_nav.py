"""Every page opens with one line saying what it shows and what to try first; the entry
names the pages for their users."""

from __future__ import annotations

import ast
import pathlib

import pytest
from streamlit.testing.v1 import AppTest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "pages").glob("*.py"))


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_each_page_starts_with_what_it_shows_and_what_to_try_first(page):
    # The home page links to the others, which needs the navigation: run it through the entry.
    path = ROOT / "streamlit_app.py" if page.name == "0_Home.py" else page
    at = AppTest.from_file(str(path), default_timeout=240).run()
    assert not at.exception
    first = at.caption[0].value
    assert "Try first:" in first and len(first) < 200
    assert at.title[0].value  # under the page's title
    if page.name == "0_Home.py":
        assert first.startswith("What gradviz does") and len(at.get("page_link")) == 4


def test_the_navigation_names_every_page_file_for_its_users():
    entry = ROOT / "streamlit_app.py"
    calls = [n for n in ast.walk(ast.parse(entry.read_text())) if isinstance(n, ast.Call)
             and getattr(n.func, "attr", "") == "Page"]
    pages = {(entry.parent / c.args[0].value).resolve().name:
             next(k.value.value for k in c.keywords if k.arg == "title") for c in calls}
    assert pages == {"0_Home.py": "Home", "1_Graph.py": "Graph",
                     "2_Build_and_Train.py": "Build & Train", "3_Backward.py": "Backward",
                     "4_Function_Lab.py": "Function Lab"}
    assert {p.name for p in PAGES} == set(pages)  # no page file left out of the navigation
    config = (ROOT / ".streamlit" / "config.toml").read_text()
    assert 'toolbarMode = "minimal"' in config

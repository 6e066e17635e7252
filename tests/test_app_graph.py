"""The Graph page: AppTest on the script, and the real app in Chromium."""

from __future__ import annotations

import pathlib
import re

import pytest
from streamlit.testing.v1 import AppTest

from gradviz import trace_example

PAGE = str(pathlib.Path(__file__).resolve().parents[1] / "pages" / "1_Graph.py")


def _source_label(at: AppTest, name: str) -> str:
    return next(o for o in at.sidebar.selectbox(key="graph_source").options if o.startswith(name + " "))


def test_graph_page_defaults_to_mnist_cnn():
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    graph = trace_example("mnist-cnn")
    assert metrics["nodes"] == str(len(graph))
    assert metrics["parameters"] == str(graph.counts()["param"])
    svg = next(m.value for m in at.markdown if "gradviz-graph" in m.value)
    assert svg.count('class="node"') == len(graph) + 3  # + legend: op, param, output


def test_graph_page_toggles_and_other_programs():
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.sidebar.toggle(key="graph_saved").set_value(True).run()
    svg = next(m.value for m in at.markdown if "gradviz-graph" in m.value)
    assert "10×1×5×5 float32" in svg
    at.sidebar.selectbox(key="graph_source").set_value(_source_label(at, "transformer-2")).run()
    at.sidebar.slider(key="graph_depth").set_value(2).run()
    assert not at.exception
    svg = next(m.value for m in at.markdown if "gradviz-graph" in m.value)
    assert "TransformerEncoderLayer" in svg and "ops · " in svg
    assert {m.label: m.value for m in at.metric}["nodes"] == str(len(trace_example("transformer-2")))


def test_graph_page_big_program_default_view():
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    at.sidebar.selectbox(key="graph_source").set_value(_source_label(at, "chain-25k")).run()
    assert not at.exception
    svg = next(m.value for m in at.markdown if "gradviz-graph" in m.value)
    assert "nodes folded" in svg
    assert svg.count('class="node"') < 50


@pytest.mark.browser
def test_graph_page_in_chromium_shows_svg_with_expected_node_count(app_url, page, screenshot):
    graph = trace_example("mnist-cnn")
    page.goto(f"{app_url}/Graph")
    page.wait_for_selector(".gradviz-graph svg g.node")
    titles = page.eval_on_selector_all(".gradviz-graph svg g.node > title", "els => els.map(e => e.textContent)")
    graph_nodes = [t for t in titles if re.fullmatch(r"n\d+", t)]
    assert len(graph_nodes) == len(graph)
    assert "conv1.weight" in page.locator(".gradviz-graph").inner_text()
    screenshot(page, "graph")

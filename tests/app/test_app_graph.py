"""The Graph page: AppTest on the script, and the real app in Chromium.

The graph is drawn by the gradviz graph view component (`st.components.v2`); AppTest sees
it as an element whose data holds the SVG, the highlighted ids and the selection.
"""

from __future__ import annotations

import json
import pathlib
import re
import time

import pytest
from playwright.sync_api import expect
from streamlit.testing.v1 import AppTest

from gradviz import explorer as ex
from gradviz import trace_example
from gradviz.app.explorer_ui import Selection

PAGE = str(pathlib.Path(__file__).resolve().parents[2] / "pages" / "1_Graph.py")


def _source_label(at: AppTest, name: str) -> str:
    return next(
        o for o in at.sidebar.selectbox(key="graph_source").options if o.startswith(name + " ")
    )


def _view(at: AppTest, index: int = 0) -> dict:
    """The data the page passed to the graph view component (svg, highlight, selected…)."""
    views = [e for e in at.get("bidi_component") if e.proto.component_name == "gradviz.graph_view"]
    return json.loads(views[index].proto.json)


def _titles(svg: str) -> list[str]:
    return re.findall(r'<g id="node\d+" class="node">\s*<title>([^<]*)</title>', svg)


# -- AppTest ------------------------------------------------------------------------------
def test_graph_page_defaults_to_mnist_cnn():
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    graph = trace_example("mnist-cnn")
    assert metrics["nodes"] == str(len(graph))
    assert metrics["parameters"] == str(graph.counts()["param"])
    svg = _view(at)["svg"]
    assert svg.count('class="node"') == len(graph) + 3  # + legend: op, param, output


def test_graph_page_toggles_and_other_programs():
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.sidebar.toggle(key="graph_saved").set_value(True).run()
    assert "10×1×5×5 float32" in _view(at)["svg"]
    at.sidebar.selectbox(key="graph_source").set_value(_source_label(at, "transformer-2")).run()
    at.sidebar.slider(key="graph_depth").set_value(2).run()
    assert not at.exception
    svg = _view(at)["svg"]
    assert "TransformerEncoderLayer" in svg and "ops · " in svg
    assert {m.label: m.value for m in at.metric}["nodes"] == str(
        len(trace_example("transformer-2"))
    )


def test_graph_page_big_program_default_view_rolls_the_chain():
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    at.sidebar.selectbox(key="graph_source").set_value(_source_label(at, "chain-25k")).run()
    assert not at.exception
    svg = _view(at)["svg"]
    # 6 250 identical Linear layers, each feeding the next, are one node with a count.
    assert "Linear × 6,250" in svg and "roll/0..6249" in _titles(svg)
    assert svg.count('class="node"') < 50


def test_search_highlights_matching_items():
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.text_input(key="graph_search").set_value("conv1").run()
    graph = trace_example("mnist-cnn")
    expected = ex.search(graph, "conv1")
    assert {graph.node(i).label for i in expected} == {"ConvolutionBackward0", "conv1.weight",
                                                       "conv1.bias"}
    assert sorted(_view(at)["highlight"]) == sorted(expected)
    assert any("3 nodes match" in m.value for m in at.markdown)


def test_inspector_shows_the_selected_node_with_saved_tensor_statistics():
    graph = trace_example("mnist-cnn")
    conv = next(n for n in graph.nodes if n.label == "ConvolutionBackward0")
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["gx.selection"] = Selection("example:mnist-cnn", 0, "backward", conv.id)
    at.run()
    assert not at.exception
    head = next(m.value for m in at.markdown if "gradviz-inspector" in m.value)
    assert conv.label in head and "×".join(map(str, conv.shape)) in head
    assert _view(at)["selected"] == conv.id
    saved = at.table[0].value
    assert list(saved["tensor"]) == [s.name for s in conv.saved]
    assert all(v != "—" for v in saved["mean"])  # statistics from trace_with_stats


def test_forward_view_and_the_link_to_backward():
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.sidebar.radio(key="graph_mode").set_value("Forward (modules)").run()
    assert not at.exception
    titles = _titles(_view(at)["svg"])
    assert {"m/conv1", "m/conv2", "m/fc1", "m/fc2"} <= set(titles)
    # Pick module conv1 in the forward view; the backward view highlights its autograd nodes.
    at.session_state["gx.selection"] = Selection("example:mnist-cnn", 0, "forward", "m/conv1")
    at.run()
    assert any("gradviz-inspector" in m.value and "Conv2d" in m.value for m in at.markdown)
    at.button(key="graph_show_other").click().run()
    assert at.sidebar.radio(key="graph_mode").value == "Backward (autograd)"
    graph = trace_example("mnist-cnn")
    assert sorted(_view(at)["highlight"]) == sorted(ex.autograd_nodes_of(graph, "conv1"))


def test_compare_two_seeds_of_dynamic_net():
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    at.sidebar.selectbox(key="graph_source").set_value(_source_label(at, "dynamic-net")).run()
    at.toggle(key="graph_cmp_on").set_value(True).run()
    assert not at.exception
    diff_text = next(m.value for m in at.markdown if "gradviz-diff" in m.value)
    assert "nodes in both" in diff_text or "same structure" in diff_text
    svg = _view(at, 1)["svg"]
    assert "only in B" in svg


def test_load_a_model_by_name_and_shape_without_writing_code():
    from gradviz.zoo.sources import trace_source

    at = AppTest.from_file(PAGE, default_timeout=180).run()
    at.sidebar.selectbox(key="graph_source").set_value(_source_label(at, "resnet18")).run()
    box = at.sidebar.text_input(key="shape:model:resnet18")
    assert box.value == "2x3x32x32"  # the model's default input, shown to edit
    box.set_value("2x3x48x48").run()
    assert not at.exception and not at.error
    graph = trace_source("model:resnet18@2x3x48x48")
    assert {m.label: m.value for m in at.metric}["nodes"] == f"{len(graph):,}"
    svg = _view(at)["svg"]
    assert "layer1" in svg and "BasicBlock" in svg
    # A shape the model cannot take: an error naming it, no traceback, the page still there.
    at.sidebar.text_input(key="shape:model:resnet18").set_value("2x3").run()
    assert not at.exception
    assert any("shape" in e.value and "default (2, 3, 32, 32)" in e.value for e in at.error)
    assert at.sidebar.selectbox(key="graph_source").value.startswith("resnet18 ")


def test_page_stays_thin():
    text = pathlib.Path(PAGE).read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 120
    assert "import torch" not in text and "import numpy" not in text


# -- the real app in Chromium -------------------------------------------------------------
def _node(page, node_id: str):
    return page.locator(".gv-root g.node", has=page.locator(f'title:text-is("{node_id}")'))


def _renders(page) -> int:
    return int(page.eval_on_selector(".gv-root", "e => e.dataset.renders || '0'"))


def _wait_render_after(page, before: int, timeout_ms: int = 120_000) -> None:
    deadline = time.monotonic() + timeout_ms / 1000
    while _renders(page) <= before:
        if time.monotonic() > deadline:
            raise AssertionError("the graph view did not draw a new SVG")
        time.sleep(0.05)


def _pick_program(page, name: str) -> None:
    box = (
        page.get_by_test_id("stSidebarUserContent")
        .get_by_test_id("stSelectbox")
        .filter(has_text="Program")
    )
    box.click()
    page.keyboard.type(name)
    page.get_by_role("option", name=re.compile(rf"^{re.escape(name)} ")).first.click()


@pytest.mark.browser
def test_graph_page_in_chromium_shows_svg_with_expected_node_count(app_url, page, screenshot):
    graph = trace_example("mnist-cnn")
    page.goto(f"{app_url}/Graph")
    page.wait_for_selector(".gv-root svg g.node")
    titles = page.eval_on_selector_all(".gv-root svg g.node > title", "els => els.map(e => "
                                       "e.textContent)")
    graph_nodes = [t for t in titles if re.fullmatch(r"n\d+", t)]
    assert len(graph_nodes) == len(graph)
    assert "conv1.weight" in page.locator(".gv-root").inner_text()
    screenshot(page, "graph")


@pytest.mark.browser
def test_click_a_node_shows_it_in_the_inspector(app_url, page):
    graph = trace_example("mnist-cnn")
    conv = next(n for n in graph.nodes if n.label == "ConvolutionBackward0")
    page.goto(f"{app_url}/Graph")
    page.wait_for_selector(".gv-root svg g.node")
    # How long this takes is measured in benchmarks/bench_app.py, not asserted here.
    _node(page, conv.id).click()
    page.wait_for_selector(f'.gradviz-inspector[data-node="{conv.id}"]')
    text = page.locator(".gradviz-inspector").inner_text()
    assert conv.label in text and "×".join(map(str, conv.shape)) in text
    assert page.eval_on_selector(".gv-root", "e => e.dataset.selected") == conv.id


@pytest.mark.browser
def test_zoom_and_pan_move_the_drawing(app_url, page):
    page.goto(f"{app_url}/Graph")
    page.wait_for_selector(".gv-root svg g.node")

    def transform() -> str:
        return page.eval_on_selector(".gv-canvas", "e => e.style.transform")

    before, renders = transform(), _renders(page)
    page.locator(".gv-toolbar button[data-act=in]").click()
    zoomed = transform()
    assert zoomed != before and "scale" in zoomed
    box = page.locator(".gv-viewport").bounding_box()
    x, y = box["x"] + 30, box["y"] + 30
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 120, y + 80, steps=5)
    page.mouse.up()
    panned = transform()
    assert panned != zoomed
    page.mouse.move(x + 200, y + 200)
    # A plain wheel scrolls the page and leaves the drawing alone; Ctrl + wheel zooms.
    page.mouse.wheel(0, -400)
    page.wait_for_timeout(300)
    assert transform() == panned
    page.keyboard.down("Control")
    page.mouse.wheel(0, -400)
    page.keyboard.up("Control")
    deadline = time.monotonic() + 10
    while transform() == panned and time.monotonic() < deadline:
        time.sleep(0.05)
    assert transform() != panned
    assert _renders(page) == renders  # panning and zooming never draw the SVG again


@pytest.mark.browser
def test_search_highlights_in_chromium(app_url, page):
    graph = trace_example("mnist-cnn")
    page.goto(f"{app_url}/Graph")
    page.wait_for_selector(".gv-root svg g.node")
    field = page.get_by_placeholder("e.g. addmm")
    field.fill("conv1")
    field.press("Enter")
    page.wait_for_selector('.gv-root[data-highlighted="3"]')
    lit = page.eval_on_selector_all(".gv-root g.node.gv-hl > title", "ts => ts.map(t => "
                                    "t.textContent)")
    assert sorted(lit) == sorted(ex.search(graph, "conv1"))


@pytest.mark.browser
def test_open_rolled_and_collapsed_modules_with_breadcrumb(app_url, page, screenshot):
    page.goto(f"{app_url}/Graph")
    page.wait_for_selector(".gv-root svg g.node")
    before = _renders(page)
    _pick_program(page, "transformer-24")
    _wait_render_after(page, before)
    roll = _node(page, "roll/layers.0..layers.23")
    roll.wait_for()
    assert "TransformerEncoderLayer × 24" in roll.text_content()
    before = _renders(page)
    roll.click()
    _wait_render_after(page, before)
    block = _node(page, "mod/layers.23")
    block.wait_for()
    expect(_node(page, "roll/layers.3..layers.20")).to_have_count(1)  # the middle stays rolled
    before = _renders(page)
    block.click()
    _wait_render_after(page, before)
    _node(page, "mod/layers.23.self_attn").wait_for()
    page.wait_for_selector('.gradviz-inspector[data-node="mod/layers.23"]')
    assert "TransformerEncoderLayer" in page.locator(".gradviz-inspector").inner_text()
    page.get_by_role("button", name="› layers.23").wait_for()
    screenshot(page, "explorer")
    before = _renders(page)
    page.get_by_role("button", name="⌂ overview").click()
    _wait_render_after(page, before)
    _node(page, "roll/layers.0..layers.23").wait_for()


@pytest.mark.browser
def test_chain_25k_views_unrolls_and_inspects(app_url, page):
    # How fast is benchmarks/bench_app.py's business; here: that each step happens at all.
    page.goto(f"{app_url}/Graph")
    page.wait_for_selector(".gv-root svg g.node")
    for again in (False, True):  # traced, then from the cache after another program
        before = _renders(page)
        _pick_program(page, "chain-25k")
        _wait_render_after(page, before, timeout_ms=180_000)
        _node(page, "roll/0..6249").wait_for()
        if not again:
            before = _renders(page)
            _pick_program(page, "mnist-cnn")
            _wait_render_after(page, before)
    expect(_node(page, "mod/6249")).to_have_count(0)  # the repeats are folded
    before = _renders(page)
    _node(page, "roll/0..6249").click()
    _wait_render_after(page, before)
    _node(page, "mod/6249").wait_for()
    _node(page, "mod/6249").click()
    page.wait_for_selector('.gradviz-inspector[data-node="mod/6249"]')


@pytest.mark.browser
def test_forward_backward_toggle_in_chromium(app_url, page):
    graph = trace_example("mnist-cnn")
    page.goto(f"{app_url}/Graph")
    page.wait_for_selector(".gv-root svg g.node")
    before = _renders(page)
    page.get_by_text("Forward (modules)").click()
    _wait_render_after(page, before)
    module = _node(page, "m/conv1")
    module.wait_for()
    module.click()
    page.wait_for_selector('.gradviz-inspector[data-node="m/conv1"]')
    before = _renders(page)
    page.get_by_role("button", name=re.compile("in the backward view")).click()
    _wait_render_after(page, before)
    expected = ex.autograd_nodes_of(graph, "conv1")
    page.wait_for_selector(f'.gv-root[data-highlighted="{len(expected)}"]')
    lit = page.eval_on_selector_all(".gv-root g.node.gv-hl > title", "ts => ts.map(t => "
                                    "t.textContent)")
    assert sorted(lit) == sorted(expected)


@pytest.mark.browser
def test_a_hugging_face_model_loads_and_draws_in_chromium(app_url, page):
    page.goto(f"{app_url}/Graph")
    page.wait_for_selector(".gv-root svg g.node")
    before = _renders(page)
    _pick_program(page, "hf:bert")
    _wait_render_after(page, before)
    text = page.locator(".gv-root").inner_text()
    # The model's own module paths name its clusters and boxes.
    assert "encoder" in text and "embeddings" in text
    assert page.get_by_test_id("stException").count() == 0

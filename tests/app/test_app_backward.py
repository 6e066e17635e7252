"""The Backward page: AppTest of the controls, and stepping the MNIST CNN in Chromium."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from playwright.sync_api import expect
from streamlit.testing.v1 import AppTest

from gradviz.zoo.sources import step_source

PAGE = str(pathlib.Path(__file__).resolve().parents[2] / "pages" / "3_Backward.py")


def _current(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "gradviz-current" in m.value)


def test_backward_page_steps_and_breakpoints():
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    assert not at.exception and not at.error
    steps = step_source("preset:mnist-cnn")
    assert at.subheader[0].value == f"Step 1/{len(steps)}: {steps[0].node.label}"
    assert "NumPy coverage 100%" in at.markdown[0].value
    at.button(key="bw_next").click().run()
    assert at.subheader[0].value.startswith(f"Step 2/{len(steps)}: {steps[1].node.label}")
    assert f'data-node="{steps[1].node.id}"' in _current(at)
    at.text_input(key="bw_break").input("Convolution").run()
    at.button(key="bw_run").click().run()
    first_conv = steps.find(label="Convolution")
    assert at.subheader[0].value.startswith(f"Step {first_conv + 1}/")
    check = next(m.value for m in at.markdown if "gradviz-check" in m.value)
    assert "agrees" in check
    assert any("\\bar" in latex.value for latex in at.latex)
    at.button(key="bw_prev").click().run()
    assert at.subheader[0].value.startswith(f"Step {first_conv}/")
    at.text_input(key="bw_break").input("NoSuchOp").run()
    at.button(key="bw_run").click().run()
    assert at.error and "No later step matches" in at.error[0].value
    assert at.subheader[0].value.startswith(f"Step {first_conv}/")  # nothing lost
    table = at.dataframe[-1].value
    assert set(table["parameter"]) == {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                       "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert table["relative"].max() < 1e-10


@pytest.mark.browser
def test_step_through_mnist_cnn_in_chromium(app_url, page, screenshot):
    steps = step_source("preset:mnist-cnn")
    page.goto(f"{app_url}/Backward")
    page.wait_for_selector(".gradviz-current")
    target = next(i for i, s in enumerate(steps) if i >= 3 and s.node.kind == "op")
    for i in range(1, target + 1):
        page.get_by_role("button", name="Next ▶").click()
        page.wait_for_selector(f'.gradviz-current[data-node="{steps[i].node.id}"]')
    # The highlighted node in the SVG is the current step's node, and it is in view.
    highlighted = page.eval_on_selector_all(
        ".gv-root svg g.node",
        "gs => gs.filter(g => [...g.querySelectorAll('polygon,path,ellipse')].some(s => s.getAttribute('stroke') === '#e03131'))"
        ".map(g => g.querySelector('title').textContent)",
    )
    assert highlighted == [steps[target].node.id]
    assert _in_view(page, steps[target].node.id)
    check = page.locator(".gradviz-check").inner_text()
    assert "NumPy check" in check and "agrees" in check
    page.get_by_text("|torch − NumPy|").first.wait_for()  # the difference table is shown
    screenshot(page, "backward")
    # Clicking a node in the graph jumps to its step, and the view follows it.
    last = next(s for s in reversed(steps.steps) if s.node.kind == "op")
    page.locator(".gv-toolbar button[data-act=fit]").click()  # the whole graph, to click in
    _node(page, last.node.id).click()
    page.wait_for_selector(f'.gradviz-current[data-node="{last.node.id}"]')
    expect(page.locator(".gv-root")).to_have_attribute("data-selected", last.node.id)
    assert _in_view(page, last.node.id)


def _node(page, node_id: str):
    return page.locator(".gv-root g.node", has=page.locator(f'title:text-is("{node_id}")'))


def _in_view(page, node_id: str) -> bool:
    """Whether the node's centre is inside the graph's visible viewport."""
    node = _node(page, node_id).bounding_box()
    port = page.locator(".gv-viewport").bounding_box()
    x, y = node["x"] + node["width"] / 2, node["y"] + node["height"] / 2
    return port["x"] <= x <= port["x"] + port["width"] and port["y"] <= y <= port["y"] + port["height"]


def test_backward_page_starts_from_the_model_built_on_the_build_page():
    from gradviz import train
    from gradviz.app import MODEL_KEY

    result = train("quadrant-sgd", steps=50)
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state[MODEL_KEY] = {"source": "preset:quadrant-sgd", "model": result.model, "preset": "quadrant-sgd"}
    at.run()
    built = next(o for o in at.sidebar.selectbox(key="bw_source").options if o.startswith("Built on Build & Train"))
    at.sidebar.selectbox(key="bw_source").set_value(built).run()
    assert not at.exception and not at.error
    from gradviz.zoo.sources import step_model, step_source

    trained = step_model(result.model, "quadrant-sgd")
    fresh = step_source("preset:quadrant-sgd")
    assert at.subheader[0].value.startswith(f"Step 1/{len(trained)}:")
    assert "NumPy coverage 100%" in at.markdown[0].value
    # The page stepped the trained weights, not a freshly built network.
    name = next(iter(trained.param_grads))
    assert not np.allclose(trained.param_grads[name], fresh.param_grads[name])
    table = at.dataframe[-1].value
    assert set(table["parameter"]) == set(trained.param_grads)

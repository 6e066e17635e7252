"""The Backward page: AppTest of the controls, and stepping the MNIST CNN in Chromium."""

from __future__ import annotations

import pathlib
import re
import time

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
    assert "Try first" in at.caption[0].value
    assert "NumPy coverage 100%" in at.markdown[0].value
    at.button(key="bw_next").click().run()
    assert at.subheader[0].value.startswith(f"Step 2/{len(steps)}: {steps[1].node.label}")
    at.button(key="bw_next").click().run()
    # fc2's Addmm: the 10-entry bias gradient is small enough to show with its numbers.
    from gradviz.backward.numbers import latex_value

    bias = latex_value(steps[2].grad_inputs[0])
    shown = [latex.value.strip("$\n") for latex in at.latex]
    assert any(line.startswith(r"\bar{M}") and line.endswith(bias) for line in shown)
    at.button(key="bw_prev").click().run()
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
    # The highlighted node in the SVG is the current step's node, and it is in view. The
    # details can arrive before the graph's redraw (seen once in a fresh clone): the graph
    # gets 10 s to catch up, then the same assertion.
    deadline = time.monotonic() + 10
    while True:
        highlighted = page.eval_on_selector_all(
            ".gv-root svg g.node",
            "gs => gs.filter(g => [...g.querySelectorAll('polygon,path,ellipse')].some(s => "
            "s.getAttribute('stroke') === '#e03131'))"
            ".map(g => g.querySelector('title').textContent)",
        )
        if highlighted == [steps[target].node.id] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert highlighted == [steps[target].node.id]
    assert _in_view(page, steps[target].node.id)
    check = page.locator(".gradviz-check").inner_text()
    assert "NumPy check" in check and "agrees" in check
    # Edges that carried gradient are drawn in the flow colour, wider for larger norms.
    widths = page.eval_on_selector_all(
        ".gv-root svg g.edge path[stroke='#1864ab']",
        "ps => ps.map(p => +p.getAttribute('stroke-width'))")
    assert len(widths) >= target and max(widths) > min(widths) >= 1
    _cells(page, f"bw_e_{target}_0_t").first.wait_for()  # the heatmaps are drawn
    page.mouse.move(5, 995)  # no button tooltip in the picture: it follows focus too
    page.evaluate("document.activeElement && document.activeElement.blur()")
    expect(page.get_by_text("or press →", exact=True)).to_have_count(0)
    screenshot(page, "backward")
    page.locator(f".st-key-bw_e_{target}_0_t").scroll_into_view_if_needed()
    screenshot(page, "backward-heatmaps")
    page.get_by_role("heading", name="Step through backward").scroll_into_view_if_needed()
    # Clicking a node in the graph jumps to its step, and the view follows it.
    last = next(s for s in reversed(steps.steps) if s.node.kind == "op")
    page.locator(".gv-toolbar button[data-act=fit]").click()  # the whole graph, to click in
    _node(page, last.node.id).click()
    page.wait_for_selector(f'.gradviz-current[data-node="{last.node.id}"]')
    expect(page.locator(".gv-root")).to_have_attribute("data-selected", last.node.id)
    assert _in_view(page, last.node.id)


def _cells(page, key: str):
    """The cells of the heatmap in the container with this widget key."""
    return page.locator(f'.st-key-{key} path[aria-roledescription="rect mark"]')


def _attrs(page, key: str, name: str) -> list[str]:
    return _cells(page, key).evaluate_all(f"ps => ps.map(p => p.getAttribute('{name}'))")


def _exact_values(page, key: str) -> list[float]:
    labels = _attrs(page, key, "aria-label")
    return [float(re.search(r"value: (\S+)$", label).group(1)) for label in labels]


def _rgb(fill: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", fill))


@pytest.mark.browser
def test_keys_step_and_heatmaps_show_torch_numpy_and_difference(app_url, page):
    steps = step_source("preset:mnist-cnn")
    page.goto(f"{app_url}/Backward")
    page.wait_for_selector(f'.gradviz-current[data-node="{steps[0].node.id}"]')
    page.get_by_role("heading", name="Step through backward").click()  # focus off the inputs
    page.keyboard.press("ArrowRight")
    page.wait_for_selector(f'.gradviz-current[data-node="{steps[1].node.id}"]')
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector(f'.gradviz-current[data-node="{steps[0].node.id}"]')
    for i in (1, 2):
        page.keyboard.press("ArrowRight")
        page.wait_for_selector(f'.gradviz-current[data-node="{steps[i].node.id}"]')
    page.wait_for_selector(f'.gradviz-current[data-node="{steps[2].node.id}"]')
    step = steps[2]  # fc2's AddmmBackward0: grad_input 1 is the 8×50 input gradient
    torch_grad, numpy_grad = step.grad_inputs[1], step.reference[1]
    cells = _cells(page, "bw_e_2_1_t")
    # The three heatmaps render one after another: wait for each (CI once read NumPy's at 0).
    for key in ("bw_e_2_1_t", "bw_e_2_1_n", "bw_e_2_1_d"):
        expect(_cells(page, key)).to_have_count(torch_grad.size)
    # Size: one 4-px cell per entry, 50 wide and 8 high.
    box = page.locator(".st-key-bw_e_2_1_t g.mark-rect").first.bounding_box()
    assert (round(box["width"]), round(box["height"])) == (50 * 4, 8 * 4)
    # Every cell carries its exact value, row by row: the numbers are torch's own.
    assert _exact_values(page, "bw_e_2_1_t") == torch_grad.reshape(-1).tolist()
    assert _exact_values(page, "bw_e_2_1_d") == (torch_grad - numpy_grad).reshape(-1).tolist()
    # Colour: diverging and centred on 0, one scale for torch and NumPy.
    fills = [_rgb(f) for f in _attrs(page, "bw_e_2_1_t", "fill")]
    flat = torch_grad.reshape(-1)
    top, bottom = int(np.argmax(flat)), int(np.argmin(flat))
    assert fills[top][0] > fills[top][2] and fills[bottom][2] > fills[bottom][0]
    # The largest |entry| gets the darkest colour: the scale's end is the largest magnitude.
    extreme = int(np.argmax(np.abs(flat)))
    assert sum(fills[extreme]) == min(sum(f) for f in fills)
    quiet = int(np.argmin(np.abs(flat)))
    assert np.abs(flat[quiet]) < 0.05 * np.abs(flat).max() and min(fills[quiet]) > 220
    numpy_fills = _attrs(page, "bw_e_2_1_n", "fill")
    assert [_rgb(f) for f in numpy_fills] == fills
    # Hover shows the exact value.
    cells.nth(top).hover()
    expect(page.locator("#vg-tooltip-element")).to_contain_text(repr(float(flat[top])))
    # Full precision on demand: never a number cut to 0.000000.
    # grad_input 0 (the bias) has the first such expander, grad_input 1 the second.
    values = page.get_by_test_id("stExpander").filter(
        has=page.get_by_text("Full-precision values", exact=True)).nth(1)
    values.get_by_text("Full-precision values", exact=True).click()
    values.locator("[data-testid=stTable] td").first.wait_for()  # built when opened
    texts = values.locator("[data-testid=stTable] td").all_inner_texts()
    numbers = [t for t in texts if re.fullmatch(r"-?[\d.]+(e-?\d+)?", t)]
    assert numbers and not any(re.fullmatch(r"-?0\.0{4,}", t) for t in numbers)
    worst = float(np.abs(torch_grad - numpy_grad).max())
    assert repr(worst) in texts
    # The formula, and this step's numbers for the 10-entry bias gradient.
    expect(page.get_by_text("With this step's numbers")).to_be_visible()
    page.locator(".katex-display .mtable").first.wait_for()  # a matrix of numbers
    # A long row scrolls rather than being cut at the column's edge.
    assert page.eval_on_selector_all(
        ".katex-display", "es => es.every(e => getComputedStyle(e).overflowX === 'auto')")


@pytest.mark.browser
def test_mini_map_shows_every_step_and_a_click_jumps_there(app_url, page):
    steps = step_source("preset:mnist-cnn")
    page.goto(f"{app_url}/Backward")
    page.wait_for_selector(".gradviz-current")
    strip = _cells(page, "bw_minimap")
    expect(strip).to_have_count(len(steps))
    labels = _attrs(page, "bw_minimap", "aria-label")
    assert ": current;" in labels[0] and all(": upcoming;" in label for label in labels[1:])
    strip.nth(6).click()
    page.wait_for_selector(f'.gradviz-current[data-node="{steps[6].node.id}"]')
    deadline = time.monotonic() + 10  # the strip is redrawn after the step's own view
    while ": current;" not in (labels := _attrs(page, "bw_minimap", "aria-label"))[6]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ": current;" in labels[6]
    assert not any(": upcoming;" in label or ": current;" in label for label in labels[:6])


@pytest.mark.browser
def test_slices_of_a_rank_4_gradient(app_url, page):
    steps = step_source("preset:mnist-cnn")
    conv = steps.find(label="Convolution")
    page.goto(f"{app_url}/Backward")
    page.wait_for_selector(".gradviz-current")
    page.get_by_label("Breakpoint: op or module").fill("Convolution")
    page.get_by_role("button", name="Run to").click()
    page.wait_for_selector(f'.gradviz-current[data-node="{steps[conv].node.id}"]')
    weight = steps[conv].grad_inputs[1]  # 20×10×5×5
    key = f"bw_e_{conv}_1"
    _cells(page, f"{key}_t").first.wait_for()
    assert _exact_values(page, f"{key}_t") == weight[0, 0].reshape(-1).tolist()
    box = page.locator(f".st-key-{key}_ax0 input")
    box.fill("3")
    box.press("Enter")
    j = int(np.argmax(weight[3, 0].reshape(-1) != weight[0, 0].reshape(-1)))
    expect(_cells(page, f"{key}_t").nth(j)).to_have_attribute(
        "aria-label", re.compile(re.escape(f"value: {float(weight[3, 0].reshape(-1)[j])!r}")))
    assert _exact_values(page, f"{key}_t") == weight[3, 0].reshape(-1).tolist()


@pytest.mark.browser
def test_navigation_is_named_for_users_and_has_no_deploy_button(app_url, page, screenshot):
    page.goto(f"{app_url}/Backward")  # a deep link first: the names must hold there too
    nav = page.locator("[data-testid=stSidebarNav] a")
    # The first run of a deep link goes through Streamlit's pages/ folder navigation and is
    # handed back to streamlit_app.py (app.keep_navigation): the user names must win, and
    # the page asked for must stay the one shown.
    expect(nav).to_have_count(5, timeout=120_000)  # after the page's first import of gradviz
    expect(nav.first).to_contain_text("Home")
    names = [t.split("\n")[-1] for t in nav.all_inner_texts()]
    assert names == ["Home", "Graph", "Build & Train", "Backward", "Function Lab"]
    expect(page.get_by_role("heading", name="Step through backward")).to_be_visible()
    assert page.url.endswith("/Backward")
    page.goto(app_url)
    page.get_by_text("Try first").first.wait_for()
    expect(page.locator("[data-testid=stAppDeployButton]")).to_have_count(0)
    expect(page.get_by_role("button", name="Deploy")).to_have_count(0)
    names = [t.split("\n")[-1] for t in nav.all_inner_texts()]
    assert "streamlit app" not in names and names[0] == "Home"
    screenshot(page, "home")


def _node(page, node_id: str):
    return page.locator(".gv-root g.node", has=page.locator(f'title:text-is("{node_id}")'))


def _in_view(page, node_id: str) -> bool:
    """Whether the node's centre is inside the graph's visible viewport."""
    deadline = time.monotonic() + 10
    while (node := _node(page, node_id).bounding_box()) is None:  # the SVG is being replaced
        assert time.monotonic() < deadline, f"node {node_id} never came back into the page"
        time.sleep(0.05)
    port = page.locator(".gv-viewport").bounding_box()
    x, y = node["x"] + node["width"] / 2, node["y"] + node["height"] / 2
    return (
        port["x"] <= x <= port["x"] + port["width"] and port["y"] <= y <= port["y"] + port["height"]
    )


def test_backward_page_starts_from_the_model_built_on_the_build_page():
    from gradviz import train
    from gradviz.app import MODEL_KEY

    result = train("quadrant-sgd", steps=50)
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state[MODEL_KEY] = {"source": "preset:quadrant-sgd", "model": result.model,
                                   "preset": "quadrant-sgd"}
    at.run()
    built = next(
        o
        for o in at.sidebar.selectbox(key="bw_source").options
        if o.startswith("Built on Build & Train")
    )
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


@pytest.mark.browser
def test_play_reaches_the_last_step_and_the_downloads_open(app_url, page, screenshot, tmp_path):
    from PIL import Image

    steps = step_source("preset:mnist-cnn")
    thrown, console = [], []
    page.on("pageerror", lambda exc: thrown.append(str(exc)))
    page.on("console", lambda msg: console.append((msg.text, msg.location.get("url", "")))
            if msg.type == "error" else None)
    page.goto(f"{app_url}/Backward")
    page.wait_for_selector(".gradviz-current")
    page.get_by_text("▶ Play backward as an animation").click()
    player = page.frame_locator("[data-testid=stIFrame]")
    body = player.locator("body")
    expect(body).to_have_attribute("data-frames", str(len(steps)))
    expect(body).to_have_attribute("data-node", steps[0].node.id)
    player.locator(".gp-speed").select_option("8")
    player.get_by_role("button", name="▶ Play").click()
    expect(body).to_have_attribute("data-playing", "true")
    # It plays by itself to the last step, then stops there.
    expect(body).to_have_attribute("data-frame", str(len(steps) - 1), timeout=60_000)
    expect(body).to_have_attribute("data-playing", "false")
    expect(body).to_have_attribute("data-node", steps[-1].node.id)
    expect(player.locator(".gp-count")).to_have_text(f"{len(steps)} / {len(steps)}")
    player.locator(".gp-stage svg g.node").nth(len(steps) - 1).wait_for(state="attached")
    # The page's own step did not move: the player is a view of the same run.
    assert page.locator(".gradviz-current").get_attribute("data-node") == steps[0].node.id
    page.locator("[data-testid=stIFrame]").scroll_into_view_if_needed()
    page.mouse.move(5, 995)
    screenshot(page, "backward-play")
    with page.expect_download() as got:
        page.get_by_role("button", name="⬇ Animation (GIF)").click()
    gif = Image.open(got.value.path())
    assert got.value.suggested_filename == "backward-mnist-cnn-seed0.gif"
    assert gif.format == "GIF" and gif.n_frames == len(steps)
    with page.expect_download() as got:
        page.get_by_role("button", name="⬇ Animation (HTML player)").click()
    html = pathlib.Path(got.value.path()).read_text(encoding="utf-8")
    assert got.value.suggested_filename.endswith(".html")
    assert html.count('"caption":') == len(steps)
    # Streamlit itself probes /Backward/_stcore/... on a deep link and asks Google Fonts for
    # an icon (offline here): the host's noise. The player (about:srcdoc) must add nothing.
    host = (f"{app_url}/", "https://fonts.gstatic.com/")
    assert thrown == [] and [m for m in console if not m[1].startswith(host)] == []

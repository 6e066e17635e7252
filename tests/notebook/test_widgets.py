"""The notebook widgets' Python side: what the kernel sends the graph component and how it
reacts to clicks, searches and messages from the front end (no browser here)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradviz
from gradviz.errors import ArgumentError, GradvizError
from gradviz.notebook import NotebookMissing
from gradviz.notebook.step_widget import SPEEDS, StepWidget
from gradviz.notebook.widget import GraphView, GraphWidget
from gradviz.zoo.examples import MnistNet
from gradviz.zoo.sources import build_source, step_source


def _titles(svg: str) -> set[str]:
    return set(re.findall(r'class="node">\s*<title>([^<]*)</title>', svg))


@pytest.fixture(scope="module")
def two_layer():
    return build_source("preset:two-layer-nn", float64=True)


@pytest.fixture(scope="module")
def two_layer_widget(two_layer):
    model, loss = two_layer
    return gradviz.widget(loss, model=model)


def test_the_widget_uses_the_apps_one_graph_asset():
    folder = importlib.resources.files("gradviz") / "assets" / "graph_view"
    assert GraphView._esm == (folder / "graph_view.js").read_text(encoding="utf-8")
    assert GraphView._css == (folder / "graph_view.css").read_text(encoding="utf-8")
    html = (folder / "graph_view.html").read_text(encoding="utf-8")
    assert GraphView().get_state()["_html"] == html
    # One default export serves both hosts: Streamlit passes the component, anywidget nothing.
    assert "if (component === undefined) return { render: renderWidget };" in GraphView._esm


def test_widget_opens_and_closes_modules_from_python_and_from_clicks(two_layer):
    model, loss = two_layer
    w = gradviz.widget(loss, model=model, depth=1)
    assert isinstance(w, GraphWidget)
    assert {"mod/0", "mod/2"} <= _titles(w.svg) and "n2" not in _titles(w.svg)
    w.selected = "mod/2"  # what a click on the closed module sends
    assert "n2" in _titles(w.svg) and "mod/2" not in _titles(w.svg)
    assert w.crumbs == ["overview", "2"]
    w._on_message(w, {"event": "cluster", "value": "2"}, [])  # a click on the open module's frame
    assert "mod/2" in _titles(w.svg)
    w.expand("0", "2")
    assert {"n2", "n6"} <= _titles(w.svg)
    w.back()
    assert "n2" not in _titles(w.svg) and "n6" in _titles(w.svg)
    w._on_message(w, {"event": "back", "value": 0}, [])
    assert w.state.trail == () and "mod/0" in _titles(w.svg)
    w.reset().collapse("0")
    assert "mod/0" in _titles(w.svg)


def test_hover_details_name_shape_dtype_saved_tensors_and_parameter(two_layer):
    model, loss = two_layer
    w = gradviz.widget(loss, model=model)
    assert set(w.details) == _titles(w.svg) - {t for t in _titles(w.svg) if t.startswith("legend_")}
    bias = dict(map(tuple, w.details["n3"]["rows"]))
    assert bias["parameter"] == "2.bias" and bias["shape"] == "10" and bias["dtype"] == "float64"
    addmm = dict(map(tuple, w.details["n2"]["rows"]))
    assert addmm["shape"] == "8×10" and any(k.startswith("saved ") for k in addmm)
    w.selected = "n2"
    assert w.info()["label"] == "AddmmBackward0"


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["addmm", "TBackward", "2.bias", "relu", "n4", "nothing-like-this", ""]))
def test_search_highlights_exactly_the_drawn_matches(two_layer_widget, query):
    w = two_layer_widget
    found = w.search(query)
    assert found == gradviz.explorer.search(w.graph, query)
    assert set(w.highlight) == set(found)  # everything is drawn open here
    assert (w.focus is None) == (not found)
    assert ("nodes match" in w.found) == bool(query.strip())


def test_widget_accepts_a_model_with_inputs_and_rejects_the_rest():
    model = MnistNet()
    w = gradviz.widget(model, inputs=torch.randn(2, 1, 28, 28))
    assert any(r == ["parameter", "conv1.weight"] for d in w.details.values() for r in d["rows"])
    with pytest.raises(ArgumentError, match="inputs"):
        gradviz.widget(model)
    with pytest.raises(ArgumentError, match="output_or_model"):
        gradviz.widget("a string")
    with pytest.raises(ArgumentError, match="height"):
        gradviz.widget(w.graph, height=5)
    with pytest.raises(GradvizError):
        gradviz.widget(torch.ones(3))  # nothing to trace


def test_step_widget_steps_jumps_and_follows_clicks():
    stepper = step_source("preset:two-layer-nn")
    sw = gradviz.step_widget(stepper, speed="4×")
    assert isinstance(sw, StepWidget) and sw.play.interval == SPEEDS["4×"]
    assert sw.graph_view.selected == stepper[0].node.id and sw.back_button.disabled
    sw.step_button.click()
    assert sw.position == 1 and sw.graph_view.selected == stepper[1].node.id
    assert f'data-node="{stepper[1].node.id}"' in sw.panel.value and "$$" in sw.panel.value
    assert "max |torch − NumPy|" in sw.panel.value
    sw.back_button.click()
    assert sw.position == 0
    sw.graph_view.selected = stepper[-1].node.id  # a click on a node in the graph
    assert sw.position == len(stepper) - 1 and sw.step_button.disabled
    sw.slider.value = 3  # the Play button moves the slider in the browser (jslink)
    assert sw.position == 2 and sw.current is stepper[2]
    sw.speed.value = "0.5×"
    assert sw.play.interval == SPEEDS["0.5×"]
    sw.target.value = "TBackward0"
    assert sw.current.node.label == "TBackward0"
    sw.target.value = "NoSuchOp"
    assert "no step runs" in sw.message.value and sw.current.node.label == "TBackward0"
    with pytest.raises(ArgumentError, match="target"):
        sw.jump(99)
    with pytest.raises(ArgumentError, match="speed"):
        gradviz.step_widget(stepper, speed="3×")


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=12))
def test_stepping_stays_inside_the_run_and_the_view_follows(moves):
    stepper = step_source("preset:single-neuron")
    sw = gradviz.step_widget(stepper)
    expected = 0
    for m in moves:
        sw.step(m)
        expected = min(len(stepper) - 1, max(0, expected + m))
        assert sw.position == expected
        assert sw.graph_view.selected == stepper[expected].node.id
        assert sw.slider.value == expected + 1


def test_gradviz_imports_without_anywidget_and_says_what_to_install():
    code = (
        "import sys; sys.modules['anywidget'] = None\n"  # as if it were not installed
        "import gradviz, torch\n"
        "try:\n    gradviz.widget(torch.ones(2, requires_grad=True).sum())\n"
        "except gradviz.GradvizError as e:\n    print(type(e).__name__, e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = proc.stdout
    assert out.startswith("NotebookMissing") and "pip install gradviz-explorer[notebook]" in out
    assert issubclass(NotebookMissing, GradvizError)

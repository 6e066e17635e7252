"""Drawing, the budgeted default view, export formats, golden DOT files and the CLI."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import gradviz
from gradviz import GradvizError, Graph, capture, plan_view, render, trace, trace_example
from gradviz.cli.main import main as cli_main
from gradviz.draw.dot import DEFAULT_BUDGET

GOLDEN = pathlib.Path(__file__).parent / "golden"
SMALL_EXAMPLES = ("two-layer-relu", "mnist-cnn", "transformer-2")


def _svg_titles(svg: str) -> list[str]:
    return re.findall(r'<g id="node\d+" class="node">\s*<title>([^<]*)</title>', svg)


def test_exported_names_are_exact():
    assert sorted(gradviz.__all__) == gradviz.__all__
    for name in gradviz.__all__:
        assert hasattr(gradviz, name), name


@pytest.mark.parametrize("name", SMALL_EXAMPLES)
def test_golden_dot(name):
    dot = trace_example(name).to_dot(show_saved=True).source
    path = GOLDEN / f"{name}.dot"
    if os.environ.get("GRADVIZ_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(dot)
    assert dot == path.read_text(), (
        f"DOT of {name} changed; rerun with GRADVIZ_UPDATE_GOLDEN=1 if intended"
    )


def test_styles_legend_and_clusters():
    graph = trace_example("mnist-cnn")
    source = graph.to_dot().source
    assert "cluster_conv1" in source and "conv1: Conv2d" in source
    assert "cluster_legend" in source
    for colour in ("#eeeeee", "#a5d8ff", "#b2f2bb"):
        assert colour in source
    plain = graph.to_dot(cluster=False, legend=False).source
    assert "subgraph" not in plain


def test_saved_and_attrs_shown_on_request():
    graph = trace_example("mnist-cnn")
    assert "weight: 10×1×5×5 float32" not in graph.to_dot().source
    assert "weight: 10×1×5×5 float32" in graph.to_dot(show_saved=True).source
    assert "stride=" in graph.to_dot(show_attrs=True).source


def test_depth_collapses_modules_into_one_node():
    graph = trace_example("transformer-2")
    view = plan_view(graph, depth=2)
    modules = [i for i in view.items if i.kind == "module"]
    assert sorted(i.id for i in modules) == ["mod/layers.0", "mod/layers.1"]
    assert all(i.title == "TransformerEncoderLayer" for i in modules)
    inside = {m for i in modules for m in i.members}
    assert all(graph.node(m).module.startswith("layers.") for m in inside)
    source = graph.to_dot(depth=2).source
    assert "TransformerEncoderLayer" in source and "ops · " in source


def test_highlight_annotations_and_colours():
    graph = trace_example("two-layer-relu")
    relu = next(n for n in graph.nodes if n.label == "ReluBackward0")
    source = graph.to_dot(
        highlight=[relu.id], annotations={relu.id: "|g|=1.5"}, colors={relu.id: "#123456"}
    ).source
    line = next(line for line in source.splitlines() if line.strip().startswith(f"{relu.id} "))
    assert "penwidth=3" in line and "|g|=1.5" in line and "#123456" in line


def test_default_view_of_big_graphs_stays_within_budget_and_says_so():
    graph = trace_example("chain-25k")
    assert len(graph) > 25_000
    view = plan_view(graph)
    assert len(view.items) <= DEFAULT_BUDGET
    assert any("folded" in note for note in view.notes)
    # Every graph node is drawn by exactly one item.
    assert set(view.item_of) == {n.id for n in graph.nodes}
    drawn = {m for i in view.items for m in i.members}
    assert drawn == {n.id for n in graph.nodes}
    source = graph.to_dot().source
    assert "nodes folded" in source and "budget=None" in source


def test_budget_none_draws_everything():
    graph = trace_example("transformer-2")
    view = plan_view(graph, budget=None)
    assert len(view.items) == len(graph.nodes)
    assert not view.notes


@settings(max_examples=30, deadline=None)
@given(
    layers=st.integers(1, 120),
    budget=st.integers(10, 200),
    branch=st.booleans(),
)
def test_budget_property_every_node_drawn_once(layers, budget, branch):
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(layers)])
    x = torch.randn(1, 2, requires_grad=True)
    with capture(model):
        out = model(x)
    outs = (out.sum(), (out * x).mean()) if branch else (out.sum(),)
    graph = trace(*outs, model=model)
    view = plan_view(graph, budget=budget)
    assert len(view.items) <= budget
    members = [m for i in view.items for m in i.members]
    assert sorted(members) == sorted(n.id for n in graph.nodes)
    ids = {i.id for i in view.items}
    for a, b, count in view.edges:
        assert a in ids and b in ids and a != b and count >= 1


# A nested stack: each entry is a layer name or a list (a Sequential inside).
_nested = st.recursive(
    st.sampled_from(["linear", "relu", "tanh"]),
    lambda inner: st.lists(inner, min_size=1, max_size=4),
    max_leaves=12,
)


def _build(spec) -> nn.Module:
    if isinstance(spec, list):
        return nn.Sequential(*[_build(s) for s in spec])
    return {"linear": lambda: nn.Linear(3, 3), "relu": nn.ReLU, "tanh": nn.Tanh}[spec]()


@settings(max_examples=40, deadline=None)
@given(spec=st.lists(_nested, min_size=1, max_size=5), captured=st.booleans())
def test_item_counts_equal_the_collapses_they_stand_for(spec, captured):
    from gradviz.draw.plan import _collapse, _item_counts

    torch.manual_seed(0)
    model = _build(spec)
    x = torch.randn(2, 3, requires_grad=True)
    if captured:
        with capture(model):
            out = model(x)
    else:
        out = model(x)  # params carry modules, ops none: param-only boxes
    graph = trace(out.sum(), model=model)
    counts = _item_counts(graph)
    deepest = max((n.module.count(".") + 1 for n in graph.nodes if n.module), default=0)
    assert sorted(counts) == list(range(1, deepest + 1))
    for d, count in counts.items():
        assert count == len(_collapse(graph, d)[1])


def test_bad_drawing_arguments():
    graph = trace_example("two-layer-relu")
    with pytest.raises(GradvizError, match="depth"):
        graph.to_dot(depth=0)
    with pytest.raises(GradvizError, match="budget"):
        graph.to_dot(budget=3)
    with pytest.raises(GradvizError, match="rankdir"):
        graph.to_dot(rankdir="up")
    with pytest.raises(GradvizError, match="did you mean 'mnist-cnn'"):
        trace_example("mnist-cn")


def test_from_json_rejects_bad_input():
    with pytest.raises(GradvizError, match="to_json"):
        Graph.from_json({"nodes": []})
    data = trace_example("two-layer-relu").to_json()
    data["edges"].append(["n0", "n999"])
    with pytest.raises(GradvizError, match="edges"):
        Graph.from_json(data)


def test_render_all_formats(tmp_path):
    graph = trace_example("mnist-cnn")
    svg = render(graph, tmp_path / "g.svg").read_text()
    titles = _svg_titles(svg)
    ops_and_params = [t for t in titles if re.fullmatch(r"n\d+", t)]
    assert len(ops_and_params) == len(graph.nodes)
    assert render(graph, tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert render(graph, tmp_path / "g.dot").read_text() == graph.to_dot().source
    assert Graph.from_json(json.loads(render(graph, tmp_path / "g.json").read_text())) == graph
    assert render(graph, tmp_path / "noext", format="svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(GradvizError, match="format"):
        render(graph, tmp_path / "g.pdfx")
    with pytest.raises(GradvizError, match="graph_or_tensor"):
        render("graph", tmp_path / "g.svg")
    x = torch.randn(3, requires_grad=True)
    assert "MulBackward0" in render((x * 2).sum(), tmp_path / "t.dot").read_text()


def test_cli_render_example_and_user_file(tmp_path, capsys):
    out = tmp_path / "m.svg"
    assert cli_main(["render", "mnist-cnn", "-o", str(out), "--saved"]) == 0
    assert "ConvolutionBackward0" in out.read_text()
    program = tmp_path / "net.py"
    program.write_text(
        "import torch\nfrom torch import nn\n"
        "model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))\n"
        "def main():\n    return model(torch.randn(2, 3)).sum()\n"
    )
    dot = tmp_path / "net.dot"
    assert cli_main(["render", str(program), "-o", str(dot)]) == 0
    text = dot.read_text()
    assert "0.weight" in text and "cluster_0" in text
    assert cli_main(["render", f"{program}:missing", "-o", str(dot)]) == 2
    assert "missing" in capsys.readouterr().err
    assert cli_main(["render", str(tmp_path / "nope.py"), "-o", str(dot)]) == 2
    preset = tmp_path / "q.dot"
    assert cli_main(["render", "quadrant-sgd", "-o", str(preset)]) == 0
    assert "SigmoidBackward0" in preset.read_text()


def test_cli_as_a_subprocess(tmp_path):
    out = tmp_path / "g.json"
    proc = subprocess.run(
        [sys.executable, "-m", "gradviz.cli.main", "render", "two-layer-relu", "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["format"] == "gradviz.graph"
    listing = subprocess.run([sys.executable, "-m", "gradviz.cli.main", "examples"],
                             capture_output=True, text=True, timeout=300)
    assert "mnist-cnn" in listing.stdout


def test_render_views_rolled_and_forward(tmp_path):
    graph = trace_example("transformer-12")
    rolled = render(graph, tmp_path / "r.svg", view="rolled").read_text()
    assert "TransformerEncoderLayer × 12" in rolled
    assert len(_svg_titles(rolled)) < 20  # a slide, not 912 nodes
    assert "click a closed" not in rolled  # the app's hint has no place in a file
    fwd = json.loads(render(graph, tmp_path / "f.json", view="forward").read_text())
    labels = {n["label"] for n in fwd["nodes"]}
    assert "linear1: Linear" in labels and len(fwd["nodes"]) < len(graph)
    forward_dot = render(graph, tmp_path / "f.dot", view="forward", rankdir="LR").read_text()
    assert "rankdir=LR" in forward_dot and "linear1: Linear" in forward_dot
    with pytest.raises(GradvizError, match="view="):
        render(graph, tmp_path / "x.svg", view="side")
    with pytest.raises(GradvizError, match="JSON holds the whole graph"):
        render(graph, tmp_path / "x.json", view="rolled")


def test_cli_render_views(tmp_path, capsys):
    out = tmp_path / "t.dot"
    assert cli_main(["render", "transformer-12", "-o", str(out), "--view", "rolled"]) == 0
    assert "TransformerEncoderLayer × 12" in out.read_text()
    assert (
        cli_main(["render", "mnist-cnn", "-o", str(tmp_path / "f.json"), "--view", "forward"]) == 0
    )
    assert (
        cli_main(["render", "mnist-cnn", "-o", str(tmp_path / "f.json"), "--view", "rolled"]) == 2
    )
    assert "view='rolled'" in capsys.readouterr().err

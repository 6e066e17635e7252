"""Backward animation: frames from the stepper, the HTML player file, the GIF, the CLI."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from gradviz import BackwardStepper, capture
from gradviz.backward.animate import (
    EDGE_IDLE,
    AnimationError,
    edge_style,
    frames,
    player_html,
    write_gif,
)
from gradviz.cli.animate import animate_command
from gradviz.errors import ArgumentError
from gradviz.zoo.sources import step_source

ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU)


def _mlp_stepper(widths: list[int], acts: list[int], batch: int, seed: int) -> BackwardStepper:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(ACTIVATIONS[acts[i % len(acts)]]())
    model = nn.Sequential(*layers).double()
    with capture(model):
        loss = model(torch.randn(batch, widths[0], dtype=torch.float64)).pow(2).mean()
    return BackwardStepper(loss, model=model)


mlps = st.builds(
    _mlp_stepper,
    st.lists(st.integers(1, 5), min_size=2, max_size=5),
    st.lists(st.integers(0, len(ACTIVATIONS) - 1), min_size=1, max_size=4),
    st.integers(1, 4),
    st.integers(0, 2**16),
)


def _edge_lines(dot: str) -> dict[tuple[str, str], str]:
    return {(m[1], m[2]): m[3] for m in re.finditer(r"^\s*(\w+) -> (\w+) \[(.*)\]$", dot, re.M)}


@settings(max_examples=25)
@given(mlps)
def test_one_frame_per_step_with_the_gradients_each_edge_carried(stepper):
    got = frames(stepper)
    assert len(got) == len(stepper)
    edges = set(stepper.graph.edges)
    carried_before: set = set()
    for frame, step in zip(got, stepper, strict=True):
        assert frame.index == step.index and frame.node_id == step.node.id
        assert set(frame.norms) <= edges
        assert all(v >= 0 and np.isfinite(v) for v in frame.norms.values())
        assert carried_before <= set(frame.norms)  # gradients only ever arrive
        carried_before = set(frame.norms)
        for nid, g in zip(step.next_ids, step.grad_inputs, strict=False):
            if nid is not None and g is not None:
                assert frame.norms[(nid, step.node.id)] == pytest.approx(float(np.linalg.norm(g)))
        assert all(step.node.id in e for e in frame.current)
        lines = _edge_lines(frame.dot)
        assert set(lines) == edges  # every edge is drawn, styled or idle
        for edge, attrs in lines.items():
            assert (EDGE_IDLE in attrs) == (edge not in frame.norms)
            assert ('class="gv-flow"' in attrs) == (edge in frame.current)
        node_line = next(ln for ln in frame.dot.splitlines()
                         if ln.strip().startswith(f"{step.node.id} ["))
        assert "penwidth=3" in node_line and "#ffec99" in node_line  # outlined, current colour
    # Every parameter requires grad, so by the end every edge has carried a gradient.
    assert carried_before == edges


@given(st.floats(1e-12, 1e12), st.floats(1e-12, 1e12), st.floats(1e-6, 1e6), st.floats(1.0, 1e6))
def test_edge_width_and_colour_grow_with_the_norm(a, b, low, span):
    high = low * span
    small, large = sorted((a, b))
    thin, wide = edge_style(small, low, high), edge_style(large, low, high)
    assert 1.0 <= float(thin["penwidth"]) <= float(wide["penwidth"]) <= 6.0
    # Darker red (less green) for larger gradients.
    assert int(thin["color"][3:5], 16) >= int(wide["color"][3:5], 16)
    assert edge_style(0.0, low, high)["penwidth"] == "1.20"


def test_html_player_is_self_contained_and_holds_every_frame():
    stepper = step_source("preset:two-layer-nn")
    page = player_html(stepper, title="two <layer>")
    assert page.count("<svg") == len(stepper)
    assert "<title>two &lt;layer&gt;</title>" in page
    # Nothing is fetched: no external script, stylesheet or image.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<script src" not in page and "<link" not in page
    assert "/*DATA*/" not in page and "/*JS*/" not in page


def test_gif_has_one_frame_per_step_and_opens_with_pillow(tmp_path):
    stepper = step_source("preset:two-layer-sigmoid")
    path = stepper.animate(tmp_path / "backward.gif")
    with Image.open(path) as im:
        assert im.format == "GIF"
        assert im.n_frames == len(stepper)
        sizes = set()
        for k in range(im.n_frames):
            im.seek(k)
            sizes.add(im.size)
        assert len(sizes) == 1
    assert path.stat().st_size < 1_000_000


def test_bad_arguments_name_the_fix(tmp_path):
    stepper = step_source("preset:single-neuron")
    with pytest.raises(ArgumentError, match="format"):
        stepper.animate(tmp_path / "x.png")
    with pytest.raises(ArgumentError, match="folder"):
        stepper.animate(tmp_path / "missing" / "x.gif")
    with pytest.raises(ArgumentError, match="stepper"):
        frames("not a stepper")
    with pytest.raises(AnimationError, match="max_frames=3"):
        frames(stepper, max_frames=3)
    with pytest.raises(ArgumentError, match="dpi"):
        write_gif(stepper, tmp_path / "x.gif", dpi=1)


def test_cli_writes_both_formats_and_rejects_unknown_programs(tmp_path, capsys):
    out = tmp_path / "b.html"
    assert animate_command(["single-neuron", "--out", str(out)]) == 0
    assert out.read_text().count("<svg") == len(step_source("preset:single-neuron"))
    assert "frames, one per backward step" in capsys.readouterr().out
    gif = tmp_path / "b.gif"
    assert animate_command(["preset:single-neuron", "-o", str(gif), "--duration", "100"]) == 0
    with Image.open(gif) as im:
        assert im.n_frames == len(step_source("preset:single-neuron"))
    assert animate_command(["no-such-program", "--out", str(out)]) == 2
    assert "gradviz animate: error" in capsys.readouterr().err
    assert animate_command(["single-neuron"]) == 2  # --out is required


def test_cli_steps_a_users_file(tmp_path):
    script = tmp_path / "net.py"
    script.write_text(
        "import torch\nfrom torch import nn\nmodel = nn.Linear(3, 2)\n"
        "def main():\n    return model(torch.ones(4, 3)).tanh()\n"  # not a scalar: steps from ones
    )
    out = tmp_path / "net.gif"
    assert animate_command([f"{script}:main", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.n_frames >= 3

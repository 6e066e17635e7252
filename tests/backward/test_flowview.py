"""The mini-map of a backward and the edges weighted by the gradient they carried."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradviz.backward.flowview import (
    FLOW_COLOR,
    IDLE_COLOR,
    MAX_WIDTH,
    MIN_WIDTH,
    edge_flows,
    minimap_rows,
    minimap_spec,
    step_status,
    weigh_edges,
)
from gradviz.backward.stepper import PROGRESS_COLORS, BackwardStepper
from gradviz.draw.export import layout
from gradviz.errors import GradvizError


def _mlp(seed: int, width: int) -> BackwardStepper:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.Tanh(),
                                torch.nn.Linear(width, 2)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    return BackwardStepper(model(x).pow(2).mean(), model=model)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 50), width=st.integers(1, 6), data=st.data())
def test_minimap_marks_done_current_and_upcoming_like_the_graph_colours(seed, width, data):
    stepper = _mlp(seed, width)
    pos = data.draw(st.integers(0, len(stepper) - 1))
    rows = minimap_rows(stepper, pos)
    assert [r["step"] for r in rows] == list(range(1, len(stepper) + 1))
    assert [r["state"] for r in rows].count("current") == 1 and rows[pos]["state"] == "current"
    colours = stepper.colors_at(pos)
    for s, row in zip(stepper, rows, strict=True):
        if s.index > pos:
            assert row["state"] == "upcoming"
        # The strip and the graph agree on every node's colour.
        assert PROGRESS_COLORS[row["state"]] == colours[s.node.id]
        assert row["check"] == step_status(s)
    spec = minimap_spec(stepper, pos)
    assert spec["data"]["values"] == rows
    assert spec["encoding"]["color"]["scale"]["range"] == list(PROGRESS_COLORS.values())


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 50), width=st.integers(1, 6))
def test_edge_flows_grow_with_the_position_and_are_the_sent_norms(seed, width):
    stepper = _mlp(seed, width)
    before: dict = {}
    for s in stepper:
        flows = edge_flows(stepper, s.index)
        assert set(before) <= set(flows)
        for nxt, g in zip(s.next_ids, s.grad_inputs, strict=False):
            if nxt is not None and g is not None:
                assert flows[(nxt, s.node.id)] == pytest.approx(float(np.linalg.norm(g)))
        before = flows


def test_weighed_edges_are_wider_for_larger_norms_and_the_dot_still_lays_out():
    stepper = _mlp(0, 4)
    pos = len(stepper) // 2
    dot = stepper.graph.to_dot(colors=stepper.colors_at(pos), legend=False).source
    weighed = weigh_edges(dot, stepper, pos)
    flows = edge_flows(stepper, pos)
    widths = {}
    for src, dst, attrs in re.findall(r"(\w+) -> (\w+) \[(.*)\]", weighed):
        if (src, dst) in flows:
            assert f'color="{FLOW_COLOR}"' in attrs
            widths[(src, dst)] = float(re.search(r"penwidth=([\d.]+)", attrs).group(1))
            assert MIN_WIDTH <= widths[(src, dst)] <= MAX_WIDTH
        else:
            assert f'color="{IDLE_COLOR}"' in attrs and "penwidth" not in attrs
    assert set(widths) == {k for k in flows if f"{k[0]} -> {k[1]}" in dot}
    by_norm = sorted(widths, key=flows.get)
    assert [widths[k] for k in by_norm] == sorted(widths[k] for k in by_norm)
    # Only edge lines change.
    assert [ln for ln in dot.split("\n") if "->" not in ln] == \
           [ln for ln in weighed.split("\n") if "->" not in ln]
    assert b"<svg" in layout(weighed, "svg")


def test_positions_outside_the_backward_are_refused():
    stepper = _mlp(0, 2)
    for bad in (-1, len(stepper)):
        with pytest.raises(GradvizError, match="step index"):
            minimap_rows(stepper, bad)
        with pytest.raises(GradvizError, match="step index"):
            edge_flows(stepper, bad)

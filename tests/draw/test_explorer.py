"""The explorer's logic: search, inspect, open/close modules, roll repeated blocks, the
forward view and its link to autograd nodes, diffs between runs, and the packaged assets."""

from __future__ import annotations

import importlib.resources
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradviz import ArgumentError, BackwardStepper, capture, to_dot, trace, trace_example
from gradviz import explorer as ex


# -- small programs -----------------------------------------------------------------------
class Block(nn.Module):
    """4 → hidden → 4: blocks with the same hidden width are the same architecture."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.up = nn.Linear(4, hidden)
        self.act = nn.Tanh()
        self.down = nn.Linear(hidden, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


def stack_graph(widths: list[int]):
    torch.manual_seed(0)
    model = nn.Sequential(*[Block(w) for w in widths])
    with capture(model):
        loss = model(torch.randn(2, 4)).sum()
    return ex.trace_with_stats(loss, model=model)[0]


class TinyDynamicNet(nn.Module):
    """The DynamicNet of the tutorial, small, with its depth fixed per run."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.input_linear = nn.Linear(3, 5)
        self.middle_linear = nn.Linear(5, 5)
        self.output_linear = nn.Linear(5, 2)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_linear(x).clamp(min=0)
        for _ in range(self.depth):
            h = self.middle_linear(h).clamp(min=0)
        return self.output_linear(h)


def dynamic_graph(depth: int, seed: int = 0):
    torch.manual_seed(seed)
    model = TinyDynamicNet(depth)
    with capture(model):
        loss = model(torch.randn(4, 3)).pow(2).mean()
    return trace(loss, model=model)


def expected_runs(widths: list[int]) -> list[tuple[int, int]]:
    """(first index, count) of each maximal group of equal consecutive widths, length ≥ 2."""
    out, i = [], 0
    for _, group in itertools.groupby(widths):
        n = len(list(group))
        if n >= 2:
            out.append((i, n))
        i += n
    return out


def partition_ok(graph, view) -> bool:
    members = [m for item in view.items for m in item.members]
    ids = {n.id for n in graph.nodes}
    return sorted(members) == sorted(n.id for n in graph.nodes) and set(view.item_of) == ids


# -- search ---------------------------------------------------------------------------
def test_search_matches_ops_modules_types_and_parameters_case_insensitively():
    graph = trace_example("mnist-cnn")
    by_label = {graph.node(i).label for i in ex.search(graph, "CONVOLUTION")}
    assert by_label == {"ConvolutionBackward0"}
    in_fc1 = ex.search(graph, "fc1")
    assert in_fc1 and all(graph.node(i).module == "fc1" for i in in_fc1)
    assert {graph.node(i).label for i in ex.search(graph, "conv2.weight")} == {"conv2.weight"}
    # module type
    assert set(ex.search(graph, "linear")) == {n.id for n in graph.nodes
                                               if n.module in ("fc1", "fc2")}
    assert "n3" in ex.search(graph, "n3")
    assert ex.search(graph, "   ") == [] and ex.search(graph, "no such thing") == []
    with pytest.raises(ArgumentError, match="query"):
        ex.search(graph, None)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="abcdefgBCDEFG0123456789._ ", max_size=6))
def test_search_results_all_contain_the_query(query):
    graph = trace_example("mnist-cnn")
    q = query.strip().lower()
    hits = ex.search(graph, query)
    assert hits == [n.id for n in graph.nodes if n.id in set(hits)]  # graph order, no repeats
    for i in hits:
        n = graph.node(i)
        fields = [n.label, n.grad_fn or "", n.module or "",
                  graph.module_types.get(n.module or "", ""), n.id]
        assert any(q in f.lower() for f in fields)


# -- rolling repeated blocks ----------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from([3, 5, 7]), min_size=1, max_size=10))
def test_random_stacks_roll_to_the_right_counts(widths):
    graph = stack_graph(widths)
    runs = ex.repeated_runs(graph)
    assert [(int(r.paths[0]), r.count) for r in runs] == expected_runs(widths)
    for r in runs:
        assert r.type_name == "Block" and r.title == f"Block × {r.count}" and r.params_each == 4
    view = ex.plan(graph, ex.default_state(graph, roll=True))
    rolled = [i for i in view.items if i.kind == "roll"]
    assert len(rolled) == len(runs)
    assert partition_ok(graph, view)
    # Each rolled item stands for every node of its blocks.
    for item in rolled:
        assert set(item.members) == set(ex.autograd_nodes_of(graph, item.id))


def test_transformer_24_default_view_rolls_its_layers():
    graph = trace_example("transformer-24")
    state = ex.default_state(graph)
    dot = to_dot(graph, state).source
    assert "TransformerEncoderLayer × 24" in dot
    view = ex.plan(graph, state)
    assert len(view.items) < 10 and partition_ok(graph, view)
    opened = ex.expand(state, "roll/layers.0..layers.23")
    view = ex.plan(graph, opened)
    ids = {i.id for i in view.items}
    # A long run opens at both ends; the middle stays rolled.
    assert {"mod/layers.0", "mod/layers.2", "roll/layers.3..layers.20", "mod/layers.21",
            "mod/layers.23"} <= ids
    assert "each: 64 ops" in to_dot(graph, opened).source


def test_small_graphs_draw_exactly_like_to_dot():
    for name in ("two-layer-relu", "mnist-cnn", "transformer-2"):
        graph = trace_example(name)
        state = ex.default_state(graph)
        assert to_dot(graph, state).source == graph.to_dot().source
        assert to_dot(graph, state, show_saved=True).source == graph.to_dot(show_saved=True).source


def test_runs_need_each_block_to_feed_only_the_next():
    # Two identical blocks applied side by side (both to x) are siblings but not a chain.
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.heads = nn.ModuleList([Block(3), Block(3)])

        def forward(self, x):
            return self.heads[0](x) + self.heads[1](x)

    model = TwoHeads()
    with capture(model):
        loss = model(torch.randn(2, 4)).sum()
    assert ex.repeated_runs(trace(loss, model=model)) == ()


def test_plain_trace_rolls_blocks_of_unknown_type_too():
    torch.manual_seed(0)
    model = nn.Sequential(Block(3), Block(3), Block(3))
    with capture(model):
        loss = model(torch.randn(2, 4)).sum()
    # Without the model, nothing names the container modules.
    [run] = ex.repeated_runs(trace(loss, params=dict(model.named_parameters())))
    assert run.paths == ("0", "1", "2") and run.title == "module × 3"
    # With it, trace() names containers too.
    [named] = ex.repeated_runs(trace(loss, model=model))
    assert named.paths == ("0", "1", "2") and named.title == "Block × 3"


# -- opening, closing, breadcrumb ------------------------------------------------------
def test_expand_collapse_and_breadcrumb():
    graph = stack_graph([3, 3, 3, 5])
    base = ex.default_state(graph, depth=1)  # every block a closed box
    view = ex.plan(graph, base)
    assert {i.id for i in view.items if i.kind == "module"} == {"mod/0", "mod/1", "mod/2", "mod/3"}
    opened = ex.expand(base, "mod/1")
    view = ex.plan(graph, opened)
    assert "mod/1" not in {i.id for i in view.items}
    assert {"mod/1.up", "mod/1.act", "mod/1.down"} <= {i.id for i in view.items}
    deeper = ex.expand(opened, "1.up")
    drawn = {graph.node(i.id).label for i in ex.plan(graph, deeper).items if i.id in graph}
    assert {"1.up.weight", "1.up.bias", "AddmmBackward0"} <= drawn
    assert ex.breadcrumb(deeper) == ["overview", "1", "1.up"]
    assert ex.back(deeper, 1) == opened and ex.back(deeper, 0) == base
    assert ex.expand(deeper, "1.up") is deeper  # already open: no new crumb
    closed = ex.collapse(deeper, "1")
    assert "mod/1" in {i.id for i in ex.plan(graph, closed).items}
    with pytest.raises(ArgumentError, match="steps"):
        ex.back(deeper, 5)
    with pytest.raises(ArgumentError, match="target"):
        ex.expand(base, "")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from([3, 5]), min_size=2, max_size=8), st.data())
def test_any_sequence_of_clicks_partitions_the_graph_and_back_replays_it(widths, data):
    graph = stack_graph(widths)
    state = ex.default_state(graph, roll=True)
    history = [state]
    for _ in range(data.draw(st.integers(0, 5))):
        view = ex.plan(graph, state)
        assert partition_ok(graph, view)
        boxes = [i.id for i in view.items if i.kind in ("module", "roll")]
        if not boxes:
            break
        new = ex.expand(state, data.draw(st.sampled_from(boxes)))
        assert new != state  # clicking a closed box always opens something
        state = new
        history.append(state)
    assert partition_ok(graph, ex.plan(graph, state))
    for k, earlier in enumerate(history):
        assert ex.back(state, k) == earlier


def test_unrolling_a_25k_chain_stays_small():
    graph = trace_example("chain-25k", saved=False)
    state = ex.default_state(graph)
    view = ex.plan(graph, state)
    assert [i.title for i in view.items if i.kind == "roll"] == ["Linear × 6,250"]
    assert len(view.items) == 3
    opened = ex.expand(state, "roll/0..6249")
    view = ex.plan(graph, opened)
    assert len(view.items) == 9 and "roll/3..6246" in {i.id for i in view.items}
    last = ex.expand(opened, "mod/6249")
    assert {"6249.weight", "6249.bias"} <= {
        graph.node(i.id).label for i in ex.plan(graph, last).items if i.id in graph
    }


# -- inspection -----------------------------------------------------------------------
def test_inspect_gives_shapes_saved_statistics_and_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    with capture(model):
        loss = model(x).pow(2).sum()
    graph, stats = ex.trace_with_stats(loss, model=model)
    stepper = BackwardStepper(loss, model=model, graph=graph)
    tanh = next(n for n in graph.nodes if n.label == "TanhBackward0")
    info = ex.inspect(graph, tanh.id, stepper, stats=stats)
    assert info["label"] == "TanhBackward0" and info["module"] == "1" and info["shape"] == (5, 4)
    [saved] = info["saved"]
    expected = torch.tanh(model[0](x)).detach().numpy()
    assert saved["name"] == "result" and saved["stats"]["shape"] == (5, 4)
    assert math.isclose(saved["stats"]["mean"], float(expected.mean()), rel_tol=1e-12)
    assert math.isclose(saved["stats"]["max"], float(expected.max()), rel_tol=1e-12)
    grads = info["gradients"]
    assert grads["grad_outputs"][0]["shape"] == (5, 4) and grads["agrees"] is True
    weight = next(n for n in graph.nodes if n.label == "0.weight")
    winfo = ex.inspect(graph, weight.id, stepper, stats=stats)
    assert winfo["value"]["shape"] == (4, 3)
    assert math.isclose(winfo["gradients"]["grad"]["norm"],
                        float(np.linalg.norm(stepper.param_grads["0.weight"])), rel_tol=1e-12)
    module = ex.inspect(graph, "mod/0")
    assert (
        module["kind"] == "module"
        and module["module_type"] == "Linear"
        and module["param_count"] == 16
    )
    with pytest.raises(ArgumentError, match="node_id"):
        ex.inspect(graph, "nope")


def test_tensor_stats_handle_nan_empty_integer_and_bfloat16():
    s = ex.tensor_stats(np.array([1.0, np.nan, 3.0, 0.0]))
    assert s.nonfinite == 1 and s.mean == pytest.approx(4 / 3) and s.zeros == 0.25
    assert ex.tensor_stats(np.zeros((0, 3))).mean is None
    assert ex.tensor_stats(torch.arange(4)).max == 3.0
    b = ex.tensor_stats(torch.ones(2, 2, dtype=torch.bfloat16))
    assert b.dtype == "bfloat16" and b.norm == 2.0
    assert "NaN/inf" in ex.tensor_stats(np.array([np.inf])).describe()


# -- forward view ---------------------------------------------------------------------
def test_forward_view_of_the_mnist_cnn():
    graph = trace_example("mnist-cnn")
    fv = ex.forward_view(graph)
    ids = {n.id for n in fv.graph.nodes}
    assert {"m/conv1", "m/conv2", "m/conv2_drop", "m/fc1", "m/fc2"} <= ids
    assert fv.graph.node("m/conv1").label == "conv1: Conv2d"
    assert fv.graph.node("m/conv1").shape == (8, 10, 24, 24)
    # Every autograd node is in exactly one forward node.
    covered = sorted(m for ms in fv.members.values() for m in ms)
    assert covered == sorted(n.id for n in graph.nodes)
    assert set(fv.members["m/conv1"]) == set(ex.autograd_nodes_of(graph, "conv1"))
    assert fv.nodes_for(ex.autograd_nodes_of(graph, "fc1")) == ["m/fc1"]
    # Data flows conv1 → … → conv2 → conv2_drop → … → fc1 → … → fc2 → … → output.
    order = {n: i for i, n in enumerate(_topological(fv.graph))}
    assert (
        order["m/conv1"]
        < order["m/conv2"]
        < order["m/conv2_drop"]
        < order["m/fc1"]
        < order["m/fc2"]
    )


def _topological(graph) -> list[str]:
    indeg = {n.id: 0 for n in graph.nodes}
    for _, d in graph.edges:
        indeg[d] += 1
    ready = [k for k, v in indeg.items() if v == 0]
    out = []
    while ready:
        k = ready.pop()
        out.append(k)
        for s, d in graph.edges:
            if s == k:
                indeg[d] -= 1
                if indeg[d] == 0:
                    ready.append(d)
    assert len(out) == len(graph.nodes), "the forward view has a cycle"
    return out


def test_forward_view_of_a_big_model_rolls_too():
    fv = ex.forward_view(trace_example("transformer-24"))
    assert "TransformerEncoderLayer × 24" in to_dot(fv.graph, ex.default_state(fv.graph)).source


# -- diff -----------------------------------------------------------------------------
def test_diff_of_two_dynamic_net_depths():
    shallow, deep = dynamic_graph(1), dynamic_graph(3)
    d = ex.diff(shallow, deep)
    per_use = {"AddmmBackward0", "TBackward0", "ClampBackward1"}
    assert sorted(deep.node(i).label for i in d.added) == sorted(list(per_use) * 2)
    assert d.removed == () and len(d.common) == len(shallow)
    assert set(d.colors.values()) == {ex.DIFF_COLORS["added"]}
    dot = to_dot(d.graph, ex.default_state(d.graph, roll=False), colors=d.colors).source
    assert dot.count(ex.DIFF_COLORS["added"]) >= len(d.added)
    back_again = ex.diff(deep, shallow)
    assert len(back_again.removed) == len(d.added) and back_again.added == ()
    assert all(i.startswith("a/") for i in back_again.colors)
    assert "6 removed" in str(back_again) and ex.diff(deep, deep).same


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 4), st.integers(0, 4), st.integers(0, 3), st.integers(0, 3))
def test_diff_properties(depth_a, depth_b, seed_a, seed_b):
    a, b = dynamic_graph(depth_a, seed_a), dynamic_graph(depth_b, seed_b)
    d, r = ex.diff(a, b), ex.diff(b, a)
    assert len(d.common) + len(d.removed) == len(a) and len(d.common) + len(d.added) == len(b)
    assert (
        len(d.added) == len(r.removed)
        and len(d.removed) == len(r.added)
        and len(d.common) == len(r.common)
    )
    assert d.added_labels() == r.removed_labels()
    assert len({i for i, _ in d.common}) == len(d.common) == len({j for _, j in d.common})
    assert len(d.graph) == len(b) + len(d.removed)
    view = ex.plan(d.graph, ex.default_state(d.graph, roll=False))
    assert partition_ok(d.graph, view)
    assert (depth_a == depth_b) == d.same


# -- packaging ------------------------------------------------------------------------
def test_component_assets_ship_inside_the_package():
    folder = importlib.resources.files("gradviz") / "assets" / "graph_view"
    js = (folder / "graph_view.js").read_text(encoding="utf-8")
    assert "export default function" in js and "setTrigger" not in js.split("export default")[0]
    assert "http" not in js  # no CDN, nothing fetched
    assert ".gv-root" in (folder / "graph_view.css").read_text(encoding="utf-8")
    assert 'class="gv-root' in (folder / "graph_view.html").read_text(encoding="utf-8")

"""trace() and capture(): exact graphs, names, saved tensors, errors, threads, deep chains."""

from __future__ import annotations

import dataclasses
import gc
import subprocess
import sys
import textwrap
import threading
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradviz import GradvizError, Graph, Node, TraceError, capture, trace
from gradviz.graph.model import PROMOTE_AT, gc_paused
from gradviz.zoo.presets import MyReLU

# -- random layer stacks: the graph's ops and params equal what the layers must create --

# Each layer type → the autograd nodes one forward of it creates on a 2-D input.
_LAYER_OPS = {
    "linear": Counter({"AddmmBackward0": 1, "TBackward0": 1}),
    "relu": Counter({"ReluBackward0": 1}),
    "tanh": Counter({"TanhBackward0": 1}),
    "sigmoid": Counter({"SigmoidBackward0": 1}),
    "layernorm": Counter({"NativeLayerNormBackward0": 1}),
}


def _make(kind: str, width: int) -> nn.Module:
    return {
        "linear": lambda: nn.Linear(width, width),
        "relu": nn.ReLU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "layernorm": lambda: nn.LayerNorm(width),
    }[kind]()


stacks = st.lists(st.sampled_from(sorted(_LAYER_OPS)), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(kinds=stacks, width=st.integers(1, 5), batch=st.integers(1, 3), grad_input=st.booleans())
def test_random_stack_counts_match_layers(kinds, width, batch, grad_input):
    model = nn.Sequential(*[_make(k, width) for k in kinds])
    x = torch.randn(batch, width, requires_grad=grad_input)
    with capture(model):
        out = model(x)
    if out.grad_fn is None and not out.requires_grad:
        return  # a stack without parameters on an input without grad has no graph
    graph = trace(out.sum(), model=model)
    expected = Counter({"SumBackward0": 1})
    live = grad_input  # before the first layer with parameters nothing needs grad
    for k in kinds:
        live = live or k in ("linear", "layernorm")
        if live:
            expected += _LAYER_OPS[k]
    got = Counter(n.label for n in graph.nodes if n.kind == "op")
    assert got == expected
    assert len(graph.of_kind("param")) == len(list(model.parameters()))
    assert len(graph.of_kind("leaf")) == (1 if grad_input else 0)
    assert len(graph.outputs) == 1
    # Every op made inside a layer carries that layer's path.
    for n in graph.nodes:
        if n.kind == "op" and n.label != "SumBackward0":
            assert n.module is not None and n.module.isdigit()
            assert kinds[int(n.module)] in _layer_of(n.label)
    # Forward edges: every op feeds something, the output is fed by exactly one node.
    assert graph.inputs_of(graph.outputs[0].id) != []
    for n in graph.nodes:
        if n.kind != "output":
            assert graph.users_of(n.id), n


def _layer_of(label: str) -> set[str]:
    return {k for k, ops in _LAYER_OPS.items() if label in ops}


@settings(max_examples=25, deadline=None)
@given(kinds=stacks, width=st.integers(1, 4), seed=st.integers(0, 100))
def test_same_program_same_ids_and_dot(kinds, width, seed):
    def run() -> Graph:
        torch.manual_seed(seed)
        model = nn.Sequential(*[_make(k, width) for k in kinds], nn.Linear(width, 1))
        with capture(model):
            out = model(torch.randn(2, width))
        return trace(out.sum(), model=model)

    a, b = run(), run()
    assert a == b
    assert (
        a.to_dot(show_saved=True, show_attrs=True).source
        == b.to_dot(show_saved=True, show_attrs=True).source
    )


@settings(max_examples=25, deadline=None)
@given(kinds=stacks, width=st.integers(1, 4))
def test_json_round_trip(kinds, width):
    model = nn.Sequential(*[_make(k, width) for k in kinds], nn.Linear(width, 2))
    with capture(model):
        out = model(torch.randn(3, width))
    graph = trace(out, out.sum(), model=model)
    again = Graph.from_json(graph.to_json())
    assert again == graph
    assert again.to_dot().source == graph.to_dot().source


# -- naming, sharing, several outputs, absent parts --------------------------------------


def test_params_named_from_model_and_params_mapping():
    model = nn.Linear(3, 2)
    out = model(torch.randn(4, 3)).sum()
    by_model = trace(out, model=model)
    assert sorted(n.label for n in by_model.of_kind("param")) == ["bias", "weight"]
    by_params = trace(out, params={"W": model.weight, "b": model.bias})
    assert sorted(n.label for n in by_params.of_kind("param")) == ["W", "b"]
    unnamed = trace(out)
    assert [n.kind for n in unnamed.nodes].count("leaf") == 2


def test_weight_sharing_gives_one_param_node_with_several_edges():
    shared = nn.Linear(3, 3)
    x = torch.randn(2, 3)
    out = shared(torch.relu(shared(shared(x)))).sum()
    graph = trace(out, params={"shared.weight": shared.weight, "shared.bias": shared.bias})
    params = {n.label: n for n in graph.of_kind("param")}
    assert sorted(params) == ["shared.bias", "shared.weight"]
    assert len(graph.users_of(params["shared.weight"].id)) == 3  # one TBackward0 per use
    assert len(graph.users_of(params["shared.bias"].id)) == 3


def test_several_outputs_share_one_graph():
    model = nn.Linear(3, 2)
    h = model(torch.randn(4, 3))
    a, b = h.sum(), (h * h).mean()
    graph = trace(a, b, model=model)
    assert [n.label for n in graph.outputs] == ["output 0", "output 1"]
    addmm = [n for n in graph.nodes if n.label == "AddmmBackward0"]
    assert len(addmm) == 1
    # x*x uses h twice: the edge appears twice.
    mul = next(n for n in graph.nodes if n.label == "MulBackward0")
    assert graph.inputs_of(mul.id).count(addmm[0].id) == 2


def test_detached_and_no_grad_parts_are_absent():
    w = torch.randn(3, requires_grad=True)
    v = torch.randn(3, requires_grad=True)
    with torch.no_grad():
        frozen = v * 2
    out = (w * v.detach() + frozen).sum()
    graph = trace(out, params={"w": w, "v": v})
    assert [n.label for n in graph.of_kind("param")] == ["w"]


def test_output_that_is_a_leaf():
    w = torch.randn(2, requires_grad=True)
    graph = trace(w, params={"w": w})
    assert [n.kind for n in graph.nodes] == ["output", "param"]
    assert graph.edges == (("n1", "n0"),)


def test_saved_tensors_and_attrs():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(3, 5, requires_grad=True)
    out = (x @ w).softmax(dim=1).sum()
    graph = trace(out)
    mm = next(n for n in graph.nodes if n.label == "MmBackward0")
    assert {(s.name, s.shape, s.dtype) for s in mm.saved} == {
        ("self", (4, 3), "float32"),
        ("mat2", (3, 5), "float32"),
    }
    soft = next(n for n in graph.nodes if n.label == "SoftmaxBackward0")
    assert ("dim", "1") in soft.attrs
    assert soft.shape == (4, 5)


def test_op_nodes_built_on_the_fast_path_equal_ordinary_nodes():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    with capture(model):
        loss = model(torch.randn(2, 3)).sum()
    graph = trace(loss, model=model)
    ops = [n for n in graph.nodes if n.kind == "op"]
    assert ops
    for n in ops:
        plain = Node(**{f.name: getattr(n, f.name) for f in dataclasses.fields(Node)})
        assert n == plain and hash(n) == hash(plain) and repr(n) == repr(plain)
        with pytest.raises(dataclasses.FrozenInstanceError):
            n.label = "x"  # type: ignore[misc]


def test_saved_tensors_do_not_keep_the_graph_alive():
    import gc
    import weakref

    x = torch.randn(8, requires_grad=True)
    y = torch.tanh(x)
    ref = weakref.ref(y)
    graph = trace(y.sum())
    del y
    gc.collect()
    assert ref() is None
    assert any(s.name == "result" for n in graph.nodes for s in n.saved)


def test_custom_function_labelled_by_class_name():
    x = torch.randn(5, requires_grad=True)
    graph = trace(MyReLU.apply(x).sum())
    node = next(n for n in graph.nodes if n.label == "MyReLU")
    assert node.grad_fn == "MyReLUBackward"
    assert node.saved[0].shape == (5,)
    assert "#ffd8a8" in graph.to_dot().source  # custom Functions have their own colour


def test_in_place_ops_and_views_trace():
    a = torch.randn(4, 3, requires_grad=True)
    x = a * 1.0
    x[0] = x[0] * 2  # in-place on a view: CopySlices
    x.relu_()
    y = x.t().reshape(-1)[:5]
    graph = trace(y.sum(), params={"a": a})
    labels = [n.label for n in graph.nodes if n.kind == "op"]
    for expected in ("CopySlices", "ReluBackward0", "TBackward0", "SliceBackward0", "MulBackward0"):
        assert expected in labels, (expected, labels)
    assert [n.label for n in graph.of_kind("param")] == ["a"]


# -- errors ------------------------------------------------------------------------------


def test_trace_of_nothing():
    with pytest.raises(TraceError, match=r"trace\(loss\)"):
        trace()
    with pytest.raises(TraceError, match="empty"):
        trace([])


def test_trace_of_non_tensor_names_the_argument():
    with pytest.raises(TraceError, match=r"outputs\[1\] is a int"):
        trace(torch.randn(2, requires_grad=True), 3)
    with pytest.raises(TraceError, match="not the model"):
        trace(nn.Linear(2, 2))


def test_trace_of_tensor_without_grad_says_the_fix():
    with pytest.raises(TraceError, match="requires_grad=True") as info:
        trace(torch.randn(2, 3))
    assert "outputs[0]" in str(info.value) and "(2, 3)" in str(info.value)
    assert isinstance(info.value, GradvizError)


def test_bad_model_and_params_arguments():
    out = (torch.randn(2, requires_grad=True) * 2).sum()
    with pytest.raises(GradvizError, match="model="):
        trace(out, model="net")
    with pytest.raises(GradvizError, match=r"params\['w'\]"):
        trace(out, params={"w": 3})
    with pytest.raises(GradvizError, match="capture"), capture(object()):
        pass


# -- capture -----------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(3, 3)
        self.act = nn.Tanh()

    def forward(self, x):
        x = x * 2  # made by Block itself, before its child runs
        return self.act(self.inner(x))


def test_capture_tags_innermost_module_and_parent_ops():
    model = nn.Sequential(Block(), nn.Linear(3, 1))
    with capture(model):
        out = model(torch.randn(2, 3, requires_grad=True))
    graph = trace(out.sum(), model=model)
    by_label = {n.label: n.module for n in graph.nodes if n.kind == "op"}
    assert by_label["MulBackward0"] == "0"
    assert by_label["TanhBackward0"] == "0.act"
    assert graph.module_types["0"] == "Block"
    assert graph.module_types["0.inner"] == "Linear"
    assert by_label["SumBackward0"] is None


def test_capture_removes_hooks_also_on_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(RuntimeError), capture(model):
        model(torch.randn(3, 5))  # wrong width
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    for m in model.modules():
        assert "forward" not in m.__dict__  # the wrapped forward is gone too
    with capture(model):
        model(torch.randn(1, 2))
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert "forward" not in m.__dict__


def test_capture_restores_a_forward_the_instance_already_had():
    model = nn.Sequential(nn.Linear(2, 2))
    own = model[0].forward
    model[0].forward = lambda x: own(x) * 3  # e.g. a library's own patch of this instance
    patched = model[0].forward
    with capture(model):
        out = model(torch.randn(1, 2))
    assert model[0].forward is patched
    graph = trace(out.sum(), model=model)
    ops = {n.label: n.module for n in graph.nodes if n.kind == "op"}
    assert ops["AddmmBackward0"] == "0" and ops["MulBackward0"] == "0"


def test_capture_names_the_module_that_made_an_op_not_only_what_its_outputs_reach():
    class Side(nn.Module):
        def forward(self, x):
            self.kept = x * 5  # made here, used only after the module returned
            return x + 1

    model = nn.Sequential(Side(), nn.Tanh())
    x = torch.randn(2, requires_grad=True)
    with capture(model):
        out = model(x)
    graph = trace((out + model[0].kept).sum(), model=model)
    ops = {n.label: n.module for n in graph.nodes if n.kind == "op"}
    assert ops["MulBackward0"] == "0" and ops["TanhBackward0"] == "1"
    assert ops["SumBackward0"] is None
    adds = sorted(str(n.module) for n in graph.nodes if n.label == "AddBackward0")
    assert adds == ["0", "None"]  # x + 1 inside Side; out + kept after the forward


def test_capture_pauses_gc_and_restores_it_also_on_error():
    model = nn.Sequential(nn.Linear(2, 2))
    assert gc.isenabled()
    with pytest.raises(RuntimeError), capture(model):
        assert not gc.isenabled()
        model(torch.randn(3, 5))
    assert gc.isenabled()


def test_overlapping_gc_pauses_from_two_threads_end_with_the_last():
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with gc_paused():
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=other)
    with gc_paused():
        worker.start()
        inside.wait(10)
    assert not gc.isenabled()  # the other thread's pause is still open
    release.set()
    worker.join()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a GC the caller turned off stays off
    finally:
        gc.enable()


def test_what_a_pause_built_goes_to_the_oldest_generation_unscanned():
    # Survivors of a big pause skip the young collections (and the full one they would
    # set off); garbage cycles made in the pause are still collected by a full collection.
    with gc_paused():
        kept = [[i] for i in range(PROMOTE_AT + 1000)]
        cycle: list[object] = []
        cycle.append(cycle)
        probe = id(cycle)
        del cycle
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert id(kept[0]) in oldest and id(kept[-1]) in oldest and probe in oldest
    gc.collect()
    assert probe not in {id(o) for o in gc.get_objects()}


def test_a_pause_leaves_the_programs_own_frozen_objects_frozen():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with gc_paused():
            kept = [[i] for i in range(PROMOTE_AT + 1000)]
        assert len(kept) > PROMOTE_AT
        assert gc.get_freeze_count() == frozen  # unfreeze would have thawed them all
    finally:
        gc.unfreeze()


def test_params_mapping_names_that_are_not_module_paths():
    model = nn.Sequential(nn.Linear(2, 2))
    extra = torch.ones(2, requires_grad=True)
    graph = trace((model(torch.randn(1, 2)) * extra).sum(), model=model,
                  params={"scale.factor": extra})
    assert dict(graph.modules) == {"0": "Linear"}
    assert {n.label for n in graph.nodes if n.kind == "param"} == {
        "0.weight",
        "0.bias",
        "scale.factor",
    }


def test_two_threads_capturing_two_models_do_not_mix_tags():
    a = nn.Sequential(*[nn.Linear(4, 4) for _ in range(6)])
    b = nn.Sequential(nn.Tanh(), *[nn.Sequential(nn.Linear(4, 4), nn.Sigmoid()) for _ in range(6)])
    barrier = threading.Barrier(2)
    results: dict[str, list[Graph]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def work(name: str, model: nn.Module) -> None:
        try:
            barrier.wait()
            for _ in range(30):
                with capture(model):
                    out = model(torch.randn(2, 4, requires_grad=True))
                results[name].append(trace(out.sum(), model=model))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=("a", a)),
               threading.Thread(target=work, args=("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    a_paths = {n.module for g in results["a"] for n in g.nodes if n.kind == "op" and n.module}
    b_paths = {n.module for g in results["b"] for n in g.nodes if n.kind == "op" and n.module}
    assert a_paths == {str(i) for i in range(6)}
    assert b_paths == {"0"} | {f"{i}.{j}" for i in range(1, 7) for j in (0, 1)}
    # Each run of a model gives the same graph as any other run of it.
    assert all(g == results["a"][0] for g in results["a"])
    assert all(g == results["b"][0] for g in results["b"])


# -- deep chains -------------------------------------------------------------------------


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=600)


def test_100k_node_chain_traces_and_frees_in_main_thread():
    proc = _run(
        """
        import torch, gradviz
        x = torch.randn(2, requires_grad=True)
        w = torch.randn(2, 2, requires_grad=True)
        y = x
        for _ in range(100_000):
            y = w @ y
        g = gradviz.trace(y.sum(), params={"w": w})
        print(len(g), max(int(n.id[1:]) for n in g.nodes))
        del y
        print("freed")
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    count, last = proc.stdout.split()[:2]
    assert int(count) == 100_004  # output, sum, 100k mv ops, x, w
    assert int(last) == 100_003
    assert proc.stdout.strip().endswith("freed")


def test_100k_node_chain_in_a_worker_thread_via_big_stack():
    proc = _run(
        """
        import threading, torch
        from gradviz.graph.tracing import run_with_big_stack, trace

        def program():
            x = torch.randn(2, requires_grad=True)
            y = x
            for _ in range(100_000):
                y = y * 1.0001
            return trace(y.sum())

        out = {}
        def script_thread():  # like Streamlit's fixed-stack script thread
            out["n"] = len(run_with_big_stack(program))
        t = threading.Thread(target=script_thread); t.start(); t.join()
        print(out["n"])
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == "100003"


# -- process-wide caches stay bounded (issue #13) ----------------------------------------


def test_saved_tensor_interning_stays_under_its_cap_after_many_shapes():
    from gradviz.graph import tracing

    cap = tracing._INTERN_MAX
    graphs = []
    for start in (1, cap // 2 + 1):  # two graphs, together over the cap by half
        xs = [torch.randn(k, requires_grad=True) for k in range(start, start + cap // 2 + cap // 4)]
        graphs.append(trace(torch.cat([x.tanh() for x in xs]).sum()))
        assert len(tracing._SAVED_TENSORS) <= cap
    # Starting over loses no description: every tanh still names its own result's shape.
    for graph in graphs:
        tanh = [n for n in graph.nodes if n.label == "TanhBackward0"]
        assert len(tanh) == cap // 2 + cap // 4
        assert all(n.saved[0].name == "result" and n.saved[0].shape == n.shape for n in tanh)
    assert 0 < len(tracing._SAVED_TENSORS) <= cap


def test_a_capture_wrapped_by_another_still_open_records_nothing_after_it_ends():
    model = nn.Sequential(nn.Linear(2, 2))
    outer = capture(model)
    outer.__enter__()
    with capture(model):  # the inner capture's wrapper sits on top of the outer one's
        outer.__exit__(None, None, None)  # outer ends first: it cannot unwrap, so it goes quiet
        out = model(torch.randn(1, 2))
    graph = trace(out.sum(), model=model)
    ops = {n.module for n in graph.nodes if n.kind == "op" and n.label == "AddmmBackward0"}
    assert ops == {"0"}
    for _ in range(3):
        model(torch.randn(1, 2))  # the outer wrapper, if still installed, must not grow a record
    left = model[0].__dict__["forward"]  # the inner capture put back what it found: outer's
    (local,) = [c.cell_contents for c in left.__closure__
                if isinstance(c.cell_contents, threading.local)]
    assert getattr(local, "rec", None) is None  # it passed every call through, noting none

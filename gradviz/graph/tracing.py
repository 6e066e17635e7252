"""Turn a PyTorch program's autograd graph into a frozen `Graph`: `trace` and `capture`.

The walk over ``grad_fn.next_functions`` is iterative (torchviz's recursion dies near
1000 levels). Module tags come from forward hooks on the model's own submodules, removed
in ``finally``; nothing process-wide is patched, so many Streamlit sessions can capture
different models at once.
"""

from __future__ import annotations

import contextlib
import functools
import resource
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from gradviz.errors import ArgumentError, TraceError
from gradviz.graph.model import Graph, Node, SavedTensor, gc_paused

__all__ = [
    "trace",
    "trace_with_ids",
    "is_accumulate",
    "capture",
    "ensure_deep_graph_stack",
    "run_with_big_stack",
    "MODULE_TAG",
]

# Key under which capture() stores a node's module path in `grad_fn.metadata`.
MODULE_TAG = "gradviz.module"
# The type of leaf-accumulating nodes; isinstance is far cheaper than hasattr(fn, "variable"),
# which raises (and swallows) an AttributeError for every other node.
# torch's stubs do not declare the private torch._C._functions module
_ACCUMULATE = torch._C._functions.AccumulateGrad  # type: ignore[attr-defined]


def is_accumulate(fn: Any) -> bool:
    """Whether an autograd node is a leaf's AccumulateGrad (its tensor is `fn.variable`)."""
    return type(fn) is _ACCUMULATE


# Per autograd node type: its saved attributes as (attribute, short name) pairs and
# whether it is a custom Function. Looked up once per type: dir() is slow.
_SAVED_ATTRS: dict[type, tuple[tuple[tuple[str, str], ...], bool]] = {}
# Size/stride lists of saved tensors repeat what the tensor shapes already say.
_NOISY_ATTR_SUFFIXES = ("_sym_strides", "_strides")
_DTYPE_NAMES: dict[torch.dtype, str] = {}
# Per autograd node type: the label drawn (a custom Function's class name, else the type's).
_LABELS: dict[type, str] = {}


def _flatten(value: Any, path: str, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _flatten(v, f"{path}[{i}]", out)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(v, f"{path}[{k!r}]", out)
    else:
        out.append((path, value))


def _validate_outputs(outputs: tuple[Any, ...]) -> list[torch.Tensor]:
    if not outputs:
        raise TraceError(
            "trace() got no tensors: pass the output or loss to draw, e.g. trace(loss) "
            "or trace(model(x), model=model)"
        )
    flat: list[tuple[str, Any]] = []
    for i, value in enumerate(outputs):
        _flatten(value, f"outputs[{i}]", flat)
    if not flat:
        raise TraceError(
            "trace() got only empty containers: pass at least one tensor, e.g. trace(loss)"
        )
    tensors = []
    for where, value in flat:
        if not isinstance(value, torch.Tensor):
            raise TraceError(
                f"{where} is a {type(value).__name__}, not a torch.Tensor: pass the tensors "
                "a model returns (e.g. trace(model(x))), not the model or numbers"
            )
        if value.grad_fn is None and not value.requires_grad:
            raise TraceError(
                f"{where} (shape {tuple(value.shape)}, {str(value.dtype).replace('torch.', '')}) "
                "has no grad_fn and does not require grad, so it has no autograd graph: it was "
                "made under torch.no_grad(), detached, or from tensors without requires_grad=True. "
                "Set requires_grad=True on the inputs or use a model with trainable parameters."
            )
        tensors.append(value)
    return tensors


def _param_names(model: nn.Module | None, params: Mapping[str, Any] | None) -> dict[int, str]:
    names: dict[int, str] = {}
    if model is not None:
        if not isinstance(model, nn.Module):
            raise ArgumentError(
                "model", type(model).__name__, "pass an nn.Module (or use params={name: tensor})"
            )
        for name, p in model.named_parameters():
            names.setdefault(id(p), name)
    if params is not None:
        if not isinstance(params, Mapping):
            raise ArgumentError(
                "params",
                type(params).__name__,
                "pass a mapping name → tensor, e.g. dict(model.named_parameters())",
            )
        for name, p in params.items():
            if not isinstance(p, torch.Tensor):
                raise ArgumentError(
                    f"params[{name!r}]", type(p).__name__, "every value must be a torch.Tensor"
                )
            names[id(p)] = str(name)
    return names


def _dtype(dtype: torch.dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).replace("torch.", "")
    return name


def saved_layout(cls: type, node: Any) -> tuple[tuple[tuple[str, str], ...], bool]:
    """((attribute, short name) of each saved value, is a custom Function) for a node type."""
    layout = _SAVED_ATTRS.get(cls)
    if layout is None:
        names = tuple(
            (a, a[len("_saved_") :])
            for a in dir(node)
            if a.startswith("_saved_") and not a.endswith(_NOISY_ATTR_SUFFIXES)
        )
        layout = _SAVED_ATTRS[cls] = (names, hasattr(cls, "_forward_cls"))
    return layout


def _saved_tensor(name: str, value: torch.Tensor) -> SavedTensor:
    # Interned: a deep stack saves the same few (name, shape, dtype) thousands of times, and
    # building a frozen dataclass costs several times a dict lookup.
    key = (name, value.shape, value.dtype)
    found = _SAVED_TENSORS.get(key)
    if found is None:
        if len(_SAVED_TENSORS) > _INTERN_MAX:
            _SAVED_TENSORS.clear()
        found = _SAVED_TENSORS[key] = SavedTensor(name, tuple(value.shape), _dtype(value.dtype))
    return found


def _describe_saved(node: Any) -> tuple[tuple[SavedTensor, ...], tuple[tuple[str, str], ...]]:
    names, custom = saved_layout(type(node), node)
    saved: list[SavedTensor] = []
    attrs: list[tuple[str, str]] = []
    for attr, short in names:
        try:
            value = getattr(node, attr)
        except RuntimeError:  # freed by an earlier backward
            saved.append(SavedTensor(short, None, "freed"))
            continue
        if isinstance(value, torch.Tensor):
            saved.append(_saved_tensor(short, value))
        elif (
            isinstance(value, (list, tuple))
            and value
            and all(isinstance(v, torch.Tensor) for v in value)
        ):
            saved.extend(_saved_tensor(f"{short}[{i}]", v) for i, v in enumerate(value))
        else:
            attrs.append((short, _attr_text(value)))
    if custom:  # a custom autograd.Function: its ctx.save_for_backward
        try:
            tensors = node.saved_tensors
        except RuntimeError:
            tensors = ()
        saved.extend(
            _saved_tensor(f"saved_tensors[{i}]", t)
            for i, t in enumerate(tensors)
            if isinstance(t, torch.Tensor)
        )
    return tuple(saved), tuple(attrs)


def _attr_text(value: Any) -> str:
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is float:
        return f"{value:.6g}"
    if kind is tuple and all(type(v) is int for v in value):  # sizes, strides, dims
        key = (kind, value)
        text = _ATTR_TEXTS.get(key)
        if text is None:
            if len(_ATTR_TEXTS) > _INTERN_MAX:
                _ATTR_TEXTS.clear()
            text = _ATTR_TEXTS[key] = _short_repr(value)
        return text
    if isinstance(value, torch.dtype):
        return _dtype(value)
    return _short_repr(value)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_INTERN_MAX = 100_000
_SAVED_TENSORS: dict[tuple[Any, ...], SavedTensor] = {}
_ATTR_TEXTS: dict[tuple[Any, ...], str] = {}


def _output_meta(node: Any) -> tuple[tuple[int, ...] | None, str | None]:
    try:
        meta = node._input_metadata
    except (AttributeError, RuntimeError):
        return None, None
    if not meta:
        return None, None
    return tuple(meta[0].shape), _dtype(meta[0].dtype)


def trace(
    *outputs: Any,
    model: nn.Module | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
    saved: bool = True,
) -> Graph:
    """Walk the autograd graph reachable from `outputs` and return it as a frozen `Graph`.

    Several outputs share one graph. Parameters are named from ``model.named_parameters()``
    and/or `params`; other leaves that require grad become "leaf" nodes. Detached and
    no-grad parts are not in an autograd graph, so they are absent. `saved=False` skips
    reading saved tensors (faster on very large graphs).
    """
    return trace_with_ids(*outputs, model=model, params=params, saved=saved)[0]


def trace_with_ids(
    *outputs: Any,
    model: nn.Module | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
    saved: bool = True,
) -> tuple[Graph, dict[Any, str]]:
    """`trace`, plus the map from each live autograd node (AccumulateGrad too) to its id."""
    tensors = _validate_outputs(outputs)
    with gc_paused():
        return _walk(tensors, model, params, saved)


def _name_containers(model: nn.Module, nodes: list[Node], modules: dict[str, str]) -> None:
    """Parameters name their module even when forward ran without capture(), and
    containers that make no ops themselves (ModuleList, a Block) are named too, so clusters
    and rolled runs say "TransformerEncoderLayer", not just "layers.0"."""
    used = {n.module for n in nodes if n.module} | set(modules)
    wanted = {".".join(p.split(".")[:i]) for p in used for i in range(1, p.count(".") + 2)}
    missing = wanted.difference(modules)
    if missing:  # one walk over the modules: get_submodule per path cost 0.7 ms on a transformer
        for path, module in model.named_modules(remove_duplicate=False):
            if path in missing:
                modules[path] = type(module).__name__


def _walk(
    tensors: list[torch.Tensor],
    model: nn.Module | None,
    params: Mapping[str, torch.Tensor] | None,
    saved: bool,
) -> tuple[Graph, dict[Any, str]]:
    names = _param_names(model, params)
    nodes: list[Node] = []
    edges: list[tuple[str, str]] = []
    # autograd node object, or id() of a leaf tensor → node id. Leaf tensors stay alive
    # during the walk (held by `tensors` or by their AccumulateGrad key), so no id() is reused.
    ids: dict[Any, str] = {}
    modules: dict[str, str] = {}
    queue: deque[Any] = deque()

    def leaf_node(var: torch.Tensor) -> str:
        found = ids.get(id(var))
        if found is not None:
            return found
        node_id = ids[id(var)] = f"n{len(nodes)}"
        name = names.get(id(var))
        shape, dtype = tuple(var.shape), _dtype(var.dtype)
        if name is not None:
            module = name.rsplit(".", 1)[0] if "." in name else None
            nodes.append(Node(node_id, "param", name, shape, dtype, module))
        else:
            nodes.append(Node(node_id, "leaf", "leaf", shape, dtype))
        return node_id

    def visit(fn: Any) -> str:
        found = ids.get(fn)
        if found is not None:
            return found
        cls = type(fn)
        if cls is _ACCUMULATE:  # the leaf tensor itself is the node
            node_id = ids[fn] = leaf_node(fn.variable)
            return node_id
        node_id = ids[fn] = f"n{len(nodes)}"
        label = _LABELS.get(cls)
        if label is None:
            label = _LABELS[cls] = (
                cls._forward_cls.__name__ if hasattr(cls, "_forward_cls") else cls.__name__
            )
        shape, dtype = _output_meta(fn)
        saved_t, attrs = _describe_saved(fn) if saved else ((), ())
        module = fn.metadata.get(MODULE_TAG)
        if module is not None:
            path, type_name = module
            modules.setdefault(path, type_name)
            module = path
        nodes.append(Node._op(node_id, label, shape, dtype, module, saved_t, cls.__name__, attrs))
        queue.append(fn)
        return node_id

    for i, t in enumerate(tensors):
        out_id = f"n{len(nodes)}"
        label = "output" if len(tensors) == 1 else f"output {i}"
        nodes.append(Node(out_id, "output", label, tuple(t.shape), _dtype(t.dtype)))
        src = visit(t.grad_fn) if t.grad_fn is not None else leaf_node(t)
        edges.append((src, out_id))
    while queue:
        fn = queue.popleft()
        dst = ids[fn]
        for nxt, _ in fn.next_functions:
            if nxt is not None:
                edges.append((visit(nxt), dst))
    if model is not None:
        _name_containers(model, nodes, modules)
    if len(ids) > _DEEP_GRAPH:
        ensure_deep_graph_stack()
    # Edges were found from outputs backwards; store them in a stable forward order.
    edges.reverse()
    graph = Graph(tuple(nodes), tuple(edges), tuple(sorted(modules.items())))
    return graph, {k: v for k, v in ids.items() if not isinstance(k, int)}


# Freeing an autograd graph whose nodes Python has touched recurses once per node in C++
# (torch 2.13: a 100k-node chain overflows the default 8 MiB stack). Past this size,
# trace() raises the main thread's stack limit; see ensure_deep_graph_stack.
_DEEP_GRAPH = 10_000
_STACK_BYTES = 1 << 30


def ensure_deep_graph_stack() -> bool:
    """Let the main thread's stack grow far enough to free a very deep autograd graph.

    Linux grows the main thread's stack on demand up to RLIMIT_STACK, read at fault time,
    so raising the soft limit now protects a later ``del loss``. Other threads have fixed
    stacks: run deep programs there with `run_with_big_stack`. Returns True when the
    current thread is protected.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY or soft >= _STACK_BYTES:
        return True
    target = _STACK_BYTES if hard == resource.RLIM_INFINITY else min(hard, _STACK_BYTES)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_STACK, (target, hard))
    return target >= _STACK_BYTES


def run_with_big_stack(fn: Any, *args: Any, stack_bytes: int = 512 << 20, **kwargs: Any) -> Any:
    """Run fn(*args, **kwargs) in a thread with a large stack and return its result.

    Use it to build, trace and drop a very deep program outside the main thread (the
    Streamlit script thread has a fixed 8 MiB stack): everything the program allocated is
    freed inside the big-stack thread, and only the frozen result comes back.
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    lock = _STACK_SIZE_LOCK
    with lock:  # threading.stack_size is process-wide: set, start, restore.
        old = threading.stack_size(stack_bytes)
        try:
            worker = threading.Thread(target=target, name="gradviz-big-stack")
            worker.start()
        finally:
            threading.stack_size(old)
    worker.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


_STACK_SIZE_LOCK = threading.Lock()


def _probe_sequence_nr() -> int:
    # Older torch has no getter: make a throwaway node and read its number.
    probe = torch.zeros((), requires_grad=True).clone()
    assert probe.grad_fn is not None  # clone() of a tensor that requires grad records a node
    return int(probe.grad_fn._sequence_nr())


_current_sequence_nr = getattr(torch._C._autograd, "_get_sequence_nr", _probe_sequence_nr)


def _grad_fns(value: Any) -> list[Any]:
    flat: list[tuple[str, Any]] = []
    _flatten(value, "", flat)
    return [v.grad_fn for _, v in flat if isinstance(v, torch.Tensor) and v.grad_fn is not None]


@contextlib.contextmanager
def capture(model: nn.Module) -> Iterator[nn.Module]:
    """Tag every autograd node made during a forward of `model` with its module path.

    Inside the block, each submodule call records the autograd sequence number at its
    start; when it returns, nodes reachable from its outputs that were created since then
    and are not yet tagged by a deeper module get its path. Hooks are removed on exit,
    also on error.
    """
    if not isinstance(model, nn.Module):
        raise ArgumentError(
            "model",
            type(model).__name__,
            "capture() takes the nn.Module whose forward you run inside the block",
        )
    local = threading.local()  # each thread has its own call stack of open modules
    handles = []

    def pre(path: str, module: nn.Module, args: Any) -> None:
        stack = getattr(local, "stack", None)
        if stack is None:
            stack = local.stack = []
        stack.append(_current_sequence_nr())

    def post(path: str, module: nn.Module, args: Any, output: Any) -> None:
        stack = getattr(local, "stack", None)
        if not stack:
            return
        start = stack.pop()
        tag = (path, type(module).__name__)
        pending: list[Any]  # torch's stubs type Node.metadata as a method; it is a dict
        if isinstance(output, torch.Tensor):  # the common case, without flattening
            pending = [output.grad_fn] if output.grad_fn is not None else []
        else:
            pending = _grad_fns(output)
        seen: set[Any] = set()
        while pending:
            fn = pending.pop()
            if type(fn) is _ACCUMULATE or fn in seen or fn._sequence_nr() < start:
                continue
            seen.add(fn)
            meta = fn.metadata
            if MODULE_TAG not in meta:
                meta[MODULE_TAG] = tag
            pending.extend(n for n, _ in fn.next_functions if n is not None)

    # The GC is paused for the block: 20k modules' hooks and 80k tagged nodes surviving
    # trigger full collections that doubled the time of a capture (measured: 1.0 s → 0.5 s).
    with gc_paused():
        try:
            for path, module in model.named_modules():
                if not path:
                    continue  # ops the top-level forward makes itself stay untagged
                handles.append(module.register_forward_pre_hook(functools.partial(pre, path)))
                handles.append(
                    module.register_forward_hook(functools.partial(post, path), always_call=True)
                )
            yield model
        finally:
            for handle in handles:
                handle.remove()

"""Turn a PyTorch program's autograd graph into a frozen `Graph`: `trace` and `capture`.

The walk over ``grad_fn.next_functions`` is iterative (torchviz's recursion dies near
1000 levels). Module paths come from the record `capture` leaves on the graph (see
`gradviz.graph.capturing`); nothing process-wide is patched, so many Streamlit sessions can
capture different models at once.
"""

from __future__ import annotations

import bisect
import resource
import threading
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gradviz.errors import ArgumentError, TraceError
from gradviz.graph.capturing import MODULE_TAG, CaptureRecord, capture, module_of
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
        # named_parameters()'s names, first name of a shared tensor kept, without its
        # generator per module (a third of tracing a 25 000-layer chain).
        for prefix, module in model.named_modules():
            dot = f"{prefix}." if prefix else ""
            for key, p in module._parameters.items():
                if p is not None:
                    names.setdefault(id(p), dot + key)
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
        if len(_SAVED_TENSORS) >= _INTERN_MAX:
            _SAVED_TENSORS.clear()
        found = _SAVED_TENSORS[key] = SavedTensor(name, tuple(value.shape), _dtype(value.dtype))
    return found


def _describe_saved(
    node: Any, names: tuple[tuple[str, str], ...], custom: bool
) -> tuple[tuple[SavedTensor, ...], tuple[tuple[str, str], ...]]:
    saved: list[SavedTensor] = []
    attrs: list[tuple[str, str]] = []
    known, tensor = _SAVED_TENSORS, torch.Tensor
    for attr, short in names:
        try:
            value = getattr(node, attr)
        except RuntimeError:  # freed by an earlier backward
            saved.append(SavedTensor(short, None, "freed"))
            continue
        kind = type(value)
        if kind is int:  # the commonest attribute: dims, sizes' parts
            attrs.append((short, str(value)))
        elif isinstance(value, tensor):
            key = (short, value.shape, value.dtype)
            found = known.get(key)
            saved.append(found if found is not None else _saved_tensor(short, value))
        elif kind is tuple and (not value or not isinstance(value[0], tensor)):
            attrs.append((short, _short_repr(value)))  # sizes, strides, dims
        elif kind in (list, tuple) and value and all(isinstance(v, tensor) for v in value):
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
    if type(value) is float:
        return f"{value:.6g}"
    if isinstance(value, torch.dtype):
        return _dtype(value)
    return _short_repr(value)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Interning pays within a graph (a stack saves the same few descriptions thousands of times);
# across a long-lived process the table would only grow with every new input shape, so it
# starts over at this size (~4 MB of descriptions; issue #13).
_INTERN_MAX = 8192
_SAVED_TENSORS: dict[tuple[Any, ...], SavedTensor] = {}


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
    tensors = _validate_outputs(outputs)
    with gc_paused():
        return _walk(tensors, model, params, saved)[0]


def trace_with_ids(
    *outputs: Any,
    model: nn.Module | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
    saved: bool = True,
) -> tuple[Graph, dict[Any, str]]:
    """`trace`, plus the map from each live autograd node (AccumulateGrad too) to its id."""
    tensors = _validate_outputs(outputs)
    with gc_paused():
        graph, ids = _walk(tensors, model, params, saved)
        return graph, {k: v for k, v in ids.items() if not isinstance(k, int)}


def _name_containers(
    model: nn.Module, nodes: list[Node], modules: dict[str, str], records: list[CaptureRecord]
) -> None:
    """Parameters name their module even when forward ran without capture(), and
    containers that make no ops themselves (ModuleList, a Block) are named too, so clusters
    and rolled runs say "TransformerEncoderLayer", not just "layers.0"."""
    # Op nodes' modules are in `modules` already; parameters name theirs.
    used = {n.module for n in nodes if n.kind == "param" and n.module} | set(modules)
    wanted = {".".join(p.split(".")[:i]) for p in used for i in range(1, p.count(".") + 2)}
    missing = wanted.difference(modules)
    for rec in records:  # a capture knew every path's type already
        for path in [p for p in missing if p in rec.types]:
            modules[path] = rec.types[path]
            missing.discard(path)
    if missing:  # one walk over the modules: get_submodule per path cost 0.7 ms on a transformer
        for path, module in model.named_modules(remove_duplicate=False):
            if path in missing:
                modules[path] = type(module).__name__


def _type_info(fn: Any) -> tuple[str, str, tuple[tuple[str, str], ...], bool]:
    """(label, type name, saved attributes, is a custom Function) of a node's type."""
    cls = type(fn)
    info = _TYPES.get(cls)
    if info is None:
        names, custom = saved_layout(cls, fn)
        label = cls._forward_cls.__name__ if custom else cls.__name__
        info = _TYPES[cls] = (label, cls.__name__, names, custom)
    return info


# Per autograd node type: what _type_info says. Bounded by the number of node types torch
# and the program's custom Functions define.
_TYPES: dict[type, tuple[str, str, tuple[tuple[str, str], ...], bool]] = {}


class _Walk:
    """One trace: the nodes found so far, in traversal order, and their ids."""

    def __init__(self, names: dict[int, str], saved: bool) -> None:
        self.names = names
        self.saved = saved
        # Rows of the graph in id order: a finished Node (leaves, outputs) or, for an op, the
        # Node's fields without its module, filled in once every capture record is known.
        self.rows: list[Any] = []
        # autograd node object, or id() of a leaf tensor → node id. Leaf tensors stay alive
        # during the walk (held by the outputs or their AccumulateGrad key): no id() reused.
        self.ids: dict[Any, str] = {}
        self.ops: list[Any] = []  # op autograd nodes in id order, also the walk's FIFO queue
        self.records: list[CaptureRecord] = []

    def leaf(self, var: torch.Tensor) -> str:
        ids = self.ids
        found = ids.get(id(var))
        if found is not None:
            return found
        rows = self.rows
        node_id = ids[id(var)] = f"n{len(rows)}"
        name = self.names.get(id(var))
        shape, dtype = tuple(var.shape), _dtype(var.dtype)
        if name is not None:
            module = name.rsplit(".", 1)[0] if "." in name else None
            rows.append(Node._fast(node_id, "param", name, shape, dtype, module))
        else:
            rows.append(Node._fast(node_id, "leaf", "leaf", shape, dtype, None))
        return node_id

    def op(self, fn: Any) -> str:
        """The id of a node not seen before (an op, or a leaf's AccumulateGrad)."""
        if type(fn) is _ACCUMULATE:  # the leaf tensor itself is the node
            node_id = self.ids[fn] = self.leaf(fn.variable)
            return node_id
        label, type_name, saved_names, custom = _TYPES.get(type(fn)) or _type_info(fn)
        rows = self.rows
        node_id = self.ids[fn] = f"n{len(rows)}"
        try:
            meta = fn._input_metadata
        except (AttributeError, RuntimeError):
            meta = None
        if meta:
            first = meta[0]
            shape, dtype = tuple(first.shape), _DTYPE_NAMES.get(first.dtype) or _dtype(first.dtype)
        else:
            shape, dtype = None, None
        if self.saved and (saved_names or custom):
            saved_t, attrs = _describe_saved(fn, saved_names, custom)
        else:
            saved_t, attrs = (), ()
        rec = fn.metadata.get(MODULE_TAG)
        if rec is not None and type(rec) is CaptureRecord and rec not in self.records:
            self.records.append(rec)
        rows.append((node_id, label, shape, dtype, saved_t, type_name, attrs))  # see _finish
        self.ops.append(fn)
        return node_id


def _walk(
    tensors: list[torch.Tensor],
    model: nn.Module | None,
    params: Mapping[str, torch.Tensor] | None,
    saved: bool,
) -> tuple[Graph, dict[Any, str]]:
    walk = _Walk(_param_names(model, params), saved)
    rows, ids, ops = walk.rows, walk.ids, walk.ops
    edges: list[tuple[str, str]] = []
    for i, t in enumerate(tensors):
        out_id = f"n{len(rows)}"
        label = "output" if len(tensors) == 1 else f"output {i}"
        rows.append(Node(out_id, "output", label, tuple(t.shape), _dtype(t.dtype)))
        fn = t.grad_fn
        src = (ids.get(fn) or walk.op(fn)) if fn is not None else walk.leaf(t)
        edges.append((src, out_id))
    get, new, append = ids.get, walk.op, edges.append
    done = 0
    while done < len(ops):  # breadth first: ops grows while it is read
        fn = ops[done]
        done += 1
        dst = ids[fn]
        for nxt, _ in fn.next_functions:
            if nxt is not None:
                append((get(nxt) or new(nxt), dst))
    modules: dict[str, str] = {}
    nodes = _finish(rows, ops, walk.records, modules)
    if model is not None:
        _name_containers(model, nodes, modules, walk.records)
    if len(ids) > _DEEP_GRAPH:
        ensure_deep_graph_stack()
    # Edges were found from outputs backwards; store them in a stable forward order.
    edges.reverse()
    graph = Graph(tuple(nodes), tuple(edges), tuple(sorted(modules.items())))
    return graph, ids  # ids also holds id() of leaf tensors: trace_with_ids drops those


def _finish(
    rows: list[Any], ops: list[Any], records: list[CaptureRecord], modules: dict[str, str]
) -> list[Node]:
    """The walk's rows as Nodes, each op with the module its capture record names."""
    make = Node._op
    fns = iter(ops)
    nodes: list[Node] = []
    # One capture, the common case: its bounds and lists read once, not per node.
    one = records[0] if len(records) == 1 else None
    seqs, paths = (one.seqs, one.paths) if one is not None else ([], [])
    lo, hi = (seqs[0], seqs[-1]) if seqs else (0, 0)
    find = bisect.bisect_right
    for row in rows:
        if type(row) is not tuple:
            nodes.append(row)
            continue
        fn = next(fns)
        if one is not None:
            seq = fn._sequence_nr()
            module = paths[find(seqs, seq) - 1] if lo <= seq < hi else None
        else:
            module = module_of(records, fn._sequence_nr()) if records else None
        if module is not None and module not in modules:
            modules[module] = _type_of(records, module)
        node_id, label, shape, dtype, saved_t, type_name, attrs = row
        nodes.append(make(node_id, label, shape, dtype, module, saved_t, type_name, attrs))
    return nodes


def _type_of(records: list[CaptureRecord], path: str) -> str:
    return next((r.types[path] for r in records if path in r.types), "module")


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

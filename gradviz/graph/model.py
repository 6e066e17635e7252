"""The traced autograd graph as frozen plain data: `Graph`, `Node`, `SavedTensor`."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gradviz.errors import ArgumentError

if TYPE_CHECKING:
    import graphviz

__all__ = ["Graph", "Node", "SavedTensor", "NODE_KINDS", "gc_paused"]

NODE_KINDS = ("op", "param", "leaf", "output")
JSON_FORMAT = "gradviz.graph"
JSON_VERSION = 1
_MISSING = object()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic GC while building big graphs.

    Building 100k small objects triggers repeated full collections that traverse every
    live object (a third of the time on a 25k-node chain); nothing built here is cyclic.
    Counted, because Streamlit sessions build graphs on several threads at once: the GC
    comes back on when the last pause ends, and only if it was on when the first began.

    What a pause built is kept (a graph, a recording), so it is moved to the oldest
    generation when the pause ends (`_promote_young`) instead of being collected young
    three times over and then setting off a full collection of the whole heap.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                _promote_young()
                gc.enable()


# Below this many new objects the young collections are cheap: leave them to the GC.
PROMOTE_AT = 20_000


def _promote_young() -> None:
    """Move every young object to the oldest generation without traversing them.

    A 25k-node recording's ~175k objects, allocated with the GC paused, otherwise went
    through a young collection, a middle one, and — being more than a quarter of the heap's
    old objects — set off a full collection of every object of the model too (measured 330
    of the 420 ms of reading that recording's steps). Python has no "promote" call;
    freeze + unfreeze is one (freeze moves all generations to the permanent one and zeroes
    the young count, unfreeze hands them back to the oldest). Skipped when the program has
    frozen objects of its own (gc.freeze before fork), which unfreeze would thaw. Garbage
    cycles made during the pause wait for the next full collection instead of a young one.
    """
    if gc.get_count()[0] >= PROMOTE_AT and gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = True


@dataclass(frozen=True)
class SavedTensor:
    """What an autograd node saved for backward: the name, shape and dtype only."""

    name: str
    shape: tuple[int, ...] | None
    dtype: str | None

    def describe(self) -> str:
        if self.shape is None:
            return f"{self.name}: {self.dtype}"
        dims = "×".join(str(s) for s in self.shape) or "scalar"
        return f"{self.name}: {dims} {self.dtype}"


@dataclass(frozen=True)
class Node:
    """One node of the graph.

    kind: "op" (an autograd node), "param" (a leaf named by a model or params),
    "leaf" (another leaf that requires grad) or "output" (a traced tensor).
    label: op name ("AddmmBackward0"; a custom Function's class name, "MyReLU"),
    parameter name ("fc1.weight"), or "output"/"output 1" for outputs.
    grad_fn: the autograd node's type name for op nodes ("MyReLUBackward"), else None.
    module: path of the module that created an op (from `capture`) or that owns a param.
    attrs: non-tensor values the op saved (dim, alpha, stride...), as (name, repr) pairs.
    """

    id: str
    kind: str
    label: str
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    module: str | None = None
    saved: tuple[SavedTensor, ...] = ()
    grad_fn: str | None = None
    attrs: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "label": self.label}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        if self.dtype is not None:
            out["dtype"] = self.dtype
        if self.module is not None:
            out["module"] = self.module
        if self.grad_fn is not None:
            out["grad_fn"] = self.grad_fn
        if self.saved:
            out["saved"] = [
                {
                    "name": s.name,
                    "shape": None if s.shape is None else list(s.shape),
                    "dtype": s.dtype,
                }
                for s in self.saved
            ]
        if self.attrs:
            out["attrs"] = [list(a) for a in self.attrs]
        return out

    @classmethod
    def _op(
        cls,
        id: str,
        label: str,
        shape: tuple[int, ...] | None,
        dtype: str | None,
        module: str | None,
        saved: tuple[SavedTensor, ...],
        grad_fn: str,
        attrs: tuple[tuple[str, str], ...],
    ) -> Node:
        """An op node, built without the generated frozen __init__: its nine
        object.__setattr__ calls cost 1.9 µs a node against 0.5 µs here, a tenth of
        tracing an 80k-node graph. Equal to Node(id, "op", ...) in every way."""
        node = object.__new__(cls)
        node.__dict__.update(
            id=id,
            kind="op",
            label=label,
            shape=shape,
            dtype=dtype,
            module=module,
            saved=saved,
            grad_fn=grad_fn,
            attrs=attrs,
        )
        return node

    @classmethod
    def _fast(
        cls,
        id: str,
        kind: str,
        label: str,
        shape: tuple[int, ...] | None,
        dtype: str | None,
        module: str | None,
    ) -> Node:
        """A node without saved values, built like `_op` (half of a chain's nodes are
        parameters). Equal to Node(id, kind, label, shape, dtype, module)."""
        node = object.__new__(cls)
        node.__dict__.update(
            id=id, kind=kind, label=label, shape=shape, dtype=dtype, module=module, saved=(),
            grad_fn=None, attrs=(),
        )
        return node

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Node:
        kind = data.get("kind")
        if kind not in NODE_KINDS:
            raise ArgumentError("node.kind", kind, f"use one of {', '.join(NODE_KINDS)}")
        shape = data.get("shape")
        return cls(
            id=str(data["id"]),
            kind=kind,
            label=str(data["label"]),
            shape=None if shape is None else tuple(int(s) for s in shape),
            dtype=data.get("dtype"),
            module=data.get("module"),
            grad_fn=data.get("grad_fn"),
            saved=tuple(
                SavedTensor(
                    s["name"],
                    None if s.get("shape") is None else tuple(int(v) for v in s["shape"]),
                    s.get("dtype"),
                )
                for s in data.get("saved", ())
            ),
            attrs=tuple((str(k), str(v)) for k, v in data.get("attrs", ())),
        )


@dataclass(frozen=True)
class Graph:
    """A traced autograd graph: nodes in traversal order, edges in forward direction.

    `edges` holds (src_id, dst_id) pairs from inputs/parameters towards outputs; an op
    that uses the same tensor twice (x * x) has the edge twice. `modules` maps each
    module path seen during `capture` to its class name ("layers.0" → "TransformerEncoderLayer").
    """

    nodes: tuple[Node, ...]
    edges: tuple[tuple[str, str], ...]
    modules: tuple[tuple[str, str], ...] = ()
    _index: dict[str, Node] = field(init=False, repr=False, compare=False)
    _memo: dict[str, Any] = field(init=False, repr=False, compare=False)
    _memo_lock: threading.RLock = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {n.id: n for n in self.nodes})
        object.__setattr__(self, "_memo", {})
        object.__setattr__(self, "_memo_lock", threading.RLock())

    def __reduce__(self) -> tuple[Any, ...]:
        # Copies and pickles (Streamlit caches, worker processes) start with an empty memo.
        return (type(self), (self.nodes, self.edges, self.modules))

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()`, once per graph: graphs are frozen, so what is derived from one
        (module paths, runs of repeated blocks, the last view's assignment) lives with it
        and dies with it. Sessions on other threads sharing a graph wait for one compute."""
        found = self._memo.get(key, _MISSING)
        if found is not _MISSING:
            return found
        with self._memo_lock:
            found = self._memo.get(key, _MISSING)
            if found is _MISSING:
                found = self._memo[key] = compute()
        return found

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, node_id: str) -> Node:
        try:
            return self._index[node_id]
        except KeyError:
            raise ArgumentError(
                "node_id",
                node_id,
                f"use an id of this graph, e.g. {self.nodes[0].id!r}"
                if self.nodes
                else "the graph is empty",
            ) from None

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._index

    def of_kind(self, kind: str) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.kind == kind)

    @property
    def outputs(self) -> tuple[Node, ...]:
        return self.of_kind("output")

    @property
    def module_types(self) -> dict[str, str]:
        return dict(self.modules)

    def inputs_of(self, node_id: str) -> list[str]:
        """Ids of the nodes feeding `node_id` (forward direction), with repeats."""
        return [s for s, d in self.edges if d == node_id]

    def users_of(self, node_id: str) -> list[str]:
        return [d for s, d in self.edges if s == node_id]

    def counts(self) -> dict[str, int]:
        """Number of nodes of each kind."""
        out = dict.fromkeys(NODE_KINDS, 0)
        for n in self.nodes:
            out[n.kind] += 1
        return out

    def op_histogram(self) -> dict[str, int]:
        """How many op nodes carry each label, most common first."""
        hist: dict[str, int] = {}
        for n in self.nodes:
            if n.kind == "op":
                hist[n.label] = hist.get(n.label, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    # -- export ---------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Node-link form, readable back with `Graph.from_json`."""
        return {
            "format": JSON_FORMAT,
            "version": JSON_VERSION,
            "nodes": [n.to_json() for n in self.nodes],
            "edges": [list(e) for e in self.edges],
            "modules": [list(m) for m in self.modules],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Graph:
        if not isinstance(data, Mapping) or data.get("format") != JSON_FORMAT:
            raise ArgumentError(
                "data",
                type(data).__name__ if not isinstance(data, Mapping) else data.get("format"),
                f"pass the dict made by Graph.to_json() (its 'format' is {JSON_FORMAT!r})",
            )
        if data.get("version") != JSON_VERSION:
            raise ArgumentError(
                "data['version']", data.get("version"), f"this gradviz reads version {JSON_VERSION}"
            )
        nodes = tuple(Node.from_json(n) for n in data["nodes"])
        ids = {n.id for n in nodes}
        edges = tuple((str(s), str(d)) for s, d in data["edges"])
        for s, d in edges:
            if s not in ids or d not in ids:
                raise ArgumentError(
                    "data['edges']", (s, d), "every edge must join two node ids listed in 'nodes'"
                )
        modules = tuple((str(p), str(t)) for p, t in data.get("modules", ()))
        return cls(nodes=nodes, edges=edges, modules=modules)

    def to_dot(self, **options: Any) -> graphviz.Digraph:
        """Draw the graph; see `gradviz.draw.dot.to_dot` for the options."""
        from gradviz.draw.dot import to_dot

        return to_dot(self, **options)

    def _repr_mimebundle_(
        self, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
    ) -> dict[str, Any]:
        # Jupyter shows a Graph as its default drawing.
        return self.to_dot()._repr_mimebundle_(include=include, exclude=exclude)

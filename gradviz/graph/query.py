"""Questions about a graph: which nodes match a search, everything known about one drawn
id (node, module, rolled run, folded run) as plain data for a panel."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gradviz.errors import ArgumentError
from gradviz.graph.model import Graph, Node, gc_paused
from gradviz.graph.paths import in_subtree, shape_text
from gradviz.graph.runs import run_for, run_holds
from gradviz.graph.stats import TensorStats, tensor_stats

if TYPE_CHECKING:
    from gradviz.backward.stepper import BackwardStepper
    from gradviz.draw.plan import View

__all__ = ["autograd_nodes_of", "inspect", "search"]


@gc_paused()
def search(graph: Graph, query: str) -> list[str]:
    """Ids of the nodes whose op name, module path, module type, parameter name or id
    contains `query` (case-insensitive), in graph order. An empty query matches nothing."""
    if not isinstance(query, str):
        raise ArgumentError("query", query, "pass text, e.g. 'addmm', 'layers.3' or 'fc1.weight'")
    q = query.strip().lower()
    if not q:
        return []
    types = {p: t.lower() for p, t in graph.modules}
    out = []
    for n in graph.nodes:
        hay = (
            n.label.lower(),
            (n.grad_fn or "").lower(),
            (n.module or "").lower(),
            types.get(n.module or "", ""),
        )
        if n.id.lower() == q or any(q in h for h in hay):
            out.append(n.id)
    return out


def inspect(
    graph: Graph,
    node_id: str,
    stepper: BackwardStepper | None = None,
    *,
    stats: Mapping[str, Mapping[str, TensorStats]] | None = None,
    view: View | None = None,
) -> dict[str, Any]:
    """Everything known about one drawn id, as plain data for a panel.

    A graph node id gives its op name, module, shapes, saved tensors (with statistics from
    `trace_with_stats` when `stats` is given), saved values, inputs and users, and with a
    `stepper` (same program) the gradients of its backward step. "mod/PATH" or "m/PATH"
    gives the module's summary, "roll/…" a rolled run's, "fold/…" (with `view`) a folded run's.
    """
    if not isinstance(graph, Graph):
        raise ArgumentError("graph", type(graph).__name__, "pass a gradviz Graph")
    if not isinstance(node_id, str):
        raise ArgumentError("node_id", node_id, "pass a node id such as 'n3' or a drawn id 'mod/…'")
    if node_id.startswith(("mod/", "m/")):
        return _inspect_module(graph, node_id.split("/", 1)[1])
    if node_id.startswith("roll/"):
        run = run_for(graph, node_id)
        if run is None:
            raise ArgumentError(
                "node_id",
                node_id,
                "this graph has no such run of repeated blocks; use an id from the drawing",
            )
        rolled = _inspect_module(graph, run.paths[0])
        rolled.update(
            kind="roll",
            id=node_id,
            label=run.title,
            paths=list(run.paths),
            count=run.count,
            module=run.parent,
        )
        return rolled
    if node_id.startswith("fold/") or node_id == "more":
        return _inspect_fold(graph, node_id, view)
    node = graph.node(node_id)
    node_stats = (stats or {}).get(node_id, {})
    info: dict[str, Any] = {
        "id": node.id,
        "kind": node.kind,
        "label": node.label,
        "grad_fn": node.grad_fn,
        "module": node.module,
        "module_type": graph.module_types.get(node.module or ""),
        "shape": node.shape,
        "shape_text": shape_text(node.shape, "?"),
        "dtype": node.dtype,
        "saved": [
            {
                "name": s.name,
                "shape": s.shape,
                "dtype": s.dtype,
                "stats": node_stats[s.name].to_dict() if s.name in node_stats else None,
            }
            for s in node.saved
        ],
        "value": node_stats["value"].to_dict() if "value" in node_stats else None,
        "attrs": dict(node.attrs),
        "inputs": [{"id": i, "label": graph.node(i).label} for i in graph.inputs_of(node_id)],
        "users": [{"id": u, "label": graph.node(u).label} for u in graph.users_of(node_id)],
        "gradients": None,
    }
    if stepper is not None:
        info["gradients"] = _step_gradients(stepper, node)
    return info


def _inspect_fold(graph: Graph, node_id: str, view: View | None) -> dict[str, Any]:
    item = next((i for i in view.items if i.id == node_id), None) if view is not None else None
    members = list(item.members) if item else []
    return {
        "id": node_id,
        "kind": "fold",
        "label": item.title if item else "folded run",
        "members": members,
        "ops": dict(
            Counter(
                graph.node(m).label for m in members if graph.node(m).kind == "op"
            ).most_common()
        ),
    }


def _step_gradients(stepper: BackwardStepper, node: Node) -> dict[str, Any] | None:
    step = next((s for s in stepper if s.node.id == node.id), None)
    if step is None or step.node.label != node.label:
        return None

    def many(arrays: Sequence[Any]) -> list[dict[str, Any] | None]:
        return [None if a is None else tensor_stats(a).to_dict() for a in arrays]

    out: dict[str, Any] = {
        "step": step.index,
        "grad_outputs": many(step.grad_outputs),
        "grad_inputs": many(step.grad_inputs),
        "to": list(step.next_ids),
        "max_rel_error": step.max_rel_error,
        "check": None if step.check is None else {
            "measure": step.check.measure, "value": step.check.value, "bound": step.check.bound},
        "agrees": step.agrees,
        "formula": step.formula,
    }
    if node.kind in ("param", "leaf"):
        grad = stepper.param_grads.get(node.label)
        out["grad"] = None if grad is None else tensor_stats(grad).to_dict()
    return out


def _inspect_module(graph: Graph, path: str) -> dict[str, Any]:
    members = autograd_nodes_of(graph, path)
    if not members:
        raise ArgumentError(
            "node_id",
            f"mod/{path}",
            "no node of this graph sits in that module; use an id from the drawing",
        )
    inside = set(members)
    nodes = [graph.node(m) for m in members]
    ops = Counter(n.label for n in nodes if n.kind == "op")
    params = [
        {"name": n.label, "shape": n.shape, "dtype": n.dtype} for n in nodes if n.kind == "param"
    ]
    ins = [s for s, d in graph.edges if d in inside and s not in inside]
    outs = [s for s, d in graph.edges if s in inside and d not in inside]
    return {
        "id": f"mod/{path}",
        "kind": "module",
        "label": graph.module_types.get(path, "module"),
        "module": path,
        "module_type": graph.module_types.get(path, "module"),
        "nodes": len(members),
        "ops": dict(ops.most_common()),
        "params": params,
        "param_count": sum(math.prod(p["shape"] or ()) for p in params),
        "input_shapes": sorted(
            {shape_text(graph.node(s).shape, "?") for s in ins if graph.node(s).kind == "op"}
        ),
        "output_shapes": sorted({shape_text(graph.node(s).shape, "?") for s in outs}),
        "members": members,
    }


# -- forward (module) view ------------------------------------------------------------
def autograd_nodes_of(graph: Graph, module_path: str) -> list[str]:
    """Ids of the autograd nodes (ops and parameters) inside module `module_path`, with
    its submodules; also accepts drawn ids "mod/PATH", "m/PATH" and "roll/…"."""
    if not isinstance(module_path, str):
        raise ArgumentError("module_path", module_path, "pass a module path such as 'layers.0'")
    if module_path.startswith("roll/"):
        return [n.id for n in graph.nodes if n.module and run_holds(module_path, n.module)]
    if module_path.startswith(("mod/", "m/")):
        module_path = module_path.split("/", 1)[1]
    return [n.id for n in graph.nodes if in_subtree(n.module, module_path)]

"""Module paths ("encoder.layer.3.attention") as the graph's tree: prefixes, parents,
natural order ("layers.10" after "layers.9"), and every path a graph's nodes sit in."""

from __future__ import annotations

import functools

from gradviz.graph.model import Graph

__all__ = ["depth", "in_subtree", "module_paths", "natural_key", "parent", "prefixes", "shape_text"]


def depth(path: str) -> int:
    return path.count(".") + 1


# Bounded (issue #13): room for a 25 000-layer chain's paths, a few MB at most in a process
# that draws many models.
@functools.lru_cache(maxsize=1 << 15)
def prefixes(path: str) -> tuple[str, ...]:
    """ "a.b.c" → ("a", "a.b", "a.b.c")."""
    if "." not in path:
        return (path,)
    parts = path.split(".")
    return tuple(".".join(parts[: i + 1]) for i in range(len(parts)))


def parent(path: str) -> str | None:
    return path.rsplit(".", 1)[0] if "." in path else None


@functools.lru_cache(maxsize=1 << 15)
def natural_key(path: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key comparing digit parts as numbers, so "layers.10" sorts after "layers.9"."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in path.split("."))


def in_subtree(module: str | None, path: str) -> bool:
    return module is not None and (module == path or module.startswith(path + "."))


def module_paths(graph: Graph) -> list[str]:
    """Every module path a node sits in, with all its ancestors ("layers", "layers.0", …)."""

    def compute() -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for m in {n.module for n in graph.nodes if n.module}:
            for p in prefixes(m):
                seen[p] = None
        return tuple(sorted(seen, key=natural_key))

    return list(graph.memo("paths", compute))


def shape_text(shape: tuple[int, ...] | None, unknown: str = "") -> str:
    """ "3×4", "scalar" for (), `unknown` when the shape was not recorded."""
    if shape is None:
        return unknown
    return "×".join(map(str, shape)) if shape else "scalar"

"""Tracing and drawing speed: gradviz beside torchviz and torchview, in one run.

For each model: the time from a finished forward to DOT text (trace + to_dot), and the
time Graphviz's `dot` takes to lay that DOT out, for
  - torchviz make_dot (default), and with show_attrs + show_saved,
  - torchview draw_graph (it runs its own forward, so its time includes one),
  - gradviz's default view (within the 500-node budget) and gradviz with every node.
Targets (issue 2): gradviz trace+DOT ≤ 0.33× torchviz attrs+saved on the 12-layer
transformer; gradviz's default view of the 24-layer transformer lays out in ≤ 0.2× the
time torchviz's DOT takes; the 25k-node chain's default view ≤ 2 s end to end.

Run: python benchmarks/bench_trace.py [--quick] [--layout-timeout 60]
Needs the bench extra: pip install -e ".[bench]".
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from gradviz import trace
from gradviz.zoo.examples import build_example, examples

sys.setrecursionlimit(10_000)  # torchviz recurses once per graph level


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def layout_seconds(dot_source: str, timeout: float) -> float | None:
    start = time.perf_counter()
    try:
        subprocess.run(["dot", "-Tsvg", "-o", "/dev/null"], input=dot_source.encode(), check=True,
                       capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - start


def fmt(seconds: float | None, timeout: float) -> str:
    if seconds is None:
        return f">{timeout:.0f} s"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def bench_model(name: str, repeat: int,
                layout_timeout: float) -> list[tuple[str, str, float | None, float | None, int]]:
    rows = []
    model, loss = build_example(name)
    params = dict(model.named_parameters())

    t, graph = timed(lambda: trace(loss, model=model), repeat)
    t_dot, dot = timed(lambda: graph.to_dot(), repeat)
    rows.append((name, "gradviz default view", t + t_dot,
                 layout_seconds(dot.source, layout_timeout), len(graph)))
    t_full, full = timed(lambda: graph.to_dot(show_saved=True, show_attrs=True, budget=None),
                         repeat)
    full_layout = layout_seconds(full.source, layout_timeout) if len(graph) < 20_000 else None
    rows.append((name, "gradviz all nodes +saved+attrs", t + t_full, full_layout, len(graph)))

    try:
        from torchviz import make_dot

        t_tv, tv = timed(lambda: make_dot(loss, params=params), repeat)
        rows.append((name, "torchviz make_dot", t_tv, layout_seconds(tv.source, layout_timeout),
                     len(graph)))
        t_tva, tva = timed(lambda: make_dot(loss, params=params, show_attrs=True, show_saved=True),
                           repeat)
        rows.append((name, "torchviz attrs+saved", t_tva,
                     layout_seconds(tva.source, layout_timeout), len(graph)))
    except RecursionError:
        rows.append((name, "torchviz make_dot", None, None, len(graph)))
    except ImportError:
        print("torchviz not installed: pip install -e '.[bench]'", file=sys.stderr)

    if not name.startswith("chain"):
        try:
            from torchview import draw_graph

            example = examples()[name]
            fresh, loss_fn = example.make(0)
            # torchview needs the inputs; the examples close over them, so wrap the loss.
            wrapper = _LossModule(fresh, loss_fn)
            t_tw, tw = timed(
                lambda: draw_graph(
                    wrapper, input_data=[torch.zeros(1)], depth=99, expand_nested=True
                ),
                1,
            )
            rows.append((name, "torchview draw_graph (incl. forward)", t_tw,
                         layout_seconds(tw.visual_graph.source, layout_timeout), len(graph)))
        except Exception as exc:  # report, do not stop the table
            rows.append((name, f"torchview failed: {type(exc).__name__}", None, None, len(graph)))
    return rows


class _LossModule(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, loss_fn: Callable) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, _unused: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, skip the chain")
    parser.add_argument("--layout-timeout", type=float, default=60.0)
    args = parser.parse_args()
    repeat = 1 if args.quick else 7  # medians of 7: the machine is shared
    # Warm up: first calls pay for imports and per-op-type lookups, in every tool.
    for name in ("two-layer-relu", "transformer-2"):
        model, loss = build_example(name)
        _ = trace(loss, model=model).to_dot().source
    names = ["transformer-12", "transformer-24", "resnet50"] + ([] if args.quick else ["chain-25k"])
    rows = []
    for name in names:
        rows.extend(bench_model(name, repeat, args.layout_timeout))
    print(f"\n{'model':16} {'tool':38} {'nodes':>7} {'trace+DOT':>10} {'dot layout':>11}")
    for model, tool, t, lay, nodes in rows:
        t_text = "failed" if t is None else fmt(t, 0)
        lay_text = "—" if t is None else fmt(lay, args.layout_timeout)
        print(f"{model:16} {tool:38} {nodes:>7,} {t_text:>10} {lay_text:>11}")

    def get(model: str, tool: str, col: int) -> float | None:
        return next((r[col] for r in rows if r[0] == model and r[1] == tool), None)

    print("\nTargets")
    g12, v12 = (
        get("transformer-12", "gradviz default view", 2),
        get("transformer-12", "torchviz attrs+saved", 2),
    )
    if g12 and v12:
        print("  trace+DOT, 12-layer transformer: gradviz / torchviz attrs+saved = "
              f"{g12 / v12:.2f}  (target ≤ 0.33)")
    g24, v24 = (
        get("transformer-24", "gradviz default view", 3),
        get("transformer-24", "torchviz make_dot", 3),
    )
    if g24 and v24:
        print(f"  layout, 24-layer transformer: gradviz default view / torchviz = {g24 / v24:.2f}  "
              "(target ≤ 0.2)")
    if not args.quick:
        start = time.perf_counter()
        model, loss = build_example("chain-25k")
        built = time.perf_counter()
        dot = trace(loss, model=model).to_dot()
        lay = layout_seconds(dot.source, args.layout_timeout) or float("nan")
        total = time.perf_counter() - built
        print(f"  25k-node chain default view: trace+DOT+layout {total:.2f} s after a "
              f"{built - start:.2f} s forward  (target ≤ 2 s; layout {lay * 1000:.0f} ms)")


if __name__ == "__main__":
    main()

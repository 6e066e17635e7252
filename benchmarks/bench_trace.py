"""Tracing and drawing speed: gradviz beside torchviz (and torchview), same work, same input.

Every row times one tool on a fresh autograd graph of the same real program (a new forward
before each run, not timed unless the row says so), after one untimed warm-up run of every
tool; runs of the tools are interleaved so the shared machine's noise falls on all of them.
Each cell is the median of `--repeat` runs (≥ 5) with the fastest and slowest run beside it.
Times are CPU time of this process, plus its `dot` children's in rows with a layout (the
machine is shared with other jobs: wall time swings with their load); `--wall` reports wall
time instead.

Rows
  transformer-12 (gradviz.zoo.examples: 12-layer TransformerEncoder, d_model 256, input
  2×16×256), from a finished forward to DOT text:
    - "same drawing": torchviz make_dot(show_attrs=True, show_saved=True) against gradviz
      trace + to_dot(show_saved=True, show_attrs=True, budget=None): every node, every saved
      tensor and attribute;
    - default drawings: torchviz make_dot() against gradviz trace + to_dot();
    - the forward itself, plain and under gradviz `capture`;
    - torchview draw_graph on the same model and input (it runs its own forward, so its row
      is set against gradviz's capture + forward + trace + default view).
  100k-node chain (25 000 Linear(2, 2) layers):
    - trace cost per node at 1k, 10k and 100k nodes;
    - forward plain and under `capture`;
    - same drawing as torchviz (DOT text of every node), torchviz in a big-stack thread;
    - capture + forward + trace + default view + `dot` layout, end to end.
Targets (issues #14): same drawing on transformer-12 ≤ 0.2× torchviz; trace µs/node at 100k
≤ 1.3× at 1k; capture's forward ≤ 1.2× the plain forward at 100k; the chain end to end ≤ 1 s.

Run: python benchmarks/bench_trace.py [--repeat 7] [--wall] [--no-chain] [--no-layout]
Needs the bench extra: pip install -e ".[bench]".
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradviz import capture, trace
from gradviz.graph.tracing import ensure_deep_graph_stack, run_with_big_stack
from gradviz.zoo.examples import examples

Clock = Callable[[], float]
CLOCK: Clock = time.process_time


def cpu_with_children() -> float:
    """CPU time of this process and of its finished children (`dot`): under a shared
    machine's load, wall time of a layout swings several-fold, CPU time does not."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def machine() -> str:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    dot = subprocess.run(["dot", "-V"], capture_output=True, text=True, check=False).stderr
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return "\n".join(
        [
            f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores,"
            f" load average {load}; {platform.platform()}",
            f"python {platform.python_version()}, torch {torch.__version__}, gradviz "
            f"{version('gradviz-explorer')}, torchviz {version('torchviz')}, torchview "
            f"{version('torchview')}, graphviz (python) {version('graphviz')}, {dot.strip()}",
            f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}",
        ]
    )


class Timings:
    """Interleaved runs of several tools: each gets a fresh input from its `setup`."""

    def __init__(self, repeat: int) -> None:
        self.repeat = repeat
        self.cases: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]] = {}
        self.results: dict[str, list[float]] = {}

    def add(self, name: str, setup: Callable[[], Any], fn: Callable[[Any], Any]) -> None:
        self.cases[name] = (setup, fn)

    def run(self) -> Timings:
        for rep in range(self.repeat + 1):  # run 0 warms every tool up and is not counted
            for name, (setup, fn) in self.cases.items():
                arg = setup()
                start = CLOCK()
                out = fn(arg)
                took = CLOCK() - start
                del arg, out  # freeing the autograd graph is not part of any row
                if rep:
                    self.results.setdefault(name, []).append(took)
        return self

    def median(self, name: str) -> float:
        return statistics.median(self.results[name])

    def cell(self, name: str) -> str:
        v = self.results[name]
        return f"{ms(statistics.median(v)):>9} ({ms(min(v))}–{ms(max(v))})"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def row(label: str, t: Timings, name: str, extra: str = "") -> None:
    print(f"  {label:66} {t.cell(name):>30} {extra}")


def ratio_line(text: str, value: float, target: float, smaller: bool = True) -> None:
    ok = value <= target if smaller else value >= target
    print(f"  {text:66} {value:6.2f}   target ≤ {target:<4}  {'met' if ok else 'NOT met'}")


# -- the transformer --------------------------------------------------------------------
def transformer_rows(repeat: int, layout: bool) -> list[tuple[str, float, float]]:
    from torchviz import make_dot

    model, loss_fn = examples()["transformer-12"].make(0)
    params = dict(model.named_parameters())
    x = _input_of(loss_fn)

    def plain() -> torch.Tensor:
        return loss_fn(model)

    def captured() -> torch.Tensor:
        with capture(model):
            return loss_fn(model)

    t = Timings(repeat)
    t.add("tv same", plain, lambda loss: make_dot(loss, params, True, True).source)
    t.add("gv same", captured, lambda loss: _gv_full(loss, model))
    t.add("tv default", plain, lambda loss: make_dot(loss, params).source)
    t.add("gv default", captured, lambda loss: trace(loss, model=model).to_dot().source)
    t.add("fw plain", lambda: None, lambda _: plain())
    t.add("fw capture", lambda: None, lambda _: captured())
    t.add("gv e2e", lambda: None, lambda _: trace(captured(), model=model).to_dot().source)
    try:
        from torchview import draw_graph

        t.add("torchview", lambda: None, lambda _: draw_graph(
            model, input_data=x, depth=99, expand_nested=True).visual_graph.source)
    except ImportError:
        print("torchview not installed: pip install -e '.[bench]'", file=sys.stderr)
    t.run()
    nodes = len(trace(captured(), model=model))
    print(f"\ntransformer-12 ({nodes} graph nodes), from a finished forward to DOT text")
    row("same drawing: torchviz make_dot(show_attrs, show_saved)", t, "tv same")
    row("same drawing: gradviz trace + to_dot(saved, attrs, budget=None)", t, "gv same")
    row("default: torchviz make_dot()", t, "tv default")
    row("default: gradviz trace + to_dot() (default view)", t, "gv default")
    row("forward, plain", t, "fw plain")
    row("forward under gradviz capture", t, "fw capture")
    if "torchview" in t.results:
        row("torchview draw_graph (its own forward included)", t, "torchview")
    row("gradviz capture + forward + trace + default view", t, "gv e2e")
    if layout:
        _layout_rows(model, loss_fn, params, repeat)
    return [
        ("same drawing, transformer-12: gradviz / torchviz", t.median("gv same")
         / t.median("tv same"), 0.2),
        ("capture's forward / plain forward, transformer-12 (not a target)",
         t.median("fw capture") / t.median("fw plain"), 1.2),
    ]


def _gv_full(loss: torch.Tensor, model: nn.Module) -> str:
    graph = trace(loss, model=model)
    return graph.to_dot(show_saved=True, show_attrs=True, budget=None).source


def _input_of(loss_fn: Callable[[nn.Module], torch.Tensor]) -> torch.Tensor:
    # The examples close over their input; torchview needs it as an argument.
    cells = [c.cell_contents for c in loss_fn.__closure__ or ()]
    return next(c for c in cells if isinstance(c, torch.Tensor))


def _layout_rows(model: nn.Module, loss_fn: Callable, params: dict, repeat: int) -> None:
    from torchviz import make_dot

    with capture(model):
        loss = loss_fn(model)
    sources = {
        "dot layout of torchviz make_dot()": make_dot(loss, params).source,
        "dot layout of gradviz's default view": trace(loss, model=model).to_dot().source,
    }
    t = Timings(max(3, repeat // 2))
    for name, source in sources.items():
        t.add(name, lambda s=source: s, _dot)
    global CLOCK
    clock, CLOCK = CLOCK, _child_clock(CLOCK)  # `dot` runs in a child process
    try:
        t.run()
    finally:
        CLOCK = clock
    for name in sources:
        row(name, t, name)


def _child_clock(clock: Clock) -> Clock:
    return time.perf_counter if clock is time.perf_counter else cpu_with_children


def _dot(source: str) -> None:
    subprocess.run(["dot", "-Tsvg", "-o", os.devnull], input=source.encode(), check=True,
                   capture_output=True, timeout=600)


# -- the chain --------------------------------------------------------------------------
def _chain(nodes: int) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(2, 2) for _ in range(nodes // 4)]), torch.randn(1, 2)


def chain_rows(repeat: int) -> list[tuple[str, float, float]]:
    sizes = (1_000, 10_000, 100_000)
    built = {n: _chain(n) for n in sizes}
    t = Timings(repeat)
    for n in sizes:
        model, x = built[n]
        t.add(f"trace {n}", lambda m=model, x=x: _captured(m, x), lambda loss, m=model: trace(
            loss, model=m))
    model, x = built[100_000]
    t.add("fw plain", lambda: None, lambda _: model(x).sum())
    t.add("fw capture", lambda: None, lambda _: _captured(model, x))
    t.add("gv same", lambda: _captured(model, x), lambda loss: _gv_full(loss, model))
    t.run()
    tv = _torchviz_chain(model, x, repeat)
    e2e = _chain_end_to_end(model, x, repeat)
    print("\n100k-node chain (25 000 Linear(2, 2)), trace per node")
    for n in sizes:
        print(f"  trace, {n:>7,} nodes: {t.median(f'trace {n}') / (n + 2) * 1e6:6.2f} µs/node"
              f"   (whole trace {t.cell(f'trace {n}')})")
    row("forward, plain", t, "fw plain")
    row("forward under gradviz capture", t, "fw capture")
    row("same drawing (every node): gradviz trace + to_dot(budget=None)", t, "gv same")
    if tv is not None:
        row("same drawing: torchviz make_dot(show_attrs, show_saved)", tv, "tv")
    row("gradviz capture+forward+trace+default view+dot layout", e2e, "e2e")
    per = [t.median(f"trace {n}") / (n + 2) for n in sizes]
    out = [
        ("trace µs/node at 100k / at 1k", per[-1] / per[0], 1.3),
        ("forward under capture / plain forward, 100k chain", t.median("fw capture")
         / t.median("fw plain"), 1.2),
        ("capture+forward+trace+default view+layout, 100k chain (seconds)", e2e.median("e2e"),
         1.0),
    ]
    if tv is not None:
        out.append(("same drawing, 100k chain: gradviz / torchviz (not a target)",
                    t.median("gv same") / tv.median("tv"), 1.0))
    return out


def _captured(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with capture(model):
        return model(x).sum()


def _torchviz_chain(model: nn.Module, x: torch.Tensor, repeat: int) -> Timings | None:
    from torchviz import make_dot

    params = dict(model.named_parameters())

    def run() -> Timings:
        sys.setrecursionlimit(1_000_000)  # make_dot recurses once per graph level
        t = Timings(repeat)
        t.add("tv", lambda: model(x).sum(), lambda loss: make_dot(loss, params, True, True).source)
        return t.run()

    try:
        return run_with_big_stack(run, stack_bytes=1 << 30)
    except RecursionError:
        print("torchviz: RecursionError on the 100k chain", file=sys.stderr)
        return None


def _chain_end_to_end(model: nn.Module, x: torch.Tensor, repeat: int) -> Timings:
    global CLOCK
    clock, CLOCK = CLOCK, _child_clock(CLOCK)  # `dot` runs in a child process
    try:
        t = Timings(repeat)
        t.add("e2e", lambda: None, lambda _: _dot(trace(_captured(model, x), model=model)
                                                  .to_dot().source))
        return t.run()
    finally:
        CLOCK = clock


def main() -> None:
    global CLOCK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per cell (≥ 5)")
    parser.add_argument("--wall", action="store_true", help="wall time instead of CPU time")
    parser.add_argument("--no-chain", action="store_true", help="skip the 100k-node chain")
    parser.add_argument("--no-layout", action="store_true", help="skip `dot` layouts")
    args = parser.parse_args()
    if args.repeat < 5:
        parser.error("--repeat must be ≥ 5: a median of fewer runs says little")
    if args.wall:
        CLOCK = time.perf_counter
    torch.set_num_threads(1)
    ensure_deep_graph_stack()  # freeing a 100k-node graph recurses in C++
    print(machine())
    print(f"cells: median ({'wall' if args.wall else 'CPU'} time) of {args.repeat} runs "
          "(fastest–slowest), after one warm-up run of every tool")
    ratios = transformer_rows(args.repeat, not args.no_layout)
    if not args.no_chain:
        ratios += chain_rows(args.repeat)
    print("\nTargets")
    for text, value, target in ratios:
        ratio_line(text, value, target)


if __name__ == "__main__":
    main()

"""The models users bring (gradviz.zoo.models): trace, default view, stepping.

For every torchvision and Hugging Face model of the zoo, in one run:
- trace: forward under `capture` + `trace` (the plain forward is the fwd+bwd column's half);
- view: the default view planned, written as DOT and laid out by `dot -Tsvg` (target ≤ 1 s);
- fwd+bwd: plain forward + backward; stepper off / on: forward + BackwardStepper with
  references off (every step's gradients read) / every NumPy reference checked (every
  step's `agrees` read), as a multiple of fwd+bwd (target: on ≤ 3×).
Peer (when installed, `pip install -e .[bench]`): torchviz `make_dot` of the same model
laid out by the same `dot`, beside gradviz drawing every node with saved tensors and
attributes (`budget=None`): the same picture.

Each cell: median of --repeat runs (default 5) after one warm-up, ± half the min-max spread.
--stepper: only the fwd+bwd and stepper columns (the stepper targets, issues #14 and #15),
alternated; --cpu times those in this process's CPU time instead of wall time.
Run: python benchmarks/bench_zoo.py [--repeat 5] [--models resnet18,hf:bert] [--stepper]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import torch

from gradviz import BackwardStepper, capture, trace
from gradviz.draw.dot import to_dot
from gradviz.draw.plan import plan
from gradviz.zoo.models import build_model, model_loss, model_names


class TooSlow(Exception):
    pass


# Drawing every node of densenet121 keeps dot busy for minutes, for torchviz and for us.
LAYOUT_TIMEOUT = 20.0


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float] | None:
    """Median and half the spread of `repeat` runs of `fn`, after one warm-up run; None
    when a layout took longer than LAYOUT_TIMEOUT."""
    try:
        fn()
    except TooSlow:
        return None
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), (max(runs) - min(runs)) / 2


def alternating(fns: list[Callable[[], object]], repeat: int) -> list[tuple[float, float]]:
    """Median and half the spread of `repeat` runs of each function, in alternation after
    one warm-up round; CPU time of this (single-threaded) process when CLOCK says so."""
    for fn in fns:
        fn()
    runs: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, runs, strict=True):
            start = CLOCK[0]()
            fn()
            out.append(CLOCK[0]() - start)
    return [(statistics.median(r), (max(r) - min(r)) / 2) for r in runs]


# The stepper columns' clock: wall time, or with --cpu this process's CPU time (on a
# shared VM the neighbours' turns land in wall time only).
CLOCK: list[Callable[[], float]] = [time.perf_counter]


def lay_out(source: str) -> None:
    try:
        subprocess.run(["dot", "-Tsvg"], input=source.encode(), capture_output=True, check=True,
                       timeout=LAYOUT_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise TooSlow from e


def bench(name: str, repeat: int, stepper_only: bool = False) -> dict[str, Any]:
    model, inputs = build_model(name)

    def plain() -> None:
        model.zero_grad()
        model_loss(model, inputs).backward()

    def traced():
        with capture(model):
            loss = model_loss(model, inputs)
        return trace(loss, model=model)

    graph = traced()

    def view() -> None:
        lay_out(to_dot(graph, plan(graph)).source)

    def full() -> None:
        lay_out(to_dot(traced(), budget=None, show_saved=True, show_attrs=True).source)

    def stepper(references: bool) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad()
            steps = BackwardStepper(model_loss(model, inputs), model=model, references=references)
            for s in steps:  # every step read, references and their checks included
                _ = s.agrees if references else s.grad_inputs
        return run

    row: dict[str, Any] = {"nodes": len(graph.nodes)}
    if stepper_only:
        # Alternated, so a neighbour's burst slows the three columns alike.
        for key, t in zip(("fwd+bwd", "step off", "step on"),
                          alternating([plain, stepper(False), stepper(True)], repeat),
                          strict=True):
            row[key] = t
        return row
    row["fwd+bwd"] = timed(plain, repeat)
    row["trace"] = timed(traced, repeat)
    row["view"] = timed(view, repeat)
    row["step off"] = timed(stepper(False), repeat)
    row["step on"] = timed(stepper(True), repeat)
    row["full"] = timed(full, repeat)
    row["torchviz"] = "n/a"
    try:
        from torchviz import make_dot
    except ImportError:
        return row

    def peer() -> None:
        out = model_loss(model, inputs)
        lay_out(make_dot(out, params=dict(model.named_parameters()), show_attrs=True,
                         show_saved=True).source)

    row["torchviz"] = timed(peer, repeat)
    return row


def ms(cell: tuple[float, float] | None | str) -> str:
    if cell is None:
        return f">{LAYOUT_TIMEOUT:.0f} s"
    if isinstance(cell, str):
        return cell
    med, half = cell
    return f"{med * 1000:,.0f}±{half * 1000:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--models", default="", help="comma-separated names (default: the zoo)")
    ap.add_argument("--stepper", action="store_true", help="only fwd+bwd and the stepper")
    ap.add_argument("--cpu", action="store_true", help="with --stepper: CPU time, not wall")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.stepper and args.cpu:
        CLOCK[0] = time.process_time
    names = args.models.split(",") if args.models else model_names()
    dot = subprocess.run(["dot", "-V"], capture_output=True, text=True).stderr.strip()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"Python {platform.python_version()}, torch {torch.__version__}, {dot}")
    clock = "CPU time" if CLOCK[0] is time.process_time else "wall time"
    print(f"median ± half spread of {args.repeat} runs, ms, {clock}; off/on: stepper ÷ fwd+bwd\n")
    cols = (["fwd+bwd", "step off", "step on"] if args.stepper else
            ["fwd+bwd", "trace", "view", "step off", "step on", "full", "torchviz"])
    print(f"{'model':20} {'nodes':>6} " + " ".join(f"{c:>13}" for c in cols)
          + f" {'off ×':>6} {'on ×':>6}")
    for name in names:
        r = bench(name, args.repeat, args.stepper)
        base = r["fwd+bwd"][0]  # type: ignore[index]
        print(f"{name:20} {r['nodes']:>6} " + " ".join(f"{ms(r[c]):>13}" for c in cols)  # type: ignore[arg-type]
              + f" {r['step off'][0] / base:>5.2f}× {r['step on'][0] / base:>5.2f}×",  # type: ignore[index]
              flush=True)
    print("\nview: plan + DOT + dot -Tsvg of the default view (what the Graph page lays out).")
    print("full / torchviz: every node with saved tensors and attributes, laid out by dot.")


if __name__ == "__main__":
    main()

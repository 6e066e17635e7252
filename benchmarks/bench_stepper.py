"""Cost of stepping through backward, against a plain forward + backward of the same model.

For each model, in one run and alternating so all three meet the same neighbours:
- fwd+bwd: plain forward + backward (the peer: what torch alone costs);
- refs off: forward + BackwardStepper(references=False) + reading every step's gradients
  (`Step.grad_inputs`, so the first read, which builds the Step objects, is included);
- refs on: forward + BackwardStepper(references=True) + reading every step's check
  (`Step.agrees`): every NumPy reference computed and compared.
Targets (issues #14, #15): refs off ≤ 1.5×, refs on ≤ 3× fwd+bwd.
Models: a 12-layer TransformerEncoder, the ResNet-50-like net and the 25k-node chain.

Each cell: median of --repeat runs (default 7) after two warm-up runs, ± half the
min-max spread; the ratio is of the medians. Each run is timed in wall time and in CPU
time: on a shared VM the neighbours' turns land in wall time only.

Run: python benchmarks/bench_stepper.py [--repeat 7] [--models transformer-12,resnet50]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from gradviz.backward.rules import context_from_node, reference_for
from gradviz.backward.stepper import BackwardStepper
from gradviz.zoo.examples import examples

MODELS = ("transformer-12", "resnet50", "chain-25k")


Timing = tuple[float, float, float, float]  # wall median, ± half spread, CPU median, ± half


def alternating(fns: list[Callable[[], object]], repeat: int, warmup: int = 2) -> list[Timing]:
    """Median and half the min-max spread of `repeat` runs of each function, run in
    alternation after `warmup` rounds, so neighbours on a shared VM slow all alike; in wall
    time and in this process's CPU time (what the code costs without the neighbours' turns:
    every run here is single-threaded)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, w, c in zip(fns, wall, cpu, strict=True):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            c.append(time.process_time() - start_cpu)
            w.append(time.perf_counter() - start)
    return [(*_stats(w), *_stats(c)) for w, c in zip(wall, cpu, strict=True)]


def _stats(runs: list[float]) -> tuple[float, float]:
    return statistics.median(runs), (max(runs) - min(runs)) / 2


def run(name: str, repeat: int) -> tuple[int, list[Timing]]:
    model, loss_fn = examples()[name].make(0)

    def plain() -> None:
        model.zero_grad()
        loss_fn(model).backward()

    def stepped(references: bool) -> Callable[[], None]:
        def go() -> None:
            model.zero_grad()
            steps = BackwardStepper(loss_fn(model), model=model, references=references)
            for s in steps:  # every step read; the first read builds the Steps
                _ = s.agrees if references else s.grad_inputs
        return go

    steps = len(BackwardStepper(loss_fn(model), model=model, references=False))
    return steps, alternating([plain, stepped(False), stepped(True)], repeat)


def one_reference_time() -> tuple[str, float]:
    """Time of the NumPy reference of one AddmmBackward0 (64×1000 · 1000×100) step."""
    x = torch.randn(64, 1000, dtype=torch.float64)
    lin = torch.nn.Linear(1000, 100).double()
    out = lin(x)
    grads = (torch.randn_like(out),)
    node = out.grad_fn

    def ref() -> None:
        reference_for(context_from_node(node, grads))

    return type(node).__name__, alternating([ref], 20)[0][2]


def cell(t: Timing, cpu: bool) -> str:
    med, half = t[2:] if cpu else t[:2]
    return f"{med * 1000:,.0f}±{half * 1000:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    print(f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"median ± half spread of {args.repeat} warmed runs, ms; × : ÷ fwd+bwd median")
    print("wall: elapsed time; cpu: this process's CPU time (the same runs)\n")
    print(f"{'model':16} {'steps':>7} {'clock':>5} {'fwd+bwd':>11} {'refs off':>11} {'off ×':>6} "
          f"{'refs on':>11} {'on ×':>6}")
    for name in args.models.split(","):
        steps, (plain, off, on) = run(name, args.repeat)
        for cpu in (False, True):
            k = 2 if cpu else 0
            print(f"{name if not cpu else '':16} {steps if not cpu else '':>7} "
                  f"{'cpu' if cpu else 'wall':>5} {cell(plain, cpu):>11} {cell(off, cpu):>11} "
                  f"{off[k] / plain[k]:>5.2f}× {cell(on, cpu):>11} {on[k] / plain[k]:>5.2f}×",
                  flush=True)
    print("\ntargets: refs off ≤ 1.5×, refs on ≤ 3×")
    op, t = one_reference_time()
    print(f"one step's NumPy reference ({op}, 64×1000·1000×100, float64): {t * 1000:.2f} ms")


if __name__ == "__main__":
    main()

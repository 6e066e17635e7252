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
min-max spread; the ratio is of the medians.

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


def alternating(fns: list[Callable[[], object]], repeat: int, warmup: int = 2
                ) -> list[tuple[float, float]]:
    """Median and half the min-max spread of `repeat` runs of each function, run in
    alternation after `warmup` rounds, so neighbours on a shared VM slow all alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [(statistics.median(t), (max(t) - min(t)) / 2) for t in times]


def run(name: str, repeat: int) -> tuple[int, list[tuple[float, float]]]:
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

    return type(node).__name__, alternating([ref], 20)[0][0]


def cell(t: tuple[float, float]) -> str:
    return f"{t[0] * 1000:,.0f}±{t[1] * 1000:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    print(f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"median ± half spread of {args.repeat} warmed runs, ms; × : ÷ fwd+bwd median\n")
    print(f"{'model':16} {'steps':>7} {'fwd+bwd':>11} {'refs off':>11} {'off ×':>6} "
          f"{'refs on':>11} {'on ×':>6}")
    for name in args.models.split(","):
        steps, (plain, off, on) = run(name, args.repeat)
        print(f"{name:16} {steps:>7,} {cell(plain):>11} {cell(off):>11} "
              f"{off[0] / plain[0]:>5.2f}× {cell(on):>11} {on[0] / plain[0]:>5.2f}×", flush=True)
    print("\ntargets: refs off ≤ 1.5×, refs on ≤ 3×")
    op, t = one_reference_time()
    print(f"one step's NumPy reference ({op}, 64×1000·1000×100, float64): {t * 1000:.2f} ms")


if __name__ == "__main__":
    main()

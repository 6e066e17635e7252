"""Cost of recording backward step by step, and of one step's NumPy reference.

Compares, in one run: a plain forward + backward; forward + BackwardStepper recording
every node (references off); the first read of its steps (built from the recording on
first access); and a recording with every NumPy reference computed. Models: a
12-layer TransformerEncoder, the ResNet-50-like net, and the 25k-node chain (report).
Target (issue 4): recording ≤ 1.5× plain forward+backward on the first two.

Times are the best of --repeat runs (default 15), plain and recording alternating.

Run: python benchmarks/bench_stepper.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import time

import torch

from gradviz.backward.rules import context_from_node, reference_for
from gradviz.backward.stepper import BackwardStepper
from gradviz.zoo.examples import examples


def best_time(fn, repeat: int) -> float:
    return best_times([fn], repeat)[0]


def best_times(fns, repeat: int) -> list[float]:
    """The fastest of `repeat` runs of each function, run in alternation.

    On a shared 2-core VM the median of one loop swung 1.2-1.9x between runs minutes
    apart: the minimum is what the code costs without neighbours, and alternating puts
    the compared functions under the same neighbours.
    """
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [min(t) for t in times]


def run(name: str, repeat: int) -> tuple[float, float, float, int]:
    model, loss_fn = examples()[name].make(0)

    def plain() -> None:
        model.zero_grad()
        loss_fn(model).backward()

    def record() -> None:
        BackwardStepper(loss_fn(model), model=model, references=False)

    def record_with_numpy() -> None:
        BackwardStepper(loss_fn(model), model=model, references=True)

    def first_access() -> None:
        # Step objects and frontiers are derived from the recording when first read.
        stepper = BackwardStepper(loss_fn(model), model=model, references=False)
        start = time.perf_counter()
        len(stepper)
        access.append(time.perf_counter() - start)

    access: list[float] = []
    plain()  # warm-up
    record()
    steps = len(BackwardStepper(loss_fn(model), model=model, references=False))
    plain_t, record_t = best_times([plain, record], repeat)
    for _ in range(3):
        first_access()
    return plain_t, record_t, min(access), best_time(record_with_numpy, 1), steps


def one_reference_time() -> tuple[str, float]:
    """Time of the NumPy reference of one AddmmBackward0 (64×1000 · 1000×100) step."""
    x = torch.randn(64, 1000, dtype=torch.float64)
    lin = torch.nn.Linear(1000, 100).double()
    out = lin(x)
    grads = (torch.randn_like(out),)
    node = out.grad_fn

    def ref() -> None:
        reference_for(context_from_node(node, grads))

    return type(node).__name__, best_time(ref, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    print(f"{'model':16} {'steps':>7} {'fwd+bwd':>9} {'recording':>10} {'ratio':>6} "
          f"{'1st read':>9} {'+ NumPy refs':>13}")
    for name in ("transformer-12", "resnet50", "chain-25k"):
        plain, rec, access, full, steps = run(name, args.repeat)
        print(f"{name:16} {steps:>7,} {plain * 1000:>7.0f}ms {rec * 1000:>8.0f}ms "
              f"{rec / plain:>5.2f}× {access * 1000:>7.1f}ms {full * 1000:>11.0f}ms")
    print(
        "\n1st read: building the Step objects and frontiers from the recording, on first access."
    )
    op, t = one_reference_time()
    print(f"\none step's NumPy reference ({op}, 64×1000·1000×100, float64): {t * 1000:.2f} ms")


if __name__ == "__main__":
    main()

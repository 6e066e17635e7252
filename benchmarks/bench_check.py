"""Throughput of check_function beside torch.autograd.gradcheck, at numel 1 / 16 / 64.

Prints Hypothesis examples per second with every default check on (end to end: drawing,
forward, backward, Jacobian, finite differences, kink analysis), and gradcheck calls per
second on the same Function in the same run. Report only; nothing is asserted.

    python benchmarks/bench_check.py [--examples 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from gradviz.check import check_function
from gradviz.zoo.functions import get_example

SIZES = (1, 16, 64)


def bench_check(fn: type[torch.autograd.Function], shapes: list[tuple[int, ...]], examples: int,
                repeat: int) -> float:
    best = 0.0
    for r in range(repeat):
        start = time.perf_counter()
        report = check_function(fn, shapes=shapes, max_examples=examples, seed=r)
        elapsed = time.perf_counter() - start
        assert report.ok, str(report)
        best = max(best, report.examples_run / elapsed)
    return best


def bench_gradcheck(fn: type[torch.autograd.Function], shapes: list[tuple[int, ...]],
                    seconds: float) -> float:
    generator = torch.Generator().manual_seed(0)
    inputs = [
        torch.randn(s, generator=generator, dtype=torch.float64, requires_grad=True) for s in shapes
    ]
    calls = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        # gradcheck's own verdict is beside the point here (it may flag a kink): speed only.
        torch.autograd.gradcheck(fn.apply, inputs, raise_exception=False)
        calls += 1
    return calls / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300, help="Hypothesis examples per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (best is shown)")
    parser.add_argument("--functions", default="relu,maximum_split_ties,sigmoid,linear")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {args.examples} examples per run, best of {args.repeat}")
    print(f"{'function':<20} {'numel':>5}  {'check examples/s':>16}  {'gradcheck calls/s':>17}")
    for name in args.functions.split(","):
        example = get_example(name)
        fn = example.load()
        for numel in SIZES:
            shapes = _shapes(name, numel, example.shapes)
            check_function(fn, shapes=shapes, max_examples=5, seed=0)  # warm up
            rate = bench_check(fn, shapes, args.examples, args.repeat)
            grad = bench_gradcheck(fn, shapes, 1.0)
            total = sum(torch.Size(s).numel() for s in shapes)
            print(f"{name:<20} {total:>5}  {rate:>16.0f}  {grad:>17.0f}")


def _shapes(name: str, numel: int, default: tuple[tuple[int, ...], ...]) -> list[tuple[int, ...]]:
    if name == "linear":  # x (rows, 4), W (2, 4), b (2,): about numel numbers in all
        rows = max(1, (numel - 10) // 4)
        return [(rows, 4), (2, 4), (2,)] if numel > 1 else [(1, 1), (1, 1), (1,)]
    return [(numel,)] * len(default)


if __name__ == "__main__":
    main()

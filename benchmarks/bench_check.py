"""Throughput of check_function beside torch.autograd.gradcheck / gradgradcheck, same run.

For each Function and total input size: Hypothesis examples per second of check_function
with the default checks and with ``checks="all"`` (double backward included), end to end
(drawing, forward, backward, Jacobian, finite differences, kink analysis, shrinking). The
peers run on one random input of the same shapes in the same run: gradcheck (first
derivatives) and gradcheck + gradgradcheck (what "all" adds), calls per second. The peers
test one point per call and know nothing of kinks and ties; a check_function example tests
one drawn point with every property. Everything is warmed up; each cell is the median of
--repeat runs (default 5) with half the spread (max − min) / 2. Target (issue 14): ≥ 200
examples/s with all checks at total numel ≤ 16 for sigmoid, softplus and a two-input
Function (mul, smooth; and maximum_split_ties, whose ties every example probes). Report
only; nothing is asserted.

    python benchmarks/bench_check.py [--examples 200] [--repeat 5] [--sizes 1,16]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import hypothesis
import torch

from gradviz.check import check_function
from gradviz.zoo.functions import get_example

TARGET = 200.0


class Mul(torch.autograd.Function):
    """A smooth two-input Function (x·y): the target's two-input case without built-in ties."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return x * y

    @staticmethod
    def backward(ctx, grad_output):
        x, y = ctx.saved_tensors
        return grad_output * y, grad_output * x


def load(name: str) -> tuple[type[torch.autograd.Function], tuple[tuple[int, ...], ...]]:
    if name == "mul":
        return Mul, ((4,), (4,))
    example = get_example(name)
    return example.load(), example.shapes


def rates(fn: type[torch.autograd.Function], shapes: list[tuple[int, ...]], checks: str | None,
          examples: int, repeat: int) -> list[float]:
    out = []
    for r in range(repeat):
        start = time.perf_counter()
        report = check_function(fn, shapes=shapes, max_examples=examples, seed=r, checks=checks)
        elapsed = time.perf_counter() - start
        assert report.ok, str(report)
        out.append(report.examples_run / elapsed)
    return out


def peer_rates(call: Callable[[], object], seconds: float, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            call()
            calls += 1
        out.append(calls / (time.perf_counter() - start))
    return out


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):7.0f} ± {(max(values) - min(values)) / 2:<5.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="Hypothesis examples per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per cell (median shown)")
    parser.add_argument("--sizes", default="1,16", help="total input numels")
    parser.add_argument("--functions", default="sigmoid,softplus,mul,maximum_split_ties,linear")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
          f"torch {torch.__version__} · hypothesis {hypothesis.__version__}")
    print(f"{args.examples} examples per check_function run; median ± half spread of "
          f"{args.repeat} runs; peers: calls/s on one random input (0.5 s per run)")
    header = (f"{'function':<20} {'numel':>5}  {'default ex/s':>15}  {'all ex/s':>15}  "
              f"{'gradcheck/s':>15}  {'+gradgrad/s':>15}  target")
    print(header)
    print("-" * len(header))
    for name in args.functions.split(","):
        fn, default_shapes = load(name)
        for numel in (int(s) for s in args.sizes.split(",")):
            shapes = _shapes(name, numel, default_shapes)
            for checks in (None, "all"):  # warm up both paths
                check_function(fn, shapes=shapes, max_examples=20, seed=99, checks=checks)
            default = rates(fn, shapes, None, args.examples, args.repeat)
            full = rates(fn, shapes, "all", args.examples, args.repeat)
            generator = torch.Generator().manual_seed(0)
            xs = tuple(torch.randn(s, generator=generator, dtype=torch.float64,
                                   requires_grad=True) for s in shapes)

            def first(xs=xs, fn=fn):
                # The verdict is beside the point (a kink may fail it): speed only.
                torch.autograd.gradcheck(fn.apply, xs, raise_exception=False)

            def both(xs=xs, fn=fn):
                torch.autograd.gradcheck(fn.apply, xs, raise_exception=False)
                torch.autograd.gradgradcheck(fn.apply, xs, raise_exception=False)

            first(), both()
            grad = peer_rates(first, 0.5, args.repeat)
            gradgrad = peer_rates(both, 0.5, args.repeat)
            total = sum(torch.Size(s).numel() for s in shapes)
            verdict = ("met" if statistics.median(full) >= TARGET else "NOT met") \
                if total <= 16 and name != "linear" else ""
            print(f"{name:<20} {total:>5}  {cell(default)}  {cell(full)}  {cell(grad)}  "
                  f"{cell(gradgrad)}  {verdict}")


def _shapes(name: str, numel: int, default: tuple[tuple[int, ...], ...]) -> list[tuple[int, ...]]:
    """Shapes with about ``numel`` entries in all (split across the inputs)."""
    if name == "linear":  # x (rows, 4), W (2, 4), b (2,)
        rows = max(1, (numel - 10) // 4)
        return [(rows, 4), (2, 4), (2,)] if numel > 1 else [(1, 1), (1, 1), (1,)]
    each = max(1, numel // len(default))
    return [(each,)] * len(default)


if __name__ == "__main__":
    main()

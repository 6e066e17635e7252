"""Training speed of the presets on this machine: a table of wall-clock times, nothing asserted.

Rows: quadrant-sgd with its own settings (lr 0.5, 10 000 full-batch steps), one MNIST-CNN
epoch on the shipped digits (1 500 images, batch 64), and for comparison one epoch of the
NumPy scratch net and of the Keras-style net. Each row is the best of ``--repeat`` runs;
loading the digits is done once before timing.

    python benchmarks/bench_training.py [--repeat 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from gradviz.train.data import shipped_digits
from gradviz.train.training import train

CASES = [
    ("quadrant-sgd, full settings (10 000 steps)", "quadrant-sgd", {}),
    ("mnist-cnn, 1 epoch on shipped digits", "mnist-cnn", {"epochs": 1}),
    ("scratch-784-250-10 (NumPy), 1 epoch", "scratch-784-250-10", {"epochs": 1}),
    ("keras-dense-512, 1 epoch", "keras-dense-512", {"epochs": 1}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads while training")
    args = parser.parse_args()
    for layout in ("cnn", "scratch", "keras"):  # cached: not part of any timing
        shipped_digits(layout)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s) while training, best of {args.repeat}"
    )
    print(f"{'run':46s} {'steps':>7s} {'seconds':>8s} {'ms/step':>8s}  result")
    print("-" * 96)
    for label, name, kwargs in CASES:
        best = None
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = train(name, threads=args.threads, **kwargs)
            elapsed = time.perf_counter() - start
            if best is None or elapsed < best[0]:
                best = (elapsed, result)
        elapsed, result = best
        shown = ", ".join(
            f"{k} {result.metrics[k]:.3f}"
            for k in ("accuracy", "test_accuracy")
            if k in result.metrics
        )
        print(
            f"{label:46s} {result.steps_done:7d} {elapsed:8.2f} "
            f"{1000 * elapsed / result.steps_done:8.3f}  {shown}"
        )


if __name__ == "__main__":
    main()

"""Training-step time with and without GradientFlow on the seed networks, beside the peer.

Timed with time.process_time (CPU time of this process), which other processes on a
shared machine disturb less than wall time.

The peer is what TensorBoard/wandb.watch users write by hand: after backward, log every
parameter's gradient norm (``p.grad.norm().item()``) into a list. Each variant runs the
same plain loop (forward, loss, zero_grad, backward, optimizer step) on the preset's own
network, data and optimizer; variants are interleaved within each repetition so machine
noise hits them alike (in a shuffled order). Prints the median µs/step of ``--repeat`` runs
(after a warm-up run) with the spread (min–max), and the slowdown: the median over
repetitions of each run's time over the plain run's of the same repetition. Report only.

Each run is the Build & Train page's default run of the preset (its step count, or its
epochs of batches) recorded as the page records it (`gradviz.train.jobs.page_flow`: ~200
steps at most, the stride widened to keep recording within 10% of the training time);
"kept" is how many records that left. The peer logs at exactly the steps the page's
recorder kept (its last run), and both also run at every step.

    python benchmarks/bench_flow.py [--repeat 7] [--presets quadrant-sgd,keras-dense-512]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable

import torch

from gradviz import get_preset
from gradviz.train.flow import GradientFlow
from gradviz.train.jobs import page_flow

PRESETS = (
    "single-neuron",
    "quadrant-sgd",
    "quadrant-linear-sigmoid",
    "regression-1-10-1",
    "two-layer-module",
    "dynamic-net",
    "keras-dense-512",
    "mnist-cnn",
)
PAGE_STEP_CAP = 6000  # gradviz.app.build_ui.STEP_CAP: the page's longest default run


def page_run(name: str) -> tuple[int, int]:
    """(steps of the page's default run, the stride its job starts recording at)."""
    preset = get_preset(name)
    data = preset.data(0)
    per_epoch = math.ceil(data.n / min(preset.batch_size or data.n, data.n))
    steps = preset.epochs * per_epoch if preset.epochs else min(preset.steps or 100, PAGE_STEP_CAP)
    return steps, page_flow(steps).every


def _setup(name: str) -> tuple[Callable[[], float], torch.nn.Module, torch.optim.Optimizer]:
    preset = get_preset(name)
    model = preset.build(0)
    data = preset.data(0)
    n = min(preset.batch_size or data.n, data.n)
    X, y = data.X[:n], data.y[:n]
    opt_name = preset.optimizer or "sgd"
    hyper = {k: v for k, v in preset.hyper.items() if k != "lr"} if preset.optimizer else {}
    make = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
    opt = make[opt_name](model.parameters(), lr=preset.lr, **hyper)

    def step() -> float:
        opt.zero_grad()
        loss = preset.forward_loss(model, (X, y))
        loss.backward()
        opt.step()
        return loss.item()

    return step, model, opt


def _time(run: Callable[[], None], steps: int) -> float:
    start = time.process_time()
    run()
    return (time.process_time() - start) / steps * 1e6


def _variants(name: str, steps: int) -> tuple[dict[str, Callable[[], float]], list[int]]:
    """The timed runs, and the steps the page's recorder kept (filled by its runs)."""
    kept: list[int] = []

    def plain() -> float:
        step, _, _ = _setup(name)
        return _time(lambda: [step() for _ in range(steps)], steps)

    def flow(make: Callable[[], GradientFlow], keep: bool = False) -> Callable[[], float]:
        def run() -> float:
            step, model, opt = _setup(name)
            recorder = make()
            with recorder.attach(model, opt):
                # reading the record is timed too: statistics are computed for many
                # recorded steps at once, when rows run out or the record is read
                took = _time(lambda: ([step() for _ in range(steps)], recorder.records), steps)
            if keep:
                kept[:] = recorder.steps
            return took

        return run

    def peer(at: Callable[[], set[int]]) -> Callable[[], float]:
        def run() -> float:
            step, model, opt = _setup(name)
            log: list[dict[str, float]] = []
            named = list(model.named_parameters())
            logged_steps = at()

            def logged() -> None:
                for i in range(1, steps + 1):
                    step()  # opt.step keeps .grad: read it as a logging hook would
                    if i in logged_steps:
                        log.append(
                            {n: p.grad.norm().item() for n, p in named if p.grad is not None}
                        )

            return _time(logged, steps)

        return run

    every_step = set(range(1, steps + 1))
    return {
        "plain": plain,
        "page (budget 0.1)": flow(lambda: page_flow(steps), keep=True),
        "peer, same steps": peer(lambda: set(kept)),
        "flow every=1": flow(lambda: GradientFlow(every=1, capacity=steps)),
        "peer every step": peer(lambda: every_step),
    }, kept


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per variant (≥ 5)")
    parser.add_argument("--presets", default=",".join(PRESETS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, median of {args.repeat} runs (min–max), µs/step;"
          " kept: records the page's recorder kept (median)")
    names = ("plain", "page (budget 0.1)", "peer, same steps", "flow every=1",
             "peer every step")
    print(f"{'preset':<24}{'steps':>6}{'kept':>6}" + "".join(f"{v:>24}" for v in names))
    for name in args.presets.split(","):
        steps, _ = page_run(name)
        variants, kept = _variants(name, steps)
        for run in variants.values():
            run()  # warm-up: first-call costs (allocator, hooks) stay out of the table
        times: dict[str, list[float]] = {k: [] for k in variants}
        counts: list[int] = []
        order = random.Random(0)
        for _ in range(args.repeat):
            keys = list(variants)
            order.shuffle(keys)  # no variant always runs right after another
            for key in keys:
                times[key].append(variants[key]())
                if key == "page (budget 0.1)":
                    counts.append(len(kept))
        cells = []
        for key, values in times.items():
            med = statistics.median(values)
            # against the plain run of the same repetition: the machine's speed drifts
            # between repetitions (±10% here) far more than within one
            paired = statistics.median(v / p for v, p in zip(values, times["plain"],
                                                              strict=True))
            extra = "" if key == "plain" else f" {100 * (paired - 1):+.0f}%"
            cells.append(f"{med:6.0f} ({min(values):.0f}–{max(values):.0f}){extra}")
        print(f"{name:<24}{steps:>6}{statistics.median(counts):>6.0f}"
              + "".join(f"{c:>24}" for c in cells), flush=True)


if __name__ == "__main__":
    main()

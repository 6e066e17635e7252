"""Training-step time with and without GradientFlow on the seed networks, beside the peer.

Timed with time.process_time (CPU time of this process), which other processes on a
shared machine disturb less than wall time.

The peer is what TensorBoard/wandb.watch users write by hand: after backward, log every
parameter's gradient norm (``p.grad.norm().item()``) into a list. Each variant runs the
same plain loop (forward, loss, zero_grad, backward, optimizer step) on the preset's own
network, data and optimizer; variants are interleaved within each repetition so machine
noise hits them alike. Prints the median µs/step of ``--repeat`` runs (after a warm-up
run) with the spread (min–max) and the slowdown against the plain loop. Report only.

    python benchmarks/bench_flow.py [--repeat 7] [--presets quadrant-sgd,keras-dense-512]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from gradviz import get_preset
from gradviz.train.flow import GradientFlow

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
STEPS = {"keras-dense-512": 30, "mnist-cnn": 10}


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


def _variants(name: str, steps: int) -> dict[str, Callable[[], float]]:
    def plain() -> float:
        step, _, _ = _setup(name)
        return _time(lambda: [step() for _ in range(steps)], steps)

    def flow(every: int) -> Callable[[], float]:
        def run() -> float:
            step, model, opt = _setup(name)
            recorder = GradientFlow(model, every=every, capacity=steps, optimizer=opt)
            with recorder:
                return _time(lambda: [step() for _ in range(steps)], steps)

        return run

    def peer() -> float:
        step, model, opt = _setup(name)
        log: list[dict[str, float]] = []
        named = list(model.named_parameters())

        def logged() -> None:
            for _ in range(steps):
                step()  # opt.step keeps .grad: read it as a logging hook would
                log.append({n: p.grad.norm().item() for n, p in named if p.grad is not None})

        return _time(logged, steps)

    return {
        "plain": plain,
        "flow every=1": flow(1),
        "flow every=10": flow(10),
        "flow every=100": flow(100),
        "peer": peer,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per variant (≥ 5)")
    parser.add_argument("--steps", type=int, default=200, help="steps per run (small nets)")
    parser.add_argument("--presets", default=",".join(PRESETS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, median of {args.repeat} runs (min–max), µs/step")
    names = ("plain", "flow every=1", "flow every=10", "flow every=100", "peer (norm log)")
    print(f"{'preset':<24}" + "".join(f"{v:>26}" for v in names))
    for name in args.presets.split(","):
        steps = STEPS.get(name, args.steps)
        variants = _variants(name, steps)
        for run in variants.values():
            run()  # warm-up: first-call costs (allocator, hooks) stay out of the table
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeat):
            for key, run in variants.items():
                times[key].append(run())
        base = statistics.median(times["plain"])
        cells = []
        for key, values in times.items():
            med = statistics.median(values)
            extra = "" if key == "plain" else f" {100 * (med / base - 1):+.0f}%"
            cells.append(f"{med:8.0f} ({min(values):.0f}–{max(values):.0f}){extra}")
        print(f"{name:<24}" + "".join(f"{c:>26}" for c in cells), flush=True)


if __name__ == "__main__":
    main()

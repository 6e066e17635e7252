"""Memory over many drawings (issue #13): does one process grow while it traces and draws?

In one process, `--runs` times (default 1 000): a forward of the 12-layer transformer
(gradviz.zoo.examples "transformer-12") under `capture`, `trace`, its default view as DOT
text; every `--layout-every` runs (default 100) that DOT is also laid out by Graphviz's
`dot` (a child process, so only sampled). Prints the process's resident memory (RSS, from
/proc/self/statm) after a warm-up of `--warmup` runs, after every 100 runs, the growth per
100 runs, and the sizes of gradviz's process-wide caches at the end.
Target: RSS after all runs ≤ RSS after warm-up + 50 MB.

Run: python benchmarks/bench_memory.py [--runs 1000] [--warmup 20] [--layout-every 100]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import subprocess
import time

import torch

from gradviz import capture, trace
from gradviz.graph import paths, tracing
from gradviz.zoo.examples import examples

TARGET_MB = 50.0


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def one_drawing(model: torch.nn.Module, loss_fn, layout: bool) -> int:
    with capture(model):
        loss = loss_fn(model)
    graph = trace(loss, model=model)
    source = graph.to_dot().source
    if layout:
        subprocess.run(["dot", "-Tsvg", "-o", os.devnull], input=source.encode(), check=True,
                       capture_output=True, timeout=600)
    return len(graph)


def cache_sizes() -> dict[str, int]:
    return {
        "tracing._SAVED_TENSORS": len(tracing._SAVED_TENSORS),
        "tracing._TYPES": len(tracing._TYPES),
        "tracing._SAVED_ATTRS": len(tracing._SAVED_ATTRS),
        "paths.prefixes (lru)": paths.prefixes.cache_info().currsize,
        "paths.natural_key (lru)": paths.natural_key.cache_info().currsize,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--layout-every", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    model, loss_fn = examples()["transformer-12"].make(0)
    for _ in range(args.warmup):
        nodes = one_drawing(model, loss_fn, layout=False)
    gc.collect()
    base = rss_mb()
    print(f"transformer-12: {nodes} nodes a trace; RSS after {args.warmup} warm-up runs: "
          f"{base:.1f} MB")
    print(f"{'runs':>6} {'RSS MB':>8} {'growth/100':>11} {'since warm-up':>14} {'s/100':>7}")
    last, start = base, time.perf_counter()
    for i in range(1, args.runs + 1):
        one_drawing(model, loss_fn, layout=args.layout_every > 0 and i % args.layout_every == 0)
        if i % 100 == 0 or i == args.runs:
            gc.collect()
            now = rss_mb()
            took = time.perf_counter() - start
            print(f"{i:>6} {now:>8.1f} {now - last:>+11.1f} {now - base:>+14.1f} {took:>7.1f}")
            last, start = now, time.perf_counter()
    growth = rss_mb() - base
    print("\nprocess-wide caches after the runs: "
          + ", ".join(f"{k} {v}" for k, v in cache_sizes().items()))
    verdict = "met" if growth <= TARGET_MB else "NOT met"
    print(f"\nTarget: growth after {args.runs} runs {growth:+.1f} MB ≤ {TARGET_MB:.0f} MB: "
          f"{verdict}")


if __name__ == "__main__":
    main()

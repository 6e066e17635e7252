"""Cost of a backward animation: frames (DOT only), the HTML player and the GIF.

For each program: median and spread (min–max) over --repeat runs of building the frames,
writing the self-contained HTML player and writing the GIF, with the files' sizes; in the
same run, one `Graph.to_dot` + `dot -Tsvg` of the plain graph as the peer (what a single
static picture costs). Report only; nothing is asserted.

    python benchmarks/bench_animate.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import graphviz

from gradviz.backward.animate import frames, write_gif, write_html
from gradviz.zoo.sources import step_source

PROGRAMS = ("preset:two-layer-nn", "preset:quadrant-linear-sigmoid", "preset:mnist-cnn")


def _time(fn, repeat: int) -> tuple[float, float, float]:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), min(runs), max(runs)


def _cell(t: tuple[float, float, float]) -> str:
    return f"{t[0] * 1e3:7.0f} ms ({t[1] * 1e3:.0f}–{t[2] * 1e3:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"median (min–max) of {args.repeat} runs")
    print(f"{'program':32} {'steps':>5}  {'one static SVG':>24}  {'frames':>24}  "
          f"{'HTML player':>24}  {'GIF':>24}  sizes")
    with tempfile.TemporaryDirectory() as tmp:
        for key in PROGRAMS:
            stepper = step_source(key)
            html, gif = Path(tmp) / "b.html", Path(tmp) / "b.gif"
            source = stepper.graph.to_dot().source.encode()
            static = _time(lambda b=source: graphviz.pipe("dot", "svg", b), args.repeat)
            made = _time(lambda s=stepper: frames(s), args.repeat)
            page = _time(lambda s=stepper, p=html: write_html(s, p), args.repeat)
            movie = _time(lambda s=stepper, p=gif: write_gif(s, p), args.repeat)
            kb = html.stat().st_size / 1e3, gif.stat().st_size / 1e3
            sizes = f"{kb[0]:.0f} KB html, {kb[1]:.0f} KB gif"
            print(f"{key:32} {len(stepper):5}  {_cell(static):>24}  {_cell(made):>24}  "
                  f"{_cell(page):>24}  {_cell(movie):>24}  {sizes}")


if __name__ == "__main__":
    main()

"""`gradviz flow PRESET --steps N --out DIR`: train a preset and export its gradient flow.

Writes flow.csv (long form: step, layer, depth, kind, stat, value, loss), flow.json
(the record, the diagnoses and the run), flow.svg and flow.png (the layers × steps
heatmap and per-layer lines, the same Altair chart the app shows). Exit 0 when the run
finished, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from gradviz.errors import ArgumentError, GradvizError

__all__ = ["flow_command"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradviz flow", description="Train a preset and export how its gradients flowed."
    )
    parser.add_argument("preset", help="a preset name, e.g. quadrant-sgd")
    parser.add_argument("--steps", type=int, help="weight updates (default: the preset's)")
    parser.add_argument("--out", required=True, help="directory for flow.csv/json/svg/png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=1, help="record every k-th step")
    parser.add_argument("--capacity", type=int, default=1000, help="most steps kept")
    parser.add_argument("--stat", default="norm", help="gradient statistic to draw")
    parser.add_argument("--lr", type=float, help="override the preset's learning rate")
    return parser


def _run(args: argparse.Namespace) -> int:
    from gradviz.train.flow import GRAD_STATS, GradientFlow
    from gradviz.train.flow_view import chart_bytes, flow_chart
    from gradviz.train.training import train

    if args.stat not in GRAD_STATS:
        raise ArgumentError("--stat", args.stat, f"use one of {', '.join(GRAD_STATS)}")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArgumentError("--out", str(out), f"cannot make it ({exc.strerror})") from None
    flow = GradientFlow(every=args.every, capacity=args.capacity)
    result = train(args.preset, steps=args.steps, seed=args.seed, lr=args.lr, callback=flow)
    if not flow.records:
        raise ArgumentError(
            "preset", args.preset,
            f"{args.preset} updates its weights without autograd ({result.settings['update']}),"
            " so there are no gradients to record; pick an autograd preset",
        )
    found = flow.diagnose()
    flow.frame().to_csv(out / "flow.csv", index=False)
    payload = {
        "preset": args.preset,
        "seed": args.seed,
        "steps_done": result.steps_done,
        "metrics": result.metrics,
        "settings": {k: v for k, v in result.settings.items() if v is not None},
        "diagnoses": [d.to_json() for d in found],
        "flow": flow.to_json(),
    }
    (out / "flow.json").write_text(json.dumps(payload, indent=1, allow_nan=False))
    chart = flow_chart(flow, args.stat)
    (out / "flow.svg").write_bytes(chart_bytes(chart, "svg"))
    (out / "flow.png").write_bytes(chart_bytes(chart, "png"))
    print(f"{out}: flow.csv flow.json flow.svg flow.png ({len(flow.records)} of "
          f"{flow.steps_seen} steps kept, every {flow.stride})")
    print(result.message)
    for d in found:
        print(f"warning: {d}")
    if not found:
        print("no gradient-flow warnings")
    return 0


def flow_command(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        return _run(args)
    except GradvizError as exc:
        print(f"gradviz flow: {exc}", file=sys.stderr)
        return 2

"""The `gradviz` command: start the app, render a program's graph, check a Function."""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
from collections.abc import Sequence

from gradviz.errors import GradvizError

__all__ = ["main"]


def _app_file() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parents[2] / "streamlit_app.py"


def _cmd_app(args: argparse.Namespace, extra: list[str]) -> int:
    app = _app_file()
    if not app.is_file():
        print(f"gradviz app: {app} not found; run it from a checkout of the gradviz repository",
              file=sys.stderr)
        return 2
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.port", str(args.port), "--server.address", args.address,
        "--server.headless", "true", "--browser.gatherUsageStats", "false", *extra,
    ]
    if args.no_user_code:
        os.environ["GRADVIZ_DISABLE_USER_CODE"] = "1"
    # From the checkout's root, where .streamlit/config.toml is read.
    return subprocess.call(cmd, cwd=app.parent.parent)


def _cmd_render(args: argparse.Namespace) -> int:
    from gradviz.cli.programs import trace_program
    from gradviz.draw.export import render
    from gradviz.zoo.sources import source_key, trace_source

    key = source_key(args.program)
    graph = trace_source(key, seed=args.seed) if key else trace_program(args.program)
    options = {}
    if (args.format or pathlib.Path(args.output).suffix.lstrip(".")) != "json":
        options = {
            "show_saved": args.saved,
            "show_attrs": args.attrs,
            "cluster": not args.no_cluster,
            "depth": args.depth,
            "budget": None if args.budget == 0 else args.budget,
            "rankdir": args.rankdir,
        }
    path = render(graph, args.output, format=args.format, view=args.view, **options)
    counts = graph.counts()
    print(f"{path}: {len(graph)} nodes ({counts['op']} ops, {counts['param']} params, "
          f"{counts['leaf']} leaves)")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradviz",
                                     description="See and check PyTorch's autograd.")
    sub = parser.add_subparsers(dest="command", required=True)
    app = sub.add_parser("app", help="start the Streamlit app")
    app.add_argument("--port", type=int, default=8501)
    app.add_argument("--address", default="127.0.0.1")
    app.add_argument("--no-user-code", action="store_true", help="turn off pages that run code "
                     "typed in the browser")
    render = sub.add_parser("render", help="draw a program's autograd graph")
    render.add_argument("program", help="an example or preset name (see `gradviz examples`), "
                        "model:NAME[@SHAPE] (model:resnet18, model:hf:bert@1x16) or file.py[:name]")
    render.add_argument("-o", "--output", required=True, help="out.svg, out.png, out.dot or "
                        "out.json")
    render.add_argument("--format", choices=("dot", "svg", "png", "json"), help="default: from the "
                        "output's suffix")
    render.add_argument("--saved", action="store_true", help="list saved tensors in each op")
    render.add_argument("--attrs", action="store_true", help="list saved non-tensor values (dim, "
                        "stride...)")
    render.add_argument("--no-cluster", action="store_true", help="do not box ops by module")
    render.add_argument("--depth", type=int, help="collapse modules below this depth")
    render.add_argument("--budget", type=int, default=500, help="most nodes to draw; 0 draws all")
    render.add_argument("--rankdir", default="TB", choices=("TB", "BT", "LR", "RL"))
    render.add_argument(
        "--view", default="default",
        choices=("default", "rolled", "forward"),  # export.VIEWS, without importing torch
        help="default: modules collapse to fit; rolled: repeated blocks as one node (slides); "
        "forward: modules and their data flow",
    )
    render.add_argument("--seed", type=int, default=0)
    sub.add_parser("animate", help="play backward as HTML or GIF (PROGRAM --out FILE)",
                   add_help=False)
    sub.add_parser("examples", help="list the example programs")
    sub.add_parser("check", help="property-test a custom autograd Function (file.py:Class --shapes "
                   "4x3,3)", add_help=False)
    sub.add_parser(
        "flow", help="train a preset, export its gradient flow (PRESET --steps N --out DIR)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "check":
        import torch

        from gradviz.cli.check import check_command

        # Checks run thousands of tiny ops: extra threads only spin (this is our own process).
        torch.set_num_threads(1)

        return check_command(argv[1:])
    if argv and argv[0] == "animate":
        from gradviz.cli.animate import animate_command

        return animate_command(argv[1:])
    if argv and argv[0] == "flow":
        from gradviz.cli.flow import flow_command

        return flow_command(argv[1:])
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "app":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "app":
            return _cmd_app(args, extra)
        if args.command == "render":
            return _cmd_render(args)
        if args.command == "examples":
            from gradviz.zoo.sources import source_labels

            for label in source_labels():
                print(label)
            return 0
    except GradvizError as exc:
        print(f"gradviz {args.command}: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

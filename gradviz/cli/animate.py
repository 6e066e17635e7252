"""``gradviz animate SCRIPT_OR_PRESET --out FILE``: backward as an HTML player or a GIF.

The program is a preset or example name (``two-layer-nn``, ``preset:mnist-cnn``) or the
user's own ``file.py[:name]`` (the convention of ``gradviz render``). Exit codes: 0 when the
file was written, 2 on bad arguments or a program that cannot be stepped, with a one-line
message on stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from gradviz.errors import ArgumentError, GradvizError

__all__ = ["animate_command", "stepper_for"]


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would exit; we return 2 with one line
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gradviz animate",
        description="Play a program's backward step by step: a self-contained HTML player "
        "(play, pause, scrub, speed; works offline) or an animated GIF for slides.",
    )
    parser.add_argument("program", help="a preset or example name (see `gradviz examples`) "
                        "or file.py[:name]")
    parser.add_argument("-o", "--out", required=True, help="backward.html or backward.gif")
    parser.add_argument("--format", choices=("html", "gif"),
                        help="default: from the suffix of --out")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of a preset or example (default 0)")
    parser.add_argument("--rankdir", default="TB", choices=("TB", "BT", "LR", "RL"))
    parser.add_argument("--speed", type=float, default=1.0, help="HTML: starting speed (default 1)")
    parser.add_argument("--duration", type=int, default=800,
                        help="GIF: milliseconds per frame (default 800)")
    parser.add_argument("--dpi", type=int, default=72, help="GIF: resolution (default 72)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="refuse runs with more steps than this")
    return parser


def stepper_for(program: str, seed: int = 0):
    """A recorded backward of `program`: a preset/example name, a source key or file.py[:name]."""
    import torch

    from gradviz.backward.stepper import BackwardStepper
    from gradviz.cli.programs import load_program
    from gradviz.graph.tracing import run_with_big_stack
    from gradviz.zoo.sources import source_key, step_source

    key = source_key(program)
    if key is not None:
        return step_source(key, seed)

    def run() -> BackwardStepper:
        outputs, kwargs = load_program(program)
        loss = outputs[0]
        if not isinstance(loss, torch.Tensor):
            raise ArgumentError("program", program,
                                "it must give a tensor (the loss) to step backward from")
        # A non-scalar output steps from ones, as loss.sum().backward() would.
        grad = None if loss.numel() == 1 else torch.ones_like(loss)
        return BackwardStepper(loss, grad=grad, **kwargs)

    return run_with_big_stack(run)


def animate_command(argv: list[str]) -> int:
    """Runs ``gradviz animate`` with ``argv`` (the words after ``animate``); returns the exit
    code."""
    try:
        args = _parser().parse_args(argv)
    except _UsageError as error:
        print(f"gradviz animate: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help
        return 0 if done.code in (0, None) else 2
    from gradviz.backward.animate import MAX_FRAMES

    try:
        stepper = stepper_for(args.program, args.seed)
        fmt = args.format or args.out.rsplit(".", 1)[-1].lower()
        frame_options = {"rankdir": args.rankdir, "max_frames": args.max_frames or MAX_FRAMES}
        if fmt == "gif":
            options = {"duration_ms": args.duration, "dpi": args.dpi, **frame_options}
        else:
            title = f"gradviz · backward of {args.program}"
            options = {"speed": args.speed, "title": title, **frame_options}
        path = stepper.animate(args.out, format=args.format, **options)
    except GradvizError as error:
        print(f"gradviz animate: error: {error}", file=sys.stderr)
        return 2
    print(f"{path}: {len(stepper)} frames, one per backward step ({len(stepper.graph)} nodes)")
    return 0


if __name__ == "__main__":
    sys.exit(animate_command(sys.argv[1:]))

"""What the sandbox's fences cost per run: wall time of one child, by set of protections.

Runs the same snippets with every protection, then with the kernel fences of issue 13
switched off (PID/mount namespaces and private view, uid drop, Landlock), and with all of
them and seccomp off, in the same run. Prints median and spread (min-max) of --repeat runs.
Report only; nothing is asserted.

    python benchmarks/bench_sandbox.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

from gradviz.check.sandbox import parent
from gradviz.check.sandbox.parent import Limits, run_sandboxed

SETS = {
    "every protection": (),
    "no namespaces/view/uid/landlock": (
        "pid-namespace", "mount-namespace", "unprivileged-user", "landlock",
    ),
    "only rlimits + audit hook": (
        "network-namespace", "pid-namespace", "mount-namespace", "unprivileged-user",
        "no-new-privs", "landlock", "seccomp", "closed-fds",
    ),
}  # fmt: skip
SNIPPETS = {"result = 1": "result = 1", "import torch + backward": (
    "import torch\nx = torch.ones(3, requires_grad=True)\n(x * x).sum().backward()\n"
    "result = x.grad.tolist()\n"
)}  # fmt: skip
LIMITS = Limits(wall_seconds=60, cpu_seconds=30)


def measure(code: str, skip: tuple[str, ...], repeat: int) -> list[float]:
    parent._SKIP_PROTECTIONS = skip
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = run_sandboxed("exec", {"code": code}, LIMITS)
        times.append(time.perf_counter() - start)
        if not result.ok:
            raise SystemExit(f"{code!r} with {skip}: {result}")
    parent._SKIP_PROTECTIONS = ()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"{'snippet':<26} {'protections':<34} {'median ms':>10} {'min-max ms':>16}")
    for name, code in SNIPPETS.items():
        for label, skip in SETS.items():
            times = measure(code, skip, args.repeat)
            median = statistics.median(times) * 1000
            spread = f"{min(times) * 1000:.0f}-{max(times) * 1000:.0f}"
            print(f"{name:<26} {label:<34} {median:>10.0f} {spread:>16}")


if __name__ == "__main__":
    main()

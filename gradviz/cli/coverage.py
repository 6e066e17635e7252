"""Print how much of backward gradviz checks with NumPy: ``python -m gradviz.cli.coverage``.

For every preset and example program (float64), the share of op steps with a NumPy
reference, how many agree with torch to 1e-7 relative, the worst relative error, and the
node types still without a rule.
"""

from __future__ import annotations

import argparse
import sys
import time

from gradviz.zoo.sources import source_labels, step_source

__all__ = ["coverage_table", "main"]


def coverage_table(include_big: bool = False) -> list[dict]:
    rows = []
    for key in source_labels(include_big=include_big).values():
        start = time.perf_counter()
        summary = step_source(key).summary()
        summary["source"] = key
        summary["seconds"] = time.perf_counter() - start
        rows.append(summary)
    return rows


# The deciding measure of the worst step, short enough for the table.
_SHORT = {"relative": "rel", "relative to the node's largest gradient": "rel/max",
          "absolute": "abs"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradviz.cli.coverage",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--big", action="store_true", help="also the 12/24-layer transformers, "
                        "ResNet-50-like and the 25k chain")
    args = parser.parse_args(argv)
    rows = coverage_table(include_big=args.big)
    print(f"{'program':34} {'op steps':>8} {'NumPy':>6} {'f.d.':>5} {'coverage':>9} {'agree':>6} "
          f"{'worst (measure)':>16}  missing")
    for r in rows:
        w = r["worst_check"]
        worst = "—" if w is None else f"{w['value']:.1e} {_SHORT[w['measure']]}"
        print(f"{r['source']:34} {r['op_steps']:>8} {r['numpy']:>6} {r['finite_differences']:>5} "
              f"{r['coverage']:>8.1%} {r['agreeing']:>6} {worst:>16}  "
              f"{', '.join(r['missing']) or '—'}")
    ops = sum(r["op_steps"] for r in rows)
    covered = sum(r["numpy"] for r in rows)
    agreeing = sum(r["agreeing"] for r in rows)
    print(f"\nall programs: {covered}/{ops} op steps have a NumPy reference ({covered / ops:.1%}); "
          f"{agreeing} references agree with torch")
    return 0


if __name__ == "__main__":
    sys.exit(main())

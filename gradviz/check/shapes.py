"""Input shapes written as text, the syntax the CLI and the Function Lab share."""

from __future__ import annotations

from gradviz.errors import ArgumentError

__all__ = ["parse_shapes"]


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """``"4x3,3"`` → ``[(4, 3), (3,)]``; ``"()"`` is a scalar."""
    shapes: list[tuple[int, ...]] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part in ("()", "scalar"):
            shapes.append(())
            continue
        sides = part.split("x")
        if not part or not all(s.strip().isdigit() for s in sides):
            raise ArgumentError(
                "--shapes",
                text,
                "write one shape per input like 4x3,3 "
                "(sides joined by 'x', shapes by ','; '()' for a scalar)",
            )
        shapes.append(tuple(int(s) for s in sides))
    return shapes

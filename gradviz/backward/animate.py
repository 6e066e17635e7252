"""Backward played as an animation: one frame per step of a `BackwardStepper`.

Each frame is the graph drawn by `Graph.to_dot` with the stepper's progress colours, the
current node outlined, and every edge that has carried a gradient so far drawn wider and
redder the larger that gradient's norm (log scale over the whole run, so frames compare).
Only colours and pen widths change between frames, so Graphviz's `dot` lays every frame
out the same and the picture does not jump. `write_html` writes a self-contained player
(no network: the SVGs, CSS and JavaScript are inline) and `write_gif` an animated GIF.
"""

from __future__ import annotations

import html
import io
import json
import math
import pathlib
import re
import shutil
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import graphviz
import numpy as np

from gradviz.errors import ArgumentError, GradvizError

if TYPE_CHECKING:
    from gradviz.backward.stepper import BackwardStepper, Step

__all__ = [
    "AnimationError",
    "EDGE_IDLE",
    "FORMATS",
    "Frame",
    "FrameMaker",
    "MAX_FRAMES",
    "animate",
    "edge_style",
    "frame_svgs",
    "frames",
    "player_html",
    "write_gif",
    "write_html",
]

FORMATS = ("html", "gif")
# A frame per step: beyond this the HTML grows past tens of MB and the GIF is unreadable.
MAX_FRAMES = 400
EDGE_IDLE = "#ced4da"  # edges no gradient has reached yet
# Light to dark: small gradients stay pale, large ones stand out.
_RAMP = ((255, 192, 120), (201, 42, 42))
_MIN_WIDTH, _MAX_WIDTH = 1.2, 6.0
_ID = r'"(?:[^"\\]|\\.)*"|[A-Za-z_\x80-\uffff][\w.\x80-\uffff]*|-?\d+(?:\.\d+)?'
_EDGE_LINE = re.compile(rf"^(\s*)({_ID})\s*->\s*({_ID})(?:\s*\[(.*)\])?\s*$")


class AnimationError(GradvizError):
    """An animation cannot be written (no Graphviz `dot`, no Pillow, too many steps)."""


@dataclass(frozen=True)
class Frame:
    """One step of backward, ready to lay out.

    norms: every forward edge (src, dst) that has carried a gradient up to this step → the
    norm of that gradient. current: the edges this step sent gradients along. dot: DOT text
    of the whole graph at this step.
    """

    index: int
    node_id: str
    label: str
    caption: str
    norms: Mapping[tuple[str, str], float]
    current: tuple[tuple[str, str], ...]
    dot: str


def _norm(arrays: Sequence[np.ndarray]) -> float:
    # One edge drawn for two uses of the same tensor (x * x): what flows is their sum.
    total = arrays[0]
    for a in arrays[1:]:
        total = total + a if np.shape(a) == np.shape(total) else total
    value = float(np.linalg.norm(np.asarray(total, dtype=np.float64).ravel()))
    return value if math.isfinite(value) else 0.0


def _sent(stepper: BackwardStepper, step: Step) -> dict[tuple[str, str], float]:
    """Norms of the gradients `step` sent, by forward edge (input → this node)."""
    node = step.node.id
    by_edge: dict[tuple[str, str], list[np.ndarray]] = {}
    for nid, grad in zip(step.next_ids, step.grad_inputs, strict=False):
        if nid is not None and grad is not None:
            by_edge.setdefault((nid, node), []).append(grad)
    if step.index == 0:
        # The seed gradient (1 for a scalar loss) arrives along the edge to the output.
        graph = stepper.graph
        outputs = [d for s, d in graph.edges if s == node and graph.node(d).kind == "output"]
        seed = [g for g in step.grad_outputs if g is not None]
        for d in outputs:
            if seed:
                by_edge[(node, d)] = seed[:1]
    return {edge: _norm(grads) for edge, grads in by_edge.items()}


def _caption(stepper: BackwardStepper, step: Step, sent: Mapping[tuple[str, str], float]) -> str:
    node = step.node
    where = f" in module {node.module}" if node.module else ""
    text = f"step {step.index + 1}/{len(stepper)}: {node.label} ({node.id}{where})"
    incoming = [g for g in step.grad_outputs if g is not None]
    if incoming:
        text += f" · received |grad| {_norm(incoming[:1]):.3g}"
    if sent:
        text += " · sent |grad| " + ", ".join(f"{v:.3g}" for v in sent.values())
    if step.reference_kind:
        verdict = "agrees" if step.agrees else "DISAGREES"
        text += f" · NumPy {verdict} ({step.check})"
    elif node.kind == "op":
        text += " · no NumPy reference"
    return text


def edge_style(norm: float, low: float, high: float) -> dict[str, str]:
    """Pen width and colour of an edge that carried a gradient of `norm`, on a log scale
    from `low` (palest, thinnest) to `high` (darkest, widest)."""
    if not (norm > 0 and high > 0):
        t = 0.0
    elif high <= low or low <= 0:
        t = 1.0
    else:
        # high > low can still round to one log10 (e.g. 1e-300 vs its next float).
        span = math.log10(high) - math.log10(low)
        t = 1.0 if span <= 0 else (math.log10(norm) - math.log10(low)) / span
        t = min(1.0, max(0.0, t))
    rgb = tuple(round(a + (b - a) * t) for a, b in zip(*_RAMP, strict=True))
    width = _MIN_WIDTH + (_MAX_WIDTH - _MIN_WIDTH) * t
    return {"color": "#{:02x}{:02x}{:02x}".format(*rgb), "penwidth": f"{width:.2f}"}


def _unquote(token: str) -> str:
    return token[1:-1].replace('\\"', '"') if token.startswith('"') else token


def _restyle(dot: str, norms: Mapping[tuple[str, str], float], current: set[tuple[str, str]],
             low: float, high: float) -> str:
    """`dot` with each edge statement styled by the gradient it carried (idle: grey)."""
    out = []
    for line in dot.splitlines():
        m = _EDGE_LINE.match(line)
        if m is None:
            out.append(line)
            continue
        indent, a, b, attrs = m.groups()
        edge = (_unquote(a), _unquote(b))
        if edge in norms:
            style = edge_style(norms[edge], low, high)
            if edge in current:
                style.update(style="bold", **{"class": "gv-flow"})
        else:
            style = {"color": EDGE_IDLE}
        extra = " ".join(f'{k}="{v}"' for k, v in style.items())
        out.append(f"{indent}{a} -> {b} [{(attrs + ' ') if attrs else ''}{extra}]")
    return "\n".join(out) + "\n"


def _check_stepper(stepper: Any) -> None:
    from gradviz.backward.stepper import BackwardStepper

    if not isinstance(stepper, BackwardStepper):
        raise ArgumentError("stepper", type(stepper).__name__,
                            "pass a BackwardStepper, e.g. BackwardStepper(loss, model=model)")


class FrameMaker:
    """Builds the frame of any one step on demand (a notebook stepping through a big run
    draws only the steps it shows); `frames` builds them all."""

    def __init__(self, stepper: BackwardStepper, *, rankdir: str = "TB", cluster: bool = True,
                 budget: int | None = None) -> None:
        _check_stepper(stepper)
        self.stepper = stepper
        self._dot_options = {"rankdir": rankdir, "cluster": cluster, "budget": budget}
        self.sent = [_sent(stepper, s) for s in stepper]
        everything = [v for per in self.sent for v in per.values() if v > 0]
        # One scale for the whole run, so an edge looks the same in every frame.
        self.low, self.high = (min(everything), max(everything)) if everything else (0.0, 0.0)

    def __len__(self) -> int:
        return len(self.sent)

    def __call__(self, index: int) -> Frame:
        if not isinstance(index, int) or not 0 <= index < len(self.sent):
            raise ArgumentError("index", index, f"use a step index from 0 to {len(self.sent) - 1}")
        stepper, step, now = self.stepper, self.stepper[index], self.sent[index]
        carried: dict[tuple[str, str], float] = {}
        for per in self.sent[: index + 1]:
            carried.update(per)
        base = stepper.graph.to_dot(
            colors=stepper.colors_at(index), highlight=[step.node.id], legend=False,
            **self._dot_options,
        ).source
        return Frame(
            index=index, node_id=step.node.id, label=step.node.label,
            caption=_caption(stepper, step, now), norms=carried, current=tuple(now),
            dot=_restyle(base, carried, set(now), self.low, self.high),
        )


def frames(
    stepper: BackwardStepper,
    *,
    rankdir: str = "TB",
    cluster: bool = True,
    budget: int | None = None,
    max_frames: int = MAX_FRAMES,
) -> list[Frame]:
    """One `Frame` per step of `stepper`, in engine order (no layout yet: see `frame_svgs`).

    rankdir, cluster, budget: as for `Graph.to_dot` (budget=None draws every node, so every
    edge can carry its own gradient). max_frames: refuse longer runs rather than write a
    file nobody can open.
    """
    _check_stepper(stepper)
    if not isinstance(max_frames, int) or max_frames < 1:
        raise ArgumentError("max_frames", max_frames, "use a whole number ≥ 1")
    if len(stepper) > max_frames:
        raise AnimationError(
            f"this backward has {len(stepper)} steps, more than max_frames={max_frames}: animate a "
            "smaller network (or a smaller batch of its layers), or pass a larger max_frames"
        )
    make = FrameMaker(stepper, rankdir=rankdir, cluster=cluster, budget=budget)
    return [make(i) for i in range(len(make))]


def _require_dot() -> None:
    if shutil.which("dot") is None:
        raise AnimationError(
            "Graphviz's `dot` program is not on PATH, so frames cannot be laid out: install it "
            "(Debian/Ubuntu: `apt-get install graphviz`; macOS: `brew install graphviz`)"
        )


def _layout(dot: str, fmt: str) -> bytes:
    return graphviz.pipe("dot", fmt, dot.encode("utf-8"))


def frame_svgs(frames_or_stepper: Sequence[Frame] | BackwardStepper, **options: Any) -> list[str]:
    """Each frame laid out by the real `dot` as SVG text (the `<svg>` element only, ready
    to put inside a page). Pass frames, or a stepper and the options of `frames`."""
    items = _as_frames(frames_or_stepper, options)
    _require_dot()
    svgs = []
    for f in items:
        svg = _layout(f.dot, "svg").decode("utf-8")
        svgs.append(svg[svg.find("<svg"):])
    return svgs


def _as_frames(value: Any, options: Mapping[str, Any]) -> list[Frame]:
    if isinstance(value, Sequence) and value and all(isinstance(f, Frame) for f in value):
        return list(value)
    return frames(value, **options)


def _asset(name: str) -> str:
    return (resources.files("gradviz") / "assets" / "player" / name).read_text(encoding="utf-8")


def _script_json(value: Any) -> str:
    # Inside <script>, "</" would end the element early; "\u003c" reads the same in JSON.
    return json.dumps(value, ensure_ascii=False).replace("</", "<\\/")


def player_html(
    frames_or_stepper: Sequence[Frame] | BackwardStepper,
    *,
    title: str = "gradviz · backward",
    speed: float = 1.0,
    interval_ms: int = 700,
    **options: Any,
) -> str:
    """A self-contained HTML page that plays the frames: play/pause, scrub, step, speed.

    Works offline (nothing is fetched). speed: the starting speed (0.25 … 4); interval_ms:
    time per frame at speed 1. The page can be embedded, e.g. in Streamlit with
    `st.components.v1.html(player_html(stepper), height=760)`.
    """
    if not isinstance(speed, int | float) or not 0.05 <= speed <= 16:
        raise ArgumentError("speed", speed,
                            "use a number from 0.05 to 16 (1 = one frame per interval)")
    if not isinstance(interval_ms, int) or interval_ms < 20:
        raise ArgumentError("interval_ms", interval_ms, "use a whole number of milliseconds ≥ 20")
    items = _as_frames(frames_or_stepper, options)
    svgs = frame_svgs(items)
    data = {
        "frames": [{"svg": s, "caption": f.caption, "node": f.node_id, "label": f.label}
                   for f, s in zip(items, svgs, strict=True)],
        "speed": float(speed),
        "interval": interval_ms,
    }
    parts = {"TITLE": html.escape(title), "CSS": _asset("player.css"),
             "DATA": _script_json(data), "JS": _asset("player.js")}
    # One pass, so a caption or an SVG that happens to contain a marker stays as it is.
    return re.sub(r"/\*(TITLE|CSS|DATA|JS)\*/", lambda m: parts[m.group(1)], _asset("player.html"))


def _out_path(path: Any) -> pathlib.Path:
    if not isinstance(path, str | pathlib.PurePath):
        raise ArgumentError("path", path,
                            "pass a file name such as 'backward.html' or 'backward.gif'")
    p = pathlib.Path(path)
    if not p.parent.exists():
        raise ArgumentError("path", str(path),
                            f"the folder {p.parent} does not exist: create it first")
    return p


def write_html(
    stepper: Sequence[Frame] | BackwardStepper, path: Any, **options: Any
) -> pathlib.Path:
    """Write `player_html(...)` to `path`; returns the path."""
    out = _out_path(path)
    out.write_text(player_html(stepper, **options), encoding="utf-8")
    return out


def _pillow() -> Any:
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as exc:
        raise AnimationError(
            "writing a GIF needs Pillow: `pip install pillow` (or `pip install gradviz[notebook]`)"
        ) from exc
    return Image, ImageDraw, ImageFont


def write_gif(
    stepper: Sequence[Frame] | BackwardStepper,
    path: Any,
    *,
    duration_ms: int = 800,
    dpi: int = 72,
    caption: bool = True,
    **options: Any,
) -> pathlib.Path:
    """Write an animated GIF, one frame per step (each laid out by `dot` as PNG at `dpi`),
    with the step's caption under the graph; it loops forever. Returns the path."""
    if not isinstance(duration_ms, int) or duration_ms < 20:
        raise ArgumentError("duration_ms", duration_ms, "use a whole number of milliseconds ≥ 20")
    if not isinstance(dpi, int) or not 24 <= dpi <= 300:
        raise ArgumentError("dpi", dpi, "use a whole number from 24 to 300 (72 suits slides)")
    out = _out_path(path)
    image_mod, draw_mod, font_mod = _pillow()
    items = _as_frames(stepper, options)
    _require_dot()
    pictures = []
    for f in items:
        with_dpi = f.dot.replace("digraph gradviz {", f"digraph gradviz {{\n\tgraph [dpi={dpi}]", 1)
        pictures.append(image_mod.open(io.BytesIO(_layout(with_dpi, "png"))).convert("RGB"))
    width = max(max(p.width for p in pictures), 320)
    lines = [_wrap(f.caption, width) if caption else [] for f in items]
    strip = 16 * max(len(x) for x in lines) + 8 if caption else 0
    height = max(p.height for p in pictures) + strip
    font = font_mod.load_default(size=12) if caption else None
    canvas = []
    for text, pic in zip(lines, pictures, strict=True):
        page = image_mod.new("RGB", (width, height), "white")
        page.paste(pic, ((width - pic.width) // 2, 0))
        pen = draw_mod.Draw(page)
        for k, line in enumerate(text):
            pen.text((6, height - strip + 4 + 16 * k), line, fill=(33, 37, 41), font=font)
        canvas.append(page.quantize(colors=128, method=image_mod.Quantize.FASTOCTREE))
    canvas[0].save(out, format="GIF", save_all=True, append_images=canvas[1:],
                   duration=duration_ms, loop=0, optimize=False)
    return out


def _wrap(text: str, width: int) -> list[str]:
    # Pillow's default font is ~6.5 px per character at size 12.
    return textwrap.wrap(text, max(20, int((width - 12) / 6.5)), break_on_hyphens=False)


def animate(
    stepper: BackwardStepper, path: Any, *, format: str | None = None, **options: Any
) -> pathlib.Path:
    """Write the backward of `stepper` as an HTML player (.html) or an animated GIF (.gif);
    `format` overrides the suffix. Options go to `write_html` / `write_gif` and `frames`."""
    _check_stepper(stepper)
    out = _out_path(path)
    fmt = format or out.suffix.lower().lstrip(".")
    fmt = "html" if fmt == "htm" else fmt
    if fmt not in FORMATS:
        raise ArgumentError("format", format or str(path),
                            "write an .html player or a .gif (or pass format='html' / 'gif')")
    if fmt == "html":
        return write_html(stepper, out, **options)
    return write_gif(stepper, out, **options)

"""Streamlit glue for playing backward on the Backward page: the exported animation's own
player embedded in the page, and downloads of it as HTML and GIF (frames and files come from
gradviz.backward.animate, so the page plays exactly what a teacher exports)."""

from __future__ import annotations

import pathlib
import re
import tempfile

import streamlit as st

from gradviz.app import guard
from gradviz.app.backward_ui import BUILT, stepper_for
from gradviz.backward.animate import player_html, write_gif
from gradviz.backward.stepper import BackwardStepper

__all__ = ["PLAY_KEY", "export_name", "gif_bytes", "player_page", "show_play"]

PLAY_KEY = "bw_play"  # the expander's key: the player is built only while it is open


def _player(stepper: BackwardStepper, source: str) -> str:
    return player_html(stepper, title=f"gradviz · backward of {_program(source)}",
                       interval_ms=700)


def _gif(stepper: BackwardStepper) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return write_gif(stepper, pathlib.Path(tmp) / "backward.gif").read_bytes()


# The zoo's programs are the same for every session: lay their frames out once per process.
@st.cache_data(max_entries=8, show_spinner=False)
def _zoo_player(source: str, seed: int) -> str:
    return _player(stepper_for(source, seed), source)


@st.cache_data(max_entries=8, show_spinner=False)
def _zoo_gif(source: str, seed: int) -> bytes:
    return _gif(stepper_for(source, seed))


def player_page(stepper: BackwardStepper, source: str, seed: int) -> str:
    """The self-contained HTML player of this program's backward, one frame per step."""
    if not source.startswith(BUILT):
        return _zoo_player(source, seed)
    # A built model lives in this session only (its key is an object id, reused once freed).
    memo = st.session_state.setdefault("bw_play_pages", {})
    if (source, seed) not in memo:
        memo.clear()  # one built model at a time, as its stepper
        memo[(source, seed)] = _player(stepper, source)
    return memo[(source, seed)]


def gif_bytes(stepper: BackwardStepper, source: str, seed: int) -> bytes:
    """The same frames as an animated GIF (Pillow), for slides."""
    return _gif(stepper) if source.startswith(BUILT) else _zoo_gif(source, seed)


def _program(source: str) -> str:
    return "the built model" if source.startswith(BUILT) else source.split(":", 1)[-1]


def export_name(source: str, seed: int, suffix: str) -> str:
    """A file name saying which program and seed: backward-mnist-cnn-seed0.gif."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", _program(source)).strip("-") or "program"
    return f"backward-{slug}-seed{seed}.{suffix}"


def show_play(stepper: BackwardStepper, source: str, seed: int) -> None:
    """An expander with the player (play/pause, scrub, speed) and the two downloads."""
    box = st.expander(f"▶ Play backward as an animation ({len(stepper)} steps) · "
                      "export it as HTML or GIF", key=PLAY_KEY, on_change="rerun")
    if not box.open:
        return
    with box, guard("Could not make the animation"):
        st.caption("The same frames as the exported files: each step's node outlined, edges "
                   "wider and redder the larger the gradient they carried. Space plays and "
                   "pauses, ← → step, the menu sets the speed.")
        with st.spinner("Laying out every step with Graphviz…"):
            page = player_page(stepper, source, seed)
        st.iframe(page, height=820)
        left, right, _ = st.columns([1, 1, 3])
        left.download_button("⬇ Animation (HTML player)", page, key="bw_dl_html",
                             file_name=export_name(source, seed, "html"), mime="text/html",
                             on_click="ignore", help="Works offline: open it in any browser.")
        # Made when asked for (seconds for a CNN), on the download's own thread.
        right.download_button("⬇ Animation (GIF)", lambda: gif_bytes(stepper, source, seed),
                              key="bw_dl_gif", file_name=export_name(source, seed, "gif"),
                              mime="image/gif", on_click="ignore",
                              help="One frame per step, for slides.")

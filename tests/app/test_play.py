"""The Backward page's player and its exports: the same frames as gradviz.backward.animate."""

from __future__ import annotations

import io
import json
import pathlib
import re

from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from gradviz.app import play_ui
from gradviz.backward.animate import FrameMaker
from gradviz.zoo.sources import step_source

PAGE = str(pathlib.Path(__file__).resolve().parents[2] / "pages" / "3_Backward.py")


def _player_data(page: str) -> dict:
    found = re.search(r"const GRADVIZ_PLAYER = (.*?);</script>", page, re.S)
    assert found, "the player's frames are not in the page"
    return json.loads(found.group(1))


def test_the_player_is_built_only_when_opened_and_plays_the_exported_frames():
    at = AppTest.from_file(PAGE, default_timeout=240).run()
    assert not at.exception and not at.error
    box = at.expander[0]
    assert box.label.startswith("▶ Play backward") and not box.get("iframe")
    at.session_state[play_ui.PLAY_KEY] = True  # what a click on the expander sets
    at.run()
    assert not at.exception and not at.error
    steps = step_source("preset:mnist-cnn")
    make = FrameMaker(steps)
    frames = _player_data(at.get("iframe")[0].proto.srcdoc)["frames"]
    assert [f["node"] for f in frames] == [s.node.id for s in steps]
    assert [f["caption"] for f in frames] == [make(i).caption for i in range(len(steps))]
    assert all(f["svg"].startswith("<svg") for f in frames)
    names = {b.key: b.proto.label for b in at.get("download_button")}
    assert set(names) == {"bw_dl_html", "bw_dl_gif"}
    # The page's own stepper still starts at step 1: the player does not move it.
    assert at.subheader[0].value.startswith(f"Step 1/{len(steps)}:")


def test_the_gif_has_one_frame_per_step_and_the_html_download_is_the_player():
    steps = step_source("preset:quadrant-sgd")
    gif = Image.open(io.BytesIO(play_ui.gif_bytes(steps, "preset:quadrant-sgd", 0)))
    assert gif.format == "GIF" and gif.n_frames == len(steps)
    page = play_ui.player_page(steps, "preset:quadrant-sgd", 0)
    assert len(_player_data(page)["frames"]) == len(steps)
    assert "<title>gradviz · backward of quadrant-sgd</title>" in page
    assert not re.search(r"""(src|href)=["']https?://""", page)  # nothing fetched: offline


@given(st.text(max_size=40), st.integers(0, 10_000), st.sampled_from(["html", "gif"]))
def test_export_names_are_safe_file_names(source, seed, suffix):
    name = play_ui.export_name(source, seed, suffix)
    assert re.fullmatch(r"backward-[A-Za-z0-9-]+-seed\d+\.(html|gif)", name)
    assert name.endswith(f"-seed{seed}.{suffix}") and "--" not in name

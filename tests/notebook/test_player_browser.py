"""The HTML backward player in Chromium: it plays to the last frame with no console error."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from gradviz.zoo.sources import step_source


@pytest.mark.browser
def test_player_plays_to_the_last_frame_offline(page, tmp_path):
    stepper = step_source("preset:two-layer-nn")
    path = stepper.animate(tmp_path / "backward.html", interval_ms=60)
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    n = len(stepper)
    body = page.locator("body")
    expect(body).to_have_attribute("data-frames", str(n))
    expect(body).to_have_attribute("data-frame", "0")
    expect(page.locator(".gp-stage svg g.node")).to_have_count(len(stepper.graph))
    page.locator(".gp-speed").select_option("4")
    page.get_by_role("button", name="▶ Play").click()
    expect(body).to_have_attribute("data-playing", "true")
    expect(body).to_have_attribute("data-frame", str(n - 1), timeout=30_000)
    expect(body).to_have_attribute("data-playing", "false")  # it stops at the end
    last = stepper[n - 1].node
    expect(page.locator(".gp-caption")).to_contain_text(f"step {n}/{n}: {last.label}")
    # The current node carries the red outline; the edges it sent along flow.
    current = page.locator(".gp-stage g.node", has=page.locator(f'title:text-is("{last.id}")'))
    current.locator("[stroke='#e03131']").first.wait_for()
    # Scrub back to step 3, then step forward by one.
    page.locator(".gp-scrub").fill("3")
    expect(body).to_have_attribute("data-frame", "2")
    expect(body).to_have_attribute("data-node", stepper[2].node.id)
    page.get_by_title("Next step (→)").click()
    expect(body).to_have_attribute("data-frame", "3")
    expect(page.locator(".gp-stage g.edge.gv-flow")).to_have_count(len(
        [g for nid, g in zip(stepper[3].next_ids, stepper[3].grad_inputs, strict=False)
         if nid is not None and g is not None]
    ))
    assert errors == []
    assert all(u.startswith("file://") for u in requests)  # nothing fetched from a network

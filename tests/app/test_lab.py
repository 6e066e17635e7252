"""Function Lab: checks run in the sandbox, the page in AppTest and in Chromium."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from playwright.sync_api import expect
from streamlit.testing.v1 import AppTest

from gradviz import GradvizError
from gradviz.check.lab import parse_shapes, run_lab
from gradviz.check.sandbox.parent import Limits
from gradviz.zoo.functions import function_examples

PAGE = str(pathlib.Path(__file__).resolve().parents[2] / "pages" / "4_Function_Lab.py")
EXAMPLES = function_examples()


def test_parse_shapes():
    assert parse_shapes("5") == [(5,)]
    assert parse_shapes("4x3, 3") == [(4, 3), (3,)]
    assert parse_shapes("scalar, 2×2") == [(), (2, 2)]
    for bad in ("", "4x", "a", "0", "100"):
        with pytest.raises(GradvizError, match="shapes"):
            parse_shapes(bad)


def test_lab_passes_myrelu_and_shrinks_a_buggy_one():
    ok = run_lab(EXAMPLES["relu"].source, EXAMPLES["relu"].class_name, "6", max_examples=40)
    assert ok.error is None and ok.report.ok
    assert ok.graph is not None and any(n.label == "MyReLU" for n in ok.graph.nodes)
    wrong = EXAMPLES["relu_wrong_threshold"]
    bad = run_lab(wrong.source, wrong.class_name, "6", max_examples=60)
    assert not bad.report.ok
    failure = bad.report.failures[0]
    x = np.concatenate([np.ravel(a) for a in failure.inputs])
    assert np.any((x >= 0) & (x < 0.5)), x  # shrunk into the wrongly masked band


def test_lab_checks_an_in_place_function_and_draws_it_on_a_clone():
    example = EXAMPLES["relu_in_place"]
    result = run_lab(example.source, example.class_name, "5", max_examples=30)
    assert result.error is None and result.report.ok
    labels = [n.label for n in result.graph.nodes]
    assert labels == ["output", "ReLUInPlace", "CloneBackward0", "input 0"]


def test_lab_reports_user_code_problems_clearly():
    missing = run_lab("import torch\nclass A(torch.autograd.Function):\n    pass\n", "MyReLU", "3")
    assert missing.report is None and "defines no 'MyReLU'" in missing.error
    short = Limits(wall_seconds=8, cpu_seconds=6)
    loop = run_lab("while True:\n    pass\n", "MyReLU", "3", limits=short)
    assert loop.report is None and loop.sandbox.kind == "timeout"
    syntax = run_lab("def broken(:\n", "MyReLU", "3")
    assert syntax.report is None and "SyntaxError" in syntax.error
    again = run_lab(EXAMPLES["abs"].source, EXAMPLES["abs"].class_name, "4", max_examples=20)
    assert again.report.ok  # the lab keeps working after hostile input


def test_lab_page_runs_examples():
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    assert not at.exception
    assert "class MyReLU" in at.text_area(key="lab_source").value
    at.button(key="lab_run").click().run()
    assert [s.value for s in at.success] == ["MyReLU: OK"]
    at.selectbox(key="lab_example").set_value("relu_forgot_mask").run()
    at.button(key="lab_run").click().run()
    assert any("bug found" in e.value for e in at.error)
    at.text_input(key="lab_shapes").input("4x").run()
    at.button(key="lab_run").click().run()
    assert any("shapes" in e.value for e in at.error)


def test_lab_page_with_user_code_off(monkeypatch):
    monkeypatch.setenv("GRADVIZ_DISABLE_USER_CODE", "1")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.button(key="lab_run").click().run()
    assert any("turned off" in e.value for e in at.error)
    assert not at.success


@pytest.mark.browser
def test_lab_in_chromium_pass_then_fail_with_counterexample(app_url, page, screenshot):
    page.goto(f"{app_url}/Function_Lab")
    page.get_by_role("button", name="Run checks").click()
    page.wait_for_selector('.gradviz-lab-verdict[data-ok="true"]', timeout=120_000)
    assert "MyReLU" in page.locator(".gradviz-lab-verdict").inner_text()
    # As the page says to: load a buggy example from the picker, which fills the editor.
    wrong = EXAMPLES["relu_wrong_threshold"]
    page.get_by_test_id("stSelectbox").filter(has_text="Load an example").click()
    page.get_by_role("option", name="relu_wrong_threshold — ").click()
    expect(page.get_by_label("Class name")).to_have_value(wrong.class_name)
    assert "input < 0.5" in page.get_by_label("Your Function").input_value()
    page.get_by_role("button", name="Run checks").click()
    page.wait_for_selector('.gradviz-lab-verdict[data-ok="false"]', timeout=120_000)
    assert wrong.class_name in page.locator(".gradviz-lab-verdict").inner_text()
    page.get_by_text("Shrunk counterexample").first.wait_for()
    # the heatmaps can render after the counterexample's text (seen once in a fresh clone)
    page.locator(".gradviz-heatmap").nth(1).wait_for(state="attached", timeout=30_000)
    assert page.locator(".gradviz-heatmap").count() >= 2
    # The picture shows the finding: the verdict at the top, the heatmaps below it.
    page.locator(".gradviz-lab-verdict").evaluate("e => e.scrollIntoView({block: 'start'})")
    page.mouse.move(5, 995)
    screenshot(page, "function_lab")


def test_lab_page_names_protections_this_machine_lacks(monkeypatch):
    from gradviz.app import lab_ui
    from gradviz.check.sandbox import parent

    monkeypatch.setattr(parent, "_SKIP_PROTECTIONS", ("landlock", "seccomp"))
    lab_ui._probed.clear()
    try:
        at = AppTest.from_file(PAGE, default_timeout=60).run()
        assert not at.exception
        [warning] = at.warning
        assert "could not apply every protection" in warning.value
        assert "**landlock** (skipped on request)" in warning.value
        assert "**seccomp** (skipped on request)" in warning.value
        assert "GRADVIZ_REQUIRE_ISOLATION=1" in warning.value
    finally:
        lab_ui._probed.clear()
    monkeypatch.setattr(parent, "_SKIP_PROTECTIONS", ())
    assert not AppTest.from_file(PAGE, default_timeout=60).run().warning


def test_lab_page_queues_a_check_while_every_sandbox_is_busy(monkeypatch):
    import threading

    from gradviz.check.sandbox import parent
    from gradviz.check.sandbox.slots import sandbox_slot

    monkeypatch.setenv("GRADVIZ_MAX_SANDBOXES", "1")
    parent._SPARES.clear()  # a spare of an earlier test holds a slot of the old cap
    at = AppTest.from_file(PAGE, default_timeout=180).run()  # probes, keeps a spare
    at.number_input(key="lab_examples").set_value(10)
    held, release = threading.Event(), threading.Event()

    def other_user() -> None:  # takes the one slot the way a run does: ends the idle spare
        with sandbox_slot(make_room=parent._SPARES.evict):
            held.set()
            release.wait(timeout=60)

    holder = threading.Thread(target=other_user)
    holder.start()
    assert held.wait(timeout=30)
    timer = threading.Timer(2.0, release.set)
    timer.start()
    try:
        at.button(key="lab_run").click().run()
    finally:
        release.set()
        holder.join()
        timer.cancel()
    assert not at.exception
    assert [s.value for s in at.success] == ["MyReLU: OK"]
    [caption] = [c.value for c in at.caption if "waited" in c.value]
    waited = float(caption.split("waited ")[1].split(" s")[0])
    assert waited >= 1.5, caption  # it really waited for the other user's sandbox

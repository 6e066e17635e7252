"""Streamlit glue for the Function Lab page."""

from __future__ import annotations

import time

import numpy as np
import streamlit as st

from gradviz.app import show_svg, svg_of
from gradviz.check import FunctionReport
from gradviz.check.heatmap import heatmap_svg
from gradviz.check.lab import LAB_LIMITS, LabResult, run_lab
from gradviz.check.sandbox.parent import (
    ISOLATION_ENV_VAR,
    Protection,
    keep_spare,
    probe_protections,
    user_code_enabled,
)
from gradviz.check.sandbox.slots import MAX_SANDBOXES_ENV_VAR, max_sandboxes
from gradviz.zoo.functions import function_examples

__all__ = ["EXAMPLES", "example_label", "load_example", "protection_warning", "run", "show_result"]

EXAMPLES = function_examples()


def example_label(name: str) -> str:
    """How the example picker shows an example: name, correct or buggy, what it shows."""
    example = EXAMPLES[name]
    return f"{name} — {'correct' if example.correct else 'buggy'}: {example.description}"


def load_example() -> None:
    """on_change of the example picker: put its code and class name in the editor."""
    example = EXAMPLES[st.session_state.lab_example]
    st.session_state.lab_source = example.source
    st.session_state.lab_class = example.class_name


def _is_example(source: str, class_name: str) -> bool:
    return any(e.source == source and e.class_name == class_name for e in EXAMPLES.values())


# A built-in example's check is the same for every session (the seed fixes Hypothesis's
# inputs): run it in the sandbox once per process, then answer at once (issue 14). Code a
# user typed is always checked afresh.
@st.cache_resource(show_spinner=False)
def _example_results() -> dict[tuple, LabResult]:
    return {}


_EXAMPLE_RESULTS_MAX = 256


def run(source: str, class_name: str, shapes: str, max_examples: int, seed: int) -> LabResult:
    """Run the check, showing a "waiting" message while every sandbox slot is taken."""
    st.session_state.lab_waited = None
    key = (source, class_name, shapes, max_examples, seed)
    known = _example_results()
    if key in known:
        return known[key]
    with st.status("Checking in the sandbox…", expanded=True) as status:
        note = st.empty()
        started: list[float] = []

        def on_wait(busy: int) -> None:
            started.append(time.monotonic())
            text = (f"Waiting for a free sandbox: {busy} of {max_sandboxes()} are busy with "
                    f"other users' checks ({MAX_SANDBOXES_ENV_VAR}). Yours starts next in line.")
            status.update(label="Waiting for a free sandbox…", state="running")
            note.info(text)

        try:
            result = run_lab(source, class_name, shapes, max_examples=max_examples, seed=seed,
                             on_wait=on_wait)  # fmt: skip
            if (result.report is not None and _is_example(source, class_name)
                    and len(known) < _EXAMPLE_RESULTS_MAX):
                known[key] = result
        finally:
            note.empty()
            status.update(label="Checked in the sandbox", state="complete", expanded=False)
    if started:
        st.session_state.lab_waited = time.monotonic() - started[0]
    return result


@st.cache_resource(show_spinner="Checking what the sandbox can fence off on this machine…")
def _probed() -> tuple[Protection, ...]:
    return tuple(probe_protections().values())


def protection_warning(result: LabResult | None) -> str | None:
    """Names the protections this machine could not apply, or None when all are up."""
    if not user_code_enabled():
        return None
    protections = tuple(result.sandbox.protections.values()) if result else ()
    protections = protections or _probed()
    if not protections:
        return "The sandbox did not report which protections it could apply on this machine."
    missing = [p for p in protections if not p.applied]
    if not missing:
        return None
    listed = "; ".join(f"**{p.name}** ({p.reason})" for p in missing)
    return (
        f"The sandbox could not apply every protection on this machine: {listed}. Your code "
        f"still runs with the rest; set {ISOLATION_ENV_VAR}=1 to refuse user code instead."
    )


def _checks_table(report: FunctionReport) -> list[dict]:
    failed = {f.check: f for f in report.failures}
    warned = {w.check: w for w in report.warnings}
    rows = []
    for check in report.checks_run:
        status = "✗ fail" if check in failed else ("⚠ warning" if check in warned else "✓ pass")
        finding = failed.get(check) or warned.get(check)
        message = finding.message if finding else ""
        rows.append({"check": check, "result": status, "message": message})
    return rows


def show_result(result: LabResult) -> None:
    waited = st.session_state.get("lab_waited")
    if waited is not None:
        st.caption(f"This check waited {waited:.1f} s for a free sandbox.")
    if result.report is None:
        st.error(f"Your code did not finish: {result.error}")
        if result.sandbox.traceback:
            st.code(result.sandbox.traceback, language="text")
        return
    report = result.report
    failed = ", ".join(dict.fromkeys(f.check for f in report.failures))
    verdict = "passes every check" if report.ok else f"fails: {failed}"
    st.markdown(
        f'<div class="gradviz-lab-verdict" data-ok="{str(report.ok).lower()}">'
        f"<b>{report.function}</b> {verdict} after {report.examples_run} examples</div>",
        unsafe_allow_html=True,
    )
    show = st.success if report.ok else st.error
    show(f"{report.function}: {'OK' if report.ok else 'bug found'}")
    st.table(_checks_table(report), hide_index=True)  # wraps each message, never cuts it
    if report.kinks_seen:
        st.info(f"{report.kinks_seen} examples touched a kink or tie; backward stayed between "
                "the one-sided slopes there, so they are not bugs.")
    for failure in (*report.failures, *report.warnings):
        st.markdown(f"**{failure.check}** — {failure.message}")
        st.markdown("Shrunk counterexample:")
        shown = (np.array2string(np.asarray(x), precision=6) for x in failure.inputs)
        st.code("\n".join(shown), language="text")
        if failure.analytical is not None and failure.numerical is not None:
            both = np.concatenate([np.ravel(failure.analytical), np.ravel(failure.numerical)])
            scale = float(np.nanmax(np.abs(both))) or 1.0
            matrices = (("analytical (your backward)", failure.analytical),
                        ("numerical (finite differences)", failure.numerical))  # fmt: skip
            _show_heatmaps(matrices, scale, failure.rows, failure.columns)
    with st.expander("Full report"):
        st.code(str(report), language="text")
    if result.graph is not None:
        st.markdown("The Function's autograd graph for one input:")
        show_svg(svg_of(result.graph.to_dot(legend=False).source), height=320)


_HEATMAP_WIDTH = 560  # px of half the page: wider cells than this lose their column labels


def _show_heatmaps(matrices: tuple, scale: float, rows: tuple[str, ...],
                   columns: tuple[str, ...]) -> None:
    """Your backward beside finite differences, one colour scale, nothing cut or overlapping."""
    # Cells wide enough for their column labels ("input[3]"), titles above the SVG (it is
    # only as wide as its cells) and a faint outline, so an all-zero matrix still shows.
    n_cols = max(np.atleast_2d(m).shape[1] for _, m in matrices)
    cell = max(22, int(5.5 * max((len(c) for c in columns), default=0)) + 6)
    if cell * n_cols > _HEATMAP_WIDTH:
        cell, columns = 22, ()
    for col, (name, m) in zip(st.columns(2), matrices, strict=True):
        col.markdown(f"**{name}**")
        svg = heatmap_svg(m, "", cell=cell, scale=scale, row_labels=rows, col_labels=columns)
        svg = svg.replace("<rect ", '<rect stroke="#ced4da" stroke-width="0.5" ')
        col.markdown(f'<div style="overflow-x:auto">{svg}</div>', unsafe_allow_html=True)


@st.cache_resource(show_spinner=False)
def _keep_a_spare() -> bool:
    # One lab child per server process waits fenced in with torch and Hypothesis imported
    # and warm, so a check skips the seconds of a child's start-up (issue 14).
    keep_spare("lab.check", LAB_LIMITS)
    return True


def user_code_note() -> str | None:
    """Called as the page opens: why the lab is off, or None (and a spare child starts)."""
    if user_code_enabled():
        _keep_a_spare()
        return None
    return ("User code is turned off on this server (GRADVIZ_DISABLE_USER_CODE is set); "
            "unset it to use the lab.")

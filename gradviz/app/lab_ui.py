"""Streamlit glue for the Function Lab page."""

from __future__ import annotations

import numpy as np
import streamlit as st

from gradviz.app import show_svg, svg_of
from gradviz.check import FunctionReport
from gradviz.check.heatmap import heatmap_svg
from gradviz.check.lab import LabResult, run_lab
from gradviz.check.sandbox.parent import user_code_enabled
from gradviz.zoo.functions import function_examples

__all__ = ["EXAMPLES", "load_example", "run", "show_result"]

EXAMPLES = function_examples()


def load_example() -> None:
    """on_change of the example picker: put its code and class name in the editor."""
    example = EXAMPLES[st.session_state.lab_example]
    st.session_state.lab_source = example.source
    st.session_state.lab_class = example.class_name


def run(source: str, class_name: str, shapes: str, max_examples: int, seed: int) -> LabResult:
    return run_lab(source, class_name, shapes, max_examples=max_examples, seed=seed)


def _checks_table(report: FunctionReport) -> list[dict]:
    failed = {f.check: f for f in report.failures}
    warned = {w.check: w for w in report.warnings}
    rows = []
    for check in report.checks_run:
        status = "✗ fail" if check in failed else ("⚠ warning" if check in warned else "✓ pass")
        finding = failed.get(check) or warned.get(check)
        rows.append({"check": check, "result": status, "message": finding.message if finding else ""})
    return rows


def show_result(result: LabResult) -> None:
    if result.report is None:
        st.error(f"Your code did not finish: {result.error}")
        if result.sandbox.traceback:
            st.code(result.sandbox.traceback, language="text")
        return
    report = result.report
    verdict = "passes every check" if report.ok else f"fails: {', '.join(dict.fromkeys(f.check for f in report.failures))}"
    st.markdown(
        f'<div class="gradviz-lab-verdict" data-ok="{str(report.ok).lower()}"><b>{report.function}</b> {verdict} '
        f"after {report.examples_run} examples</div>",
        unsafe_allow_html=True,
    )
    (st.success if report.ok else st.error)(f"{report.function}: {'OK' if report.ok else 'bug found'}")
    st.dataframe(_checks_table(report), hide_index=True)
    if report.kinks_seen:
        st.info(f"{report.kinks_seen} examples touched a kink or tie; backward stayed between the one-sided slopes there, so they are not bugs.")
    for failure in (*report.failures, *report.warnings):
        st.markdown(f"**{failure.check}** — {failure.message}")
        st.markdown("Shrunk counterexample:")
        st.code("\n".join(np.array2string(np.asarray(x), precision=6) for x in failure.inputs), language="text")
        if failure.analytical is not None and failure.numerical is not None:
            scale = float(np.nanmax(np.abs(np.concatenate([np.ravel(failure.analytical), np.ravel(failure.numerical)])))) or 1.0
            cols = st.columns(2)
            for col, (name, m) in zip(cols, (("analytical (your backward)", failure.analytical), ("numerical (finite differences)", failure.numerical)), strict=True):
                col.markdown(heatmap_svg(m, name, scale=scale, row_labels=failure.rows, col_labels=failure.columns), unsafe_allow_html=True)
    with st.expander("Full report"):
        st.code(str(report), language="text")
    if result.graph is not None:
        st.markdown("The Function's autograd graph for one input:")
        show_svg(svg_of(result.graph.to_dot(legend=False).source), height=320)


def user_code_note() -> str | None:
    if user_code_enabled():
        return None
    return "User code is turned off on this server (GRADVIZ_DISABLE_USER_CODE is set); unset it to use the lab."

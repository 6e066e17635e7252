"""Function Lab: property-test a custom autograd Function typed in the browser (sandboxed)."""

import streamlit as st

from gradviz.app import guard, keep_navigation
from gradviz.app.lab_ui import (
    EXAMPLES,
    example_label,
    load_example,
    protection_warning,
    run,
    show_result,
    user_code_note,
)

keep_navigation()

st.set_page_config(page_title="gradviz · Function Lab", layout="wide")
st.title("Function Lab")
st.caption("Property-test your own torch.autograd.Function. "
           "Try first: load a buggy example and press Run checks.")
st.caption(
    "Hypothesis tries inputs rich in zeros and ties; each failing property comes back with a "
    "shrunk counterexample. Kinks (a ReLU at 0) are not bugs. Your code runs in a sandboxed "
    "child process."
)
if "lab_source" not in st.session_state:
    st.session_state.lab_example = "relu"
    load_example()

left, right = st.columns([3, 2])
with left:
    st.selectbox(
        "Load an example", list(EXAMPLES), key="lab_example", on_change=load_example,
        format_func=example_label,
    )
    source = st.text_area("Your Function", key="lab_source", height=360)
with right:
    class_name = st.text_input("Class name", key="lab_class")
    shapes = st.text_input(
        "Input shapes (one per input)", value="5", key="lab_shapes", help="e.g. 5 or 4x3, 3"
    )
    max_examples = st.number_input(
        "Hypothesis examples", 10, 1000, 100, step=10, key="lab_examples"
    )
    seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="lab_seed")
    clicked = st.button("Run checks", type="primary", key="lab_run")

note = user_code_note()
if note:
    st.error(note)
elif clicked:
    with guard("Could not run the checks"):
        st.session_state.lab_result = run(source, class_name, shapes, int(max_examples), int(seed))
warning = protection_warning(st.session_state.get("lab_result"))
if warning:
    st.warning(warning)
if "lab_result" in st.session_state:
    show_result(st.session_state.lab_result)

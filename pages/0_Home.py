"""gradviz home page: what it does and where to start (the other pages are the tools)."""

import pathlib

import streamlit as st

ROOT = pathlib.Path(__file__).resolve().parents[1]

st.title("gradviz — see and check PyTorch's autograd")
st.caption("What gradviz does and where to start. Try first: **Backward**, and press → to "
           "watch gradients flow node by node, each checked against NumPy.")
st.markdown(
    """
Backprop is hard to see. gradviz makes it visible and checkable:

- **Graph** — trace any program's autograd graph (ops, parameters by name, saved tensors,
  shapes, module clusters); export DOT, SVG, PNG or JSON. Big models stay readable: modules
  collapse and long runs fold within a node budget.
- **Build & Train** — the tutorial networks as 21 presets, or your own layer list; train
  offline with a loss curve and decision boundary.
- **Backward** — step through backward node by node in the order autograd runs it, each
  gradient checked against an independent NumPy computation.
- **Function Lab** — property-test a custom `torch.autograd.Function` with Hypothesis:
  shrunk counterexamples, and kinks (a ReLU at 0) are not bugs.
"""
)
st.subheader("Where to start")
for file, text in (
    ("pages/1_Graph.py", "Graph: draw the MNIST CNN's autograd graph"),
    ("pages/2_Build_and_Train.py", "Build & Train: build and train one of the 21 tutorial presets"),
    ("pages/3_Backward.py", "Backward: step through backward, checked against NumPy"),
    ("pages/4_Function_Lab.py", "Function Lab: property-test a custom autograd Function"),
):
    if (ROOT / file).is_file():
        st.page_link(file, label=text)
st.caption("The same library runs from Python: `import gradviz; gradviz.trace(loss, model=model)`.")

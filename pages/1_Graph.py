"""Graph page: explore a program's autograd graph (or its modules), click, search, open, compare."""

import streamlit as st

from gradviz.app import MODEL_KEY, graph_sources, guard, keep_navigation, model_shape_input
from gradviz.app.explorer_ui import MODES, explored, show_compare, show_explorer, show_node_table

keep_navigation()

st.set_page_config(page_title="gradviz · Graph", layout="wide")
st.title("Autograd graph")
st.caption("The autograd graph of a program: ops, parameters, saved tensors. "
           "Try first: click a node, or switch View to Forward.")

sources = graph_sources()
with st.sidebar:
    label = st.selectbox("Program or model", list(sources), index=1, key="graph_source",
                         help="Type a name to search: examples, presets, torchvision and "
                              "Hugging Face models (random weights, nothing downloaded).")
    st.caption(label.split(" — ", 1)[-1])  # the whole description, cut in the box above
    source = model_shape_input(sources[label])
    seed = int(st.number_input("Seed", 0, 10_000, 0, key="graph_seed"))
    mode = MODES[st.radio("View", list(MODES), key="graph_mode", horizontal=True,
                          help="Forward: modules and the data flowing between them. Backward: "
                          "autograd nodes.")]
    show_saved = st.toggle("Saved tensors", value=False, key="graph_saved")
    show_attrs = st.toggle("Saved values (dim, stride…)", value=False, key="graph_attrs")
    cluster = st.toggle("Module clusters", value=True, key="graph_cluster")
    depth = st.slider("Collapse modules below depth (0 = automatic)", 0, 4, 0, key="graph_depth")
    draw_all = st.toggle("Draw every node (slow for big graphs)", value=False, key="graph_all")
if MODEL_KEY in st.session_state:
    st.info("The model built on the Build & Train page is available there as the preset it came "
            "from.")

with guard("Could not trace this program"):
    graph, _ = explored(source, seed)
    counts = graph.counts()
    cols = st.columns(4)
    shown = [("nodes", len(graph)), ("ops", counts["op"]), ("parameters", counts["param"]),
             ("leaves", counts["leaf"])]
    for col, (name, value) in zip(cols, shown, strict=True):
        col.metric(name, f"{value:,}")
    show_explorer(
        source, seed, mode, depth=depth or None, draw_all=draw_all, show_saved=show_saved,
        show_attrs=show_attrs, cluster=cluster,
        stem=source.split(":", 1)[1].replace(":", "-").replace("@", "-")
        + ("" if mode == "backward" else "-forward"),
    )
    show_node_table(source, seed)
    show_compare(sources, label, seed)

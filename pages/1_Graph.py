"""Graph page: trace an example program and draw its autograd graph."""

import json

import streamlit as st

from gradviz.app import MODEL_KEY, graph_sources, guard, node_rows, png_of, show_svg, svg_of, traced

st.set_page_config(page_title="gradviz · Graph", layout="wide")
st.title("Autograd graph")

sources = graph_sources()
with st.sidebar:
    label = st.selectbox("Program", list(sources), index=1, key="graph_source")
    show_saved = st.toggle("Saved tensors", value=False, key="graph_saved")
    show_attrs = st.toggle("Saved values (dim, stride…)", value=False, key="graph_attrs")
    cluster = st.toggle("Module clusters", value=True, key="graph_cluster")
    depth = st.slider("Collapse modules below depth (0 = automatic)", 0, 4, 0, key="graph_depth")
    draw_all = st.toggle("Draw every node (slow for big graphs)", value=False, key="graph_all")
if MODEL_KEY in st.session_state:
    st.info("The model built on the Build & Train page is available there as the preset it came from.")

with guard("Could not trace this program"):
    graph = traced(sources[label])
    dot = graph.to_dot(
        show_saved=show_saved,
        show_attrs=show_attrs,
        cluster=cluster,
        depth=depth or None,
        budget=None if draw_all else 500,
    )
    counts = graph.counts()
    cols = st.columns(4)
    for col, (name, value) in zip(cols, [("nodes", len(graph)), ("ops", counts["op"]), ("parameters", counts["param"]), ("leaves", counts["leaf"])]):
        col.metric(name, f"{value:,}")
    svg = svg_of(dot.source)
    show_svg(svg)
    stem = sources[label].split(":", 1)[1]
    cols = st.columns(4)
    cols[0].download_button("DOT", dot.source, f"{stem}.dot", "text/vnd.graphviz", key="dl_dot")
    cols[1].download_button("SVG", svg, f"{stem}.svg", "image/svg+xml", key="dl_svg")
    cols[2].download_button("PNG", png_of(dot.source), f"{stem}.png", "image/png", key="dl_png")
    cols[3].download_button("JSON", json.dumps(graph.to_json()), f"{stem}.json", "application/json", key="dl_json")
    with st.expander(f"Node table ({len(graph):,} nodes)"):
        st.dataframe(node_rows(graph), hide_index=True, width="stretch")

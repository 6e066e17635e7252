"""gradviz's entry point: the navigation, with each page named for its users.

It lives in its own folder on purpose: Streamlit switches to its older file-name
navigation ("streamlit app", "Build and Train") for the whole server when the entry
script has a `pages/` folder beside it and the first visitor opens a page other than
the home page. Page paths are relative to this file.
"""

import pathlib
import sys

import streamlit as st

# Streamlit puts this folder on sys.path, not the checkout: without this a plain
# `streamlit run entry/streamlit_app.py` from a checkout could not import gradviz.
ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

st.set_page_config(page_title="gradviz", page_icon=":material/replay:", layout="wide")
# url_path keeps the addresses the pages had as pages/ files, so links and bookmarks hold.
PAGES = [
    st.Page("../pages/0_Home.py", title="Home", icon=":material/home:", default=True),
    st.Page("../pages/1_Graph.py", title="Graph", icon=":material/account_tree:",
            url_path="Graph"),
    st.Page("../pages/2_Build_and_Train.py", title="Build & Train",
            icon=":material/model_training:", url_path="Build_and_Train"),
    st.Page("../pages/3_Backward.py", title="Backward", icon=":material/fast_rewind:",
            url_path="Backward"),
    st.Page("../pages/4_Function_Lab.py", title="Function Lab", icon=":material/science:",
            url_path="Function_Lab"),
]
st.navigation(PAGES).run()

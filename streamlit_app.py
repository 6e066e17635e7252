"""gradviz's entry point: the navigation, with each page named for its users.

A first visit straight to a page (a bookmark of /Backward) runs that page through
Streamlit's older `pages/` folder navigation instead of this script; every page calls
`gradviz.app.keep_navigation()`, which hands such a run back to this one.
"""

import streamlit as st

st.set_page_config(page_title="gradviz", page_icon=":material/replay:", layout="wide")
# url_path keeps the addresses the pages had as pages/ files, so links and bookmarks hold.
PAGES = [
    st.Page("pages/0_Home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/1_Graph.py", title="Graph", icon=":material/account_tree:",
            url_path="Graph"),
    st.Page("pages/2_Build_and_Train.py", title="Build & Train",
            icon=":material/model_training:", url_path="Build_and_Train"),
    st.Page("pages/3_Backward.py", title="Backward", icon=":material/fast_rewind:",
            url_path="Backward"),
    st.Page("pages/4_Function_Lab.py", title="Function Lab", icon=":material/science:",
            url_path="Function_Lab"),
]
st.navigation(PAGES).run()

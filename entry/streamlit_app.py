"""gradviz's entry point: the navigation, with each page named for its users."""

import streamlit as st

st.set_page_config(page_title="gradviz", page_icon="🔁", layout="wide")
# url_path keeps the addresses the pages had as pages/ files, so links and bookmarks hold.
PAGES = [
    st.Page("pages/0_Home.py", title="Home", icon="🏠", default=True),
    st.Page("pages/1_Graph.py", title="Graph", icon="🕸️", url_path="Graph"),
    st.Page("pages/2_Build_and_Train.py", title="Build & Train", icon="🏗️",
            url_path="Build_and_Train"),
    st.Page("pages/3_Backward.py", title="Backward", icon="⏪", url_path="Backward"),
    st.Page("pages/4_Function_Lab.py", title="Function Lab", icon="🧪", url_path="Function_Lab"),
]
st.navigation(PAGES).run()

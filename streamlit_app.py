"""Collab Explorer: `streamlit run streamlit_app.py`. The router: page config, the shared sidebar,
and st.navigation over the pages in app_pages/.

The folder is not called `pages/`: Streamlit treats a `pages/` folder as a legacy multipage app
until the router first runs, so a shared deep link opened on a fresh server would skip the router.
"""

import importlib

import streamlit as st

st.set_page_config(page_title="Collab Explorer", page_icon="🎬", layout="wide")


def page(name: str, title: str, icon: str) -> st.Page:
    """app_pages/<name>.py at the URL path /<name> (the first page is the app's root, /)."""
    return st.Page(f"app_pages/{name}.py", title=title, icon=f":material/{icon}:", url_path=name)


PAGES = {
    "Data": [page("data", "Ratings", "table_chart")],
    "Model": [
        page("train", "Train", "model_training"),
        page("compare", "Compare", "compare_arrows"),
    ],
    "Explore": [
        page("biases", "Biases", "balance"),
        page("embeddings", "Embeddings", "scatter_plot"),
        page("recommend", "Recommend", "recommend"),
        page("feedback", "Feedback loops", "autorenew"),
    ],
}

current = st.navigation(PAGES)
# A cold server imports torch, pandas and the core on its first run (seconds): say so at once
# instead of leaving the first visitor a blank page. Later runs find the modules imported.
starting = st.empty()
starting.caption(":material/hourglass_top: Starting Collab Explorer: loading PyTorch and the data…")
session = importlib.import_module("collab_ui.session")
starting.empty()
session.sidebar()
current.run()

"""Biases: the movies (and users) the model rates down or up whatever the taste."""

import pandas as pd
import streamlit as st

from collab_core.errors import CollabError
from collab_ui import cache, charts
from collab_ui.draw import download_csv, table
from collab_ui.session import require_model

MAX_POINTS = 2000  # a scatter of more only costs the browser (5,000 took 0.6 s more to draw)
trained = require_model()
st.title(":material/balance: Biases")
st.caption(
    "A bias is what the model adds to every prediction for a movie (or user), whoever is watching: "
    "a low movie bias means even people who like its kind tend not to like it."
)
left, right = st.columns(2)
min_ratings = left.slider("Only those with at least this many ratings", 0, 300, 0, step=5, key="bias_min")
n = right.slider("How many to list", 5, 50, 10, key="bias_n")

for what, of in (("movie", "items"), ("user", "users")):
    st.subheader(f"{what.capitalize()} biases")
    try:
        lowest, highest = cache.bias_table(trained, n, min_ratings, of)
        points = cache.bias_points(trained, MAX_POINTS, min_ratings, of)
    except CollabError as e:
        st.info(" ".join(str(e).split()), icon=":material/info:")
        st.stop()
    low_col, high_col = st.columns(2)
    low_col.markdown(f"**Lowest** ({len(lowest)})")
    table(lowest, f"low_{of}", low_col)
    high_col.markdown(f"**Highest** ({len(highest)})")
    table(highest, f"high_{of}", high_col)
    both = pd.concat([lowest, highest])
    download_csv(both.loc[~both.index.duplicated()], f"{what}_biases", f"download_biases_{of}")
    st.plotly_chart(charts.bias_scatter(points, what), key=f"bias_scatter_{of}")
    shown = (trained.item_table if of == "items" else trained.user_table)["n_ratings"] >= min_ratings
    if shown.sum() > len(points):
        st.caption(f"The map shows the {len(points):,} {what}s with the most ratings of {shown.sum():,}.")

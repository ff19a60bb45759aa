"""Ratings: the table with filters and paging, counts and distributions, the crosstab of seeds."""

import math

import numpy as np
import pandas as pd
import streamlit as st

from collab_core import browse
from collab_core.browse import RatingFilter
from collab_core.errors import CollabError
from collab_ui import cache, charts
from collab_ui.draw import error, table
from collab_ui.session import active_model, require_dataset

dataset = require_dataset()
st.title(":material/table_chart: Ratings")
summary = dataset.summary()
columns = st.columns(5)
columns[0].metric("Ratings", f"{summary['ratings']:,}")
columns[1].metric("Users", f"{summary['users']:,}")
columns[2].metric("Movies", f"{summary['items']:,}")
columns[3].metric(
    "Sparsity", f"{1 - summary['density']:.2%}", help="Share of user x movie cells with no rating"
)
columns[4].metric("Mean rating", f"{summary['mean_rating']:.2f}")

table_tab, distribution_tab, crosstab_tab = st.tabs(["Table", "Distributions", "Crosstab"])

with table_tab:
    left, middle, right, last = st.columns([3, 2, 3, 2])
    title = left.text_input("Title contains", key="filter_title", placeholder="e.g. Star Wars")
    users = middle.text_input("User ids", key="filter_users", placeholder="e.g. 1, 42")
    genres = sorted({g for gs in dataset.items["genres"].unique() for g in gs.split("|") if g})
    picked = right.multiselect("Genres (any of)", genres, key="filter_genres")
    scale = dataset.rating_scale
    rating_range = None  # a slider needs min < max: a table with one rating value has none
    if scale.low < scale.high:
        full = (scale.low, scale.high)
        chosen = last.slider("Rating", *full, full, step=scale.step or 0.5, key="filter_rating")
        rating_range = None if chosen == full else chosen
    wanted = RatingFilter(
        title=title.strip(),
        users=tuple(u.strip() for u in users.split(",") if u.strip()),
        genres=tuple(picked),
        rating=rating_range,
    )
    mask = cache.ratings_matching(dataset, wanted)
    n_rows = browse.count(dataset, mask)
    size_col, page_col = st.columns([1, 4], vertical_alignment="bottom")
    page_size = size_col.selectbox("Rows per page", [25, 50, 100, 250], index=1, key="page_size")
    n_pages = max(1, math.ceil(n_rows / page_size))
    with page_col:
        page = min(st.pagination(n_pages, key="ratings_page", max_visible_pages=9), n_pages)
    start = (page - 1) * page_size
    end = min(start + page_size, n_rows)
    st.caption(f"Rows {start + 1 if n_rows else 0:,}–{end:,} of {n_rows:,} matching ratings")
    rows = browse.page(dataset, mask, start, page_size)
    table(rows, "ratings_table", columns=[c for c in browse.COLUMNS if c in rows])

with distribution_tab:
    st.plotly_chart(charts.rating_histogram(cache.rating_counts(dataset)), key="rating_histogram")
    per_user, per_movie = st.columns(2)
    per_user.plotly_chart(charts.long_tail(cache.ratings_per_user(dataset), "user"), key="tail_users")
    per_movie.plotly_chart(charts.long_tail(cache.ratings_per_movie(dataset), "movie"), key="tail_movies")

with crosstab_tab:
    st.caption("The 15 most active users against the 15 most-rated movies, as the chapter shows it.")
    trained = active_model()
    fill = st.toggle(
        "Fill the gaps with the active model's predictions",
        key="crosstab_fill",
        disabled=trained is None,
        help=None if trained is not None else "Available once the active model is trained",
    )
    try:
        if fill and trained is not None:
            grid, filled = cache.crosstab_filled(trained, 15)
        else:
            grid, filled = cache.crosstab(dataset, 15), None
    except CollabError as e:
        error(e)
        st.stop()
    st.plotly_chart(charts.crosstab_heatmap(grid, filled), key="crosstab_heatmap")
    style = "background-color: #fde7d6; color: #9a3412; font-style: italic"
    styled = grid.style.format("{:.1f}", na_rep="")
    if filled is not None:
        cells = pd.DataFrame(np.where(filled, style, ""), index=grid.index, columns=grid.columns)
        styled = styled.apply(lambda _: cells, axis=None)
        st.caption("Shaded cells (and * on the map) are the model's predictions; the rest are real ratings.")
    st.container(key="crosstab_table").dataframe(
        styled, height="content", column_config={"_index": st.column_config.NumberColumn("user", format="%d")}
    )

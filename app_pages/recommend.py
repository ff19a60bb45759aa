"""Recommend: a user's top unseen movies, a movie's neighbours, and a brand-new user's picks."""

import pandas as pd
import streamlit as st

from collab_core.errors import CollabError
from collab_ui import cache, charts, explain_views, side_views
from collab_ui.draw import download_csv, error, table
from collab_ui.session import require_model

MAX_OPTIONS = 5000  # movies listed in the pickers
trained = require_model()
st.title(":material/recommend: Recommend")

users, items = trained.user_table, trained.item_table  # shared by every session: read, never modify


def pick_user(container) -> object:
    """A user id typed in (a number input for numeric ids, text otherwise): a list of 162k users
    would be megabytes in every rerun."""
    ids = users["user"]
    if pd.api.types.is_integer_dtype(ids):
        low, high = int(ids.min()), int(ids.max())
        return container.number_input(
            "User id",
            low,
            high,
            int(ids.iloc[0]),
            step=1,
            key="user",
            bind="query-params",
            help=f"{len(ids):,} users with ids {low}..{high}",
        )
    typed = container.text_input(
        "User id", str(ids.iloc[0]), key="user", bind="query-params", help=f"{len(ids):,} users"
    ).strip()
    if ids.astype(str).eq(typed).any():
        return typed
    # never echoed: text from a URL must not reach a message (Markdown renders)
    container.warning(f"No user has that id; showing user {ids.iloc[0]}", icon=":material/person_off:")
    return str(ids.iloc[0])


def describe(user: object, index: int) -> str:
    row = users.loc[index]
    who = " ".join(str(row[c]) for c in ("age", "gender", "occupation") if c in row and row[c] == row[c])
    count = int(row["n_ratings"])  # the row of a table without demographics is all floats
    return (
        f"User {user}: {who + ', ' if who else ''}{count:,} rating{'' if count == 1 else 's'}, "
        f"mean {row['mean_rating']:.2f}"
    )


def for_a_user() -> object | None:
    """The user's picks, history and explanations; the user picked (None if they cannot be shown)."""
    st.subheader("For a user")
    left, middle, right = st.columns([3, 1, 1])
    user = pick_user(left)
    n = middle.slider("How many", 5, 50, 10, key="rec_n")
    min_ratings = right.number_input("Movies with at least … ratings", 0, 500, 10, key="rec_min")
    try:
        left.caption(describe(user, trained.lookup.user_index(user)))
        recs = cache.recommend(trained, user, n, int(min_ratings))
        history = cache.user_history(trained, user)
    except CollabError as e:
        error(e)
        return None
    recs_col, history_col = st.columns(2)
    with recs_col:
        st.markdown(f"**Top {len(recs)} unseen movies for user {user}**")
        table(recs, "recs", columns=["title", "predicted", "mean_rating", "n_ratings", "genres", "year"])
        download_csv(recs, "recommendations", "download_recs")
    with history_col:
        st.plotly_chart(charts.predicted_vs_actual(history, user), key="history_chart")
    with st.expander(f"Everything user {user} rated ({len(history):,}), predicted against actual"):
        table(history, "history")
    explain_views.explain_user(trained, user, recs, history)
    explain_views.what_if(trained, user, n, int(min_ratings))
    return user


chosen_user = for_a_user()

st.subheader("Similar movies")
# the most-rated titles to pick from (59k options cost the browser two seconds a run); a picker takes
# no typed title: a URL's hostile text must never reach a message (they render Markdown)
by_popularity = items.nlargest(MAX_OPTIONS, "n_ratings", keep="first")["title"].tolist()
more = f" of {len(items):,}" if len(items) > MAX_OPTIONS else ""
left, middle, right = st.columns([3, 1, 1], vertical_alignment="bottom")
movie = left.selectbox(
    "Movie",
    by_popularity,
    key="movie",
    bind="query-params",
    help=f"The {len(by_popularity):,} most-rated movies{more}, most first; type to search",
)
euclidean = middle.toggle("Euclidean distance", key="euclidean", help="Cosine similarity when off")
k = right.slider("Neighbours", 5, 30, 10, key="similar_n")
try:
    near = cache.nearest_items(trained, movie, k, "euclidean" if euclidean else "cosine")
except CollabError as e:
    error(e)
    st.stop()
table_col, chart_col = st.columns(2)
table(near, "neighbours", table_col)
download_csv(near, "similar_movies", "download_neighbours", table_col)
chart_col.plotly_chart(
    charts.neighbours(near, movie, "distance" if euclidean else "similarity"), key="near_chart"
)

st.subheader("A new user")
if not trained.model.folds_in:
    st.info(f"{trained.config.model} has no new-user fold-in: an autoencoder predicts a user's rating "
            "through an output unit per trained user, and a new user has none. Pick a dot-product or NN "
            "model for new users.", icon=":material/info:")  # fmt: skip
    st.stop()
st.caption("The bootstrapping problem: rate a few movies and the model places you among the users at once.")
seen = st.multiselect(
    "Movies you have seen",
    by_popularity,
    key="new_movies",
    max_selections=20,
    placeholder="Pick a few movies, e.g. the most popular ones",
    help=f"The {len(by_popularity):,} most-rated movies{more}",
)
ratings = {}
if seen:
    cols = st.columns(min(4, len(seen)))
    for i, title in enumerate(seen):
        ratings[title] = cols[i % len(cols)].slider(title, 1.0, 5.0, 4.0, 0.5, key=f"new_rating_{title}")
try:
    picks = cache.fold_in_user(trained, ratings, 10)
except CollabError as e:
    error(e)
    st.stop()
st.markdown(
    "**Recommended for you**" if ratings else "**With no ratings yet: what an average user would get**"
)
table(picks, "new_user_recs")
explain_views.explain_new_user(trained, ratings, picks)

side_views.cold_start(trained)
side_views.rating_classes(trained, chosen_user, by_popularity)

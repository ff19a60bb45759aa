"""Recommend: a user's top unseen movies, a movie's neighbours, and a brand-new user's picks."""

import streamlit as st

from collab_core.errors import CollabError
from collab_ui import cache, charts, explain_views
from collab_ui.draw import error, table
from collab_ui.session import require_model

trained = require_model()
st.title(":material/recommend: Recommend")

users = cache.user_stats(trained)
items = cache.item_stats(trained)


def describe(user: object) -> str:
    row = users.loc[users["user"] == user].iloc[0]
    who = " ".join(str(row[c]) for c in ("age", "gender", "occupation") if c in row and row[c] == row[c])
    return (
        f"User {user}: {who + ', ' if who else ''}{row['n_ratings']} ratings, mean {row['mean_rating']:.2f}"
    )


st.subheader("For a user")
left, middle, right = st.columns([3, 1, 1])
user = left.selectbox("User", users["user"].tolist(), key="user", bind="query-params", help="Type to search")
left.caption(describe(user))
n = middle.slider("How many", 5, 50, 10, key="rec_n")
min_ratings = right.number_input("Movies with at least … ratings", 0, 500, 10, key="rec_min")
try:
    recs = cache.recommend(trained, user, n, int(min_ratings))
    history = cache.user_history(trained, user)
except CollabError as e:
    error(e)
    st.stop()
recs_col, history_col = st.columns(2)
with recs_col:
    st.markdown(f"**Top {len(recs)} unseen movies for user {user}**")
    table(recs, "recs", columns=["title", "predicted", "mean_rating", "n_ratings", "genres", "year"])
with history_col:
    st.plotly_chart(charts.predicted_vs_actual(history, user), key="history_chart")
with st.expander(f"Everything user {user} rated ({len(history)}), predicted against actual"):
    table(history, "history")
explain_views.explain_user(trained, user, recs, history)
explain_views.what_if(trained, user, n, int(min_ratings))

st.subheader("Similar movies")
by_popularity = items.sort_values("n_ratings", ascending=False)["title"].tolist()
left, middle, right = st.columns([3, 1, 1], vertical_alignment="bottom")
movie = left.selectbox(
    "Movie",
    by_popularity,
    key="movie",
    bind="query-params",
    help="Sorted by number of ratings; type to search",
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
chart_col.plotly_chart(
    charts.neighbours(near, movie, "distance" if euclidean else "similarity"), key="near_chart"
)

st.subheader("A new user")
st.caption("The bootstrapping problem: rate a few movies and the model places you among the users at once.")
seen = st.multiselect(
    "Movies you have seen",
    by_popularity,
    key="new_movies",
    max_selections=20,
    placeholder="Pick a few movies, e.g. the most popular ones",
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

"""The Recommend page's views of the two newer families: cold start from side features (side_nn) and
ratings as classes (dot_bias_ce). Each shows a one-line note pointing to its model when another
model is active."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from collab_core.errors import CollabError
from collab_core.features import UNKNOWN, FeatureSpec
from collab_core.learner import Trained
from collab_core.nets import DotBiasCE, SideNN
from collab_ui import cache
from collab_ui.draw import error, table

DEMOGRAPHIC_COLUMNS = ["user", "predicted", "age", "gender", "occupation"]


def cold_start(trained: Trained) -> None:
    """A new movie described by genres and year, and a new user by age, gender and occupation."""
    st.subheader("Cold start: a new movie, a new user, from their features")
    if not isinstance(trained.model, SideNN):
        st.caption(
            f"The active model ({trained.config.model}) knows movies and users only by their ratings. "
            "Train **side_nn** (Train page) to predict for a movie nobody has rated, or a user who has "
            "rated nothing, from genres, year, age, gender and occupation."
        )
        return
    spec = FeatureSpec.from_json(trained.model.spec)
    for notice in spec.notices:
        st.caption(f"Note: {notice}.")
    _cold_movie(trained, spec)
    _cold_user(trained, spec)


def _cold_movie(trained: Trained, spec: FeatureSpec) -> None:
    st.markdown("**A movie nobody has rated**")
    left, middle, right = st.columns([3, 1, 1])
    genres = left.multiselect(
        "Its genres", list(spec.genres), default=list(spec.genres[:1]), key="cold_genres"
    )
    year = None
    if spec.year is not None:
        year = middle.number_input("Its year", 1900, 2030, 1995, step=1, key="cold_year")
    floor = right.number_input(
        "Neighbours with at least … ratings", 0, 500, 20, key="cold_neighbour_min",
        help="Movies with few ratings sit near the cold-start embedding: without a floor, they come first",
    )  # fmt: skip
    try:
        year = None if year is None else float(year)
        found = cache.cold_movie(trained, tuple(genres), year, 10, int(floor))
    except CollabError as e:
        error(e)
        return
    predicted = found.ratings["predicted"]
    a, b, c = st.columns(3)
    a.metric("Mean predicted rating over all users", f"{predicted.mean():.2f} ★")
    b.metric("Users predicted to give ≥ 4", f"{(predicted >= 4).mean():.0%}")
    c.metric("Spread (std) across users", f"{predicted.std():.2f}")
    chart, users = st.columns(2)
    fig = px.histogram(
        found.ratings, x="predicted", nbins=40, title=f"Predicted ratings of {found.description}"
    )
    fig.update_layout(
        xaxis_title="predicted rating", yaxis_title="users", height=330, margin=dict(t=40, b=10)
    )
    chart.plotly_chart(fig, key="cold_movie_hist")
    with users:
        st.markdown("**The users who would like it most**")
        top = found.ratings.head(10)[[c for c in DEMOGRAPHIC_COLUMNS if c in found.ratings]]
        table(
            top.rename(columns={c: c.capitalize() for c in ("age", "gender", "occupation")}),
            "cold_movie_users",
        )
    st.markdown("**Its nearest rated movies** (cosine in side_nn's movie representation: the cold-start "
                "embedding beside its genres and year)")  # fmt: skip
    table(found.neighbours, "cold_movie_neighbours")


def _cold_user(trained: Trained, spec: FeatureSpec) -> None:
    st.markdown("**A user who has rated nothing**")
    cols = st.columns(4)
    age = cols[0].number_input("Age", 1, 100, 25, key="cold_age") if spec.age is not None else None
    gender = (
        cols[1].selectbox("Gender", [UNKNOWN, *spec.genders], key="cold_gender") if spec.genders else None
    )
    occupation = None
    if spec.occupations:
        occupation = cols[2].selectbox("Occupation", [UNKNOWN, *spec.occupations], key="cold_occupation")
    min_ratings = cols[3].number_input("Movies with at least … ratings", 0, 500, 20, key="cold_min")
    try:
        picks = cache.cold_user(
            trained,
            None if age is None else float(age),
            None if gender in (None, UNKNOWN) else gender,
            None if occupation in (None, UNKNOWN) else occupation,
            10,
            int(min_ratings),
        )
    except CollabError as e:
        error(e)
        return
    table(
        picks, "cold_user_recs", columns=["title", "predicted", "mean_rating", "n_ratings", "genres", "year"]
    )


def rating_classes(trained: Trained, user: object | None, movies: list[str]) -> None:
    """dot_bias_ce's predicted distribution for a (user, movie) pair, and its calibration."""
    st.subheader("Ratings as classes: the predicted distribution")
    if not isinstance(trained.model, DotBiasCE):
        st.caption(
            f"The active model ({trained.config.model}) predicts one number per rating. Train "
            "**dot_bias_ce** (Train page) to see a probability for each rating level and how well "
            "those probabilities are calibrated."
        )
        return
    if user is None:
        st.caption("Pick a user above to see a distribution.")
        return
    movie = st.selectbox(f"Movie, for user {user}", movies, key="ce_movie")
    try:
        dist = cache.rating_distribution(trained, user, movie)
        found = cache.calibration(trained)
    except CollabError as e:
        error(e)
        return
    expected = float((dist["level"] * dist["probability"]).sum())
    chart, text = st.columns([3, 2])
    chart.plotly_chart(distribution_chart(dist, expected, movie), key="ce_distribution")
    with text:
        st.metric("Expected rating (the prediction)", f"{expected:.2f} ★")
        top = dist.loc[dist["probability"].idxmax()]
        st.metric("Most probable level", f"{top['level']:g} ★ ({top['probability']:.0%})")
        st.caption(
            f"On the {found.n:,} validation ratings: accuracy {found.accuracy:.1%} (the most probable level "
            f"is the rating), log loss {found.log_loss:.3f}, expected calibration error {found.ece:.4f}."
        )
    with st.expander("Calibration: predicted probability against observed frequency"):
        left, right = st.columns(2)
        left.plotly_chart(per_level_chart(found.per_level), key="ce_per_level")
        right.plotly_chart(reliability_chart(found.reliability), key="ce_reliability")
        st.caption(
            "Left: each level's mean predicted probability beside how often it is the rating. Right: each "
            "level's predictions binned by probability; on the diagonal the model means what it says."
        )


def distribution_chart(dist: pd.DataFrame, expected: float, movie: str) -> go.Figure:
    labels = [f"{p:.0%}" for p in dist["probability"]]
    bars = go.Bar(
        x=dist["level"], y=dist["probability"], text=labels, textposition="auto", marker_color="#4C78A8"
    )
    fig = go.Figure(bars)
    fig.add_vline(x=expected, line_dash="dot", annotation_text=f"expected {expected:.2f}",
                  annotation_position="top left")  # fmt: skip
    fig.update_layout(title=movie, xaxis_title="rating", yaxis_title="probability", yaxis_range=[0, 1.05],
                      height=330, margin=dict(t=40, b=10))  # fmt: skip
    return fig


def per_level_chart(per_level: pd.DataFrame) -> go.Figure:
    fig = go.Figure(
        [
            go.Bar(name="predicted (mean probability)", x=per_level["level"], y=per_level["predicted"]),
            go.Bar(name="observed (frequency)", x=per_level["level"], y=per_level["observed"]),
        ]
    )
    fig.update_layout(barmode="group", xaxis_title="rating level", yaxis_title="share of validation ratings",
                      height=330, margin=dict(t=30, b=10), legend=dict(orientation="h", y=1.12))  # fmt: skip
    return fig


def reliability_chart(reliability: pd.DataFrame) -> go.Figure:
    fig = px.line(reliability, x="predicted", y="observed", color=reliability["level"].map("{:g} ★".format),
                  markers=True, hover_data=["n"])  # fmt: skip
    fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(dash="dot", color="gray"))
    fig.update_layout(xaxis_title="predicted probability (bin mean)", yaxis_title="observed frequency",
                      legend_title="level", height=330, margin=dict(t=30, b=10),
                      xaxis_range=[0, 1], yaxis_range=[0, 1])  # fmt: skip
    return fig

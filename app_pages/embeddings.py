"""Embeddings: the movie factors projected by PCA (or t-SNE), to hover, colour, label and select."""

import streamlit as st

from collab_core.analysis import pca_extremes, tsne_seconds
from collab_core.errors import CollabError
from collab_ui import animation, cache, charts, explain_views
from collab_ui.draw import error, table
from collab_ui.session import require_model

K = 5  # components computed; any two can be plotted
DEFAULT_POINTS = 1000  # the map's default: the most-rated movies, whose factors are the best trained
TSNE_MAX = 3000  # t-SNE beyond this many movies takes over 10 s on 2 cores
trained = require_model()
st.title(":material/scatter_plot: Embeddings")
n_movies = trained.encoded.n_items - 1

controls = st.columns([3, 1, 1, 2, 2])
with controls[0]:
    show_all = st.toggle(f"All {n_movies:,} movies", key="pca_all", help="The map stays smooth (WebGL)")
    n_items = st.slider(
        "Most-rated movies",
        min(20, n_movies),
        n_movies,
        min(DEFAULT_POINTS, n_movies),
        step=10,
        key="pca_n",
        disabled=show_all,
        help="PCA of the factors of this many most-rated movies (the best-trained factors)",
    )
n_items = n_movies if show_all else n_items
components = [f"PC{i}" for i in range(1, K + 1)]
x_name = controls[1].selectbox("x axis", components, index=0, key="pca_x")
y_name = controls[2].selectbox("y axis", components, index=1, key="pca_y")
colour = controls[3].selectbox("Colour by", list(charts.COLOURS), key="pca_colour")
label_top = controls[4].slider("Label the top K", 0, 50, 15, key="pca_labels")

try:
    result = cache.pca_items(trained, n_items, K)
except CollabError as e:
    error(e)
    st.stop()
coords = result.coords.join(cache.movie_errors(trained)["valid_rmse"])
x, y = x_name.lower(), y_name.lower()
figure = charts.embedding_map(
    coords,
    x,
    y,
    colour,
    label_top,
    f"PCA of the {len(coords):,} most-rated movies",
    explain_views.axis_names(trained, n_items, K, x_name, y_name),
)
event = st.plotly_chart(
    figure,
    key="pca_map",
    on_select="rerun",
    selection_mode=("box", "lasso", "points"),
    config={"displaylogo": False},
)

picked = sorted({int(p["customdata"][5]) for p in event.selection.points if p.get("customdata")})
if picked:
    st.markdown(f"**Selected: {len(picked)} movies**")
    table(
        coords.loc[picked],
        "pca_selected",
        columns=["title", "year", "genres", "mean_rating", "n_ratings", x, y],
    )
else:
    st.caption("Drag a box or lasso on the map (or click a point) to list those movies here.")

variance, extremes = st.columns([1, 2])
variance.plotly_chart(charts.explained_variance(result.explained_variance_ratio), key="pca_variance")
with extremes:
    component = st.selectbox("Extremes of component", components, key="pca_extreme_component")
    lowest, highest = pca_extremes(result, component=components.index(component) + 1, n=10)
    low_col, high_col = st.columns(2)
    low_col.markdown(f"**Lowest {component}**")
    table(lowest, "pca_low", low_col)
    high_col.markdown(f"**Highest {component}**")
    table(highest, "pca_high", high_col)

st.subheader("t-SNE")
n_tsne = min(n_items, TSNE_MAX)  # beyond it t-SNE takes minutes: it maps the most-rated of them
if n_tsne < n_items:
    st.caption(
        f"t-SNE of all {n_items:,} movies would take about {tsne_seconds(n_items) / 60:.0f} min here: "
        f"it maps the {n_tsne:,} most-rated of them."
    )
wanted = (trained.key, n_tsne)
estimate = tsne_seconds(n_tsne)
if st.button(
    f"Run t-SNE on the {n_tsne:,} most-rated movies (about {estimate:.0f} s)",
    key="tsne_run",
    icon=":material/bubble_chart:",
):
    with st.spinner(f"Running t-SNE on {n_tsne:,} movies (about {estimate:.0f} s)…", show_time=True):
        try:
            cache.tsne_items(trained, n_tsne)
            st.session_state["tsne_for"] = wanted
        except CollabError as e:
            error(e)
if st.session_state.get("tsne_for") == wanted:
    tsne = cache.tsne_items(trained, n_tsne).join(cache.movie_errors(trained)["valid_rmse"])
    st.plotly_chart(
        charts.embedding_map(
            tsne,
            "x",
            "y",
            colour,
            label_top,
            f"t-SNE of the {len(tsne):,} most-rated movies",
            ("t-SNE 1", "t-SNE 2"),
        ),
        key="tsne_map",
    )
else:
    st.caption("t-SNE keeps neighbours together better than PCA but takes seconds: run it on request.")

with st.expander("Through training: the map as it formed", icon=":material/animation:"):
    animation.through_training(trained)

explain_views.user_on_map(trained, n_items, K, x_name, y_name)
explain_views.genre_readability(trained)
explain_views.how_sure(trained)

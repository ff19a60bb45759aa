"""Embeddings: the movie factors mapped by PCA, t-SNE or UMAP, to hover, colour, search, select and export.

The map's state (projection, components, colour, searched movie, selection) lives in the URL: the
widgets are bound to query parameters, and the selection (item indices of the active model, itself
in the URL) is kept in ?map_sel=, so a shared link reopens the same view.
"""

import functools

import pandas as pd
import streamlit as st

from collab_core import export
from collab_core.analysis import pca_extremes, tsne_seconds
from collab_core.errors import CollabError
from collab_core.maps import UMAP_JIT_SECONDS, UMAP_METRICS, pca_place, umap_compiled, umap_seconds
from collab_ui import animation, cache, charts, explain_views
from collab_ui.draw import download_csv, error, table
from collab_ui.session import require_model

K = 5  # components computed; any two can be plotted
DEFAULT_POINTS = 1000  # the map's default: the most-rated movies, whose factors are the best trained
TSNE_MAX = 3000  # t-SNE beyond this many movies takes over 10 s on 2 cores
UMAP_MAX = 3000  # UMAP beyond this many movies takes over 20 s on 2 busy cores: it maps the most-rated
LINK_RUN_SECONDS = 60  # a link naming t-SNE or UMAP redraws it at once (with a spinner) within this
MAX_OPTIONS = 5000  # movies listed in the search box (59k options cost the browser seconds a run)
MAX_SELECTED = 2000  # movies a link's selection may name
PROJECTIONS = ("PCA", "t-SNE", "UMAP")
SELECTION = "map_sel"  # query parameter: the selected movies' item indices, comma-separated
trained = require_model()
st.title(":material/scatter_plot: Embeddings")
items = trained.item_table  # shared by every session: read, never modify
n_movies = len(items)

# ---- what to map, and how -----------------------------------------------------------------------------
controls = st.columns([2.6, 2.6, 1.2, 1.2, 2.2, 1.8])
projection = controls[0].segmented_control(
    "Projection",
    PROJECTIONS,
    default="PCA",
    key="map_proj",
    bind="query-params",
    required=True,
    help="PCA: linear, instant, axes with a meaning. t-SNE and UMAP keep neighbours together "
    "better but take seconds: they run on request",
)
with controls[1]:
    show_all = st.toggle(
        f"All {n_movies:,} movies", key="pca_all", bind="query-params", help="The map stays smooth (WebGL)"
    )
    n_items = st.slider(
        "Most-rated movies",
        min(20, n_movies),
        n_movies,
        min(DEFAULT_POINTS, n_movies),
        step=10,
        key="pca_n",
        bind="query-params",
        disabled=show_all,
        help="Map the factors of this many most-rated movies (the best-trained factors)",
    )
n_items = n_movies if show_all else n_items
components = [f"PC{i}" for i in range(1, K + 1)]
is_pca = projection == "PCA"
x_name = controls[2].selectbox("x axis", components, 0, key="pca_x", bind="query-params", disabled=not is_pca)
y_name = controls[3].selectbox("y axis", components, 1, key="pca_y", bind="query-params", disabled=not is_pca)
colour = controls[4].selectbox("Colour by", list(charts.COLOURS), key="pca_colour", bind="query-params")
genres = cache.genres_of(trained)
genre = None
if colour == charts.ONE_GENRE:
    if not genres:
        st.warning("This dataset names no genres: colour by another column", icon=":material/palette:")
        st.stop()
    genre = controls[4].selectbox(
        "Genre",
        genres,
        key="map_genre",
        bind="query-params",
        help="A movie with several genres counts in each",
    )
label_top = controls[5].slider("Label the top K", 0, 50, 15, key="pca_labels", bind="query-params")

by_popularity = items.nlargest(MAX_OPTIONS, "n_ratings", keep="first")["title"].tolist()
more = f" of {n_movies:,}" if n_movies > MAX_OPTIONS else ""
search, near_k = st.columns([3, 1], vertical_alignment="bottom")
movie = search.selectbox(
    "Search a movie",
    by_popularity,
    index=None,
    key="map_movie",
    bind="query-params",
    placeholder="Type a title: it is starred, with lines to its nearest movies",
    help=f"The {len(by_popularity):,} most-rated movies{more}; its neighbours are the nearest by cosine "
    "similarity of the full embeddings (not of the map's 2-D coordinates), among the movies on the map",
)
k = near_k.slider("Neighbours", 1, 30, 10, key="map_k", bind="query-params", disabled=movie is None)


def nonlinear_map(method: str, n_items: int) -> tuple[pd.DataFrame | None, str, int]:
    """The t-SNE or UMAP map of the n most-rated movies (a sample of the most-rated when all would
    take too long), computed on request; (None, title, n) until then."""
    limit, seconds = (TSNE_MAX, tsne_seconds) if method == "t-SNE" else (UMAP_MAX, umap_seconds)
    n = min(n_items, limit)
    params: tuple = ()
    if method == "UMAP":
        left, middle, right = st.columns(3)
        params = (
            left.slider("n_neighbors", 2, min(200, n - 1), min(15, n - 1), key="umap_nn", bind="query-params",
                        help="Neighbours each movie keeps: small shows local clumps, large the whole shape"),
            middle.slider("min_dist", 0.0, 1.0, 0.1, 0.05, key="umap_min_dist", bind="query-params",
                          help="How tightly close movies may pack on the map"),
            right.selectbox("metric", UMAP_METRICS, key="umap_metric", bind="query-params",
                            help="The distance between embeddings that UMAP keeps"),
        )  # fmt: skip
    if n < n_items:
        st.caption(
            f"{method} of all {n_items:,} movies would take about {seconds(n_items) / 60:.0f} min here: "
            f"it maps the {n:,} most-rated of them."
        )
    title = f"{method} of the {n:,} most-rated movies"
    compute = functools.partial(cache.tsne_items, trained, n) if method == "t-SNE" else (
        functools.partial(cache.umap_items, trained, n, *params))  # fmt: skip
    wanted = (trained.key, method, n, params)
    estimate = seconds(n)
    from_link = not st.session_state.get("map_link_read") and estimate <= LINK_RUN_SECONDS
    key = "tsne_run" if method == "t-SNE" else "umap_run"
    label = f"Run {method} on the {n:,} most-rated movies (about {estimate:.0f} s)"
    if method == "UMAP" and not umap_compiled():
        st.caption(
            f"The server's first UMAP also compiles umap-learn's kernels: about {UMAP_JIT_SECONDS:.0f} s "
            "of the estimate; later maps take only their own time."
        )
    if st.button(label, key=key, icon=":material/bubble_chart:") or from_link:
        with st.spinner(f"Running {method} on {n:,} movies (about {estimate:.0f} s)…", show_time=True):
            try:
                compute()
                st.session_state[f"{key}_for"] = wanted
            except CollabError as e:
                error(e)
    if st.session_state.get(f"{key}_for") != wanted:
        st.caption(
            f"{method} keeps neighbours together better than PCA but takes seconds: run it on request."
        )
        return None, title, n
    return compute(), title, n


try:
    pca = cache.pca_items(trained, n_items, K)
    if is_pca:
        coords, title, n_mapped = pca.coords, f"PCA of the {n_items:,} most-rated movies", n_items
        x, y = x_name.lower(), y_name.lower()
        names = explain_views.axis_names(trained, n_items, K, x_name, y_name)
    else:
        coords, title, n_mapped = nonlinear_map(projection, n_items)
        x, y, names = "x", "y", (f"{projection} 1", f"{projection} 2")
except CollabError as e:
    error(e)
    st.stop()
st.session_state["map_link_read"] = True  # later runs only run t-SNE or UMAP on request


def url_selection() -> list[int]:
    """The selection a link carries: item indices of movies on this map (anything else is dropped)."""
    raw = st.query_params.get(SELECTION, "")
    wanted = [int(part) for part in raw.split(",")[:MAX_SELECTED] if part.strip().isdigit()]
    return [i for i in dict.fromkeys(wanted) if coords is not None and i in coords.index]


if coords is not None:
    if charts.COLOURS[colour][0] == "valid_rmse":  # predicts every validation rating (25M: 5M, 0.3-0.7 s)
        coords = coords.join(cache.movie_errors(trained)["valid_rmse"])
    members = cache.in_genre(trained, genre) if genre else None
    figure = charts.embedding_map(coords, x, y, colour, label_top, title, names, members)
    near = None
    if movie is not None:
        try:
            near = cache.map_neighbours(trained, movie, n_mapped, k)
            index = trained.lookup.item_index(movie)
            if is_pca:  # a linear map places any movie, on it or not
                spot = pca_place(trained, pca, [index])
            elif index in coords.index:
                spot = coords.loc[[index]]
            else:
                spot = None
                st.info(
                    f"The searched movie is not among the {n_mapped:,} movies of this {projection} map: "
                    "map more movies to see it (its neighbours are listed below).",
                    icon=":material/search_off:",
                )
            if spot is not None:
                charts.mark_neighbours(figure, spot, coords.loc[near.index].join(near["similarity"]), x, y)
        except CollabError as e:
            error(e)
    selected = url_selection()
    if selected:  # drawn after the search, which fades the movies drawn before it
        charts.mark_selected(figure, coords.loc[selected], x, y)
    chart_key = {"PCA": "pca_map", "t-SNE": "tsne_map", "UMAP": "umap_map"}[projection]
    event = st.plotly_chart(
        figure,
        key=chart_key,
        on_select="rerun",
        selection_mode=("box", "lasso", "points"),
        config={"displaylogo": False},
    )
    points = event.selection.points if event and event.selection else []
    picked = sorted({int(p["customdata"][5]) for p in points if len(p.get("customdata") or ()) > 5})
    before = st.session_state.get("map_picked", (None, []))
    if picked:  # a selection on the chart replaces the link's
        st.query_params[SELECTION] = ",".join(map(str, picked))
        selected = picked
    elif before[0] == chart_key and before[1]:  # the chart's selection was cleared
        st.query_params.pop(SELECTION, None)
        selected = []
    st.session_state["map_picked"] = (chart_key, picked)

    if near is not None:
        st.markdown(
            f"**The {len(near)} nearest movies on this map (cosine similarity of the full embeddings)**"
        )
        table(near, "map_neighbours", columns=["title", "similarity", "mean_rating", "n_ratings"])
        download_csv(near, "neighbours", "download_neighbours")
    if selected:
        shown = coords.loc[selected]
        st.markdown(f"**Selected: {len(shown)} movie{'' if len(shown) == 1 else 's'}**")
        columns = ["title", "year", "genres", "mean_rating", "n_ratings", x, y]
        table(shown, "pca_selected", columns=columns)
        download_csv(shown[columns], "selection", "download_selection")
    else:
        st.caption("Drag a box or lasso on the map (or click a point) to list those movies here.")

# ---- the map through training: the animation (collab_ui/animation.py) goes here ---------------------

if is_pca:
    variance, extremes = st.columns([1, 2])
    variance.plotly_chart(charts.explained_variance(pca.explained_variance_ratio), key="pca_variance")
    with extremes:
        component = st.selectbox("Extremes of component", components, key="pca_extreme_component")
        lowest, highest = pca_extremes(pca, component=components.index(component) + 1, n=10)
        low_col, high_col = st.columns(2)
        low_col.markdown(f"**Lowest {component}**")
        table(lowest, "pca_low", low_col)
        high_col.markdown(f"**Highest {component}**")
        table(highest, "pca_high", high_col)

with st.expander("Export: the vectors for TensorFlow's Embedding Projector, the movie table as CSV"):
    st.caption(
        f"vectors.tsv: one row per movie ({n_movies:,}), its {trained.item_vectors[0].shape[1]} factors "
        "tab-separated, no header; metadata.tsv: a header row, then the same movies' title, genres, year, "
        "ratings, mean rating and bias. Load both at projector.tensorflow.org. The command line writes the "
        "same files: `python -m collab_core export --model-key KEY OUT_DIR`."
    )
    files = functools.partial(export.projector_files, trained)
    left, middle, right = st.columns(3)
    for column, name in ((left, export.VECTORS), (middle, export.METADATA)):
        column.download_button(
            name, lambda name=name: files()[name], name, "text/tab-separated-values",
            key=f"download_{name}", on_click="ignore", icon=":material/download:",
        )  # fmt: skip
    download_csv(export.item_metadata(trained).reset_index(), "items", "download_items", right)

# drawn only while open: 31 frames of 1,000 movies to send and draw (at 25M a new session's Embeddings
# right after a training took 3.9-4.4 s with it drawn, 2.8 s without it and the validation errors)
through = st.expander(
    "Through training: the map as it formed",
    icon=":material/animation:",
    key="map_through",
    on_change="rerun",
)
if through.open:
    with through:
        animation.through_training(trained)

explain_views.user_on_map(trained, n_items, K, x_name, y_name)
explain_views.genre_readability(trained)
explain_views.how_sure(trained)

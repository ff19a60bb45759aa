"""The map tools on the Embeddings page under AppTest, on the real ml-100k: a searched movie and its
neighbour lines, one genre against the rest, UMAP, downloads, and the view kept in the URL (a link
reopens it).

Uses test_app's fixture (the default model in a store of its own, which the app is pointed at)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from test_app import assert_clean, page, table, trained  # noqa: F401  (trained: the fixture)

from collab_core.analysis import most_rated
from collab_core.maps import in_genre, map_neighbours
from collab_ui import charts

EMBEDDINGS = "app_pages/embeddings.py"
STAR_WARS = "Star Wars (1977)"


def spec(at, key: str) -> dict:
    """The Plotly figure of the chart with this key."""
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key) or key in c.proto.id]
    assert found, f"no chart {key}"
    return json.loads(found[0].proto.spec)


def values(array) -> list:
    """A figure's array as a list (Plotly sends numeric arrays as base64 typed arrays)."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"])).tolist()
    return list(array)


def trace(figure: dict, prefix: str) -> dict:
    named = [t for t in figure["data"] if str(t.get("name", "")).startswith(prefix)]
    assert len(named) == 1, [t.get("name") for t in figure["data"]]
    return named[0]


def test_a_searched_movie_is_joined_to_its_full_space_neighbours(trained):  # noqa: F811
    at = page(EMBEDDINGS)
    at.slider(key="pca_n").set_value(300).run()
    at.selectbox(key="map_movie").select(STAR_WARS).run()
    at.slider(key="map_k").set_value(6).run()
    assert_clean(at)
    expected = map_neighbours(trained, STAR_WARS, most_rated(trained, 300), k=6)
    shown = table(at, "map_neighbours")
    assert shown["title"].tolist() == expected["title"].tolist()
    figure = spec(at, "pca_map")
    star = trace(figure, "searched movie")
    coords = {t: (x, y) for t, x, y in zip(*_points(figure), strict=True)}
    assert (values(star["x"])[0], values(star["y"])[0]) == pytest.approx(coords[STAR_WARS])
    lines = trace(figure, "6 nearest (full space)")
    xs, ys = values(lines["x"]), values(lines["y"])
    ends = [(xs[i + 1], ys[i + 1]) for i in range(0, len(xs), 3)]
    starts = {(xs[i], ys[i]) for i in range(0, len(xs), 3)}
    assert starts == {tuple(coords[STAR_WARS])}
    assert np.allclose(ends, [coords[t] for t in expected["title"]])


def _points(figure: dict) -> tuple[list, list, list]:
    """Titles and coordinates of every movie point (the traces whose customdata has 6 fields)."""
    titles, xs, ys = [], [], []
    for t in figure["data"]:
        data = t.get("customdata") or []
        if data and len(data[0]) == 6:
            titles += [row[0] for row in data]
            xs += values(t["x"])
            ys += values(t["y"])
    return titles, xs, ys


@pytest.mark.parametrize("genre", ["Action", "Adventure", "Romance", "Sci-Fi", "War"])
def test_one_genre_against_the_rest_counts_star_wars_in_each_of_its_genres(trained, genre):  # noqa: F811
    coords = trained.item_table.assign(x=0.0, y=0.0)
    members = in_genre(trained.item_table["genres"], genre)
    figure = charts.embedding_map(coords, "x", "y", charts.ONE_GENRE, 0, "t", ("x", "y"), members).to_dict()
    inside = trace(figure, f"{genre} (")
    assert STAR_WARS in [row[0] for row in inside["customdata"]]
    assert inside["name"] == f"{genre} ({int(members.sum()):,})"
    assert STAR_WARS not in [row[0] for row in trace(figure, "other movies")["customdata"]]


def test_the_page_colours_by_one_genre(trained):  # noqa: F811
    at = page(EMBEDDINGS)
    at.selectbox(key="pca_colour").select(charts.ONE_GENRE).run()
    at.selectbox(key="map_genre").select("Sci-Fi").run()
    assert_clean(at)
    figure = spec(at, "pca_map")
    assert STAR_WARS in [row[0] for row in trace(figure, "Sci-Fi (")["customdata"]]


URL_STATE = {
    "pca_n": "300",
    "pca_x": "PC2",
    "pca_y": "PC3",
    "pca_colour": charts.ONE_GENRE,
    "map_genre": "War",
    "map_movie": STAR_WARS,
    "map_k": "4",
}


def test_a_link_reopens_the_same_view(trained):  # noqa: F811
    selected = [int(i) for i in most_rated(trained, 3)]
    at = page(EMBEDDINGS, **URL_STATE, map_sel=",".join(map(str, selected)))
    assert_clean(at)
    assert at.slider(key="pca_n").value == 300
    assert (at.selectbox(key="pca_x").value, at.selectbox(key="pca_y").value) == ("PC2", "PC3")
    assert at.selectbox(key="pca_colour").value == charts.ONE_GENRE
    assert at.selectbox(key="map_genre").value == "War"
    assert at.selectbox(key="map_movie").value == STAR_WARS and at.slider(key="map_k").value == 4
    figure = spec(at, "pca_map")
    assert "PCA of the 300 most-rated movies" in json.dumps(figure["layout"]["title"])
    assert figure["layout"]["xaxis"]["title"]["text"].startswith("PC2")
    trace(figure, "War (")
    trace(figure, "4 nearest (full space)")
    assert trace(figure, "selected (")["name"] == "selected (3)"
    assert table(at, "pca_selected")["title"].tolist() == trained.item_table.loc[selected, "title"].tolist()


def test_the_view_round_trips_through_the_url(trained):  # noqa: F811
    """Widgets set by hand, their values written as the browser writes bound widgets into the URL
    (the option's text, the slider's number; Chromium checks the browser's side), then reopened."""
    at = page(EMBEDDINGS)
    at.slider(key="pca_n").set_value(300).run()
    at.selectbox(key="pca_x").select("PC2").run()
    at.selectbox(key="pca_y").select("PC3").run()
    at.selectbox(key="pca_colour").select(charts.ONE_GENRE).run()
    at.selectbox(key="map_genre").select("War").run()
    at.selectbox(key="map_movie").select(STAR_WARS).run()
    at.slider(key="map_k").set_value(4).run()
    assert_clean(at)
    sliders, boxes = ("pca_n", "map_k"), ("pca_x", "pca_y", "pca_colour", "map_genre", "map_movie")
    url = {k: str(at.slider(key=k).value) for k in sliders} | {k: at.selectbox(key=k).value for k in boxes}
    assert url == URL_STATE
    again = page(EMBEDDINGS, **url)
    assert_clean(again)
    for key in sliders:
        assert again.slider(key=key).value == at.slider(key=key).value
    for key in boxes:
        assert again.selectbox(key=key).value == at.selectbox(key=key).value
    assert spec(again, "pca_map")["data"] == spec(at, "pca_map")["data"]


def test_a_hostile_link_is_ignored(trained):  # noqa: F811
    top = int(most_rated(trained, 1)[0])
    rare = int(trained.item_table["n_ratings"].idxmin())  # not among the 1,000 on the map
    hostile = f"{top},x,99999,-3,{rare},<b>"
    at = page(EMBEDDINGS, map_movie="<script>alert(1)</script>", map_sel=hostile, pca_colour="nope")
    assert_clean(at)
    assert at.selectbox(key="map_movie").value is None
    assert at.selectbox(key="pca_colour").value == "genre"
    assert table(at, "pca_selected")["title"].tolist() == [trained.item_table.loc[top, "title"]]


@pytest.mark.slow  # the first UMAP of the process compiles numba's kernels (tens of seconds)
def test_umap_runs_on_request_and_from_a_link(trained):  # noqa: F811
    pytest.importorskip("umap")
    at = page(EMBEDDINGS)
    at.slider(key="pca_n").set_value(100).run()
    at.segmented_control(key="map_proj").set_value("UMAP").run()
    assert_clean(at)
    assert "about" in at.button(key="umap_run").label
    assert not [c for c in at.get("plotly_chart") if "umap_map" in c.proto.id]
    at.slider(key="umap_nn").set_value(10).run()
    at.button(key="umap_run").click().run()
    assert_clean(at)
    figure = spec(at, "umap_map")
    assert "UMAP of the 100 most-rated movies" in json.dumps(figure["layout"]["title"])
    again = page(EMBEDDINGS, map_proj="UMAP", pca_n="100", umap_nn="10", map_movie=STAR_WARS)
    assert_clean(again)
    assert spec(again, "umap_map")["data"] == figure["data"] or _same_points(spec(again, "umap_map"), figure)
    trace(spec(again, "umap_map"), "10 nearest (full space)")


def _same_points(a: dict, b: dict) -> bool:
    return _points(a) == _points(b)


def test_tsne_says_when_the_searched_movie_is_off_its_map(trained):  # noqa: F811
    rare = trained.item_table["n_ratings"].idxmin()
    title = trained.item_table.loc[rare, "title"]
    at = page(EMBEDDINGS, map_proj="t-SNE", pca_n="100", map_movie=title)
    assert_clean(at)
    assert any("not among the 100 movies of this t-SNE map" in i.value for i in at.info)
    assert len(table(at, "map_neighbours")) == 10


def test_the_export_buttons(trained):  # noqa: F811
    at = page(EMBEDDINGS, map_movie=STAR_WARS)
    assert_clean(at)
    labels = [b.proto.label for b in at.get("download_button")]
    wanted = {"vectors.tsv", "metadata.tsv", "items.csv", "neighbours.csv"}
    assert wanted <= set(labels)
    for path, names in (
        ("app_pages/recommend.py", {"recommendations.csv", "similar_movies.csv"}),
        ("app_pages/biases.py", {"movie_biases.csv", "user_biases.csv"}),
    ):
        at = page(path)
        assert_clean(at)
        assert names <= {b.proto.label for b in at.get("download_button")}, path

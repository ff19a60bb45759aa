"""The explanation views (issue 12) under AppTest, on the real ml-100k: a prediction's waterfall (dot
and NN models), what-if ratings, a user on the map (and the NN models' refusal), the axis labels.

Uses test_app's fixture (the default model in a store of its own, which the app is pointed at)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from test_app import assert_clean, page, table, trained  # noqa: F401  (trained: the fixture)

from collab_core.config import TrainConfig
from collab_core.learner import get_or_train
from collab_core.ranking import recommend, user_history
from collab_core.store import ModelStore


@pytest.fixture(scope="module")
def nn_key(trained):  # noqa: F811
    """A one-epoch embedding_nn in the app's store."""
    store = ModelStore(Path(os.environ["COLLAB_MODELS_DIR"]))
    return get_or_train(trained.dataset, TrainConfig(model="embedding_nn", epochs=1), store, device="cpu").key


def _chart(at, key: str) -> str:
    """The Plotly spec of the chart with this key."""
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key) or key in c.proto.id]
    assert charts, f"no chart {key}"
    return charts[0].proto.spec


def test_the_breakdown_of_a_recommendation_and_a_rated_movie(trained):  # noqa: F811
    started = time.perf_counter()
    at = page("app_pages/recommend.py", user="42")
    assert_clean(at)
    waterfall = _chart(at, "because_waterfall")
    first = recommend(trained, 42, n=10, min_ratings=10)["title"].iloc[0]
    assert '"waterfall"' in waterfall and "user bias" in waterfall and "raw score" in waterfall
    assert f"for {first}" in waterfall.replace("\\u0027", "'") and "y_range high 5.5" in waterfall
    rated = set(user_history(trained, 42)["title"])
    assert set(table(at, "because")["title"]) <= rated
    picker = at.selectbox(key="explain_movie")
    picker.select_index(len(picker.options) - 1).run()  # the last rated movie
    assert_clean(at)
    assert "rated" in at.selectbox(key="explain_movie").format_func(at.selectbox(key="explain_movie").value)
    print(f"\nrecommend page with the breakdown, first run: {time.perf_counter() - started:.2f} s")


def test_the_breakdown_of_an_nn_model_has_three_groups(trained, nn_key):  # noqa: F811
    at = page("app_pages/recommend.py", model=nn_key, user="42")
    assert_clean(at)
    waterfall = _chart(at, "because_waterfall")
    assert "the network" in waterfall and "the user" in waterfall and "the movie" in waterfall
    assert "integrated gradients" in " ".join(c.value for c in at.caption)


def test_a_new_user_is_explained(trained):  # noqa: F811
    at = page("app_pages/recommend.py")
    at.multiselect(key="new_movies").set_value(["Star Wars (1977)", "Return of the Jedi (1983)"]).run()
    assert_clean(at)
    assert "the new user" in _chart(at, "new_because_waterfall")
    assert set(table(at, "new_because")["title"]) <= {"Star Wars (1977)", "Return of the Jedi (1983)"}


def test_rating_horror_films_moves_horror_films_up(trained):  # noqa: F811
    user = 1
    items, seen = trained.item_table, user_history(trained, user).index
    horror = items[(items["genres"] == "Horror") & ~items.index.isin(seen)].nlargest(10, "n_ratings")
    at = page("app_pages/recommend.py", user=str(user))
    before = table(at, "recs")
    at.multiselect(key="whatif_add").set_value(horror.index.tolist()).run()
    at.number_input(key="whatif_stars").set_value(5.0).run()
    at.button(key="whatif_add_button").click().run()
    assert_clean(at)
    assert "10 edits pending" in " ".join(c.value for c in at.caption)
    started = time.perf_counter()
    at.button(key="whatif_run").click().run()
    took = time.perf_counter() - started
    assert_clean(at)
    after = table(at, "whatif_recs")
    assert len(after) == len(before) and after["title"].tolist() != before["title"].tolist()
    assert not set(after["title"]) & set(horror["title"])  # rated now: off the list
    movers = table(at, "whatif_movers")  # the furthest climbers, wherever they land
    assert movers["move"].str.startswith("▲").all()
    assert movers["genres"].str.contains("Horror").mean() >= 0.5, movers[["title", "genres"]]
    print(f"\nwhat-if re-solve and redraw: {took:.2f} s")


def test_a_user_on_the_map_and_the_axis_labels(trained):  # noqa: F811
    at = page("app_pages/embeddings.py")
    assert_clean(at)
    assert '"PC1: +' in _chart(at, "pca_map") or '"text":"PC1: ' in _chart(at, "pca_map")
    started = time.perf_counter()
    at.number_input(key="map_user").set_value(42).run()
    took = time.perf_counter() - started
    assert_clean(at)
    user_map = _chart(at, "user_map")
    assert "User 42 on the movie map" in user_map and "top 10 recommended" in user_map
    assert "user 42's direction" in user_map and "PC2: " in user_map
    at.selectbox(key="pca_colour").select("validation RMSE").run()
    assert_clean(at)
    assert "validation RMSE" in _chart(at, "pca_map")
    print(f"\nuser on the map, redraw: {took:.2f} s")


def test_an_nn_model_says_why_it_has_no_user_on_the_map(trained, nn_key):  # noqa: F811
    at = page("app_pages/embeddings.py", model=nn_key)
    assert_clean(at)
    assert any("cannot place a user on the movie map" in c.value for c in at.caption)
    assert not [c for c in at.get("plotly_chart") if "user_map" in c.proto.id]


def test_genre_readability_and_how_sure(trained):  # noqa: F811
    at = page("app_pages/embeddings.py")
    started = time.perf_counter()
    at.toggle(key="readability_run").set_value(True).run()
    took = time.perf_counter() - started
    assert_clean(at)
    with pytest.raises(KeyError):  # drawn only while open
        at.get_by_key("worst_predicted")
    at.session_state["how_sure"] = True  # opened (a click on the expander sets it and reruns)
    at.run()
    assert_clean(at)
    readability = table(at, "readability")
    assert "Drama" in set(readability["genre"])
    assert (readability["auc"] > readability["shuffled_auc"]).mean() > 0.5
    worst = table(at, "worst_predicted")
    assert len(worst) == 10 and (worst["n_valid"] >= 5).all()
    assert (table(at, "thin_biases")["n_ratings"] <= 5).all()
    print(f"\ngenre readability, first run: {took:.2f} s")

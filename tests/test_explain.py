"""Explanations: prediction breakdowns and "because you rated" (explain.py), what-if ratings
(whatif.py), the map read for analysts (maps.py), per-movie certainty (certainty.py), and the CLI's
explain and recommend --rate; over every model on the synthetic taste data, and on the real ml-100k."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from collab_core.analysis import pca_items, similarities
from collab_core.certainty import movie_errors, thin_extreme_biases, worst_predicted
from collab_core.config import TrainConfig
from collab_core.errors import ConfigError, DataError
from collab_core.explain import because_new_user_rated, because_you_rated, breakdown, vector_breakdown
from collab_core.foldin import UserVector, new_user_vector, vector_scores
from collab_core.learner import Trained, get_or_train
from collab_core.maps import axis_labels, genre_flags, genre_readability, user_on_map, vector_on_map
from collab_core.nets import AutoEncoder, DotModel
from collab_core.ranking import recommend, user_history
from collab_core.train import predict
from collab_core.whatif import what_if

REPO = Path(__file__).resolve().parents[1]
PAIRS = [(2, "Horror 0 (1980)"), (3, "Horror 0 (1980)"), (5, "Kids 13 (1993)"), (8, 110), (40, 124)]


def forward(trained: Trained, user: object, item: object) -> float:
    u, i = trained.lookup.user_index(user), trained.lookup.item_index(item)
    return float(predict(trained.model, torch.tensor([u]), torch.tensor([i]))[0])


# ---- breakdowns, every model ----------------------------------------------------------------------


def test_parts_sum_to_the_raw_score_and_the_link_gives_the_forward_pass(taste_model):
    for user, item in PAIRS:
        found = breakdown(taste_model, user, item)
        assert sum(p.value for p in found.parts) == pytest.approx(found.raw, abs=1e-3)
        assert abs(found.residual) <= 1e-4
        assert found.prediction == pytest.approx(forward(taste_model, user, item), abs=1e-5)
        assert found.user == user and found.title == taste_model.item_table.at[found.item, "title"]
        low, high = taste_model.model.y_range or (None, None)
        if low is None:
            assert found.position is None and found.prediction == pytest.approx(found.raw, abs=1e-6)
        else:
            assert found.position == pytest.approx((found.prediction - low) / (high - low))


def test_a_folded_in_user_is_explained_too(taste_model):
    ratings = {"Horror 0 (1980)": 5.0, "Horror 1 (1981)": 5.0, "Kids 12 (1992)": 1.0}
    if isinstance(taste_model.model, AutoEncoder):  # no output unit for a new user: refused
        with pytest.raises(ConfigError, match="has no fold-in"):
            new_user_vector(taste_model, ratings)
        return
    vector = new_user_vector(taste_model, ratings)
    scores = vector_scores(taste_model, vector)
    for item in ("Horror 5 (1985)", "Kids 20 (2000)"):
        found = vector_breakdown(taste_model, vector, item)
        assert found.user is None
        assert sum(p.value for p in found.parts) == pytest.approx(found.raw, abs=1e-3)
        assert found.prediction == pytest.approx(float(scores[found.item]), abs=1e-5)
    because = because_new_user_rated(taste_model, ratings, "Horror 5 (1985)", n=2)
    assert list(because.columns) == ["title", "rating", "similarity"]
    assert set(because["title"]) <= set(ratings) and len(because) == 2


def test_parts_are_named_by_family(taste_model):
    found = breakdown(taste_model, 2, "Horror 0 (1980)", top=3)
    names = [p.name for p in found.parts]
    if isinstance(taste_model.model, DotModel):
        biases = ["user bias", "movie bias"] if taste_model.model.has_bias else []
        assert names[: len(biases)] == biases
        factors = found.parts[len(biases) : len(biases) + 3]
        assert all(p.name.startswith("factor ") for p in factors)
        assert [abs(p.value) for p in factors] == sorted((abs(p.value) for p in factors), reverse=True)
        assert names[-1] == "other 47 factors" and found.residual == pytest.approx(0, abs=1e-5)
    elif isinstance(taste_model.model, AutoEncoder):
        assert names[0] == "user's output bias" and names[-1] == "other 13 hidden units"
        assert all(name.startswith("hidden unit ") for name in names[1:4])
        assert "biases do not apply" in found.method
    else:
        assert names == [*taste_model.model.groups(), "the network's baseline"]  # side_nn: features apart
        if taste_model.config.model != "side_nn":
            assert names == ["the user", "the movie", "the network's baseline"]
        assert "integrated gradients" in found.method


def test_the_horror_fan_is_explained_by_their_horror_ratings(taste_model):
    because = because_you_rated(taste_model, 2, "Horror 0 (1980)", n=3)
    rated = taste_model.dataset.ratings.query("user == 2")
    rated_titles = set(taste_model.dataset.items.loc[rated["item"], "title"])
    assert set(because["title"]) <= rated_titles - {"Horror 0 (1980)"}
    assert (because["rating"] == 5.0).all() and because["title"].str.startswith("Horror").all()
    assert because["similarity"].is_monotonic_decreasing


# ---- on ml-100k ------------------------------------------------------------------------------------


def test_dot_breakdown_is_the_forward_pass(trained_edb):
    model = trained_edb.model
    users, items = model.factors()
    user_bias, item_bias = model.biases()
    for user, title in [(1, "Star Wars (1977)"), (42, "Fargo (1996)"), (405, "Scream (1996)")]:
        found = breakdown(trained_edb, user, title)
        u, i = trained_edb.lookup.user_index(user), found.item
        assert found.raw == float((users[u] * items[i]).sum() + user_bias[u] + item_bias[i])
        assert found.prediction == forward(trained_edb, user, title)  # the same float32 sums
        assert found.parts[0].value == pytest.approx(float(user_bias[u]))
        assert found.parts[1].value == pytest.approx(float(item_bias[i]))
        assert abs(found.residual) < 1e-5 and 0 < found.position < 1


def test_nn_breakdown_on_ml100k(ml100k):
    trained = get_or_train(ml100k, TrainConfig(model="embedding_nn", epochs=1, bs=1024), device="cpu")
    for user, title in [(1, "Star Wars (1977)"), (42, "Fargo (1996)")]:
        found = breakdown(trained, user, title)
        assert sum(p.value for p in found.parts) == pytest.approx(found.raw, abs=1e-3)
        assert found.prediction == pytest.approx(forward(trained, user, title), abs=1e-5)
    with pytest.raises(ConfigError, match="separate spaces"):
        user_on_map(trained, 1, pca_items(trained, n_items=200, k=2))


def test_because_you_rated_lists_the_users_own_closest_ratings(trained_edb):
    because = because_you_rated(trained_edb, 42, "Star Wars (1977)", n=5)
    history = user_history(trained_edb, 42)
    assert len(because) == 5 and set(because.index) <= set(history.index)
    assert trained_edb.lookup.item_index("Star Wars (1977)") not in because.index
    assert (because["rating"] == history.loc[because.index, "rating"]).all()
    cosine = similarities(trained_edb, "Star Wars (1977)")
    np.testing.assert_allclose(because["similarity"], cosine[because.index], atol=1e-6)
    others = cosine[history.index.drop(trained_edb.lookup.item_index("Star Wars (1977)"))]
    assert because["similarity"].iloc[-1] >= others.drop(because.index).max()
    with pytest.raises(DataError, match="did you mean"):
        because_you_rated(trained_edb, 42, "star wars")


def test_what_if_without_edits_is_the_models_own_list(trained_edb):
    found = what_if(trained_edb, 42, {}, n=10)
    assert found.recommendations["title"].tolist() == recommend(trained_edb, 42)["title"].tolist()
    assert (found.recommendations["rank_change"] == 0).all()
    np.testing.assert_allclose(found.recommendations["predicted"], found.recommendations["predicted_before"])


def test_what_if_horror_fan_moves_horror_films_up(trained_edb):
    items = trained_edb.item_table
    state = {k: v.clone() for k, v in trained_edb.model.state_dict().items()}
    ratings = trained_edb.dataset.ratings.copy()
    for user in (1, 19, 100, 500, 900):
        seen = user_history(trained_edb, user).index
        horror = items[(items["genres"] == "Horror") & ~items.index.isin(seen)].nlargest(10, "n_ratings")
        found = what_if(trained_edb, user, dict.fromkeys(horror["title"], 5.0), n=2000, min_ratings=20)
        recs = found.recommendations
        assert not set(recs.index) & (set(horror.index) | set(seen))
        is_horror = recs["genres"].str.contains("Horror")
        assert recs.loc[is_horror, "rank"].mean() < recs.loc[is_horror, "rank_before"].mean(), user
        assert (recs.loc[is_horror, "rank_change"] > 0).mean() > 0.5, user
        edited = found.ratings[found.ratings["rating"] != found.ratings["before"]]
        assert set(edited.index) == set(horror.index) and edited["before"].isna().all()
    for key, value in trained_edb.model.state_dict().items():  # nothing written
        assert torch.equal(value, state[key]), key
    pd.testing.assert_frame_equal(trained_edb.dataset.ratings, ratings)


def test_what_if_changes_and_removes_ratings(trained_edb):
    history = user_history(trained_edb, 42)
    loved, hated = history.index[0], history.index[-1]
    titles = trained_edb.item_table["title"]
    found = what_if(trained_edb, 42, {titles[loved]: None, titles[hated]: 5.0}, n=1700)
    assert found.ratings.loc[hated, "rating"] == 5.0 and np.isnan(found.ratings.loc[loved, "rating"])
    assert found.ratings.index[:2].tolist() == sorted([loved, hated])  # the edited ones first
    recs = found.recommendations
    assert loved in recs.index and pd.isna(recs.loc[loved, "rank_before"])  # unrated now: a candidate
    assert hated not in recs.index
    with pytest.raises(ConfigError, match="has not rated it"):
        what_if(trained_edb, 42, {titles[recommend(trained_edb, 42).index[0]]: None})
    with pytest.raises(ConfigError, match=r"must be a finite number in 0\.\.5\.5"):
        what_if(trained_edb, 42, {titles[loved]: 9})


def test_what_if_for_every_model(taste_model):
    """Odd users love children's films: rating horror 5 and children's 1 turns their list round."""
    edits = {f"Horror {i} ({1980 + i})": 5.0 for i in range(12)}
    edits.update({f"Kids {i} ({1980 + i})": 1.0 for i in range(12, 24)})
    before = recommend(taste_model, 3, n=1)
    found = what_if(taste_model, 3, edits, n=24)
    assert before["genres"].iloc[0] == "Children's" and len(found.recommendations) == 0  # all rated
    removed = {title: None for title in taste_model.dataset.ratings.query("user == 3")["item"]}
    found = what_if(taste_model, 3, {**removed, **dict(list(edits.items())[:6])}, n=24)
    recs = found.recommendations
    if isinstance(taste_model.model, AutoEncoder):
        # the edit is fed through: only the edited movies' codes move, the user's output unit keeps
        # the taste it was trained on, so the list does not turn round (the page says so)
        assert recs["genres"].iloc[0] == "Children's", recs
        own = what_if(taste_model, 3, {}, n=24).recommendations
        np.testing.assert_array_equal(own["predicted"], own["predicted_before"])
        if taste_model.config.model == "autorec":  # no convolution: unedited movies do not move at all
            touched = set(taste_model.dataset.items.loc[list(removed), "title"]) | edits.keys()
            untouched = ~recs["title"].isin(touched)
            assert untouched.sum() < len(recs)
            same = recs.loc[untouched]
            np.testing.assert_array_equal(same["predicted"], same["predicted_before"])
        return
    assert recs["genres"].iloc[0] == "Horror", recs


# ---- the map ---------------------------------------------------------------------------------------


def test_user_on_the_map_is_their_vector_in_the_movies_basis(trained_edb):
    pca = pca_items(trained_edb, k=3)
    found = user_on_map(trained_edb, 42, pca, n=5)
    u = trained_edb.model.factors()[0][trained_edb.lookup.user_index(42)].double().numpy()
    np.testing.assert_allclose(found.direction, pca.components @ u, rtol=1e-5)
    assert 0 < found.share <= 1 and 0 <= found.fit <= 1
    points = found.points
    assert (points["role"] == "rated").sum() == len(user_history(trained_edb, 42))
    assert (
        points.loc[points["role"] == "recommended"].index.tolist()
        == recommend(trained_edb, 42, 5).index.tolist()
    )
    on_map = points.index.intersection(pca.coords.index)  # movies on the map keep their coordinates
    np.testing.assert_allclose(
        points.loc[on_map, ["pc1", "pc2", "pc3"]], pca.coords.loc[on_map, ["pc1", "pc2", "pc3"]], atol=1e-4
    )
    vector = UserVector.of(trained_edb.model, trained_edb.lookup.user_index(42))
    same = vector_on_map(trained_edb, vector, pca, {"Fargo (1996)": 5.0}, n=5)
    np.testing.assert_allclose(same.direction, found.direction)


def test_axis_labels_name_each_components_strongest_genres(trained_edb):
    pca = pca_items(trained_edb, k=3)
    labels = axis_labels(pca)
    assert [a.component for a in labels] == [1, 2, 3]
    for a in labels:
        assert a.label.startswith(f"PC{a.component}: ")
        r = a.correlations
        assert r.abs().is_monotonic_decreasing and "year" in r.index and "Drama" in r.index
        strongest = r.index[0]
        name = "newer" if strongest == "year" else strongest
        assert f"{'+' if r.iloc[0] > 0 else '-'}{name}" in a.label
    flags = genre_flags(pd.Series(["Drama|Film-Noir", "", "Action"]))
    assert flags.columns.tolist() == ["Action", "Drama", "Film-Noir"] and flags.sum().sum() == 3


def test_genre_readability_knows_the_taste_datas_genres(taste):
    trained = get_or_train(taste, TrainConfig(epochs=10, lr=0.05, bs=32, wd=0.01), device="cpu")
    table = genre_readability(trained, folds=3, min_movies=5)
    assert set(table.index) == {"Horror", "Children's"}
    assert (table["auc"] > 0.95).all() and (table["accuracy"] > 0.9).all()
    assert (table["shuffled_auc"] < 0.85).all() and (table["majority"] == 0.5).all()
    with pytest.raises(ConfigError, match="no genre has 50 movies"):
        genre_readability(trained, folds=3, min_movies=50)


# ---- certainty -------------------------------------------------------------------------------------


def test_movie_errors_add_up_to_the_validation_rmse(trained_edb):
    errors = movie_errors(trained_edb)
    assert errors["n_valid"].sum() == len(trained_edb.valid_rows)
    held = errors[errors["n_valid"] > 0]
    overall = np.sqrt((held["valid_rmse"] ** 2 * held["n_valid"]).sum() / held["n_valid"].sum())
    assert overall == pytest.approx(trained_edb.record.metrics.rmse, rel=1e-4)
    worst = worst_predicted(trained_edb, n=10, min_valid=5)
    assert len(worst) == 10 and (worst["n_valid"] >= 5).all() and worst["valid_rmse"].is_monotonic_decreasing
    pd.testing.assert_frame_equal(worst_predicted(trained_edb, n=10, min_valid=5, errors=errors), worst)
    thin = thin_extreme_biases(trained_edb, n=10, max_ratings=5)
    assert len(thin) == 10 and (thin["n_ratings"] <= 5).all()
    median = np.median(trained_edb.model.biases()[1][1:].numpy())
    assert (thin["bias"] - median).abs().is_monotonic_decreasing


# ---- the command line ------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "collab_core", *args],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture
def env(trained_edb, session_store, ml100k_dir) -> dict[str, str]:
    """The seed model is in the session's store: the CLI (with --preset book) loads it."""
    return {"COLLAB_DATA_DIR": str(ml100k_dir), "COLLAB_MODELS_DIR": str(session_store.root)}


def test_cli_explain_json(trained_edb, env):
    run = run_cli(
        "explain", "--user", "42", "--movie", "Star Wars (1977)", "--preset", "book", "--json", env=env
    )
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    expected = breakdown(trained_edb, 42, "Star Wars (1977)")
    assert answer["prediction"] == pytest.approx(expected.prediction) and answer["raw"] == pytest.approx(
        expected.raw
    )
    assert sum(p["value"] for p in answer["parts"]) == pytest.approx(answer["raw"], abs=1e-6)
    assert {"name", "value"} <= set(answer["parts"][0]) and answer["key"] == trained_edb.key
    rated = set(user_history(trained_edb, 42)["title"])
    assert answer["because"] and all({"title", "rating", "similarity"} <= set(b) for b in answer["because"])
    assert {b["title"] for b in answer["because"]} <= rated - {"Star Wars (1977)"}
    assert "raw score" in run.stdout and "because you rated" in run.stdout


def test_cli_recommend_what_if(trained_edb, env):
    rate = ["--rate", "Shining, The (1980)=5", "--rate", "Birds, The (1963)=5", "--rate", "Carrie (1976)=5"]
    run = run_cli("recommend", "--user", "1", "--preset", "book", "--n", "20", *rate, "--json", env=env)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    expected = what_if(
        trained_edb,
        1,
        dict.fromkeys(["Shining, The (1980)", "Birds, The (1963)", "Carrie (1976)"], 5.0),
        n=20,
    )
    assert [r["title"] for r in answer["recommendations"]] == expected.recommendations["title"].tolist()
    assert all(
        {"title", "predicted", "rank", "rank_before", "rank_change"} <= set(r)
        for r in answer["recommendations"]
    )
    assert answer["what_if"][0] == {"title": "Shining, The (1980)", "rating": 5.0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["explain", "--user", "42", "--movie", "star wars"],
            "error: no item 'star wars' in ml-100k; did you mean 'Star Wars (1977)'",
        ),
        (["explain", "--user", "4242", "--movie", "Star Wars (1977)"], "error: no user '4242' in ml-100k"),
        (["recommend", "--user", "4242", "--rate", "Fargo (1996)=5"], "error: no user '4242' in ml-100k"),
        (
            ["recommend", "--user", "42", "--rate", "fargo=5"],
            "error: no item 'fargo' in ml-100k; did you mean 'Fargo (1996)'",
        ),
        (["recommend", "--user", "42", "--rate", "Fargo (1996)"], "error: --rate takes TITLE=STARS"),
        (
            ["recommend", "--user", "42", "--rate", "Fargo (1996)=9"],
            "error: the rating of 'Fargo (1996)' must be",
        ),
    ],
)
def test_cli_unknown_users_and_titles_exit_2(args, message, env):
    run = run_cli(*args, "--preset", "book", env=env)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith(message), run.stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]
    assert "Traceback" not in run.stderr + run.stdout

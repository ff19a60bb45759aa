"""side_nn (side features, cold start) and dot_bias_ce (ratings as classes): known answers on small
synthetic sets, the real ml-100k, checkpoints, hostile feature columns, the CLI and the app."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from collab_core.coldstart import cold_movie, cold_user, cold_user_scores
from collab_core.config import TrainConfig
from collab_core.data import Dataset
from collab_core.errors import ConfigError, DataError
from collab_core.features import FeatureSpec
from collab_core.learner import get_or_train, load_trained
from collab_core.levels import calibration, distribution
from collab_core.nets import MODELS, FeatureNotice, create_model
from collab_core.snapshots import split_state
from collab_core.train import predict

REPO = Path(__file__).resolve().parents[1]
SMALL = {"epochs": 3, "bs": 256, "lr": 1e-2}  # a short ml-100k recipe: seconds, not minutes


# ---- a synthetic set with a known answer: genre and gender effects ------------------------------------


def genre_dataset(n_users: int = 120, n_items: int = 60, seed: int = 0) -> Dataset:
    """Horror films are rated 1.5, dramas 4.5, by everyone, ±0.3 noise; women rate 0.4 above men.
    The last four films of each genre are never rated (cold), so only their genre can tell them apart."""
    rng = np.random.default_rng(seed)
    genres = np.where(np.arange(n_items) % 2 == 0, "Horror", "Drama")
    items = pd.DataFrame(
        {"title": [f"{g} {i} ({1970 + i % 30})" for i, g in enumerate(genres)],
         "year": pd.array(1970 + np.arange(n_items) % 30, dtype="Int64"), "genres": genres},
        index=pd.Index(np.arange(n_items) + 1, name="item"),
    )  # fmt: skip
    users = pd.DataFrame(
        {"age": rng.integers(18, 70, n_users), "gender": np.where(np.arange(n_users) % 2, "F", "M"),
         "occupation": rng.choice(["writer", "engineer", "student"], n_users), "zip": "00000"},
        index=pd.Index(np.arange(n_users) + 1, name="user"),
    )  # fmt: skip
    u, i = np.meshgrid(np.arange(n_users), np.arange(n_items - 8), indexing="ij")
    keep = rng.random(u.shape) < 0.5
    u, i = u[keep], i[keep]
    rating = np.where(genres[i] == "Horror", 1.5, 4.5) + 0.4 * (u % 2) + rng.normal(0, 0.3, len(u))
    ratings = pd.DataFrame({"user": (u + 1).astype(np.int64), "item": (i + 1).astype(np.int64),
                            "rating": np.clip(rating, 1, 5).astype(np.float32)})  # fmt: skip
    return Dataset("genres", ratings, items, users)


def level_dataset(n_users: int = 150, n_items: int = 100, seed: int = 0) -> Dataset:
    """Ratings as classes with a known answer: a rank-2 taste plus biases, rounded to the levels 1..5."""
    rng = np.random.default_rng(seed)
    user_f, item_f = rng.normal(0, 0.8, (n_users, 2)), rng.normal(0, 0.8, (n_items, 2))
    u, i = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    keep = rng.random(u.shape) < 0.4
    u, i = u[keep], i[keep]
    score = 3 + (user_f[u] * item_f[i]).sum(1) + rng.normal(0, 0.3, len(u))
    ratings = pd.DataFrame({"user": u + 1, "item": i + 1, "rating": np.clip(np.round(score), 1, 5)})
    items = pd.DataFrame(
        {"title": [f"Movie {k}" for k in range(n_items)]}, index=pd.Index(np.arange(n_items) + 1)
    )
    return Dataset("levels", ratings.astype({"rating": np.float32}), items.rename_axis("item"))


@pytest.fixture(scope="module")
def genre_model():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureNotice)  # this set has every feature: no notice
        return get_or_train(genre_dataset(), TrainConfig(model="side_nn", epochs=8, lr=1e-2, bs=64),
                            device="cpu")  # fmt: skip


def test_side_nn_recovers_the_genre_effect_for_movies_nobody_rated(genre_model):
    assert genre_model.record.metrics.rmse < 0.45  # the noise is 0.3
    horror = cold_movie(genre_model, ["Horror"], 1985).ratings["predicted"]
    drama = cold_movie(genre_model, ["Drama"], 1985).ratings["predicted"]
    assert horror.mean() < 2.5 and drama.mean() > 3.5, (horror.mean(), drama.mean())
    women = cold_user_scores(genre_model, 30, "F", "writer")[1:]
    men = cold_user_scores(genre_model, 30, "M", "writer")[1:]
    assert 0.15 < float((women - men).mean()) < 0.7  # the known 0.4, from the gender feature alone


def test_dot_bias_ce_learns_rounded_ratings_as_classes():
    data = level_dataset()
    config = TrainConfig(model="dot_bias_ce", n_factors=8, epochs=8, lr=2e-2, wd=0.01, bs=64)
    trained = get_or_train(data, config, device="cpu")
    m = trained.record.metrics
    shares = data.ratings["rating"].value_counts(normalize=True)
    assert m.accuracy > shares.max() + 0.1, (m.accuracy, shares.max())  # beats always guessing the mode
    assert m.rmse < 0.8 * float(data.ratings["rating"].std())
    assert m.log_loss < -float((shares * np.log(shares)).sum())  # beats the marginal distribution


# ---- ml-100k ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def side_100k(ml100k, session_store):
    return get_or_train(ml100k, TrainConfig(model="side_nn", **SMALL), session_store, device="cpu")


@pytest.fixture(scope="module")
def ce_100k(ml100k, session_store):
    return get_or_train(ml100k, TrainConfig(model="dot_bias_ce", **SMALL), session_store, device="cpu")


def test_side_nn_on_ml100k_moves_a_cold_movie_towards_its_genre(side_100k):
    assert side_100k.record.metrics.rmse < 0.98
    items = side_100k.item_table
    horror_mean = items.loc[items["genres"] == "Horror", "mean_rating"].mean()
    noir_mean = items.loc[items["genres"].str.contains("Film-Noir"), "mean_rating"].mean()
    assert horror_mean < noir_mean  # the data's own direction
    horror = cold_movie(side_100k, ["Horror"], 1995)
    noir = cold_movie(side_100k, ["Drama", "Film-Noir"], 1995)
    assert horror.ratings["predicted"].mean() + 0.2 < noir.ratings["predicted"].mean()
    assert len(horror.ratings) == side_100k.encoded.n_users - 1
    assert {"user", "predicted", "age", "gender", "occupation"} <= set(horror.ratings.columns)
    assert horror.ratings["predicted"].is_monotonic_decreasing
    assert (horror.neighbours["genres"].str.contains("Horror")).sum() >= 5  # its neighbours share its genre


def test_a_new_user_gets_recommendations_from_demographics(side_100k):
    picks = cold_user(side_100k, 25, "F", "student", n=10, min_ratings=20)
    assert len(picks) == 10 and picks["predicted"].between(0, 5.5).all()
    assert (picks["n_ratings"] >= 20).all()
    old = cold_user_scores(side_100k, 65, "M", "retired")
    assert not torch.equal(cold_user_scores(side_100k, 25, "F", "student"), old)
    # unseen categories take the unknown slot, as a missing value does
    unseen = cold_user_scores(side_100k, 65, "X", "astronaut")
    assert torch.equal(unseen, cold_user_scores(side_100k, 65, None, None))


def test_cold_start_needs_side_nn(trained_edb):
    with pytest.raises(ConfigError, match="cold start needs the side-feature model side_nn"):
        cold_movie(trained_edb, ["Horror"], 1995)


def test_ce_distributions_sum_to_one_and_their_mean_is_the_prediction(ce_100k):
    model = ce_100k.model
    users, items, _ = ce_100k.tensors(ce_100k.valid_rows[:2000])
    probs = model.distribution(users, items)
    assert probs.shape == (2000, 5)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2000), atol=1e-5)
    expected = predict(model, users, items)
    assert torch.allclose(probs @ model.levels, expected, atol=1e-5)
    assert bool(((expected >= 1) & (expected <= 5)).all())
    one = distribution(ce_100k, 1, "Star Wars (1977)")
    assert list(one["level"]) == [1, 2, 3, 4, 5] and one["probability"].sum() == pytest.approx(1, abs=1e-6)
    # valid_loss stays the MSE of the expected rating, so its curve compares with the other models'
    m = ce_100k.record.metrics
    assert ce_100k.record.history.valid_loss[-1] == m.mse
    all_users, all_items, all_ratings = ce_100k.tensors(ce_100k.valid_rows)
    mse = float(((predict(model, all_users, all_items) - all_ratings) ** 2).mean())
    assert mse == pytest.approx(m.mse, rel=1e-5)
    assert 0.3 < m.accuracy < 0.7 and 1.0 < m.log_loss < 1.6
    assert len(ce_100k.record.history.valid_log_loss) == SMALL["epochs"]


def test_ce_calibration(ce_100k):
    found = calibration(ce_100k)
    assert found.per_level["predicted"].sum() == pytest.approx(1, abs=1e-6)
    assert found.per_level["observed"].sum() == pytest.approx(1, abs=1e-6)
    assert found.n == len(ce_100k.valid_rows)
    assert found.ece < 0.05  # cross-entropy is a proper score: trained on it, the levels come out calibrated
    assert (found.per_level["predicted"] - found.per_level["observed"]).abs().max() < 0.05
    assert found.reliability["n"].sum() == 5 * found.n


def test_ce_needs_rating_levels(ml100k):
    ratings = ml100k.ratings.assign(
        rating=ml100k.ratings["rating"] + np.linspace(0, 0.5, len(ml100k.ratings))
    )
    continuous = Dataset("continuous", ratings.astype({"rating": np.float32}), ml100k.items)
    with pytest.raises(
        ConfigError, match="dot_bias_ce predicts rating levels, but continuous has more than 21"
    ):
        get_or_train(continuous, TrainConfig(model="dot_bias_ce", epochs=1, bs=4096), device="cpu")


@pytest.mark.parametrize("key", ["side_nn", "dot_bias_ce"])
def test_checkpoints_round_trip_with_weights_only(key, side_100k, ce_100k, session_store):
    trained = {"side_nn": side_100k, "dot_bias_ce": ce_100k}[key]
    state, _ = split_state(torch.load(session_store.root / f"{trained.key}.pt", weights_only=True))
    # the checkpoint alone rebuilds the model: its features, vocabularies and levels are tensors in it
    model = create_model(key, trained.encoded.n_users, trained.encoded.n_items, trained.config.n_factors,
                         trained.config.y_range, **MODELS[key].state_inputs(state))  # fmt: skip
    model.load_state_dict(state)
    users, items, _ = trained.tensors(trained.valid_rows[:500])
    assert torch.equal(predict(model, users, items), predict(trained.model, users, items))
    loaded = load_trained(trained.dataset, trained.record, session_store, device="cpu")
    assert loaded.from_store and torch.equal(
        predict(loaded.model, users, items), predict(model, users, items)
    )
    if key == "side_nn":
        spec = FeatureSpec.from_json(model.spec)
        assert "Horror" in spec.genres and "student" in spec.occupations and spec.genders == ("F", "M")
        assert model.user_x.shape[1] == spec.user_width and model.item_x.shape[1] == spec.item_width


# ---- hostile side-feature columns --------------------------------------------------------------------


def test_missing_feature_columns_fall_back_to_zeros_with_a_notice():
    data = genre_dataset()
    bare = Dataset("bare", data.ratings, data.items[["title"]].assign(year=pd.NA, genres=""), None)
    with pytest.warns(FeatureNotice) as notices:
        trained = get_or_train(bare, TrainConfig(model="side_nn", epochs=1, bs=64), device="cpu")
    lines = [str(n.message) for n in notices]
    assert any("no users table" in line for line in lines) and any(
        "no movie has genres" in line for line in lines
    )
    assert all("\n" not in line for line in lines)
    assert trained.model.user_x.shape[1] == 0 and trained.model.item_x.shape[1] == 0
    no_occupation = Dataset("partial", data.ratings, data.items, data.users.drop(columns="occupation"))
    spec = FeatureSpec.of(no_occupation)
    assert "the users table has no occupation column: occupation is left out" in spec.notices
    assert spec.occupations == () and spec.genders == ("F", "M")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: (d.users.assign(age=["old"] * len(d.users)), d.items),
         "users' age must be numbers, not 'old'"),
        (lambda d: (d.users.assign(gender=[1.5] * len(d.users)), d.items),
         "users' gender must be text or whole-number codes, not 1.5"),
        (lambda d: (d.users, d.items.assign(genres=[3] * len(d.items))),
         "movies' genres must be text like 'Action|Comedy', not 3"),
    ],
    ids=["age text", "gender float", "genres number"],
)  # fmt: skip
def test_wrong_types_are_one_line_errors(change, message):
    data = genre_dataset()
    users, items = change(data)
    with pytest.raises(DataError, match=message.replace("|", r"\|")) as caught:
        get_or_train(Dataset("bad", data.ratings, items, users), TrainConfig(model="side_nn", epochs=1),
                     device="cpu")  # fmt: skip
    assert "\n" not in str(caught.value)


def test_unseen_categories_take_the_unknown_slot():
    spec = FeatureSpec.of(genre_dataset())
    row = spec.user_row(30, "X", "astronaut")
    columns = spec.user_columns
    assert row[columns.index("gender=(unknown)")] == 1 and row[columns.index("occupation=(unknown)")] == 1
    movie = spec.item_row(["Horror", "Western"], None)
    names = spec.item_columns
    assert movie[names.index("genre=Horror")] == 1 and movie[names.index("genre=(unknown)")] == 1
    assert movie[names.index("year missing")] == 1


# ---- the command line --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["side_nn", "dot_bias_ce"])
def test_cli_train_recommend_explain(key, ml100k_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLLAB_DATA_DIR": str(ml100k_dir),
           "COLLAB_MODELS_DIR": str(tmp_path / "models")}  # fmt: skip
    flags = ["--model", key, "--epochs", "1", "--bs", "1024", "--lr", "1e-2", "--json"]

    def run(*args: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "collab_core", *args, *flags], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    trained = run("train")
    assert trained["model"] == key and trained["valid_rmse"] < 1.2 and len(trained["valid_loss"]) == 1
    assert ("valid_accuracy" in trained) == (key == "dot_bias_ce")
    recs = run("recommend", "--user", "1", "--n", "5")
    assert len(recs["recommendations"]) == 5 and recs["key"] == trained["key"]
    why = run("explain", "--user", "1", "--movie", "Star Wars (1977)")
    names = [p["name"] for p in why["parts"]]
    if key == "side_nn":
        assert names == ["the user's embedding", "the user's features", "the movie's embedding",
                         "the movie's features", "the network's baseline"]  # fmt: skip
    else:
        assert names[:2] == ["user bias", "movie bias"] and why["link"].startswith(
            "expected rating of softmax"
        )
    assert abs(why["residual"]) < 1e-3


def test_family_defaults_fill_unset_flags():
    from collab_core.cli import build_parser, given_fields
    from collab_core.config import FAMILY_DEFAULTS

    args = build_parser().parse_args(["train", "--model", "dot_bias_ce", "--epochs", "2"])
    given = given_fields(args)
    assert given["epochs"] == 2  # a flag wins
    assert all(
        given[name] == value for name, value in FAMILY_DEFAULTS["dot_bias_ce"].items() if name != "epochs"
    )
    assert given_fields(build_parser().parse_args(["train"])) == {}


# ---- the app -----------------------------------------------------------------------------------------


def _app(session_store, keys: list[str], tmp_path) -> Path:
    """A store of the given trained models, for the app to open."""
    import shutil

    models = tmp_path / "models"
    models.mkdir()
    for key in keys:
        for suffix in (".pt", ".json"):
            shutil.copy(session_store.root / f"{key}{suffix}", models / f"{key}{suffix}")
    return models


def test_the_recommend_page_panels(side_100k, ce_100k, session_store, ml100k_dir, tmp_path, monkeypatch):
    from test_app import assert_clean, page, table

    models = _app(session_store, [side_100k.key, ce_100k.key], tmp_path)
    monkeypatch.setenv("COLLAB_DATA_DIR", str(ml100k_dir))
    monkeypatch.setenv("COLLAB_MODELS_DIR", str(models))
    at = page("app_pages/recommend.py", model=side_100k.key, user="42")
    assert_clean(at)
    heads = [h.value for h in at.subheader]
    assert "Cold start: a new movie, a new user, from their features" in heads
    at.multiselect(key="cold_genres").set_value(["Horror"]).run()
    assert_clean(at)
    users = table(at, "cold_movie_users")
    expected = cold_movie(side_100k, ("Horror",), 1995.0).ratings.head(10)
    assert list(users["user"]) == list(expected["user"])
    assert len(table(at, "cold_movie_neighbours")) == 10
    at.selectbox(key="cold_gender").set_value("F").run()
    assert_clean(at)
    assert len(table(at, "cold_user_recs")) == 10
    captions = " ".join(c.value for c in at.caption)
    assert "Train **dot_bias_ce**" in captions  # the other panel points to its model
    at = page("app_pages/recommend.py", model=ce_100k.key, user="42")
    assert_clean(at)
    assert "Train **side_nn**" in " ".join(c.value for c in at.caption)
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any('"expected ' in s for s in specs)  # the distribution's expected-rating line
    assert any("observed frequency" in s for s in specs)  # the reliability diagram
    assert any("accuracy" in c.value and "log loss" in c.value for c in at.caption)


@pytest.mark.browser
def test_screenshot_the_cold_start_and_distribution_panels(side_100k, ce_100k, session_store, tmp_path):
    from appserver import ARTIFACTS, streamlit_server
    from test_browser import assert_no_exception, idle, screenshot

    sync_api = pytest.importorskip("playwright.sync_api")
    models = _app(session_store, [side_100k.key, ce_100k.key], tmp_path)
    shots = Path(os.environ.get("COLLAB_SHOTS", ARTIFACTS))
    shots.mkdir(parents=True, exist_ok=True)
    with streamlit_server(models, "side-server.log") as (url, _), sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                             args=["--headless", "--no-sandbox"])  # fmt: skip
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        for key, name in ((side_100k.key, "side-coldstart"), (ce_100k.key, "side-ce-distribution")):
            page.goto(f"{url}/recommend?model={key}&user=42")
            page.get_by_role("heading", level=1).first.wait_for(timeout=300_000)
            idle(page)
            assert_no_exception(page)
            if name == "side-ce-distribution":
                page.get_by_text("Calibration: predicted probability").click()
                idle(page)
            heading = "Cold start" if name == "side-coldstart" else "Ratings as classes"
            page.get_by_role("heading", name=heading).first.scroll_into_view_if_needed()
            screenshot(page, name)
            (ARTIFACTS / f"{name}.png").replace(shots / f"{name}.png")
        browser.close()


def test_the_other_pages_take_both_models(
    side_100k, ce_100k, session_store, ml100k_dir, tmp_path, monkeypatch
):
    from test_app import assert_clean, page

    from collab_core.config import FAMILY_DEFAULTS

    models = _app(session_store, [side_100k.key, ce_100k.key], tmp_path)
    monkeypatch.setenv("COLLAB_DATA_DIR", str(ml100k_dir))
    monkeypatch.setenv("COLLAB_MODELS_DIR", str(models))
    for key in (side_100k.key, ce_100k.key):
        for path in ("app_pages/biases.py", "app_pages/embeddings.py"):
            at = page(path, model=key)
            assert_clean(at)
    at = page("app_pages/train.py")
    at.selectbox(key="cfg_model").set_value("dot_bias_ce").run()
    assert_clean(at)
    for name, value in FAMILY_DEFAULTS["dot_bias_ce"].items():
        assert at.session_state[f"cfg_{name}"] == value

"""The autoencoder family (autorec, glocal_k): a known answer, ml-100k, the store, the CLI, the
memory refusal and the app. Small widths and few rounds: the full recipes are bench/model_table.py's."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from collab_core import autofit
from collab_core.config import FAMILY_DEFAULTS, TrainConfig, preset
from collab_core.data import Dataset
from collab_core.errors import ConfigError
from collab_core.learner import get_or_train
from collab_core.nets import GlocalK, create_model
from collab_core.store import ModelStore
from collab_core.train import EpochEvent
from tests.test_cli import Cli

KEYS = ("autorec", "glocal_k")


def small(key: str, **fields) -> TrainConfig:
    """A quick recipe of the family: narrow, few rounds."""
    return TrainConfig(**{**FAMILY_DEFAULTS[key], "model": key, "n_factors": 32, "epochs": 12, **fields})


def low_rank_dataset(n_users: int = 60, n_items: int = 40, rank: int = 2, seed: int = 0) -> Dataset:
    """Ratings r = 3 + u·m (rank 2, within 1..5) with 60% of the cells observed: a known answer."""
    rng = np.random.default_rng(seed)
    users, items = rng.normal(0, 0.9, (n_users, rank)), rng.normal(0, 0.9, (n_items, rank))
    full = np.clip(3 + users @ items.T, 1, 5)
    u, i = np.nonzero(rng.random(full.shape) < 0.6)
    rating = full[u, i].astype(np.float32)
    ratings = pd.DataFrame({"user": u + 1, "item": i + 1, "rating": rating, "timestamp": np.arange(len(u))})
    titles = pd.DataFrame(
        {"title": [f"Movie {j}" for j in range(n_items)], "year": pd.array([2000] * n_items, dtype="Int64"),
         "genres": ["Drama"] * n_items},
        index=pd.Index(np.arange(n_items) + 1, name="item"),
    )  # fmt: skip
    return Dataset("low-rank", ratings, titles)


@pytest.fixture(scope="module")
def low_rank() -> Dataset:
    return low_rank_dataset()


@pytest.mark.parametrize("key", KEYS)
def test_a_low_rank_matrix_is_recovered(low_rank, key):
    trained = get_or_train(low_rank, small(key, epochs=20, wd=0.1), device="cpu")  # λ for 1,400 ratings
    ratings = low_rank.ratings["rating"].to_numpy()
    spread = float(np.sqrt(((ratings - ratings.mean()) ** 2).mean()))  # the mean predictor's RMSE
    assert trained.record.metrics.rmse < 0.5 * spread, (trained.record.metrics.rmse, spread)


@pytest.mark.parametrize("key", KEYS)
def test_predictions_are_the_reconstruction(low_rank, key):
    trained = get_or_train(low_rank, small(key, epochs=2), device="cpu")
    model = trained.model
    users, items = torch.meshgrid(torch.arange(1, 61), torch.arange(1, 41), indexing="ij")
    with torch.no_grad():
        expected = model.reconstruct()[items.flatten(), users.flatten()].clamp(1, 5)
        got = model(users.flatten(), items.flatten())
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    low, high = low_rank.ratings["rating"].min(), low_rank.ratings["rating"].max()
    assert model.y_range == pytest.approx((low, high))  # clipped to the training ratings' range


@pytest.mark.parametrize("key", KEYS)
def test_the_rounds_are_chosen_on_held_out_training_ratings(low_rank, key):
    events = []
    trained = get_or_train(low_rank, small(key, epochs=6), device="cpu", callback=events.append)
    rows = [e for e in events if isinstance(e, EpochEvent)]
    choosing = [e for e in rows if e.holdout_loss is not None]
    assert all(math.isfinite(e.holdout_loss) and math.isfinite(e.valid_loss) for e in choosing)
    pretrain = 3 if key == "glocal_k" else 0  # glocal_k: 3 pre-training rounds first, then the 6 chosen among
    assert choosing == rows[: pretrain + 6]
    stage = choosing[pretrain:]
    best = min(range(len(stage)), key=lambda k: stage[k].holdout_loss)
    refit = rows[len(choosing) :]
    if key == "glocal_k":  # refitted: the same pre-training and the chosen rounds again, on every rating
        assert len(refit) == pretrain + best + 1 and all(e.holdout_loss is None for e in refit)
        assert trained.record.metrics.mse == pytest.approx(refit[-1].valid_loss, rel=1e-5)
    else:  # the chosen round's weights, kept (the input then grows by the held-out ratings)
        assert not refit
        assert trained.record.history.valid_loss[best] == stage[best].valid_loss


@pytest.mark.parametrize("key", KEYS)
def test_checkpoints_round_trip_bit_exactly(low_rank, key, tmp_path):
    store = ModelStore(tmp_path)
    first = get_or_train(low_rank, small(key, epochs=2), store=store, device="cpu")
    again = get_or_train(low_rank, small(key, epochs=2), store=store, device="cpu")
    assert again.from_store and not first.from_store
    state = torch.load(tmp_path / f"{first.key}.pt", weights_only=True)
    for name, value in first.model.state_dict().items():
        assert torch.equal(state[name], value.cpu()), name
        assert torch.equal(again.model.state_dict()[name], value), name
    users, items = torch.arange(1, 61).repeat(40), torch.arange(1, 41).repeat_interleave(60)
    with torch.no_grad():
        assert torch.equal(first.model(users, items), again.model(users, items))
    if key == "glocal_k":
        assert bool(again.model.finetuned)  # the stage is stored with the weights


@pytest.mark.parametrize("key", KEYS)
def test_ml100k_u1_beats_the_mean(ml100k, key):
    config = small(key, split="u1", epochs=4, n_factors=64)
    trained = get_or_train(ml100k, config, device="cpu")
    rmse = trained.record.metrics.rmse
    train = ml100k.ratings.iloc[trained.train_rows]["rating"].mean()
    test = ml100k.ratings.iloc[trained.valid_rows]["rating"].to_numpy()
    mean_rmse = float(np.sqrt(((test - train) ** 2).mean()))  # 1.15 on u1
    assert rmse < mean_rmse - 0.05, (rmse, mean_rmse)
    codes = trained.model.factors()[1]
    assert codes.shape == (trained.encoded.n_items, 64)  # the movies' hidden codes: their embeddings


def test_family_defaults_are_not_the_chapters():
    config = preset("book", model="glocal_k")
    assert (config.n_factors, config.epochs, config.lr, config.wd) == (500, 60, 1.0, 20.0)
    assert preset("book", model="autorec", lr=0.5).lr == 0.5  # an explicit field still wins
    assert preset("book").lr == 5e-3  # the chapter's models keep the chapter's recipe


def test_a_matrix_too_big_for_memory_is_refused_with_the_estimate():
    n_items, n_users = 59_048, 162_542  # MovieLens 25M with fastai's #na# rows
    with torch.device("meta"):
        n_parameters = sum(p.numel() for p in create_model("glocal_k", n_users, n_items, 500).parameters())
    needed = autofit.training_bytes(n_items, n_users, 500, n_parameters)
    assert needed > 8 * n_items * n_users * 4  # eight dense copies of a 38 GB matrix
    with pytest.raises(ConfigError, match=r"holds the rating matrix densely .* needs about \d+\.\d+ GB"):
        autofit.check(n_items, n_users, 500, n_parameters, available=24 * 10**9)
    autofit.check(1665, 944, 500, 1_400_000, available=24 * 10**9)  # ml-100k fits


def test_the_glocal_kernel_pass_needs_no_full_output(low_rank):
    """The global kernel's item means come from the codes; they equal the full reconstruction's."""
    trained = get_or_train(low_rank, small("glocal_k", epochs=2), device="cpu")
    model: GlocalK = trained.model
    with torch.no_grad():
        weight, bias = model.decoder()
        full = (model.local_hidden(model.ratings) @ weight + bias).mean(dim=1)
        fast = model.local_hidden(model.ratings) @ weight.mean(dim=1) + bias.mean()
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


# ---- the command line ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_cli_train_evaluate_recommend_similar_explain(ml100k_dir, tmp_path, key):
    cli = Cli(tmp_path, ml100k_dir)
    flags = ["--model", key, "--factors", "24", "--epochs", "2"]
    out = cli("train", *flags, "--json")
    assert out.returncode == 0, out.stderr
    trained = json.loads(out.stdout.splitlines()[-1])
    assert trained["model"] == key and trained["config"]["lr"] == 1.0 and trained["valid_rmse"] < 1.2
    out = cli("evaluate", *flags, "--folds", "u1", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["folds"][0]["rmse"] < 1.2
    out = cli("recommend", *flags, "--user", "42", "--n", "5", "--json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout.splitlines()[-1])["recommendations"]) == 5
    out = cli("similar", *flags, "--movie", "Star Wars (1977)", "--n", "5", "--json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout.splitlines()[-1])["similar"]) == 5
    out = cli("explain", *flags, "--user", "42", "--movie", "Star Wars (1977)", "--json")
    assert out.returncode == 0, out.stderr
    assert "biases do not apply" in out.stdout and "clip(1, 5)" in out.stdout
    found = json.loads(out.stdout.splitlines()[-1])
    assert sum(p["value"] for p in found["parts"]) == pytest.approx(found["raw"], abs=1e-3)


# ---- the app ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_store(ml100k, ml100k_dir, tmp_path_factory):
    """A store holding one small autorec model of ml-100k, the app pointed at it."""
    store = ModelStore(tmp_path_factory.mktemp("ae-models"))
    trained = get_or_train(ml100k, small("autorec", epochs=2), store=store, device="cpu")
    saved = {k: os.environ.get(k) for k in ("COLLAB_DATA_DIR", "COLLAB_MODELS_DIR")}
    os.environ.update(COLLAB_DATA_DIR=str(ml100k_dir), COLLAB_MODELS_DIR=str(store.root))
    yield trained
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _page(path: str, **query: str):
    testing = pytest.importorskip("streamlit.testing.v1")
    at = testing.AppTest.from_file(str(Path(__file__).resolve().parents[1] / "streamlit_app.py"),
                                   default_timeout=180)  # fmt: skip
    for name, value in query.items():
        at.query_params[name] = value
    at.switch_page(path)
    return at.run()


def test_the_train_page_lists_them_with_their_defaults(app_store):
    at = _page("app_pages/train.py")
    assert not at.exception, [e.value for e in at.exception]
    model = at.selectbox(key="cfg_model")
    assert {"autorec", "glocal_k"} <= set(model.options)
    at = model.select("glocal_k").run()
    assert at.number_input(key="cfg_lr").value == 1.0 and at.number_input(key="cfg_wd").value == 20.0
    assert at.number_input(key="cfg_n_factors").value == 500


def test_a_stored_autorec_opens_on_embeddings_recommend_and_biases(app_store):
    key = app_store.key
    for path in ("app_pages/embeddings.py", "app_pages/recommend.py"):
        at = _page(path, model=key)
        assert not at.exception, (path, [e.value for e in at.exception])
        assert not at.error, (path, [e.value for e in at.error])
        assert at.selectbox(key="model").value == key
    at = _page("app_pages/biases.py", model=key)
    assert not at.exception
    assert any("has no bias terms" in info.value for info in at.info)

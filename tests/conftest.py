"""Shared fixtures: the real ml-100k (skipped with a reason when it is absent), the seed recipe
trained on it once per session, and a tiny synthetic dataset with a known answer."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from collab_core.config import TrainConfig
from collab_core.data import Dataset, load_ml100k
from collab_core.learner import Trained, get_or_train
from collab_core.nets import MODELS, AutoEncoder
from collab_core.store import ModelStore

ML100K_DIR = Path(
    os.environ.get("COLLAB_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared/data/ml-100k"
)


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The real ml-100k folder (COLLAB_DATA_DIR, else ../shared/data/ml-100k)."""
    if not (ML100K_DIR / "u.data").is_file():
        pytest.skip(f"real ml-100k not found at {ML100K_DIR} (set COLLAB_DATA_DIR to its folder)")
    return ML100K_DIR


@pytest.fixture(scope="session")
def ml100k(ml100k_dir: Path) -> Dataset:
    """ml-100k loaded once per session; tests must not modify it."""
    return load_ml100k(ml100k_dir)


@pytest.fixture(scope="session")
def session_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """A model store shared by the whole session (the seed model is trained into it once)."""
    return ModelStore(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def trained_edb(ml100k: Dataset, session_store: ModelStore) -> Trained:
    """The seed recipe on ml-100k: embedding_dot_bias, 50 factors, fit_one_cycle(5, 5e-3, wd=0.1)."""
    return get_or_train(ml100k, TrainConfig(), store=session_store, device="cpu")


def taste_dataset(n_users: int = 40, n_items: int = 24, seed: int = 0) -> Dataset:
    """Two tastes with a known answer: the first half of the items are Horror, the rest Children's;
    even users love horror (5) and dislike children's films (1), odd users the reverse. Each user
    rates about 60% of the items; item ids start at 101 so that ids and indices differ."""
    rng = np.random.default_rng(seed)
    users, items = np.meshgrid(np.arange(1, n_users + 1), np.arange(n_items), indexing="ij")
    horror_item = items < n_items // 2
    horror_fan = users % 2 == 0
    rating = np.where(horror_item == horror_fan, 5.0, 1.0)
    keep = rng.random(users.shape) < 0.6
    ratings = pd.DataFrame(
        {
            "user": users[keep].astype(np.int64),
            "item": (items[keep] + 101).astype(np.int64),
            "rating": rating[keep].astype(np.float32),
            "timestamp": rng.integers(8e8, 9e8, keep.sum()).astype(np.int64),
        }
    )
    genre = np.where(np.arange(n_items) < n_items // 2, "Horror", "Children's")
    titles = [f"{'Horror' if g == 'Horror' else 'Kids'} {i} ({1980 + i})" for i, g in enumerate(genre)]
    item_table = pd.DataFrame(
        {"title": titles, "year": pd.array(1980 + np.arange(n_items), dtype="Int64"), "genres": genre},
        index=pd.Index(np.arange(n_items) + 101, name="item"),
    )
    return Dataset("taste", ratings, item_table)


@pytest.fixture(scope="session")
def taste() -> Dataset:
    return taste_dataset()


@pytest.fixture(scope="module", params=list(MODELS))
def taste_model(request, taste) -> Trained:
    """Each model key trained on the taste data (a few seconds for all seven)."""
    epochs = 10 if "nn" not in request.param else 6
    config = TrainConfig(model=request.param, epochs=epochs, lr=0.05, bs=32, wd=0.01)
    if issubclass(MODELS[request.param], AutoEncoder):  # full-batch L-BFGS: its own step and width
        config = TrainConfig(model=request.param, n_factors=16, epochs=10, lr=1.0, bs=32, wd=0.01)
    return get_or_train(taste, config, device="cpu")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests train tiny models: on a shared 2-core machine a second intra-op thread spins against
    the other processes and made autograd training 10-40x slower (190 s instead of 5 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""What the app keeps between reruns and sessions: datasets, models, analyses, the job registry.

The app's settings (from `collab_core.settings`, read from the environment there) are asked for
here, and this is the only place with `st.cache_*`: the core stays free of Streamlit.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st

from collab_core import analysis
from collab_core.config import TrainConfig
from collab_core.data import Dataset, load_dataset, load_path
from collab_core.download import download_ml100k
from collab_core.learner import Trained, load_trained, prepare, rows_to_tensors
from collab_core.record import StoredModel
from collab_core.settings import Settings, current
from collab_core.store import ModelStore
from collab_core.train import LRFind, build_model, lr_find, pick_device
from collab_ui.jobs import JobRegistry


def settings() -> Settings:
    """The environment's settings, read once (again only when the environment changes)."""
    return current()


def models_dir() -> Path:
    return settings().models_dir


def data_dir() -> str | None:
    folder = settings().data_dir
    return None if folder is None else str(folder)


def paths_allowed() -> bool:
    """False when COLLAB_ALLOW_PATHS=0: a public deployment must not let visitors read server files."""
    return settings().allow_paths


def cache_dir() -> Path:
    return settings().cache_dir


def store() -> ModelStore:
    return ModelStore(models_dir())


@st.cache_resource(show_spinner=False)
def job_registry() -> JobRegistry:
    """One registry per server: sessions asking for the same training share its job."""
    return JobRegistry()


@st.cache_resource(show_spinner=False)
def _download_lock() -> threading.Lock:
    return threading.Lock()


def ml100k_missing() -> bool:
    """True when the default dataset would have to be downloaded first."""
    return data_dir() is None and not (cache_dir() / "ml-100k" / "u.data").is_file()


def download(progress: Callable[[int, int | None], None]) -> None:
    """Fetch ml-100k into the cache folder, one session at a time (COLLAB_ML100K_URL: a mirror)."""
    with _download_lock():
        download_ml100k(cache_dir(), url=settings().ml100k_url, progress=progress)


@st.cache_resource(max_entries=2, show_spinner="Loading the ratings…")
def default_dataset(data_dir: str | None, cache_dir: str) -> Dataset:
    return load_dataset(None, data_dir=data_dir, cache_dir=Path(cache_dir), download=False)


@st.cache_resource(max_entries=2, show_spinner="Reading the ratings…")
def path_dataset(path: str, columns: tuple[tuple[str, str | None], ...]) -> Dataset:
    return load_path(Path(path).expanduser(), columns=dict(columns))


@st.cache_resource(max_entries=2, show_spinner="Reading the upload…")
def upload_dataset(
    name: str, digest: str, _payload: bytes, columns: tuple[tuple[str, str | None], ...]
) -> Dataset:
    """An uploaded table or zip, read from a temporary file (never unpickled)."""
    with tempfile.TemporaryDirectory(prefix="collab-upload-") as tmp:
        path = Path(tmp) / (Path(name).name or "upload.csv")
        path.write_bytes(_payload)
        return load_path(path, columns=dict(columns))


@st.cache_resource(max_entries=2, show_spinner=False)
def ratings_view(_dataset: Dataset, fingerprint: str) -> pd.DataFrame:
    """The ratings with title, year and genres for display; shared by sessions, so never modify it."""
    view = _dataset.ratings.join(_dataset.items[["title", "year", "genres"]], on="item")
    if "timestamp" in view:
        view["timestamp"] = pd.to_datetime(view["timestamp"], unit="s")
    return view


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def trained_model(
    _dataset: Dataset, _record: StoredModel, fingerprint: str, key: str, device: str
) -> Trained:
    """A stored model opened on its dataset (fingerprint and key name the cache entry)."""
    return load_trained(_dataset, _record, store(), device)


@st.cache_data(max_entries=256, show_spinner=False)
def analysed(name: str, _trained: Trained, key: str, **options) -> object:
    """`collab_core.analysis.<name>(trained, **options)`, cached per model key and options."""
    return getattr(analysis, name)(_trained, **options)


@st.cache_data(max_entries=16, show_spinner=False)
def crosstab(_dataset: Dataset, fingerprint: str, n: int):
    return analysis.crosstab(_dataset, n=n)


@st.cache_data(max_entries=16, show_spinner=False)
def lr_sweep(
    _dataset: Dataset, _config: TrainConfig, fingerprint: str, config_key: str, device: str
) -> LRFind:
    """The lr finder for a config on a dataset (the model's weights are left untouched)."""
    encoded, train_rows, _ = prepare(_dataset, _config)
    model = build_model(_config, encoded.n_users, encoded.n_items, pick_device(device))
    train = rows_to_tensors(encoded, train_rows)
    return lr_find(model, train, bs=_config.bs, wd=_config.wd, seed=_config.seed)

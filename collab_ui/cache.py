"""What the app keeps between reruns and sessions: datasets, models, analyses, the job registry.

The only place that reads the environment (COLLAB_DATA_DIR, COLLAB_MODELS_DIR, the cache folder)
and the only place with `st.cache_*`: the core stays free of Streamlit.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st

from collab_core import analysis
from collab_core.config import TrainConfig
from collab_core.data import Dataset, default_cache_dir, load_dataset, load_path
from collab_core.download import ML100K_URL, download_ml100k
from collab_core.learner import Trained, find_lr, load_trained
from collab_core.store import ModelStore
from collab_core.train import LRFind
from collab_ui.jobs import JobRegistry

REPO = Path(__file__).resolve().parents[1]


def models_dir() -> Path:
    return Path(os.environ.get("COLLAB_MODELS_DIR") or REPO / "models")


def data_dir() -> str | None:
    return os.environ.get("COLLAB_DATA_DIR") or None


def paths_allowed() -> bool:
    """False when COLLAB_ALLOW_PATHS=0: a public deployment must not let visitors read server files."""
    return os.environ.get("COLLAB_ALLOW_PATHS", "1") != "0"


def cache_dir() -> Path:
    return default_cache_dir(os.environ)


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
        download_ml100k(cache_dir(), url=os.environ.get("COLLAB_ML100K_URL") or ML100K_URL, progress=progress)


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
def trained_model(_dataset: Dataset, _meta: dict, fingerprint: str, key: str, device: str) -> Trained:
    """A stored model opened on its dataset (fingerprint and key name the cache entry)."""
    return load_trained(_dataset, _meta, store(), device)


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
    return find_lr(_dataset, _config, device)

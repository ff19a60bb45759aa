"""What the app keeps between reruns and sessions: datasets, models, analyses, the job registry.

The app's settings (from `collab_core.settings`, read from the environment there) are asked for
here, and this is the only place with `st.cache_*`: the core stays free of Streamlit. One typed
wrapper per analysis a page shows, named as the function it caches.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from collab_core import (
    analysis,
    browse,
    certainty,
    coldstart,
    explain,
    foldin,
    levels,
    maps,
    ranking,
    recipes,
    whatif,
)
from collab_core import compare as comparison
from collab_core.browse import RatingFilter
from collab_core.config import TrainConfig
from collab_core.data import Dataset, load_dataset, load_path
from collab_core.download import download_ml100k
from collab_core.encoding import Encoded, encode, split
from collab_core.learner import Trained, find_lr, load_trained
from collab_core.record import StoredModel
from collab_core.settings import Settings, current
from collab_core.speed import Speed
from collab_core.store import ModelStore
from collab_core.train import LRFind
from collab_ui.jobs import JobRegistry
from collab_ui.simjobs import SimulationRegistry


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
    """One registry per server: sessions asking for the same training share its job, which trains
    on the encoding and split the pages hold (made once, whoever asks first)."""
    encodings, splits = _encodings(), _splits()  # here: the jobs' threads make no Streamlit calls
    return JobRegistry(lambda dataset, config: _prepared(encodings, splits, dataset, config))


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


class Recent:
    """The few values most recently loaded, shared by every session; each key loaded once at a time.

    What st.cache_resource does, for loads that draw as they go: a cached function replays the
    elements it drew into the next session that hits it, and a progress bar drawn in the page's
    own placeholder cannot be replayed (CacheReplayClosureError: every second visitor of a Path
    dataset saw a traceback)."""

    def __init__(self, size: int):
        self.size = size
        self._lock = threading.Lock()
        self._values: OrderedDict = OrderedDict()
        self._loading: dict[object, threading.Lock] = {}

    def get(self, key: object, load: Callable[[], object]) -> object:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # a second session asking meanwhile waits for the first one's load
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = load()
            with self._lock:
                self._values[key] = value
                while len(self._values) > self.size:
                    self._values.popitem(last=False)
                self._loading.pop(key, None)
            return value


@st.cache_resource(show_spinner=False)
def _path_datasets() -> Recent:
    return Recent(size=2)


def path_dataset(
    path: str,
    columns: tuple[tuple[str, str | None], ...],
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """A folder, table or zip on the server; big tables are kept parsed in the cache folder, so a
    second open (after a restart too) reads them back in a fraction of a second."""
    folder = Path(path).expanduser()
    load = lambda: load_path(folder, columns=dict(columns), cache_dir=cache_dir(), progress=progress)  # noqa: E731
    return _path_datasets().get((path, columns), load)


@st.cache_resource(max_entries=2, show_spinner="Reading the upload…")
def upload_dataset(
    name: str, digest: str, _payload: bytes, columns: tuple[tuple[str, str | None], ...]
) -> Dataset:
    """An uploaded table or zip, read from a temporary file (never unpickled)."""
    with tempfile.TemporaryDirectory(prefix="collab-upload-") as tmp:
        path = Path(tmp) / (Path(name).name or "upload.csv")
        path.write_bytes(_payload)
        return load_path(path, columns=dict(columns))


# Cached calls hash a model by its store key and a dataset by its fingerprint, not by their tensors.
BY_KEY = {Trained: lambda t: t.key, Dataset: lambda d: d.fingerprint}


@st.cache_resource(max_entries=4, show_spinner="Timing a few training steps here…", hash_funcs=BY_KEY)
def data_speed(dataset: Dataset) -> tuple[recipes.DataSize, Speed]:
    """The data's size and this machine's speed on its shape (measured once, then kept on disk)."""
    size = recipes.DataSize.of(dataset)
    return size, recipes.machine_speed(size, cache_dir())


def train_recipes(dataset: Dataset) -> dict[str, recipes.Recipe]:
    """auto (the default model's recipe, by recipes.default_recipe), book and fast, with estimates."""
    return recipes.recipes(*data_speed(dataset), settings().train_budget)


@st.cache_resource(max_entries=4, show_spinner=False, hash_funcs=BY_KEY)
def ratings_matching(dataset: Dataset, wanted: RatingFilter) -> np.ndarray | None:
    """Which ratings the table's filter keeps (a bool per rating; shared, so never modify it)."""
    return browse.matches(dataset, wanted)


@st.cache_data(max_entries=4, show_spinner=False, hash_funcs=BY_KEY)
def rating_counts(dataset: Dataset) -> pd.Series:
    return browse.rating_counts(dataset)


@st.cache_data(max_entries=4, show_spinner=False, hash_funcs=BY_KEY)
def ratings_per_user(dataset: Dataset) -> pd.Series:
    return browse.ratings_per_user(dataset)


@st.cache_data(max_entries=4, show_spinner=False, hash_funcs=BY_KEY)
def ratings_per_movie(dataset: Dataset) -> pd.Series:
    return browse.ratings_per_movie(dataset)


@st.cache_resource(show_spinner=False)
def _encodings() -> Recent:
    return Recent(size=2)


@st.cache_resource(show_spinner=False)
def _splits() -> Recent:
    return Recent(size=2)


@st.cache_resource(max_entries=2, show_spinner="Indexing the ratings…", hash_funcs=BY_KEY)
def encoded(dataset: Dataset, item_key: str) -> Encoded:
    """The ratings as indices: one encoding per dataset and item key, shared by all its models and
    the training jobs (this cache holds the same object as _encodings, no copy)."""
    return _encoding(_encodings(), dataset, item_key)


def _encoding(encodings: Recent, dataset: Dataset, item_key: str) -> Encoded:
    """A big encoding is kept in the cache folder (25M: 0.6-3 s to make, 0.1 s to read back)."""
    load = lambda: encode(dataset, item_key, cache_dir=cache_dir())  # noqa: E731
    return encodings.get((dataset.fingerprint, item_key), load)


def _split(splits: Recent, dataset: Dataset, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The config's split of the dataset, shared by its models; a big one is kept in the cache folder
    (a 25M permutation: 1.2-1.5 s to make, 0.1-0.3 s to read back)."""
    how = (dataset.fingerprint, config.split, config.valid_pct, config.seed)
    return splits.get(how, lambda: split(dataset, *how[1:], cache_dir=cache_dir()))


def _prepared(
    encodings: Recent, splits: Recent, dataset: Dataset, config: TrainConfig
) -> tuple[Encoded, tuple[np.ndarray, np.ndarray]]:
    """The encoding and split a model of config uses; the split is made in a thread while the
    ratings are encoded (1.4 s at 25M). No Streamlit calls: training jobs call it from their thread."""
    with ThreadPoolExecutor(1) as pool:
        rows = pool.submit(_split, splits, dataset, config)
        return _encoding(encodings, dataset, config.item_key), rows.result()


@st.cache_resource(
    max_entries=3, show_spinner="Loading the model…", hash_funcs={**BY_KEY, StoredModel: lambda r: r.key}
)
def trained_model(dataset: Dataset, record: StoredModel, device: str) -> Trained:
    """A stored model (an entry of store.list()) opened on its dataset, with the encoding and the
    split shared by all the dataset's models."""
    by_key, rows = _prepared(_encodings(), _splits(), dataset, record.config)
    return load_trained(dataset, record, store(), device, by_key, rows)


@st.cache_data(max_entries=16, show_spinner=False, hash_funcs=BY_KEY)
def crosstab(dataset: Dataset, n: int) -> pd.DataFrame:
    return analysis.crosstab(dataset, n=n, encoded=encoded(dataset, "title"))


@st.cache_data(max_entries=16, show_spinner=False, hash_funcs=BY_KEY)
def crosstab_filled(trained: Trained, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    return analysis.crosstab_filled(trained, n=n)


@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=BY_KEY)
def bias_table(trained: Trained, n: int, min_ratings: int, of: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return analysis.bias_table(trained, n=n, min_ratings=min_ratings, of=of)


@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=BY_KEY)
def bias_points(trained: Trained, n: int, min_ratings: int, of: str) -> pd.DataFrame:
    return analysis.bias_points(trained, n=n, min_ratings=min_ratings, of=of)


@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=BY_KEY)
def pca_items(trained: Trained, n_items: int, k: int) -> analysis.PCAResult:
    return analysis.pca_items(trained, n_items=n_items, k=k)


@st.cache_data(max_entries=16, show_spinner=False, hash_funcs=BY_KEY)
def tsne_items(trained: Trained, n_items: int) -> pd.DataFrame:
    return analysis.tsne_items(trained, n_items=n_items)


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=BY_KEY)
def nearest_items(trained: Trained, item: object, n: int, metric: str) -> pd.DataFrame:
    return analysis.nearest_items(trained, item, n=n, metric=metric)


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=BY_KEY)
def recommend(trained: Trained, user: object, n: int, min_ratings: int) -> pd.DataFrame:
    return ranking.recommend(trained, user, n=n, min_ratings=min_ratings)


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=BY_KEY)
def user_history(trained: Trained, user: object) -> pd.DataFrame:
    return ranking.user_history(trained, user)


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=BY_KEY)
def fold_in_user(trained: Trained, ratings: dict[str, float], n: int) -> pd.DataFrame:
    return foldin.fold_in_user(trained, ratings, n=n)


@st.cache_data(max_entries=16, show_spinner=False, hash_funcs=BY_KEY)
def lr_sweep(dataset: Dataset, config: TrainConfig, device: str) -> LRFind:
    """The lr finder for a config on a dataset (the model's weights are left untouched)."""
    return find_lr(dataset, config, device)


# ---- explanations (issue 12): breakdowns, what-if, the map read for analysts, certainty ----------------


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=BY_KEY)
def breakdown(trained: Trained, user: object, item: object) -> explain.Breakdown:
    return explain.breakdown(trained, user, item)


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=BY_KEY)
def new_user_breakdown(trained: Trained, ratings: dict[str, float], item: object) -> explain.Breakdown:
    """The breakdown for the new user folded in from `ratings` (as fold_in_user places them)."""
    return explain.vector_breakdown(trained, foldin.new_user_vector(trained, ratings), item)


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=BY_KEY)
def because_you_rated(trained: Trained, user: object, item: object, n: int) -> pd.DataFrame:
    return explain.because_you_rated(trained, user, item, n=n)


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=BY_KEY)
def because_new_user_rated(trained: Trained, ratings: dict[str, float], item: object, n: int) -> pd.DataFrame:
    return explain.because_new_user_rated(trained, ratings, item, n=n)


@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=BY_KEY)
def what_if(
    trained: Trained, user: object, edits: dict[str, float | None], n: int, min_ratings: int
) -> whatif.WhatIf:
    return whatif.what_if(trained, user, edits, n=n, min_ratings=min_ratings)


@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=BY_KEY)
def axis_labels(trained: Trained, n_items: int, k: int) -> tuple[maps.AxisLabel, ...]:
    """The labels of pca_items(trained, n_items, k)'s components."""
    return maps.axis_labels(pca_items(trained, n_items, k))


@st.cache_data(max_entries=4, show_spinner="Cross-validating a classifier per genre…", hash_funcs=BY_KEY)
def genre_readability(trained: Trained) -> pd.DataFrame:
    return maps.genre_readability(trained)


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=BY_KEY)
def user_on_map(trained: Trained, user: object, n_items: int, k: int, n: int) -> maps.UserOnMap:
    """User `user` on the map pca_items(trained, n_items, k), with their top n recommendations."""
    return maps.user_on_map(trained, user, pca_items(trained, n_items, k), n=n)


@st.cache_data(max_entries=4, show_spinner=False, hash_funcs=BY_KEY)
def movie_errors(trained: Trained) -> pd.DataFrame:
    return certainty.movie_errors(trained)


@st.cache_data(max_entries=16, show_spinner=False, hash_funcs=BY_KEY)
def worst_predicted(trained: Trained, n: int, min_valid: int) -> pd.DataFrame:
    return certainty.worst_predicted(trained, n=n, min_valid=min_valid, errors=movie_errors(trained))


@st.cache_data(max_entries=16, show_spinner=False, hash_funcs=BY_KEY)
def thin_extreme_biases(trained: Trained, n: int, max_ratings: int) -> pd.DataFrame:
    return certainty.thin_extreme_biases(trained, n=n, max_ratings=max_ratings)


# ---- map tools (issue 13 part 3): UMAP, a movie's neighbours on the map, genre membership ------------


@st.cache_data(max_entries=8, show_spinner=False, hash_funcs=BY_KEY)
def umap_items(
    trained: Trained, n_items: int, n_neighbors: int, min_dist: float, metric: str
) -> pd.DataFrame:
    return maps.umap_items(
        trained, n_items=n_items, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric
    )


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=BY_KEY)
def map_neighbours(trained: Trained, item: object, n_mapped: int, k: int) -> pd.DataFrame:
    """The k nearest (full-space cosine) to `item` among the n_mapped most-rated movies: a map's."""
    return maps.map_neighbours(trained, item, analysis.most_rated(trained, n_mapped), k=k)


@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=BY_KEY)
def in_genre(trained: Trained, genre: str) -> pd.Series:
    """Which movies (index: item index) have `genre` among their genres."""
    return maps.in_genre(trained.item_table["genres"], genre)


@st.cache_data(max_entries=4, show_spinner=False, hash_funcs=BY_KEY)
def genres_of(trained: Trained) -> list[str]:
    return maps.genres_of(trained)


# ---- comparing two models (issue 13) -------------------------------------------------------------------


@st.cache_data(max_entries=8, show_spinner="Scoring both models on the same ratings…", hash_funcs=BY_KEY)
def compare_metrics(a: Trained, b: Trained, k: int) -> comparison.MetricsPair:
    return comparison.side_by_side_metrics(a, b, k=k)


@st.cache_data(max_entries=8, show_spinner="Aligning the maps…", hash_funcs=BY_KEY)
def align_maps(a: Trained, b: Trained, min_ratings: int) -> comparison.Alignment:
    return comparison.align_maps(a, b, min_ratings=min_ratings)


@st.cache_data(max_entries=8, show_spinner="Finding every movie's neighbours in both…", hash_funcs=BY_KEY)
def neighbour_stability(a: Trained, b: Trained, k: int, min_ratings: int) -> comparison.Stability:
    return comparison.neighbour_stability(a, b, k=k, min_ratings=min_ratings)


@st.cache_data(max_entries=8, show_spinner="Looking for disagreements…", hash_funcs=BY_KEY)
def disagreements(a: Trained, b: Trained, n: int, min_ratings: int) -> pd.DataFrame:
    return comparison.disagreements(a, b, n=n, min_ratings=min_ratings)


@st.cache_data(max_entries=8, show_spinner=False, hash_funcs=BY_KEY)
def bias_pairs(a: Trained, b: Trained) -> pd.DataFrame:
    return comparison.bias_pairs(a, b)


# ---- side features and ratings as classes (issue 14): cold start, level distributions, calibration ----


@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=BY_KEY)
def cold_movie(
    trained: Trained, genres: tuple[str, ...], year: float | None, n: int, min_ratings: int
) -> coldstart.ColdMovie:
    return coldstart.cold_movie(trained, genres, year, n=n, min_ratings=min_ratings)


@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=BY_KEY)
def cold_user(
    trained: Trained, age: float | None, gender: str | None, occupation: str | None, n: int, min_ratings: int
) -> pd.DataFrame:
    return coldstart.cold_user(trained, age, gender, occupation, n=n, min_ratings=min_ratings)


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=BY_KEY)
def rating_distribution(trained: Trained, user: object, item: object) -> pd.DataFrame:
    return levels.distribution(trained, user, item)


@st.cache_data(max_entries=8, show_spinner=False, hash_funcs=BY_KEY)
def calibration(trained: Trained) -> levels.Calibration:
    return levels.calibration(trained)


@st.cache_resource(show_spinner=False)
def simulation_registry() -> SimulationRegistry:
    """One registry of feedback-loop simulations per server (Feedback loops page)."""
    return SimulationRegistry()

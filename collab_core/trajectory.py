"""A stored model's map through training: its snapshots on the final model's PCA axes (the animation
of the Embeddings page)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from collab_core.analysis import pca_items
from collab_core.errors import ConfigError
from collab_core.learner import Trained
from collab_core.snapshots import project


@dataclass(frozen=True)
class Trajectory:
    """A model's map through training: every frame on the final model's PCA axes."""

    movies: pd.DataFrame  # index: item index; title, year, genres, mean_rating, n_ratings (snapshot order)
    xy: np.ndarray  # (S, N, k) coordinates per frame
    epochs: np.ndarray  # (S,) epochs done at each frame (fractional; 0 = the initial weights)
    valid_loss: tuple[float | None, ...]  # (S,) the validation MSE where the frame ends an epoch
    explained: np.ndarray  # (k,) the final PCA's share of the variance per axis


def trajectory(trained: Trained, k: int = 2) -> Trajectory:
    """The stored snapshots of a trained model projected on the final model's PCA of the same movies
    (analysis.pca_items: the Embeddings page's map, so the last frame is that map)."""
    snapshots = trained.snapshots
    if snapshots is None or len(snapshots) == 0:
        raise ConfigError(f"model {trained.key} was stored without snapshots of its training")
    items = snapshots.items.numpy()
    final = pca_items(trained, n_items=len(items), k=k)
    if not np.array_equal(final.coords.index.to_numpy(), items):
        raise ConfigError("the snapshots' movies are not the map's most-rated movies of this data")
    xy = project(snapshots.frames.numpy(), final.components)
    epochs = snapshots.epochs.numpy()
    history = trained.record.history.valid_loss
    valid = tuple(
        history[int(e) - 1] if e >= 1 and float(e).is_integer() and int(e) <= len(history) else None
        for e in epochs
    )
    movies = final.coords.drop(columns=[f"pc{j + 1}" for j in range(k)])
    return Trajectory(movies, xy, epochs, valid, final.explained_variance_ratio)

"""Per-item and per-user tables: of the ratings (title, year, genres, mean rating, count; user
demographics) and of a trained model's embeddings (unit vectors for cosine
similarity; the users' mean and covariance, the fold-in prior).

`Trained` (learner.py) builds each of them once, as a cached property: read them, never modify them.
The tables of the ratings are kept per encoding, which all the models of a dataset share: opening
another model of it builds them again no more (25M: 0.25-0.45 s a model).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from collab_core.data import Dataset
from collab_core.encoding import Encoded
from collab_core.nets import CollabModel

DEMOGRAPHICS = ("age", "gender", "occupation")
JITTER = 1e-3  # added to Σ's diagonal (times its mean variance) so it is always invertible


Make = Callable[[Dataset, Encoded], pd.DataFrame]
_KEPT: weakref.WeakKeyDictionary[Encoded, dict[tuple[str, str], pd.DataFrame]] = weakref.WeakKeyDictionary()
_KEPT_LOCK = threading.Lock()


def _kept(make: Make, dataset: Dataset, encoded: Encoded) -> pd.DataFrame:
    """make(dataset, encoded), made once per encoding and kept while the encoding lives."""
    key = (make.__name__, dataset.fingerprint)
    with _KEPT_LOCK:
        found = _KEPT.get(encoded, {}).get(key)
    if found is None:
        found = make(dataset, encoded)  # outside the lock: two sessions may both make it, once
        with _KEPT_LOCK:
            found = _KEPT.setdefault(encoded, {}).setdefault(key, found)
    return found


def item_table(dataset: Dataset, encoded: Encoded) -> pd.DataFrame:
    """Index: item index 1..n_items-1; title, year, genres, mean_rating, n_ratings (all ratings).
    Shared by every model of the encoding: read it, never modify it."""
    return _kept(_item_table, dataset, encoded)


def user_table(dataset: Dataset, encoded: Encoded) -> pd.DataFrame:
    """Index: user index; user (raw id), mean_rating, n_ratings[, age, gender, occupation]. Shared
    by every model of the encoding: read it, never modify it."""
    return _kept(_user_table, dataset, encoded)


def _item_table(dataset: Dataset, encoded: Encoded) -> pd.DataFrame:
    keys = pd.Index(encoded.items[1:])
    if encoded.item_key == "title":  # several ids may share a title: take the first id's metadata
        meta = dataset.items.loc[~dataset.items["title"].duplicated()].set_index("title").reindex(keys)
        meta.insert(0, "title", keys.astype(str))
    else:
        meta = dataset.items.reindex(keys)
    mean, count = _means(*encoded.item_totals)
    return pd.DataFrame(
        {
            "title": meta["title"].astype(str).to_numpy(),
            "year": meta["year"].astype("Int64").array,
            "genres": meta["genres"].fillna("").to_numpy(),
            "mean_rating": mean[1:],
            "n_ratings": count[1:],
        },
        index=pd.RangeIndex(1, encoded.n_items, name="item"),
    )


def _user_table(dataset: Dataset, encoded: Encoded) -> pd.DataFrame:
    mean, count = _means(*encoded.user_totals)
    table = pd.DataFrame(
        {
            "user": pd.Series(encoded.users[1:]).infer_objects().array,
            "mean_rating": mean[1:],
            "n_ratings": count[1:],
        },
        index=pd.RangeIndex(1, encoded.n_users, name="user_index"),
    )
    if dataset.users is not None:
        found = dataset.users.reindex(pd.Index(encoded.users[1:]))
        for col in DEMOGRAPHICS:
            if col in found:
                table[col] = found[col].to_numpy()
    return table


def _means(count: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean rating (NaN where there are no ratings) and count, of encoding totals."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count, count


def embeddings(model: CollabModel, of: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The user (of="users") or item embeddings on the CPU, (n, F), and the same rows scaled to length 1."""
    users, items = model.factors()
    weights = (items if of == "items" else users).cpu()
    return weights, torch.nn.functional.normalize(weights, dim=1)


def user_prior(model: CollabModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) of the trained users' vectors [and biases], in float64."""
    users, _ = model.factors()
    biases = model.biases()
    z = users[1:] if biases is None else torch.cat([users[1:], biases[0][1:, None]], dim=1)
    z = z.double()  # (n_users - 1, D)
    eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
    cov = torch.cov(z.T).reshape(len(eye), len(eye)).nan_to_num()  # NaN with a single user
    return z.mean(dim=0), cov + JITTER * cov.diagonal().mean().clamp_min(1e-12) * eye

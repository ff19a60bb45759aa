"""Per-item and per-user tables: of the ratings (title, year, genres, mean rating, count; user
demographics) and of a trained model's embeddings (unit vectors for cosine
similarity; the users' mean and covariance, the fold-in prior).

`Trained` (learner.py) builds each of them once, as a cached property: read them, never modify them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from collab_core.data import Dataset
from collab_core.encoding import Encoded
from collab_core.nets import CollabModel

DEMOGRAPHICS = ("age", "gender", "occupation")
JITTER = 1e-3  # added to Σ's diagonal (times its mean variance) so it is always invertible


def item_table(dataset: Dataset, encoded: Encoded) -> pd.DataFrame:
    """Index: item index 1..n_items-1; title, year, genres, mean_rating, n_ratings (all ratings)."""
    keys = pd.Index(encoded.items[1:])
    if encoded.item_key == "title":  # several ids may share a title: take the first id's metadata
        meta = dataset.items.loc[~dataset.items["title"].duplicated()].set_index("title").reindex(keys)
        meta.insert(0, "title", keys.astype(str))
    else:
        meta = dataset.items.reindex(keys)
    mean, count = _means(encoded.item_idx, encoded.rating, encoded.n_items)
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


def user_table(dataset: Dataset, encoded: Encoded) -> pd.DataFrame:
    """Index: user index; user (raw id), mean_rating, n_ratings[, age, gender, occupation]."""
    mean, count = _means(encoded.user_idx, encoded.rating, encoded.n_users)
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


def _means(index: torch.Tensor, ratings: torch.Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean rating and count per index value 0..n-1 (NaN mean where there are no ratings).

    torch's bincount reads the int32 index as it is (NumPy's would copy it to int64 first), and
    sums float32 ratings exactly while they are halves below 2**23."""
    count = torch.bincount(index, minlength=n).numpy()
    total = torch.bincount(index, weights=ratings, minlength=n).numpy().astype(np.float64)
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

"""Predicted ratings: any (user, item) pairs, a user's ranked unseen items, predicted vs actual for
the items they rated, and ranking metrics (precision, recall, NDCG at k) on the validation split.

Dot-product models are scored straight from their factor matrices (one (B, F) @ (F, I) product);
the NN models by one batched forward over every (user, item) pair.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from collab_core.errors import ConfigError, check_n
from collab_core.learner import Trained
from collab_core.nets import DotModel
from collab_core.train import predict

RECOMMEND_COLUMNS = ["title", "predicted", "mean_rating", "n_ratings", "genres", "year"]
MAX_SCORES = 4_000_000  # users x items scored at once by ranking_metrics


@torch.no_grad()
def dot_scores(model: DotModel, users: torch.Tensor, user_bias: torch.Tensor | None) -> torch.Tensor:
    """Every item's prediction for user vectors (B, F) [and biases (B,)]: the model's formula."""
    _, items = model.factors()
    x = users @ items.T  # (B, I)
    biases = model.biases()
    if biases is not None:
        x = x + user_bias[:, None] + biases[1][None, :]
    return model.link(x)


@torch.no_grad()
def score_users(trained: Trained, users: np.ndarray) -> torch.Tensor:
    """(B, n_items) predictions on the CPU for the given user indices (column 0 is #na#)."""
    model = trained.model
    device = next(model.parameters()).device
    ix = torch.as_tensor(np.asarray(users, dtype=np.int64), device=device)
    if isinstance(model, DotModel):
        user_w, _ = model.factors()
        biases = model.biases()
        return dot_scores(model, user_w[ix], None if biases is None else biases[0][ix]).cpu()
    n_items = trained.encoded.n_items
    items = torch.arange(n_items, device=device).repeat(len(ix))
    return predict(model, ix.repeat_interleave(n_items), items).reshape(len(ix), n_items).cpu()


def predict_pairs(trained: Trained, users: object, items: object) -> np.ndarray:
    """Predicted ratings for raw user ids and item keys (titles or ids); a scalar is broadcast."""
    users, items = np.broadcast_arrays(
        np.atleast_1d(np.asarray(users, dtype=object)), np.atleast_1d(np.asarray(items, dtype=object))
    )
    if users.ndim != 1:
        raise ConfigError(f"users and items must be scalars or 1-D sequences, not shape {users.shape}")
    u = torch.from_numpy(trained.lookup.user_indices(users))
    i = torch.from_numpy(trained.lookup.item_indices(items))
    return predict(trained.model, u, i).cpu().numpy()


def rated_items(trained: Trained, user: int) -> np.ndarray:
    """Item indices the user (an index) rated, in training or validation."""
    return trained.encoded.item_idx.numpy()[trained.user_rows(user)]


def recommend(trained: Trained, user: object, n: int = 10, min_ratings: int = 0) -> pd.DataFrame:
    """The user's unseen items ranked by predicted rating: title, predicted, mean_rating, ..."""
    u = trained.lookup.user_index(user)
    return top_items(trained, score_users(trained, [u])[0], rated_items(trained, u), n, min_ratings)


def top_items(
    trained: Trained, scores: torch.Tensor, exclude: np.ndarray, n: int = 10, min_ratings: int = 0
) -> pd.DataFrame:
    """The n best-scored items, leaving out `exclude` and items with fewer than min_ratings ratings."""
    n = check_n(n)
    table = trained.item_table
    scores = scores.clone()
    scores[0] = -math.inf
    scores[torch.from_numpy(np.asarray(exclude, dtype=np.int64))] = -math.inf
    if min_ratings > 0:
        scores[1:][torch.from_numpy(table["n_ratings"].to_numpy() < min_ratings)] = -math.inf
    values, index = torch.topk(scores, min(n, len(scores)))
    keep = torch.isfinite(values)
    values, index = values[keep].numpy(), index[keep].numpy()
    out = table.loc[index].assign(predicted=values)
    return out[RECOMMEND_COLUMNS]


def user_history(trained: Trained, user: object) -> pd.DataFrame:
    """The items the user rated: title, rating, predicted, error (predicted - rating), in_valid."""
    u = trained.lookup.user_index(user)
    rows = trained.user_rows(u)
    items = trained.encoded.item_idx.numpy()[rows]
    ratings = trained.encoded.rating.numpy()[rows]
    predicted = score_users(trained, [u])[0].numpy()[items]
    out = pd.DataFrame(
        {
            "title": trained.item_table["title"].to_numpy()[items - 1],
            "rating": ratings,
            "predicted": predicted,
            "error": predicted - ratings,
            "in_valid": trained.valid_mask[rows],
        },
        index=pd.Index(items, name="item"),
    )
    return out.sort_values(["rating", "predicted"], ascending=False, kind="stable")


def ranking_metrics(trained: Trained, k: int = 10, threshold: float = 4.0) -> dict:
    """Mean precision@k, recall@k and NDCG@k of each user's top-k items not rated in training.

    Relevant items: the user's validation ratings >= threshold; users without any are skipped.
    """
    k = check_n(k, "k")
    encoded = trained.encoded
    users, items, ratings = (t.numpy() for t in (encoded.user_idx, encoded.item_idx, encoded.rating))
    is_valid = trained.valid_mask
    relevant = is_valid & (ratings >= threshold)
    evaluated = np.unique(users[relevant])
    if len(evaluated) == 0:
        raise ConfigError(f"no validation rating reaches the threshold {threshold:g}")
    parts, chunk = [], max(1, MAX_SCORES // encoded.n_items)
    for start in range(0, len(evaluated), chunk):
        batch = evaluated[start : start + chunk]
        row = np.full(encoded.n_users, -1)  # user index -> row of this batch
        row[batch] = np.arange(len(batch))
        in_batch = row[users] >= 0
        scores = score_users(trained, batch)  # (B, I)
        scores[:, 0] = -math.inf
        seen = in_batch & ~is_valid  # candidates: items the user did not rate in training
        scores[torch.from_numpy(row[users[seen]]), torch.from_numpy(items[seen])] = -math.inf
        top = torch.topk(scores, min(k, encoded.n_items)).indices.numpy()  # (B, k)
        wanted = np.zeros(scores.shape, dtype=bool)  # (B, I)
        wanted[row[users[in_batch & relevant]], items[in_batch & relevant]] = True
        parts.append(metrics_at_k(np.take_along_axis(wanted, top, axis=1), wanted.sum(axis=1), k))
    means = np.concatenate(parts, axis=1).mean(axis=1)
    return {
        f"precision@{k}": float(means[0]),
        f"recall@{k}": float(means[1]),
        f"ndcg@{k}": float(means[2]),
        "k": k,
        "threshold": threshold,
        "n_users": len(evaluated),
    }


def metrics_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """(3, B) precision, recall and NDCG per user from hits (B, k): is the i-th pick relevant.

    precision = hits / k, recall = hits / relevant, NDCG = Σ hitᵢ / log₂(i + 2) over its ideal.
    """
    discount = 1 / np.log2(np.arange(2, k + 2))  # (k,)
    found = hits.sum(axis=1)
    ideal = np.cumsum(discount)[np.minimum(n_relevant, k) - 1]
    dcg = (hits * discount[: hits.shape[1]]).sum(axis=1)
    return np.stack([found / k, found / n_relevant, dcg / ideal])

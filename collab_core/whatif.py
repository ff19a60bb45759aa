"""What if this user had rated differently: edit an existing user's ratings (change, add, remove),
re-solve their vector with every movie held fixed, and see how their recommendations move.

The re-solve is fold-in's (foldin.solve_user: closed form for the dot models, Adam steps for the NN
models), anchored on the trained vector so that only the edit moves the list:

    w' = w_u + ŵ(edited ratings) - ŵ(original ratings)

With no edit w' = w_u and the list is the model's own; fold-in from the ratings alone would not
give back w_u (it has the population prior, not the training run behind it), so comparing the
edited fold-in with the model's list would mix the edit's effect with the method's. Nothing is
written to the data, the model or the store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from collab_core.errors import ConfigError
from collab_core.foldin import UserVector, check_ratings, solve_user, vector_scores
from collab_core.learner import Trained
from collab_core.nets import AutoEncoder
from collab_core.ranking import top_items

REMOVE = None  # an edit's value that removes the rating


@dataclass(frozen=True, eq=False)
class WhatIf:
    """A user's recommendations after an edit of their ratings, beside the model's own."""

    user: object  # raw user id
    ratings: pd.DataFrame  # index: item; title, rating (NaN: removed), before (NaN: added)
    vector: UserVector  # the re-solved user
    recommendations: pd.DataFrame  # ranking.RECOMMEND_COLUMNS + rank, rank_before, rank_change,
    # predicted_before; rank_before is <NA> for a movie that was rated before the edit


def what_if(
    trained: Trained,
    user: object,
    edits: Mapping[object, float | None],
    n: int = 10,
    min_ratings: int = 0,
    l2: float = 0.5,
    steps: int = 60,
    lr: float = 0.1,
) -> WhatIf:
    """User `user`'s top n after `edits` ({title or id: new rating, or None to remove it})."""
    lookup, encoded = trained.lookup, trained.encoded
    u = lookup.user_index(user)
    rows = trained.user_rows(u)
    before = dict(zip(encoded.item_idx.numpy()[rows].tolist(), encoded.rating.numpy()[rows].tolist()))
    after = _apply(trained, before, edits)
    if isinstance(trained.model, AutoEncoder):
        return _fed_through(trained, u, before, after, n, min_ratings)
    original = _solve(trained, before, l2, steps, lr)
    edited = _solve(trained, after, l2, steps, lr)
    trained_vector = UserVector.of(trained.model, u)
    bias = None  # the change first: an empty edit leaves the trained vector exactly as it is
    if trained_vector.bias is not None:
        bias = trained_vector.bias + (edited.bias - original.bias)
    vector = UserVector(trained_vector.factors + (edited.factors - original.factors), bias)
    scores, scores_before = vector_scores(trained, vector), vector_scores(trained, trained_vector)
    recommendations = _ranked(trained, scores, scores_before, before, after, n, min_ratings)
    return WhatIf(lookup.user_id(u), _ratings_table(trained, before, after), vector, recommendations)


def _ranked(
    trained: Trained,
    scores: torch.Tensor,
    scores_before: torch.Tensor,
    before: dict[int, float],
    after: dict[int, float],
    n: int,
    min_ratings: int,
) -> pd.DataFrame:
    """The top n after the edit, each with its rank and prediction before it."""
    recommendations = top_items(trained, scores, np.fromiter(after, np.int64), n, min_ratings)
    rank_before = pd.array(_ranks(trained, scores_before, np.fromiter(before, np.int64), min_ratings),
                           dtype="Int64")[recommendations.index]  # fmt: skip
    rank_before[rank_before == 0] = pd.NA  # rated before the edit: not on the list then
    recommendations = recommendations.assign(
        rank=np.arange(1, len(recommendations) + 1),
        rank_before=rank_before,
        predicted_before=scores_before.numpy()[recommendations.index],
    )
    recommendations["rank_change"] = recommendations["rank_before"] - recommendations["rank"]
    return recommendations


def _fed_through(
    trained: Trained, u: int, before: dict[int, float], after: dict[int, float], n: int, min_ratings: int
) -> WhatIf:
    """An autoencoder's what-if: the edits written into its input matrix (column u), fed through.

    Only the edited cells change, so an empty edit gives the model's own list; an item's
    reconstruction reads the ratings that item received, so an edit moves the user's predictions
    of the edited movies (and, in glocal_k, of their neighbours in the convolution's window)."""
    model = trained.model
    edited = model.ratings.clone()  # (I, U)
    for i in before.keys() - after.keys():
        edited[i, u] = 0.0
    for i, value in after.items():
        if before.get(i) != value:
            edited[i, u] = value
    with torch.no_grad():
        scores = model.clamp(model.reconstruct(edited)[:, u]).cpu()
        scores_before = model.clamp(model.reconstruct()[:, u]).cpu()
    recommendations = _ranked(trained, scores, scores_before, before, after, n, min_ratings)
    return WhatIf(trained.lookup.user_id(u), _ratings_table(trained, before, after), UserVector.of(model, u),
                  recommendations)  # fmt: skip


def _apply(
    trained: Trained, before: dict[int, float], edits: Mapping[object, float | None]
) -> dict[int, float]:
    """The user's ratings {item index: rating} after the edits, each checked."""
    after = dict(before)
    lookup = trained.lookup
    changed = {key: value for key, value in edits.items() if value is not REMOVE}
    values = check_ratings(changed, trained.model.y_range)
    for key, value in zip(changed, values):
        after[lookup.item_index(key)] = value
    for key in (key for key, value in edits.items() if value is REMOVE):
        i = lookup.item_index(key)
        if i not in after:
            raise ConfigError(f"cannot remove the rating of {key!r}: user has not rated it")
        del after[i]
    return after


def _solve(trained: Trained, ratings: dict[int, float], l2: float, steps: int, lr: float) -> UserVector:
    items = torch.from_numpy(np.fromiter(ratings, np.int64, len(ratings)))
    return solve_user(trained, items, list(ratings.values()), l2, steps, lr)


def _ranks(trained: Trained, scores: torch.Tensor, exclude: np.ndarray, min_ratings: int) -> np.ndarray:
    """(n_items,) each candidate's place in the ranking by score (1 = best); 0 for excluded items."""
    scores = scores.clone()
    scores[0] = -math.inf
    scores[torch.from_numpy(exclude)] = -math.inf
    if min_ratings > 0:
        scores[1:][torch.from_numpy(trained.item_table["n_ratings"].to_numpy() < min_ratings)] = -math.inf
    order = torch.argsort(scores, descending=True, stable=True).numpy()
    ranks = np.zeros(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    ranks[~torch.isfinite(scores).numpy()] = 0
    return ranks


def _ratings_table(trained: Trained, before: dict[int, float], after: dict[int, float]) -> pd.DataFrame:
    """Every item rated before or after the edit: title, rating (after), before; changed ones first."""
    items = np.array(sorted(before.keys() | after.keys()), dtype=np.int64)
    out = pd.DataFrame(
        {
            "title": trained.item_table["title"].to_numpy()[items - 1],
            "rating": [after.get(i, math.nan) for i in items.tolist()],
            "before": [before.get(i, math.nan) for i in items.tolist()],
        },
        index=pd.Index(items, name="item"),
    )
    same = (out["rating"] == out["before"]).to_numpy()
    return out.iloc[np.argsort(same, kind="stable")]

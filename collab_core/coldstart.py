"""The chapter's bootstrapping problem answered with side features (`side_nn`): a movie nobody has
rated, described by its genres and year, and a user who has rated nothing, described by age, gender
and occupation.

A side_nn row is [embedding; features]; a newcomer has no embedding of its own, so it takes row 0's,
the cold-start embedding that training taught to stand for "a user (or movie) we know nothing about"
(nets.SideNN), beside its own encoded features. Its predictions and neighbours then come from the
same network and the same representation as everyone else's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from collab_core.errors import ConfigError, check_n
from collab_core.features import FeatureSpec
from collab_core.learner import Trained
from collab_core.nets import SideNN
from collab_core.ranking import top_items
from collab_core.stats import DEMOGRAPHICS


@dataclass(frozen=True)
class ColdMovie:
    """What side_nn predicts for a movie nobody has rated."""

    description: str  # its genres and year, as given
    ratings: pd.DataFrame  # one row per user: user, predicted[, age, gender, occupation]; best first
    neighbours: pd.DataFrame  # the nearest rated movies: title, similarity, mean_rating, n_ratings, ...


def spec_of(trained: Trained) -> FeatureSpec:
    """The trained model's feature vocabularies, or a ConfigError for a model without side features."""
    if not isinstance(trained.model, SideNN):
        raise ConfigError(f"cold start needs the side-feature model side_nn, not {trained.config.model!r}: "
                          "the others know a movie or a user only by its ratings")  # fmt: skip
    return FeatureSpec.from_json(trained.model.spec)


def cold_movie(
    trained: Trained,
    genres: Sequence[str] | str = (),
    year: float | None = None,
    n: int = 10,
    min_ratings: int = 0,
) -> ColdMovie:
    """Every user's predicted rating of a new movie with these genres and year, and its n nearest
    movies with at least min_ratings ratings by the model's item representation [cold embedding;
    features] (cosine). Movies with few ratings sit near the cold-start row, so without a floor the
    nearest are the barely known."""
    spec = spec_of(trained)
    model = trained.model
    x = _row(model, spec.item_row(genres, year))
    item = torch.cat([model.item_factors.weight[0].detach(), x])  # (Fi + Di,)
    users, items = model.factors()
    scores = _score(model, users[1:], item.expand(len(users) - 1, -1))  # (n_users - 1,)
    table = trained.user_table
    out = pd.DataFrame({"user": table["user"].to_numpy(), "predicted": scores})
    for col in DEMOGRAPHICS:
        if col in table:
            out[col] = table[col].to_numpy()
    similarity = torch.nn.functional.cosine_similarity(items[1:], item[None], dim=1).cpu().numpy()
    similarity[trained.item_table["n_ratings"].to_numpy() < min_ratings] = -np.inf
    order = np.argsort(-similarity, kind="stable")[: check_n(n)]
    order = order[np.isfinite(similarity[order])]
    neighbours = trained.item_table.iloc[order][["title", "mean_rating", "n_ratings", "genres", "year"]]
    neighbours.insert(1, "similarity", similarity[order])
    text = genres if isinstance(genres, str) else "|".join(genres)
    description = f"{text or 'no genre'}, {'year unknown' if year is None else f'{year:g}'}"
    return ColdMovie(description, out.sort_values("predicted", ascending=False, kind="stable"), neighbours)


def cold_user_scores(
    trained: Trained, age: float | None = None, gender: str | None = None, occupation: str | None = None
) -> torch.Tensor:
    """(n_items,) predicted ratings of every movie for a user known only by age, gender, occupation."""
    spec = spec_of(trained)
    model = trained.model
    user = torch.cat(
        [model.user_factors.weight[0].detach(), _row(model, spec.user_row(age, gender, occupation))]
    )
    _, items = model.factors()
    scores = _score(model, user.expand(len(items), -1), items)
    return torch.from_numpy(scores)


def cold_user(
    trained: Trained,
    age: float | None = None,
    gender: str | None = None,
    occupation: str | None = None,
    n: int = 10,
    min_ratings: int = 0,
) -> pd.DataFrame:
    """Recommendations for a user who has rated nothing: title, predicted, mean_rating, n_ratings, ..."""
    scores = cold_user_scores(trained, age, gender, occupation)
    return top_items(trained, scores, np.array([], dtype=np.int64), n, min_ratings)


def _row(model: SideNN, features: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(features).to(model.item_x.device)


@torch.no_grad()
def _score(model: SideNN, users: torch.Tensor, items: torch.Tensor) -> np.ndarray:
    """The network's predictions for rows of user and item representations, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return model.link(model.raw(users, items)).cpu().numpy()
    finally:
        model.train(was_training)

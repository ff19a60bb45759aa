"""How sure the model is, movie by movie: its error on each movie's held-out ratings beside how many
ratings the movie has, the movies it predicts worst, and the thinly rated movies whose learned bias
is extreme (a bias fitted to a handful of ratings says more about those raters than the movie)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from collab_core.analysis import learned_biases
from collab_core.errors import check_n
from collab_core.learner import Trained
from collab_core.train import predict


def movie_errors(trained: Trained) -> pd.DataFrame:
    """Index: item; title, n_ratings (all), n_valid, valid_rmse, mean_error (predicted - rating, on
    the validation split; NaN for movies without validation ratings)."""
    users, items, ratings = trained.tensors(trained.valid_rows)
    with torch.no_grad():
        error = (predict(trained.model, users, items).cpu() - ratings).double().numpy()
    n_items = trained.encoded.n_items
    items = items.numpy()
    count = np.bincount(items, minlength=n_items)[1:]
    total = np.bincount(items, weights=error, minlength=n_items)[1:]
    squares = np.bincount(items, weights=error * error, minlength=n_items)[1:]
    table = trained.item_table
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame(
            {
                "title": table["title"].to_numpy(),
                "n_ratings": table["n_ratings"].to_numpy(),
                "n_valid": count,
                "valid_rmse": np.sqrt(squares / count),
                "mean_error": total / count,
            },
            index=table.index,
        )


def worst_predicted(
    trained: Trained, n: int = 10, min_valid: int = 5, errors: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The n movies with the largest validation RMSE among those with at least min_valid held-out
    ratings, worst first (movie_errors' columns); errors: movie_errors(trained), when already made
    (at 25M it predicts 5M validation ratings)."""
    errors = movie_errors(trained) if errors is None else errors
    errors = errors[errors["n_valid"] >= min_valid]
    return errors.sort_values("valid_rmse", ascending=False, kind="stable").head(check_n(n))


def thin_extreme_biases(trained: Trained, n: int = 10, max_ratings: int = 5) -> pd.DataFrame:
    """The n movies with at most max_ratings ratings whose learned bias is furthest from the median
    bias, most extreme first: title, bias, mean_rating, n_ratings."""
    biases = learned_biases(trained)
    table = trained.item_table
    bias = biases[1][1:].cpu().numpy()
    out = table[["title", "mean_rating", "n_ratings"]].assign(bias=bias)
    out = out.loc[out["n_ratings"] <= max_ratings, ["title", "bias", "mean_rating", "n_ratings"]]
    distance = (out["bias"] - np.median(bias)).abs()
    return out.loc[distance.sort_values(ascending=False, kind="stable").index[: check_n(n)]]

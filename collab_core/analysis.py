"""What a trained model has learned, as tables the pages render as they are: bias tables, the PCA
and t-SNE maps of item embeddings, nearest items and users, and the crosstab of the most active
users by the most-rated items. Predictions, rankings and new users live in ranking.py and
foldin.py.

Items are given by title or raw id, users by raw id (resolved by lookup.py); results are indexed
by embedding index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from collab_core.data import Dataset
from collab_core.encoding import Encoded, encode, item_titles
from collab_core.errors import ConfigError, check_n
from collab_core.learner import Trained
from collab_core.nets import MODELS
from collab_core.ranking import score_users
from collab_core.stats import DEMOGRAPHICS

__all__ = [
    "PCAResult",
    "bias_points",
    "bias_table",
    "crosstab",
    "crosstab_filled",
    "nearest_items",
    "nearest_users",
    "pca_extremes",
    "pca_items",
    "similarities",
    "tsne_items",
    "tsne_seconds",
]

TSNE_SECONDS_PER_N_LOG_N = 4.5e-4  # sklearn's TSNE on 50 factors: 3.0 s for 1,000 items, 2 busy cores
ITEM_COLUMNS = ["title", "year", "genres", "mean_rating", "n_ratings"]
METRICS = ("cosine", "euclidean")


def item_stats(trained: Trained) -> pd.DataFrame:
    """Index: item index 1..n_items-1; title, year, genres, mean_rating, n_ratings (all ratings)."""
    return trained.item_table.copy()


def user_stats(trained: Trained) -> pd.DataFrame:
    """Index: user index; user (raw id), mean_rating, n_ratings[, age, gender, occupation]."""
    return trained.user_table.copy()


def bias_table(
    trained: Trained, n: int = 10, min_ratings: int = 0, of: str = "items"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The n lowest and n highest learned biases: title (or user), bias, mean_rating, n_ratings."""
    ordered = _biases(trained, min_ratings, of).sort_values("bias", kind="stable")
    return ordered.head(check_n(n)), ordered.tail(n).iloc[::-1]


def bias_points(trained: Trained, n: int = 5000, min_ratings: int = 0, of: str = "items") -> pd.DataFrame:
    """The biases of the n most-rated items (or users) with at least min_ratings ratings: as many
    as a scatter shows well (162k users would be megabytes for the browser), most-rated first."""
    return _biases(trained, min_ratings, of).nlargest(check_n(n), "n_ratings", keep="first")


def _biases(trained: Trained, min_ratings: int, of: str) -> pd.DataFrame:
    """Index: item (or user) index; title (or user), bias, mean_rating, n_ratings."""
    biases = learned_biases(trained)
    name, table = _table(trained, of)
    out = table[[name, "mean_rating", "n_ratings"]].assign(bias=_pick(of, biases)[1:].cpu().numpy())
    return out.loc[out["n_ratings"] >= min_ratings, [name, "bias", "mean_rating", "n_ratings"]]


def learned_biases(trained: Trained) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's user and item biases, or a ConfigError naming the models that have them."""
    biases = trained.model.biases()
    if biases is None:
        with_bias = [key for key, model in MODELS.items() if model.has_bias]
        raise ConfigError(f"model {trained.config.model!r} has no bias terms; "
                          f"train one of {', '.join(with_bias)} to see biases")  # fmt: skip
    return biases


def _table(trained: Trained, of: str) -> tuple[str, pd.DataFrame]:
    """("title", the item table) or ("user", the user table)."""
    if of == "items":
        return "title", trained.item_table
    if of == "users":
        return "user", trained.user_table
    raise ConfigError(f"of must be 'items' or 'users', not {of!r}")


def _pick(of: str, pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The item half of a (users, items) pair of tensors, or the user half."""
    return pair[1] if of == "items" else pair[0]


@dataclass(frozen=True)
class PCAResult:
    coords: pd.DataFrame  # index: item index; title, year, genres, mean_rating, n_ratings, pc1..pck
    explained_variance_ratio: np.ndarray  # (k,) share of the embeddings' variance, decreasing
    components: np.ndarray  # (k, F) orthonormal directions in embedding space


def most_rated(trained: Trained, n: int) -> np.ndarray:
    """Indices of the n most-rated items, most first (ties: lower index first)."""
    counts = trained.item_table["n_ratings"].to_numpy()
    return np.argsort(-counts, kind="stable")[: check_n(n, "n_items")] + 1


def _item_vectors(trained: Trained, index: np.ndarray) -> np.ndarray:
    _, item_w = trained.model.factors()
    return item_w[torch.from_numpy(index).to(item_w.device)].cpu().numpy()  # (N, F)


def pca_items(trained: Trained, n_items: int = 1000, k: int = 3, seed: int = 42) -> PCAResult:
    """PCA of the n_items most-rated items' embeddings, k components (`principal_axes`). seed: kept
    for callers; the decomposition is exact, with nothing random in it."""
    index = most_rated(trained, n_items)
    x = _item_vectors(trained, index)
    if check_n(k, "k") > min(x.shape):
        raise ConfigError(f"k={k} components need at least {k} items and {k} factors, "
                          f"not {x.shape[0]} x {x.shape[1]}")  # fmt: skip
    components, ratio = principal_axes(x, k)
    xy = (x - x.mean(axis=0)) @ components.T  # (N, k)
    coords = trained.item_table.loc[index, ITEM_COLUMNS].assign(**{f"pc{j + 1}": xy[:, j] for j in range(k)})
    return PCAResult(coords, ratio, components)


def principal_axes(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k leading principal axes (k, F) of the rows of x and their shares of the variance, from
    the eigenvectors of the (F, F) covariance: exact, and a few milliseconds for 59k x 50. Each axis
    is signed so that its largest entry is positive, as scikit-learn signs its PCA's; not sklearn
    itself, whose import (1.2 s with SciPy's statistics) was most of a 25M map's first draw."""
    centred = np.asarray(x, dtype=np.float64) - np.asarray(x, dtype=np.float64).mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / max(1, len(centred) - 1))
    order = np.argsort(values)[::-1][:k]
    axes = vectors[:, order].T  # (k, F)
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    total = np.clip(values, 0, None).sum()
    ratio = np.clip(values[order], 0, None) / total if total > 0 else np.zeros(len(order))
    return axes.astype(np.float32), ratio


def pca_extremes(result: PCAResult, component: int = 1, n: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The n items lowest and highest on one principal component (1-based)."""
    column = f"pc{component}"
    if column not in result.coords:
        raise ConfigError(f"component must be 1..{len(result.explained_variance_ratio)}, not {component!r}")
    ordered = result.coords.sort_values(column, kind="stable")[["title", column, "mean_rating", "n_ratings"]]
    return ordered.head(check_n(n)), ordered.tail(n).iloc[::-1]


def tsne_items(
    trained: Trained, n_items: int = 1000, seed: int = 42, perplexity: float = 30.0
) -> pd.DataFrame:
    """A 2-D t-SNE map (scikit-learn) of the n_items most-rated items: ITEM_COLUMNS + x, y."""
    from sklearn.manifold import TSNE  # sklearn takes a second to import: only maps need it

    index = most_rated(trained, n_items)
    if not 0 < perplexity < len(index):
        raise ConfigError(f"perplexity must be between 0 and the number of items ({len(index)}), "
                          f"not {perplexity!r}")  # fmt: skip
    xy = TSNE(perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        _item_vectors(trained, index)
    )
    return trained.item_table.loc[index, ITEM_COLUMNS].assign(x=xy[:, 0], y=xy[:, 1])


def tsne_seconds(n_items: int) -> float:
    """About how long tsne_items takes for n_items (Barnes-Hut: ~n log n), as measured on a
    loaded 2-core machine: 1,000 movies in 3 s; 59k would take four or five minutes."""
    return TSNE_SECONDS_PER_N_LOG_N * n_items * math.log(max(n_items, 2))


def _closeness(trained: Trained, of: str, index: int, metric: str) -> torch.Tensor:
    """(n,) cosine similarity (or Euclidean distance) of every row's embedding to row `index`."""
    if metric not in METRICS:
        raise ConfigError(f"metric must be 'cosine' or 'euclidean', not {metric!r}")
    weights, unit = trained.item_vectors if of == "items" else trained.user_vectors
    if metric == "cosine":
        return unit @ unit[index]  # (n,)
    return (weights - weights[index]).norm(dim=1)  # (n,)


def similarities(trained: Trained, key: object, metric: str = "cosine", of: str = "items") -> pd.Series:
    """Cosine similarity (or distance) of one item's (or user's) embedding to every one, itself too."""
    _, table = _table(trained, of)
    lookup = trained.lookup
    index = lookup.item_index(key) if of == "items" else lookup.user_index(key)
    name = "similarity" if metric == "cosine" else "distance"
    return pd.Series(_closeness(trained, of, index, metric)[1:].numpy(), index=table.index, name=name)


def _nearest(trained: Trained, of: str, index: int, n: int, metric: str, min_ratings: int) -> pd.DataFrame:
    """The n rows closest to row `index`, best first, leaving out itself, #na# and rare rows."""
    values = _closeness(trained, of, index, metric)
    closeness = values.clone() if metric == "cosine" else -values  # larger is closer
    closeness[[0, index]] = -torch.inf
    name, table = _table(trained, of)
    if min_ratings > 0:
        closeness[1:][torch.from_numpy(table["n_ratings"].to_numpy() < min_ratings)] = -torch.inf
    top = torch.topk(closeness, min(check_n(n), len(closeness))).indices
    top = top[torch.isfinite(closeness[top])].numpy()
    column = "similarity" if metric == "cosine" else "distance"
    demographics = [c for c in DEMOGRAPHICS if c in table]
    out = table.loc[top].assign(**{column: values[top].numpy()})
    return out[[name, column, "mean_rating", "n_ratings", *demographics]]


def nearest_items(
    trained: Trained, item: object, n: int = 10, metric: str = "cosine", min_ratings: int = 0
) -> pd.DataFrame:
    """The n items closest to `item` in embedding space, best first, itself excluded."""
    return _nearest(trained, "items", trained.lookup.item_index(item), n, metric, min_ratings)


def nearest_users(
    trained: Trained, user: object, n: int = 10, metric: str = "cosine", min_ratings: int = 0
) -> pd.DataFrame:
    """The n users closest to `user` in embedding space, best first, themselves excluded."""
    return _nearest(trained, "users", trained.lookup.user_index(user), n, metric, min_ratings)


def crosstab(
    trained_or_dataset: Trained | Dataset, n: int = 15, fill: bool = False, encoded: Encoded | None = None
) -> pd.DataFrame:
    """Ratings of the n most active users (rows) for the n most-rated items (columns); NaN gaps,
    or gaps filled by the model's predictions with fill=True. encoded: a dataset's encoding by
    title made before (else it is made here)."""
    if fill:
        if not isinstance(trained_or_dataset, Trained):
            raise ConfigError("filling the crosstab's gaps needs a trained model, not only a dataset")
        return crosstab_filled(trained_or_dataset, n)[0]
    if isinstance(trained_or_dataset, Trained):
        encoded, titles = trained_or_dataset.encoded, _titles(trained_or_dataset)
    else:
        encoded = encoded or encode(trained_or_dataset)
        titles = item_titles(trained_or_dataset, encoded)
    return _grid(encoded, titles, n)[0]


def crosstab_filled(trained: Trained, n: int = 15) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(grid, filled): the crosstab with its gaps predicted, and which cells were gaps."""
    grid, users, items = _grid(trained.encoded, _titles(trained), n)
    filled = grid.isna()
    predicted = score_users(trained, users)[:, torch.from_numpy(items)].numpy()
    return grid.mask(filled, predicted), filled


def _titles(trained: Trained) -> np.ndarray:
    return np.concatenate([["#na#"], trained.item_table["title"].to_numpy()])


def _grid(encoded: Encoded, titles: np.ndarray, n: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The crosstab and the user and item indices of its rows and columns."""
    users, items = encoded.user_idx.numpy(), encoded.item_idx.numpy()
    top, keep = [], None
    for index, size in ((encoded.user_idx, encoded.n_users), (encoded.item_idx, encoded.n_items)):
        counts = torch.bincount(index, minlength=size).numpy()[1:]  # reads the int32 index as it is
        top.append(np.argsort(-counts, kind="stable")[: check_n(n)] + 1)
        is_top = np.zeros(size, dtype=bool)
        is_top[top[-1]] = True
        keep = is_top[index.numpy()] if keep is None else keep & is_top[index.numpy()]  # a gather, not isin
    cells = pd.DataFrame({"u": users[keep], "i": items[keep], "r": encoded.rating.numpy()[keep]})
    grid = cells.pivot_table(index="u", columns="i", values="r", aggfunc="mean")
    grid = grid.reindex(index=top[0], columns=top[1]).astype("float64")
    grid.index = pd.Index(encoded.users[top[0]], name="user")
    grid.columns = pd.Index(titles[top[1]], name="title")
    return grid, top[0], top[1]

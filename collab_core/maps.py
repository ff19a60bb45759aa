"""The movie map read for an analyst: what each principal axis means (its strongest correlations
with the genre flags and the release year), how well each genre can be read from the embeddings
(cross-validated, against shuffled labels), and where a user sits on the map.

A user on the map (dot-product models only): the score of movie m is u·m (+ biases), and a movie on
the map is m ≈ m̄ + Σⱼ pcⱼ vⱼ (vⱼ the components), so u·m ≈ u·m̄ + Σⱼ pcⱼ (u·vⱼ). The user's
coordinates u·vⱼ are therefore a direction, not a place: the further a movie lies along it, the
higher this user scores it (up to the biases and what lies off the map's axes). The NN models'
user and movie embeddings are separate spaces, of different widths, that meet only inside the MLP:
no direction among the movies means anything for a user, so they are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from collab_core.analysis import PCAResult, most_rated
from collab_core.errors import ConfigError, check_n
from collab_core.foldin import UserVector, vector_scores
from collab_core.learner import Trained
from collab_core.nets import MODELS, DotModel
from collab_core.ranking import rated_items, top_items

YEAR = "year"  # the year's feature name among the genre flags; "newer" in a label


@dataclass(frozen=True, eq=False)
class AxisLabel:
    """What one principal component means, from the movies on the map."""

    component: int  # 1-based
    label: str  # e.g. "PC1: +Drama +Film-Noir / -Action -Children's"
    correlations: pd.Series  # genre flag (and "year") -> Pearson r with the component, strongest first


def genre_flags(genres: pd.Series) -> pd.DataFrame:
    """One 0/1 column per genre ("A|B" strings), in name order; an empty string flags nothing."""
    flags = genres.fillna("").str.get_dummies(sep="|")
    return flags.drop(columns="", errors="ignore").sort_index(axis=1)


def axis_labels(pca: PCAResult, n: int = 2, min_abs: float = 0.1) -> tuple[AxisLabel, ...]:
    """Each component labelled by the n genres (or the year) most correlated with it on each side,
    those with |r| of at least min_abs; "+newer" marks the end where the newer films lie."""
    coords = pca.coords
    features = genre_flags(coords["genres"]).astype("float64")
    features[YEAR] = coords["year"].astype("Float64").astype("float64")
    labels = []
    for j in range(1, len(pca.explained_variance_ratio) + 1):
        r = features.corrwith(coords[f"pc{j}"]).dropna()
        r = r.iloc[np.argsort(-r.abs().to_numpy(), kind="stable")]
        high = r[r >= min_abs].sort_values(ascending=False, kind="stable").index[: check_n(n)]
        low = r[r <= -min_abs].sort_values(kind="stable").index[:n]
        sides = [" ".join(f"{sign}{_name(f)}" for f in side) for sign, side in (("+", high), ("-", low))]
        text = " / ".join(side for side in sides if side) or f"no genre or year with |r| >= {min_abs:g}"
        labels.append(AxisLabel(j, f"PC{j}: {text}", r))
    return tuple(labels)


def _name(feature: str) -> str:
    return "newer" if feature == YEAR else feature


def genre_readability(
    trained: Trained,
    n_items: int = 1000,
    folds: int = 5,
    seed: int = 42,
    min_movies: int = 20,
) -> pd.DataFrame:
    """How well each genre can be predicted from the movie embeddings alone: logistic regression
    (standardised inputs), stratified k-fold accuracy and ROC AUC, beside the same with the labels
    shuffled (what chance gives) and the majority class's share. Movies: the n_items most rated;
    genres with fewer than min_movies of them (or all but that few) are left out.

    Index: genre; movies, majority, accuracy, shuffled_accuracy, auc, shuffled_auc; best AUC first."""
    from sklearn.linear_model import LogisticRegression  # sklearn takes a second to import
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    index = most_rated(trained, n_items)
    x = trained.item_vectors[0][torch.from_numpy(index)].numpy()  # (N, F)
    flags = genre_flags(trained.item_table.loc[index, "genres"])
    rng = np.random.default_rng(seed)
    rows = {}
    for genre in flags.columns:
        y = flags[genre].to_numpy()
        if min(y.sum(), len(y) - y.sum()) < max(min_movies, folds):
            continue
        scores = []
        for labels in (y, rng.permutation(y)):
            cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            found = cross_validate(model, x, labels, cv=cv, scoring=("accuracy", "roc_auc"))
            scores += [found["test_accuracy"].mean(), found["test_roc_auc"].mean()]
        accuracy, auc, shuffled_accuracy, shuffled_auc = scores
        rows[genre] = {
            "movies": int(y.sum()),
            "majority": max(y.mean(), 1 - y.mean()),
            "accuracy": accuracy,
            "shuffled_accuracy": shuffled_accuracy,
            "auc": auc,
            "shuffled_auc": shuffled_auc,
        }
    if not rows:
        raise ConfigError(f"no genre has {min_movies} movies (and as many without it) among the "
                          f"{len(index)} most rated; lower min_movies")  # fmt: skip
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("genre")
    return table.sort_values("auc", ascending=False, kind="stable")


@dataclass(frozen=True, eq=False)
class UserOnMap:
    """A user's direction on the movie map (module docstring), with the movies to mark."""

    user: object  # raw user id, or None for a user not in the table
    direction: np.ndarray  # (k,) u·vⱼ: the user's coordinates in the map's basis
    share: float  # share of |u|² inside the map's k components (1: the map shows all of u)
    fit: float  # R² of the user's u·m over the mapped movies by (their coordinates · direction)
    points: pd.DataFrame  # index: item; title, role ("rated" or "recommended"), rating, pc1..pck


def user_on_map(trained: Trained, user: object, pca: PCAResult, n: int = 10) -> UserOnMap:
    """User `user` (raw id) on the map `pca` (of analysis.pca_items on this model): their direction,
    the movies they rated and their top n recommendations."""
    _check_dot(trained)
    u = trained.lookup.user_index(user)
    rows = trained.user_rows(u)
    rated = dict(zip(rated_items(trained, u).tolist(), trained.encoded.rating.numpy()[rows].tolist()))
    return _on_map(trained, UserVector.of(trained.model, u), pca, rated, n, trained.lookup.user_id(u))


def vector_on_map(
    trained: Trained, vector: UserVector, pca: PCAResult, ratings: Mapping[object, float], n: int = 10
) -> UserOnMap:
    """A user vector not in the table (e.g. folded in from `ratings`, {title or id: rating}) on the map."""
    _check_dot(trained)
    rated = dict(zip(trained.lookup.item_indices(ratings).tolist(), map(float, ratings.values())))
    return _on_map(trained, vector, pca, rated, n, None)


def _check_dot(trained: Trained) -> None:
    if not isinstance(trained.model, DotModel):
        users, items = trained.model.factors()
        dot = ", ".join(key for key, model in MODELS.items() if issubclass(model, DotModel))
        raise ConfigError(
            f"model {trained.config.model!r} cannot place a user on the movie map: its user and movie "
            f"embeddings ({users.shape[1]} and {items.shape[1]} wide) are separate spaces that meet only "
            f"inside its neural network, so no direction among the movies means anything for a user; "
            f"the dot-product models ({dot}) score u·m, so users and movies share their space"
        )


def _on_map(
    trained: Trained, vector: UserVector, pca: PCAResult, rated: dict[int, float], n: int, user: object
) -> UserOnMap:
    components = np.asarray(pca.components, dtype=np.float64)  # (k, F)
    weights = trained.item_vectors[0].double().numpy()  # (n_items, F)
    if components.shape[1] != weights.shape[1]:
        raise ConfigError(f"the map's components are {components.shape[1]} wide but model "
                          f"{trained.config.model!r} has {weights.shape[1]} factors")  # fmt: skip
    u = vector.factors.double().cpu().numpy()  # (F,)
    direction = components @ u  # (k,)
    mapped = pca.coords.index.to_numpy()
    mean = weights[mapped].mean(axis=0)  # the map's centre, as PCA took it
    taste, along = weights[mapped] @ u, pca.coords[[f"pc{j + 1}" for j in range(len(direction))]] @ direction
    fit = float(np.corrcoef(taste, along)[0, 1] ** 2) if np.std(along) > 0 and np.std(taste) > 0 else 0.0
    recommended = top_items(trained, vector_scores(trained, vector), np.fromiter(rated, np.int64), check_n(n))
    items = np.concatenate([np.fromiter(rated, np.int64, len(rated)), recommended.index.to_numpy()])
    xy = (weights[items] - mean) @ components.T  # (len(items), k)
    points = pd.DataFrame(
        {
            "title": trained.item_table["title"].to_numpy()[items - 1],
            "role": ["rated"] * len(rated) + ["recommended"] * len(recommended),
            "rating": [*rated.values(), *[np.nan] * len(recommended)],
            **{f"pc{j + 1}": xy[:, j] for j in range(len(direction))},
        },
        index=pd.Index(items, name="item"),
    )
    share = float(direction @ direction / max(u @ u, 1e-30))
    return UserOnMap(user, direction, share, fit, points)


# ---- map tools (issue 13): one genre against the rest, a movie's neighbours on the map, UMAP ----------

UMAP_METRICS = ("cosine", "euclidean", "correlation", "manhattan")
UMAP_JIT_SECONDS = 40.0  # a process's first UMAP compiles numba's kernels: 27-84 s measured at load 10-18
UMAP_SECONDS_PER_ITEM = 8.0e-3  # then about linear in the movies: 1,000 in 4-13 s at load 10-18, 50 factors


class _Umap:
    compiled = False  # True once this process has run a UMAP: numba's kernels are compiled


def in_genre(genres: pd.Series, genre: str) -> pd.Series:
    """True for each movie ("A|B" genre strings) that has `genre` among its genres: a movie with
    several genres counts in each of them."""
    flags = genre_flags(genres)
    if genre not in flags:
        return pd.Series(False, index=genres.index, name=genre)
    return flags[genre].astype(bool).rename(genre)


def genres_of(trained: Trained) -> list[str]:
    """Every genre named in the item table, in name order (genre_flags' columns), read from its
    distinct genre strings (25M: 1,600 of them; a flag per movie took 0.06-0.19 s)."""
    combos = trained.item_table["genres"].dropna().unique()
    return sorted({genre for combo in combos for genre in str(combo).split("|")} - {""})


def map_neighbours(trained: Trained, item: object, candidates: np.ndarray, k: int = 10) -> pd.DataFrame:
    """The k movies among `candidates` (item indices, e.g. the mapped ones) nearest to `item` (title
    or id) by cosine similarity of their full embeddings (not of their 2-D map coordinates), best
    first, the movie itself left out. Index: item; title, similarity, mean_rating, n_ratings."""
    index = trained.lookup.item_index(item)
    unit = trained.item_vectors[1]  # (n_items, F), rows of length 1
    pool = np.asarray(candidates, dtype=np.int64)
    pool = pool[(pool != index) & (pool > 0)]
    similarity = (unit[torch.from_numpy(pool)] @ unit[index]).numpy()  # (len(pool),)
    best = np.argsort(-similarity, kind="stable")[: check_n(k, "k")]
    table = trained.item_table.loc[pool[best], ["title", "mean_rating", "n_ratings"]]
    return table.assign(similarity=similarity[best])[["title", "similarity", "mean_rating", "n_ratings"]]


def pca_place(trained: Trained, pca: PCAResult, items: np.ndarray) -> pd.DataFrame:
    """The rows of pca.coords for these items, the ones off the map placed by the same projection
    ((m - mean) · components, the mean of the mapped movies): a linear map can place any movie."""
    items = np.asarray(items, dtype=np.int64)
    missing = items[~np.isin(items, pca.coords.index.to_numpy())]
    if len(missing) == 0:
        return pca.coords.loc[items]
    weights = trained.item_vectors[0].double().numpy()  # (n_items, F)
    mean = weights[pca.coords.index.to_numpy()].mean(axis=0)
    xy = (weights[missing] - mean) @ np.asarray(pca.components, dtype=np.float64).T  # (M, k)
    extra = trained.item_table.loc[missing, pca.coords.columns[:5]].assign(
        **{f"pc{j + 1}": xy[:, j] for j in range(xy.shape[1])}
    )
    return pd.concat([pca.coords, extra]).loc[items]


def umap_items(
    trained: Trained,
    n_items: int = 1000,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    seed: int = 42,
) -> pd.DataFrame:
    """A 2-D UMAP (umap-learn) of the n_items most-rated movies' embeddings: the item table's
    title, year, genres, mean_rating, n_ratings + x, y. Seeded, so a shared link redraws the same map."""
    index = most_rated(trained, n_items)
    if not 2 <= n_neighbors < len(index):
        raise ConfigError(f"n_neighbors must be from 2 to one less than the movies mapped ({len(index)}), "
                          f"not {n_neighbors!r}")  # fmt: skip
    if not 0.0 <= min_dist <= 1.0:
        raise ConfigError(f"min_dist must be between 0 and 1, not {min_dist!r}")
    if metric not in UMAP_METRICS:
        raise ConfigError(f"metric must be one of {', '.join(UMAP_METRICS)}, not {metric!r}")
    try:
        import umap  # numba's import and kernels cost seconds: only a UMAP pays for them
    except ImportError:
        raise ConfigError("UMAP needs the umap-learn package: pip install umap-learn") from None
    x = trained.item_vectors[0][torch.from_numpy(index)].numpy()  # (N, F)
    reducer = umap.UMAP(
        n_neighbors=n_neighbors, min_dist=min_dist, metric=metric, random_state=seed, n_jobs=1
    )  # a seed makes umap-learn single-threaded anyway; saying so silences its warning
    xy = reducer.fit_transform(x)  # (N, 2)
    _Umap.compiled = True
    return trained.item_table.loc[index, ["title", "year", "genres", "mean_rating", "n_ratings"]].assign(
        x=xy[:, 0], y=xy[:, 1]
    )


def umap_compiled() -> bool:
    """Whether this process has run a UMAP already (its numba kernels are compiled)."""
    return _Umap.compiled


def umap_seconds(n_items: int, first: bool | None = None) -> float:
    """About how long umap_items takes for n_items on a loaded 2-core machine (bench/umap_bench.py);
    first: whether it is the process's first UMAP, which also compiles numba's kernels (None: as it is)."""
    first = not _Umap.compiled if first is None else first
    return UMAP_JIT_SECONDS * first + UMAP_SECONDS_PER_ITEM * n_items

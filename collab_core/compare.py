"""Two trained models of one dataset side by side: did they learn the same thing?

- metrics on the same validation rows (MSE, RMSE, MAE; precision, recall and NDCG at k);
- the movie maps aligned: both centred and scaled to unit Frobenius norm, B rotated onto A by
  orthogonal Procrustes (min ‖A − B R‖ over orthogonal R); the residual ‖A − B R‖ is the alignment
  error (0 for the same space up to a rotation, at most √2). Embeddings of different widths are
  first reduced to the same number of principal components;
- neighbourhood stability: per movie, the Jaccard overlap |N_A ∩ N_B| / |N_A ∪ N_B| of its k
  nearest movies by cosine in the full embedding spaces of A and B;
- where their predictions differ most, and the movie biases of A against B.

Rarely rated movies keep nearly their random initial vectors, so neighbourhoods and the alignment
are taken over the movies with at least `min_ratings` ratings (20 by default), and neighbours are
looked for among them only. Beyond a few thousand movies or a million validation rows, seeded
samples are taken; each result says what it was computed on.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from collab_core.analysis import learned_biases
from collab_core.errors import ConfigError, DataError, check_n
from collab_core.learner import Trained
from collab_core.nets import DotModel
from collab_core.ranking import ranking_metrics
from collab_core.train import predict

K = 10  # neighbours per movie, and the cut-off of the ranking metrics
MIN_RATINGS = 20  # movies with fewer ratings are left out of the maps, neighbourhoods and disagreements
MAX_MOVIES = 3000  # neighbourhoods of at most this many movies (a seeded sample beyond)
MAX_ROWS = 1_000_000  # validation rows scored per model (a seeded sample beyond)
MAX_USERS = 2000  # users ranked for precision/recall/NDCG (a seeded sample beyond)
SCORE_BUDGET = {"dot": 300_000_000, "nn": 2_000_000}  # (user, movie) scores per ranking: an NN scores
# each pair by a forward pass through its MLP (ml-100k's 941 x 1,665 fit; at 25M, 100 users do)
N_UNRATED = 20_000  # unrated (user, movie) pairs drawn for the disagreements
MAX_POINTS = 5000  # movies on each aligned map (the most-rated)
CHUNK = 1024  # movies whose similarities to every candidate are held at once


def check_comparable(a: Trained, b: Trained) -> None:
    """DataError unless both models were trained on the same data (same fingerprint)."""
    da, db = a.record.data, b.record.data
    if da.fingerprint != db.fingerprint:
        raise DataError(
            f"model {b.key} was trained on {db.name} (data {db.fingerprint[:8]}) and model {a.key} on "
            f"{da.name} (data {da.fingerprint[:8]}): compare two models of the same dataset"
        )


def shared_movies(a: Trained, b: Trained, min_ratings: int = MIN_RATINGS) -> pd.DataFrame:
    """The movies both models embed, with at least min_ratings ratings, most-rated first.

    Index: A's item index; item_b (B's index of the same movie), title, year, genres, mean_rating,
    n_ratings. Models keyed alike share their indices; a model keyed by title and one keyed by id
    are matched by title (titles that several ids share are left out)."""
    check_comparable(a, b)
    table = a.item_table
    if a.encoded.item_key == b.encoded.item_key:
        item_b = table.index.to_numpy()
    else:
        titles_b = b.item_table["title"]
        unique_b = titles_b[~titles_b.duplicated(keep=False)]
        by_title = pd.Series(unique_b.index.to_numpy(), index=unique_b.to_numpy())
        titles_a = table["title"]
        item_b = by_title.reindex(titles_a.where(~titles_a.duplicated(keep=False))).to_numpy()
    out = table.assign(item_b=item_b).dropna(subset=["item_b"])
    out = out.loc[out["n_ratings"] >= min_ratings]
    out = out.astype({"item_b": np.int64}).sort_values("n_ratings", ascending=False, kind="stable")
    return out[["item_b", "title", "year", "genres", "mean_rating", "n_ratings"]]


def _enough(movies: pd.DataFrame, needed: int, min_ratings: int) -> None:
    if len(movies) < needed:
        raise ConfigError(
            f"only {len(movies)} movies have at least {min_ratings} ratings in both models; "
            f"{needed} are needed: lower min_ratings"
        )


# ---- metrics on the same validation rows -------------------------------------------------------------


@dataclass(frozen=True)
class MetricsPair:
    table: pd.DataFrame  # index: metric name; columns a, b, difference (b - a)
    n_rows: int  # validation ratings scored (the rows both models held out)
    n_users: int  # users ranked for the ranking metrics
    same_split: bool  # both models held out the same rows
    note: str  # what the figures were computed on


def common_validation(a: Trained, b: Trained) -> tuple[np.ndarray, bool]:
    """The rows of the ratings that neither model trained on, and whether the splits are the same."""
    check_comparable(a, b)
    va, vb = np.sort(a.valid_rows), np.sort(b.valid_rows)
    if np.array_equal(va, vb):
        return va, True
    rows = np.intersect1d(va, vb, assume_unique=True)
    if len(rows) == 0:
        raise ConfigError(
            f"no rating is held out by both models ({a.config.split} vs {b.config.split} splits): "
            "their metrics cannot be compared on the same rows"
        )
    return rows, False


def side_by_side_metrics(
    a: Trained, b: Trained, k: int = K, threshold: float = 4.0, seed: int = 0
) -> MetricsPair:
    """MSE, RMSE, MAE and precision/recall/NDCG at k of both models on the same held-out rows."""
    k = check_n(k, "k")
    rows, same = common_validation(a, b)
    rng = np.random.default_rng(seed)
    scored = np.sort(rng.choice(rows, MAX_ROWS, replace=False)) if len(rows) > MAX_ROWS else rows
    users = a.encoded.user_idx.numpy()[rows]
    ranked_users = all_users = np.unique(users)
    budget = min(SCORE_BUDGET["dot" if isinstance(m.model, DotModel) else "nn"] for m in (a, b))
    most = min(MAX_USERS, max(100, budget // a.encoded.n_items))
    if len(ranked_users) > most:
        ranked_users = np.sort(rng.choice(ranked_users, most, replace=False))
    ranked_rows = rows[np.isin(users, ranked_users)]
    columns = {}
    for name, model in (("a", a), ("b", b)):
        u, i, r = model.tensors(scored)
        err = predict(model.model, u, i).cpu().double() - r.double()
        mse = float((err * err).mean())
        ranks = ranking_metrics(dataclasses.replace(model, valid_rows=ranked_rows), k, threshold)
        columns[name] = {
            "MSE": mse,
            "RMSE": math.sqrt(mse),
            "MAE": float(err.abs().mean()),
            **{m: ranks[m] for m in (f"precision@{k}", f"recall@{k}", f"ndcg@{k}")},
        }
    table = pd.DataFrame(columns).rename(index=lambda m: m.replace("ndcg", "NDCG"))
    table["difference"] = table["b"] - table["a"]
    how = "the same validation split" if same else "the ratings both splits held out"
    note = f"{len(scored):,} ratings of {how}"
    if len(scored) < len(rows):
        note += f" (a sample of {len(rows):,})"
    note += f"; top-{k} ranking of {len(ranked_users):,} users"
    if len(ranked_users) < len(all_users):
        note += f" (a sample of {len(all_users):,})"
    note += f", relevant = held-out rating ≥ {threshold:g}"
    return MetricsPair(table, len(scored), len(ranked_users), same, note)


# ---- the maps aligned ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    coords: pd.DataFrame  # index: A's item index; title, ..., n_ratings, ax, ay, bx, by, moved
    error: float  # ‖A − B R‖_F, both centred and of unit norm: 0 = the same space up to rotation
    n_components: int  # dimensions aligned
    widths: tuple[int, int]  # embedding widths of A and B
    n_movies: int  # movies the rotation was fitted on
    note: str


def _components(x: np.ndarray, k: int) -> np.ndarray:
    """x (n, F) centred, projected on its first k principal axes, scaled to unit Frobenius norm."""
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    out = u[:, :k] * s[:k]  # (n, k): with k = F a rotation of x, nothing lost
    return out / max(np.linalg.norm(out), 1e-12)


def _vectors(trained: Trained, items: np.ndarray) -> np.ndarray:
    weights, _ = trained.item_vectors
    return weights[torch.tensor(items, dtype=torch.int64)].double().numpy()  # (n, F)


def align_maps(a: Trained, b: Trained, min_ratings: int = MIN_RATINGS) -> Alignment:
    """B's movie map rotated onto A's (orthogonal Procrustes on the shared movies), both drawn in
    A's first two principal axes; `moved` is each movie's distance between the two after it."""
    from scipy.linalg import orthogonal_procrustes  # scipy comes with scikit-learn; only this needs it

    movies = shared_movies(a, b, min_ratings)
    _enough(movies, 3, min_ratings)
    xa, xb = _vectors(a, movies.index.to_numpy()), _vectors(b, movies["item_b"].to_numpy())
    widths = (xa.shape[1], xb.shape[1])
    k = min(*widths, len(movies) - 1)
    pa, pb = _components(xa, k), _components(xb, k)
    rotation, _ = orthogonal_procrustes(pb, pa)  # (k, k): pb @ rotation ≈ pa
    pb = pb @ rotation
    error = float(np.linalg.norm(pa - pb))
    scale = math.sqrt(len(movies))  # coordinates in units of the map's root-mean-square radius
    shown = movies.iloc[:MAX_POINTS].drop(columns="item_b")
    n = len(shown)
    coords = shown.assign(
        ax=scale * pa[:n, 0], ay=scale * pa[:n, 1], bx=scale * pb[:n, 0], by=scale * pb[:n, 1],
        moved=scale * np.linalg.norm(pa[:n] - pb[:n], axis=1),
    )  # fmt: skip
    if widths[0] == widths[1]:
        note = f"{widths[0]}-dimensional embeddings aligned as they are"
    else:
        note = (f"widths differ ({widths[0]} vs {widths[1]}): the first {k} principal components of "
                "each were aligned")  # fmt: skip
    note += f", on the {len(movies):,} movies with at least {min_ratings} ratings"
    if n < len(movies):
        note += f"; the maps show the {n:,} most-rated"
    return Alignment(coords, error, k, widths, len(movies), note)


# ---- neighbourhood stability --------------------------------------------------------------------------


@dataclass(frozen=True)
class Stability:
    movies: pd.DataFrame  # index: A's item index; title, n_ratings, shared, jaccard, neighbours_a/_b
    mean: float  # mean Jaccard overlap
    histogram: pd.Series  # index: neighbours shared (0..k) -> movies
    k: int
    n_candidates: int  # movies neighbours were looked for among
    note: str


def _top_k(unit: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(q, k) indices of each query row's k most cosine-similar rows of unit, itself excluded."""
    out = []
    for start in range(0, len(queries), CHUNK):
        q = queries[start : start + CHUNK]
        sims = torch.from_numpy(unit[q] @ unit.T)  # (c, n)
        sims[torch.arange(len(q)), torch.from_numpy(q)] = -math.inf
        out.append(torch.topk(sims, k).indices.numpy())
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def neighbour_stability(
    a: Trained, b: Trained, k: int = K, min_ratings: int = MIN_RATINGS, seed: int = 0
) -> Stability:
    """Per movie, the Jaccard overlap of its k cosine neighbours in A and in B (full embeddings)."""
    k = check_n(k, "k")
    movies = shared_movies(a, b, min_ratings)
    _enough(movies, k + 1, min_ratings)
    n = len(movies)
    queries = np.arange(n)
    if n > MAX_MOVIES:
        queries = np.sort(np.random.default_rng(seed).choice(n, MAX_MOVIES, replace=False))
    tops = []
    for model, items in ((a, movies.index.to_numpy()), (b, movies["item_b"].to_numpy())):
        x = _vectors(model, items)
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        tops.append(_top_k(unit, queries, k))
    top_a, top_b = tops
    shared = (top_a[:, :, None] == top_b[:, None, :]).any(axis=2).sum(axis=1)  # (q,)
    titles = movies["title"].to_numpy()
    out = movies.iloc[queries][["title", "n_ratings"]].assign(
        shared=shared,
        jaccard=shared / (2 * k - shared),
        neighbours_a=[list(t) for t in titles[top_a]],
        neighbours_b=[list(t) for t in titles[top_b]],
    )
    histogram = pd.Series(np.bincount(shared, minlength=k + 1), name="movies").rename_axis("shared")
    note = f"top-{k} cosine neighbours among the {n:,} movies with at least {min_ratings} ratings"
    if len(queries) < n:
        note += f", for a sample of {len(queries):,} of them"
    return Stability(out, float(out["jaccard"].mean()), histogram, k, n, note)


def most_changed(stability: Stability, n: int = 20) -> pd.DataFrame:
    """The n movies whose neighbourhoods changed most (lowest overlap; the most-rated first among
    ties); only movies whose neighbours changed at all."""
    changed = stability.movies.loc[stability.movies["shared"] < stability.k]
    return changed.sort_values(["jaccard", "n_ratings"], ascending=[True, False], kind="stable").head(
        check_n(n)
    )


# ---- disagreements and biases --------------------------------------------------------------------------


def disagreements(
    a: Trained, b: Trained, n: int = 20, min_ratings: int = MIN_RATINGS, seed: int = 0
) -> pd.DataFrame:
    """The n (user, movie) pairs whose predictions differ most: over the held-out ratings both models
    share and a sample of unrated pairs, movies with at least min_ratings ratings.

    Columns: user, title, a, b, difference (b - a), actual (NaN where unrated), held_out."""
    n = check_n(n)
    movies = shared_movies(a, b, min_ratings)
    _enough(movies, 1, min_ratings)
    to_b = np.full(a.encoded.n_items, -1, dtype=np.int64)
    to_b[movies.index.to_numpy()] = movies["item_b"].to_numpy()
    rng = np.random.default_rng(seed)
    rows, _ = common_validation(a, b)
    if len(rows) > MAX_ROWS:
        rows = rng.choice(rows, MAX_ROWS, replace=False)
    users_all, items_all = a.encoded.user_idx.numpy(), a.encoded.item_idx.numpy()
    rows = rows[to_b[items_all[rows]] >= 0]
    # unrated pairs: uniform users x uniform eligible movies, rated ones and repeats dropped
    n_items = a.encoded.n_items
    draw_u = rng.integers(1, a.encoded.n_users, N_UNRATED)
    draw_i = rng.choice(movies.index.to_numpy(), N_UNRATED)
    codes = np.unique(draw_u.astype(np.int64) * n_items + draw_i)  # sorted
    codes = codes[~_found_in(codes, users_all.astype(np.int64) * n_items + items_all)]
    users = np.concatenate([users_all[rows], codes // n_items]).astype(np.int64)
    items = np.concatenate([items_all[rows], codes % n_items]).astype(np.int64)
    actual = np.concatenate([a.encoded.rating.numpy()[rows], np.full(len(codes), np.nan, np.float32)])
    u = torch.from_numpy(users)
    pred_a = predict(a.model, u, torch.from_numpy(items)).cpu().numpy()
    pred_b = predict(b.model, u, torch.from_numpy(to_b[items])).cpu().numpy()
    gap = np.abs(pred_b - pred_a)
    top = np.argsort(-gap, kind="stable")[: min(n, len(gap))]
    return pd.DataFrame(
        {
            "user": a.user_table["user"].to_numpy()[users[top] - 1],
            "title": a.item_table["title"].to_numpy()[items[top] - 1],
            "a": pred_a[top],
            "b": pred_b[top],
            "difference": (pred_b - pred_a)[top],
            "actual": actual[top],
            "held_out": top < len(rows),
        }
    )


def _found_in(few: np.ndarray, many: np.ndarray) -> np.ndarray:
    """Which of the sorted values `few` occur in `many`: a binary search of each of many into few,
    without sorting many (np.isin sorts both: 18 s for 4M ratings on a busy machine, this 0.3 s)."""
    found = np.zeros(len(few), dtype=bool)
    if len(few) == 0:
        return found
    at = np.minimum(np.searchsorted(few, many), len(few) - 1)
    found[at[few[at] == many]] = True
    return found


def bias_pairs(a: Trained, b: Trained, min_ratings: int = 0) -> pd.DataFrame:
    """Index: A's item index; title, bias_a, bias_b, mean_rating, n_ratings of the shared movies
    (at most MAX_POINTS, the most-rated); ConfigError if a model has no biases."""
    movies = shared_movies(a, b, min_ratings).iloc[:MAX_POINTS]
    biases = []
    for trained, items in ((a, movies.index), (b, movies["item_b"])):
        item_biases = learned_biases(trained)[1].cpu()
        biases.append(item_biases[torch.tensor(items.to_numpy(), dtype=torch.int64)].numpy())
    return movies.assign(bias_a=biases[0], bias_b=biases[1])[
        ["title", "bias_a", "bias_b", "mean_rating", "n_ratings"]
    ]


# ---- everything at once (the command line) -------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    a: Trained
    b: Trained
    metrics: MetricsPair
    alignment: Alignment
    stability: Stability
    disagreements: pd.DataFrame
    biases: pd.DataFrame | None  # None unless both models have biases
    seconds: float

    def to_dict(self, n: int = 20) -> dict:
        """The JSON the command line prints: plain lists and numbers (NaN -> None)."""
        changed = most_changed(self.stability, n)[["title", "n_ratings", "jaccard", "neighbours_a",
                                                   "neighbours_b"]]  # fmt: skip
        biases = None
        if self.biases is not None and len(self.biases) > 1:
            biases = float(np.corrcoef(self.biases["bias_a"], self.biases["bias_b"])[0, 1])
        return {
            "a": self.a.key,
            "b": self.b.key,
            "models": {"a": self.a.record.label, "b": self.b.record.label},
            "metrics": {m: row for m, row in self.metrics.table[["a", "b"]].T.to_dict().items()},
            "metrics_note": self.metrics.note,
            "loss": {
                side: {"train": list(t.record.history.train_loss), "valid": list(t.record.history.valid_loss)}
                for side, t in (("a", self.a), ("b", self.b))
            },
            "neighbour_overlap": self.stability.mean,
            "neighbour_histogram": self.stability.histogram.tolist(),
            "k": self.stability.k,
            "neighbours_note": self.stability.note,
            "alignment_error": self.alignment.error,
            "aligned_components": self.alignment.n_components,
            "alignment_note": self.alignment.note,
            "most_changed": _records(changed),
            "disagreements": _records(self.disagreements),
            "bias_correlation": biases,
            "seconds": self.seconds,
        }


def _records(table: pd.DataFrame) -> list[dict]:
    """Rows as dicts of plain values, NaN as None."""
    out = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    return [{k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()} for row in out]


def compare(
    a: Trained, b: Trained, k: int = K, min_ratings: int = MIN_RATINGS, n: int = 20, seed: int = 0
) -> Comparison:
    """Every comparison of two models of one dataset (DataError if their data differ)."""
    start = time.perf_counter()
    check_comparable(a, b)
    both_biased = a.model.biases() is not None and b.model.biases() is not None
    return Comparison(
        a,
        b,
        side_by_side_metrics(a, b, k, seed=seed),
        align_maps(a, b, min_ratings),
        neighbour_stability(a, b, k, min_ratings, seed),
        disagreements(a, b, n, min_ratings, seed),
        bias_pairs(a, b) if both_biased else None,
        time.perf_counter() - start,
    )

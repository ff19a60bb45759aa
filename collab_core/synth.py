"""Synthetic MovieLens-shaped data: `python -m collab_core synth OUT` writes ratings.csv and movies.csv.

Defaults are MovieLens 25M's shape (162,541 users, 59,047 movies, 25,000,095 ratings). Item
popularity and user activity follow power laws (every user has at least 20 ratings, as in
MovieLens); a rating is a latent-factor model plus biases plus noise, rounded to half stars.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from collab_core.data import ML100K_GENRES
from collab_core.errors import ConfigError


@dataclass(frozen=True)
class SynthSpec:
    n_users: int = 162_541  # MovieLens 25M's shape
    n_items: int = 59_047
    n_ratings: int = 25_000_095
    n_factors: int = 8  # rank of the true taste model
    min_per_user: int = 20  # as MovieLens: no user with fewer ratings
    seed: int = 0


def synth_ratings(spec: SynthSpec) -> pd.DataFrame:
    """A ratings table (user, item, rating, timestamp) with no duplicate (user, item) pairs."""
    if spec.n_ratings > spec.n_users * spec.n_items // 4 or spec.n_ratings < spec.n_users * spec.min_per_user:
        raise ConfigError("n_ratings must lie between n_users * min_per_user and a quarter of all pairs")
    rng = np.random.default_rng(spec.seed)
    # activity: each user's count, power-law above the minimum, summing exactly to n_ratings
    extra = rng.pareto(1.2, spec.n_users) + 1e-3
    extra = extra / extra.sum() * (spec.n_ratings - spec.n_users * spec.min_per_user)
    cap = spec.n_items // 2
    counts = np.minimum(spec.min_per_user + np.floor(extra).astype(np.int64), cap)
    while (short := spec.n_ratings - int(counts.sum())) > 0:  # hand out what rounding and the cap left
        room = np.flatnonzero(counts < cap)
        counts[room[np.argsort(-extra[room])][:short]] += 1
    # popularity: Zipf-like over a random order of the items
    popularity = 1.0 / (np.arange(spec.n_items) + 10.0) ** 1.1
    popularity = popularity[rng.permutation(spec.n_items)]
    cdf = np.cumsum(popularity / popularity.sum())
    users = np.repeat(np.arange(spec.n_users, dtype=np.int64), counts)
    items = np.minimum(np.searchsorted(cdf, rng.random(len(users))), spec.n_items - 1)
    # redraw the pairs a user drew twice until every pair is unique
    for _ in range(50):
        key = users * spec.n_items + items
        order = np.argsort(key, kind="stable")
        dup = np.zeros(len(key), dtype=bool)
        dup[order[1:]] = key[order[1:]] == key[order[:-1]]
        if not dup.any():
            break
        items[dup] = rng.integers(0, spec.n_items, int(dup.sum()))
    # ratings: mean + biases + taste, plus noise, rounded to half stars in 0.5..5
    user_f = rng.normal(0, 0.5, (spec.n_users, spec.n_factors)).astype(np.float32)
    item_f = rng.normal(0, 0.5, (spec.n_items, spec.n_factors)).astype(np.float32)
    user_b = rng.normal(0, 0.4, spec.n_users).astype(np.float32)
    item_b = rng.normal(0, 0.5, spec.n_items).astype(np.float32)
    rating = np.empty(len(users), dtype=np.float32)
    for s in range(0, len(users), 2_000_000):  # in chunks: (chunk, F) temporaries stay small
        u, i = users[s : s + 2_000_000], items[s : s + 2_000_000]
        rating[s : s + len(u)] = 3.5 + user_b[u] + item_b[i] + np.einsum("bf,bf->b", user_f[u], item_f[i])
    rating += rng.normal(0, 0.5, len(rating)).astype(np.float32)
    rating = np.clip(np.round(rating * 2) / 2, 0.5, 5.0)
    timestamp = rng.integers(789_652_009, 1_574_327_703, len(users))  # MovieLens 25M's span
    return pd.DataFrame({"userId": users + 1, "movieId": items + 1, "rating": rating, "timestamp": timestamp})


def synth_movies(spec: SynthSpec) -> pd.DataFrame:
    rng = np.random.default_rng(spec.seed + 1)
    years = rng.integers(1920, 2020, spec.n_items)
    genres = np.array(ML100K_GENRES[1:])
    picks = rng.random((spec.n_items, len(genres))) < 0.12
    return pd.DataFrame(
        {
            "movieId": np.arange(1, spec.n_items + 1),
            "title": [f"Movie {i} ({y})" for i, y in zip(range(1, spec.n_items + 1), years)],
            "genres": ["|".join(genres[row]) or "Drama" for row in picks],
        }
    )


def write_synth(folder: Path, spec: SynthSpec) -> Path:
    """Write ratings.csv and movies.csv (MovieLens CSV layout) into folder; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    synth_movies(spec).to_csv(folder / "movies.csv", index=False)
    ratings = synth_ratings(spec)
    try:  # pyarrow (a Streamlit dependency) writes 25M rows in seconds; pandas takes minutes
        import pyarrow as pa
        import pyarrow.csv as pacsv

        table = pa.Table.from_pandas(ratings, preserve_index=False)
        with open(folder / "ratings.csv", "wb") as f:
            f.write(b"userId,movieId,rating,timestamp\n")
            pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    except ImportError:
        ratings.to_csv(folder / "ratings.csv", index=False)
    return folder

"""Encode raw ids to embedding indices (fastai's Categorify) and split ratings.

Each vocabulary is sorted with index 0 reserved for `#na#`. Items are keyed by title by
default, as in the book (ml-100k: 1,664 titles + `#na#` = 1,665 rows), or by id on request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike

from collab_core import tablecache
from collab_core.config import FOLDS, SPLITS
from collab_core.data import MIN_RATINGS, Dataset, index_table
from collab_core.errors import ConfigError, DataError

NA = "#na#"
KEEP_FROM = 1_000_000  # ratings from which an encoding or a split is kept on disk (smaller: milliseconds)
ENCODING_VERSION = 3  # bump when what encode makes changes (2: the float32 ratings kept too; 3: totals)


@dataclass(frozen=True, eq=False)
class Encoded:
    """A dataset's ratings as index tensors, with the vocabularies that map them back. Built once per
    (dataset, item key) and shared by every model of them: read it, never modify it."""

    users: np.ndarray = field(repr=False)  # (n_users,) raw user ids; users[0] is "#na#"
    items: np.ndarray = field(repr=False)  # (n_items,) item keys (titles or ids); items[0] "#na#"
    user_idx: torch.Tensor = field(repr=False)  # (N,) int32 index into users
    item_idx: torch.Tensor = field(repr=False)  # (N,) int32 index into items
    rating: torch.Tensor = field(repr=False)  # (N,) float32
    item_key: str = "title"  # "title" or "id"

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def user_rows(self, user: int) -> np.ndarray:
        """Rows of dataset.ratings holding the ratings of user index `user`."""
        order, starts = self._rows_by_user
        rows = slice(starts[user], starts[user + 1])
        return np.arange(rows.start, rows.stop) if order is None else order[rows]

    @cached_property
    def user_counts(self) -> np.ndarray:
        """(n_users,) ratings per user index."""
        return self.user_totals[0]

    @cached_property
    def user_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """(count int64, sum of ratings float64) per user index (kept with a cached encoding)."""
        return _totals(self.user_idx, self.rating, self.n_users)

    @cached_property
    def item_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """(count int64, sum of ratings float64) per item index (kept with a cached encoding)."""
        return _totals(self.item_idx, self.rating, self.n_items)

    @cached_property
    def _rows_by_user(self) -> tuple[np.ndarray | None, np.ndarray]:
        """(order, starts): user u's rows are order[starts[u] : starts[u + 1]]; order is None when
        the rows are sorted by user already (as MovieLens files are), saving a copy of the index."""
        users = self.user_idx.numpy()
        starts = np.concatenate([[0], np.cumsum(self.user_counts)])
        if bool((users[1:] >= users[:-1]).all()):
            return None, starts
        return np.argsort(users, kind="stable").astype(_row_dtype(len(users))), starts


def _totals(index: torch.Tensor, ratings: torch.Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Count and sum of the ratings per index value 0..n-1. torch's bincount reads the int32 index as
    it is (NumPy's would copy it to int64 first), and sums float32 ratings exactly while they are
    halves below 2**23."""
    count = torch.bincount(index, minlength=n).numpy().astype(np.int64, copy=False)
    total = torch.bincount(index, weights=ratings, minlength=n).numpy().astype(np.float64)
    return count, total


TOTALS = ("user_totals", "item_totals")  # kept with a cached encoding: 0.19 s of bincounts at 25M


def encode(dataset: Dataset, item_key: str = "title", cache_dir: Path | None = None) -> Encoded:
    """Index the ratings with sorted vocabularies, index 0 = #na#, items by title or id.

    The ids are int32 or categorical codes: a lookup table gives each rating its index (25M ratings
    in 0.6-3 s on 2 cores), never a Python object per rating. cache_dir: where the encoding of
    KEEP_FROM ratings or more is kept once made (beside the parsed tables), so the next process
    reads it back (0.1 s at 25M); None: always made here."""
    if item_key not in ("title", "id"):
        raise ConfigError(f"item_key must be 'title' or 'id', not {item_key!r}")
    if cache_dir is None or len(dataset.ratings) < KEEP_FROM:
        return _encode(dataset, item_key)
    key = "encoding-" + tablecache.derived_key(ENCODING_VERSION, dataset.fingerprint, item_key)
    entry = tablecache.read_entry(cache_dir, key)
    if entry is not None:
        frames, arrays, _ = entry
        return _encoded(dataset, item_key, frames["users"]["key"], frames["items"]["key"], arrays)
    encoded = _encode(dataset, item_key)
    frames = {name: pd.DataFrame({"key": getattr(encoded, name)[1:]}) for name in ("users", "items")}
    arrays = {name: getattr(encoded, name).numpy() for name in ("user_idx", "item_idx", "rating")}
    for name in TOTALS:
        arrays[f"{name}_count"], arrays[f"{name}_sum"] = getattr(encoded, name)
    tablecache.write_entry(cache_dir, key, frames, arrays, {"item_key": item_key})
    return encoded


def _encode(dataset: Dataset, item_key: str) -> Encoded:
    r = dataset.ratings
    users, user_table, user_keys = index_table(r["user"])
    items, item_table, item_keys = index_table(r["item"])
    if item_key == "title":  # several ids may share a title: one row per distinct title
        titles = dataset.items["title"].reindex(items).to_numpy(dtype=object).astype(str)
        items, title_codes = np.unique(titles, return_inverse=True)
        item_table = title_codes.astype(np.int32)[item_table]
    indices = {"user_idx": (user_table + 1)[user_keys], "item_idx": (item_table + 1)[item_keys]}  # 0: #na#
    return _encoded(dataset, item_key, users, items, indices)


def _encoded(
    dataset: Dataset, item_key: str, users: ArrayLike, items: ArrayLike, indices: dict[str, np.ndarray]
) -> Encoded:
    """The Encoded of vocabularies (without #na#) and per-rating indices (with it). The ratings as
    float32 come from `indices` where the cache kept them (mapped copy-on-write: the column of a
    cached table is mapped read-only, and copying its 25M values took 0.21 s a model opened)."""
    rating = indices.get("rating")
    if rating is None or len(rating) != len(dataset.ratings):
        rating = dataset.ratings["rating"].to_numpy(dtype=np.float32)
    encoded = Encoded(
        users=np.concatenate([np.array([NA], dtype=object), np.asarray(users).astype(object)]),
        items=np.concatenate([np.array([NA], dtype=object), np.asarray(items).astype(object)]),
        user_idx=torch.from_numpy(indices["user_idx"]),
        item_idx=torch.from_numpy(indices["item_idx"]),
        rating=torch.from_numpy(rating if rating.flags.writeable else rating.copy()),  # shared, not copied
        item_key=item_key,
    )
    for name in TOTALS:  # read back with a cached encoding; a pair of another size is summed again when asked
        count, total = indices.get(f"{name}_count"), indices.get(f"{name}_sum")
        size = encoded.n_users if name == "user_totals" else encoded.n_items
        if count is not None and total is not None and len(count) == len(total) == size:
            vars(encoded)[name] = (np.asarray(count, dtype=np.int64), np.asarray(total, dtype=np.float64))
    return encoded


def item_titles(dataset: Dataset, encoded: Encoded) -> np.ndarray:
    """The display title of every item index (#na# at 0)."""
    if encoded.item_key == "title":
        return encoded.items.astype(str)
    titles = dataset.items["title"].reindex(encoded.items[1:]).to_numpy()  # ids: int or str, as loaded
    return np.concatenate([[NA], titles]).astype(str)


def split(
    dataset: Dataset,
    how: str = "random",
    valid_pct: float = 0.2,
    seed: int = 42,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, valid) of dataset.ratings for a random, temporal or u1..ub split.

    cache_dir: where a random or temporal split of KEEP_FROM ratings or more is kept once made
    (its validation rows as packed bits, keyed by the data's fingerprint and the split's settings,
    and both row arrays beside them), so the next process maps its rows (copy-on-write) instead of
    redoing them; None: always made here."""
    n = len(dataset.ratings)
    if how not in SPLITS:
        raise ConfigError(f"unknown split {how!r}; choose one of {', '.join(SPLITS)}")
    if how in FOLDS:
        return _fold_split(dataset, how)
    if not 0.0 < valid_pct < 1.0:
        raise ConfigError(f"valid_pct must be between 0 and 1 (exclusive), not {valid_pct}")
    n_valid = int(valid_pct * n)
    if n < MIN_RATINGS or n_valid < 1 or n - n_valid < 1:
        raise DataError(f"{n} ratings are too few to split with valid_pct={valid_pct}")

    def make() -> np.ndarray:
        return _temporal_split(dataset, valid_pct) if how == "temporal" else _random(n, n_valid, seed)

    if cache_dir is None or n < KEEP_FROM:
        is_valid = make()
        return _rows(~is_valid), _rows(is_valid)
    key = tablecache.split_key(dataset.fingerprint, how, valid_pct, seed if how == "random" else 0)
    rows = tablecache.read_split_rows(cache_dir, key, n)
    if rows is not None:  # mapped, not made: 0.3-0.6 s of a model's first open at 25-32M
        return rows
    is_valid = tablecache.read_split(cache_dir, key, n)
    if is_valid is None:
        is_valid = make()
        tablecache.write_split(cache_dir, key, is_valid)
    rows = _rows(~is_valid), _rows(is_valid)
    tablecache.write_split_rows(cache_dir, key, *rows)
    return rows


def _random(n: int, n_valid: int, seed: int) -> np.ndarray:
    """fastai's RandomSplitter as a validation mask: a seeded torch.randperm, its first n_valid rows
    (a mask, not sorted rows: the same rows in a third of the time at 25M)."""
    generator = torch.Generator().manual_seed(seed)
    is_valid = np.zeros(n, dtype=bool)
    is_valid[torch.randperm(n, generator=generator)[:n_valid].numpy()] = True
    return is_valid


def _row_dtype(n: int) -> type:
    return np.int32 if n < 2**31 else np.int64


def _rows(mask: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """The rows where mask is set, as int32 where they fit. Chunk by chunk into the result: at 25M,
    flatnonzero's int64 rows (160 MB) then their int32 copy took 0.11-0.54 s a split, this 0.05 s."""
    out = np.empty(int(np.count_nonzero(mask)), dtype=_row_dtype(len(mask)))
    at = 0
    for start in range(0, len(mask), chunk):
        found = np.flatnonzero(mask[start : start + chunk])
        np.add(found, start, out=out[at : at + len(found)], casting="unsafe")
        at += len(found)
    return out


def _temporal_split(dataset: Dataset, valid_pct: float) -> np.ndarray:
    """The validation mask: each user's latest ratings (valid_pct of them, keeping at least one)."""
    r = dataset.ratings
    if "timestamp" not in r:
        raise DataError(f"{dataset.name} has no timestamps, so it cannot be split by time")
    order = np.lexsort((np.arange(len(r)), r["timestamp"].to_numpy(), r["user"].to_numpy()))
    users = r["user"].to_numpy()[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, len(users)])
    rank = np.arange(len(users)) - np.repeat(starts, counts)  # position in the user's history
    n_valid = np.minimum(np.floor(counts * valid_pct).astype(int), counts - 1)
    is_valid = rank >= np.repeat(counts - n_valid, counts)
    if not is_valid.any():
        raise DataError(f"{dataset.name} has too few ratings per user to split by time with "
                        f"valid_pct={valid_pct}: each user keeps at least one for training")  # fmt: skip
    valid = np.zeros(len(r), dtype=bool)
    valid[order[is_valid]] = True
    return valid


def _fold_split(dataset: Dataset, fold: str) -> tuple[np.ndarray, np.ndarray]:
    """The canonical ml-100k folds: u1..u5 (5-fold) and ua/ub (10 ratings per user held out)."""
    if fold not in dataset.folds:
        raise DataError(f"split {fold} needs the ml-100k fold file {fold}.test, which {dataset.name} lacks")
    test = dataset.folds[fold]  # (n, 2) user, item
    keys = dataset.ratings["user"].to_numpy() * 1_000_000 + dataset.ratings["item"].to_numpy()
    is_valid = np.isin(keys, test[:, 0] * 1_000_000 + test[:, 1])
    if is_valid.sum() != len(test):
        raise DataError(f"{fold}.test does not match the ratings of {dataset.name}")
    return _rows(~is_valid), _rows(is_valid)

"""Per-item and per-user tables of a trained model, and raw ids or titles -> embedding indices.

Everything here is derived from a `Trained` once and kept in its `cache`. An unknown user or item
raises a DataError that says what is wrong: never in the data, listed but without ratings (so no
embedding), a misspelt title (with the close ones), or a title shared by several ids.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from typing import TypeVar

import numpy as np
import pandas as pd

from collab_core.errors import ConfigError, DataError
from collab_core.learner import Trained

T = TypeVar("T")
DEMOGRAPHICS = ("age", "gender", "occupation")
_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_ARTICLE = re.compile(r"^(.*), (the|a|an|les|la|le|l'|il|das|der|die|el)$")


def cached(trained: Trained, name: str, build: Callable[[], T]) -> T:
    """trained.cache[name], built on first use (the model must not change afterwards)."""
    if name not in trained.cache:
        trained.cache[name] = build()
    return trained.cache[name]


def check_n(n: int, what: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"{what} must be a positive integer, not {n!r}")
    return int(n)


# ---- per-item and per-user tables -------------------------------------------------------------


def item_stats(trained: Trained) -> pd.DataFrame:
    """Index: item index 1..n_items-1; title, year, genres, mean_rating, n_ratings (all ratings)."""
    return items_table(trained).copy()


def items_table(trained: Trained) -> pd.DataFrame:
    """The cached item_stats table itself: read it, never modify it."""
    return cached(trained, "item_stats", lambda: _item_stats(trained))


def _item_stats(trained: Trained) -> pd.DataFrame:
    dataset, encoded = trained.dataset, trained.encoded
    keys = pd.Index(encoded.items[1:])
    if encoded.item_key == "title":  # several ids may share a title: take the first id's metadata
        meta = dataset.items.loc[~dataset.items["title"].duplicated()].set_index("title").reindex(keys)
        meta.insert(0, "title", keys.astype(str))
    else:
        meta = dataset.items.reindex(keys)
    mean, count = _means(encoded.item_idx.numpy(), encoded.rating.numpy(), encoded.n_items)
    table = pd.DataFrame(
        {
            "title": meta["title"].astype(str).to_numpy(),
            "year": meta["year"].astype("Int64").array,
            "genres": meta["genres"].fillna("").to_numpy(),
            "mean_rating": mean[1:],
            "n_ratings": count[1:],
        },
        index=pd.RangeIndex(1, encoded.n_items, name="item"),
    )
    return table


def user_stats(trained: Trained) -> pd.DataFrame:
    """Index: user index; user (raw id), mean_rating, n_ratings[, age, gender, occupation]."""
    return users_table(trained).copy()


def users_table(trained: Trained) -> pd.DataFrame:
    """The cached user_stats table itself: read it, never modify it."""
    return cached(trained, "user_stats", lambda: _user_stats(trained))


def _user_stats(trained: Trained) -> pd.DataFrame:
    dataset, encoded = trained.dataset, trained.encoded
    mean, count = _means(encoded.user_idx.numpy(), encoded.rating.numpy(), encoded.n_users)
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


def _means(index: np.ndarray, ratings: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean rating and count per index value 0..n-1 (NaN mean where there are no ratings)."""
    count = np.bincount(index, minlength=n)
    total = np.bincount(index, weights=ratings.astype(np.float64), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count, count


def user_rows(trained: Trained, user_index: int) -> np.ndarray:
    """Rows of dataset.ratings holding this user's ratings (train and validation)."""
    order, starts = cached(trained, "user_rows", lambda: _group_rows(trained))
    return order[starts[user_index] : starts[user_index + 1]]


def _group_rows(trained: Trained) -> tuple[np.ndarray, np.ndarray]:
    users = trained.encoded.user_idx.numpy()
    order = np.argsort(users, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=trained.encoded.n_users))])
    return order, starts


def valid_mask(trained: Trained) -> np.ndarray:
    """(n_ratings,) bool: is each row of dataset.ratings in the validation split."""

    def build() -> np.ndarray:
        mask = np.zeros(len(trained.encoded.rating), dtype=bool)
        mask[trained.valid_rows] = True
        return mask

    return cached(trained, "valid_mask", build)


# ---- raw ids and titles -> indices ------------------------------------------------------------


def user_index(trained: Trained, user: object) -> int:
    """The embedding index of a raw user id (int or its string)."""
    found = _get(_user_lookup(trained), user)
    if found is None:
        raise _unknown_user(trained, user)
    return found


def user_indices(trained: Trained, users: Iterable[object]) -> np.ndarray:
    return np.array([user_index(trained, u) for u in users], dtype=np.int64)


def item_index(trained: Trained, item: object) -> int:
    """The embedding index of an item given by title or raw id (int or its string)."""
    found = _get(_item_lookup(trained), item)
    if found is None:
        raise _unknown_item(trained, item)
    if isinstance(found, list):
        ids = ", ".join(map(str, found))
        raise DataError(f"title {item!r} names {len(found)} items (ids {ids}); pass one of the ids")
    return found


def item_indices(trained: Trained, items: Iterable[object]) -> np.ndarray:
    return np.array([item_index(trained, i) for i in items], dtype=np.int64)


def _get(lookup: dict, key: object) -> object:
    try:
        return lookup.get(key)
    except TypeError:  # unhashable input
        return None


def _user_lookup(trained: Trained) -> dict:
    def build() -> dict:
        users = trained.encoded.users[1:]
        lookup = {str(u): i for i, u in enumerate(users, start=1)}
        lookup.update({u: i for i, u in enumerate(users, start=1)})
        return lookup

    return cached(trained, "user_lookup", build)


def _item_lookup(trained: Trained) -> dict:
    """Keys: titles, raw ids and their strings; titles win over id strings on a clash."""

    def build() -> dict:
        encoded, items = trained.encoded, trained.dataset.items
        by_key = {k: i for i, k in enumerate(encoded.items[1:], start=1)}
        lookup: dict = {}
        if encoded.item_key == "title":
            rated = items.loc[items["title"].isin(by_key)]
            by_id = dict(zip(rated.index, rated["title"].map(by_key)))
            lookup.update({str(k): i for k, i in by_id.items()})
            lookup.update(by_id)
        else:
            lookup.update({str(k): i for k, i in by_key.items()})
            rated = items.loc[items.index.isin(list(by_key)), "title"]
            for title, ids in rated.groupby(rated, sort=False).groups.items():
                lookup[title] = by_key[ids[0]] if len(ids) == 1 else sorted(ids.tolist())
        lookup.update(by_key)
        return lookup

    return cached(trained, "item_lookup", build)


def _unknown_user(trained: Trained, user: object) -> DataError:
    dataset, users = trained.dataset, trained.encoded.users[1:]
    if dataset.users is not None and str(user).strip() in set(map(str, dataset.users.index)):
        return DataError(f"user {user!r} is listed in {dataset.name}'s users but rated nothing, "
                         "so the model has no embedding for them")  # fmt: skip
    if all(isinstance(u, (int, np.integer)) for u in users[:1000]):
        return DataError(f"no user {user!r} in {dataset.name}: its {len(users):,} users have ids "
                         f"{min(users)}..{max(users)}")  # fmt: skip
    close = difflib.get_close_matches(str(user), [str(u) for u in users], n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    return DataError(f"no user {user!r} in {dataset.name} ({len(users):,} users){hint}")


def _unknown_item(trained: Trained, item: object) -> DataError:
    dataset = trained.dataset
    items = dataset.items
    as_id = _as_id(item, items.index)
    if as_id is not None:
        title = items.at[as_id, "title"]
        return DataError(f"item {item!r} ({title}) is listed in {dataset.name} but has no ratings, "
                         "so the model has no embedding for it")  # fmt: skip
    if str(item) in set(items["title"]):
        return DataError(f"{item!r} is listed in {dataset.name} but has no ratings, "
                         "so the model has no embedding for it")  # fmt: skip
    index = items.index
    if str(item).strip().isdigit() and pd.api.types.is_integer_dtype(index):
        return DataError(f"no item with id {item} in {dataset.name} (ids {index.min()}..{index.max()}) "
                         "and no title like it")  # fmt: skip
    titles = items_table(trained)["title"].tolist()
    close = close_titles(str(item), titles)
    if close:
        return DataError(f"no item {item!r} in {dataset.name}; did you mean {', '.join(map(repr, close))}?")
    return DataError(f"no item {item!r} in {dataset.name}: no title is like it ({len(titles):,} titles, "
                     f"with the year, e.g. {titles[len(titles) // 2]!r})")  # fmt: skip


def _as_id(item: object, index: pd.Index) -> object:
    """item as a key of the item table, if it is one (ids may be ints given as strings)."""
    for candidate in (item, str(item).strip()):
        try:
            if candidate in index:
                return candidate
            if str(candidate).lstrip("-").isdigit() and int(candidate) in index:
                return int(candidate)
        except (TypeError, ValueError):
            continue
    return None


def close_titles(query: str, titles: list[str], n: int = 3) -> list[str]:
    """Titles a user probably meant: same words up to case, year and a moved article; else difflib."""
    wanted = _normalise(query)
    normal = [_normalise(t) for t in titles]
    same = [t for t, s in zip(titles, normal) if s == wanted]
    contains = [t for t, s in zip(titles, normal) if wanted and wanted in s and t not in same]
    close = difflib.get_close_matches(wanted, normal, n=n, cutoff=0.6)
    fuzzy = [titles[normal.index(s)] for s in close]
    found = [*same, *sorted(contains, key=len), *fuzzy]
    return list(dict.fromkeys(found))[:n]


def _normalise(title: str) -> str:
    """'Shawshank Redemption, The (1994)' -> 'the shawshank redemption'."""
    title = _YEAR.sub("", title.strip().lower())
    moved = _ARTICLE.match(title)
    return f"{moved[2]} {moved[1]}" if moved else title

"""Raw user ids and item titles or ids -> embedding indices (Surprise's `to_inner_uid`).

An unknown user or item raises a DataError that says what is wrong: never in the data, listed but
without ratings (so no embedding), a misspelt title (with the close ones), or a title shared by
several ids.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from collab_core.data import Dataset
from collab_core.encoding import Encoded, item_titles
from collab_core.errors import DataError

_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_ARTICLE = re.compile(r"^(.*), (the|a|an|les|la|le|l'|il|das|der|die|el)$")


@dataclass(frozen=True, eq=False)
class Lookup:
    """The embedding index of each raw user id, and of each item's title or raw id, of one encoding."""

    dataset: Dataset = field(repr=False)
    encoded: Encoded = field(repr=False)

    def user_index(self, user: object) -> int:
        """The embedding index of a raw user id (int or its string)."""
        ids = self._integer_users
        found = _get(self._users, user) if ids is None else _position(ids, _as_int(user))
        if found is None:
            raise self._unknown_user(user)
        return found

    def user_id(self, index: int) -> object:
        """The raw user id of an embedding index, as a plain Python value."""
        user = self.encoded.users[index]
        return user.item() if isinstance(user, np.generic) else user

    def user_indices(self, users: Iterable[object]) -> np.ndarray:
        return np.array([self.user_index(u) for u in users], dtype=np.int64)

    def item_index(self, item: object) -> int:
        """The embedding index of an item given by title or raw id (int or its string)."""
        found = _get(self._items, item)
        if found is None:
            raise self._unknown_item(item)
        if isinstance(found, list):
            ids = ", ".join(map(str, found))
            raise DataError(f"title {item!r} names {len(found)} items (ids {ids}); pass one of the ids")
        return found

    def item_indices(self, items: Iterable[object]) -> np.ndarray:
        return np.array([self.item_index(i) for i in items], dtype=np.int64)

    @cached_property
    def _integer_users(self) -> np.ndarray | None:
        """The user ids as int64 when they are integers (sorted, as the vocabulary is): looked up by
        binary search, not in a dict of every id and its string (162k users: 0.07 s a model)."""
        users = self.encoded.users[1:]
        if pd.api.types.infer_dtype(users, skipna=False) != "integer":
            return None
        ids = users.astype(np.int64)
        return ids if bool((ids[1:] > ids[:-1]).all()) else None

    @cached_property
    def _users(self) -> dict:
        users = self.encoded.users[1:]
        lookup = {str(u): i for i, u in enumerate(users, start=1)}
        lookup.update({u: i for i, u in enumerate(users, start=1)})
        return lookup

    @cached_property
    def _items(self) -> dict:
        """Keys: titles, raw ids and their strings; titles win over id strings on a clash. Matched
        by one hash join of the item table against the vocabulary (a dict per row took 0.35 s at 25M)."""
        encoded, items = self.encoded, self.dataset.items
        keys = pd.Index(encoded.items[1:])
        by_key = dict(zip(keys.tolist(), range(1, len(keys) + 1)))
        lookup: dict = {}
        if encoded.item_key == "title":
            position = keys.get_indexer(items["title"].to_numpy(dtype=object))
            rated = position >= 0
            by_id = dict(zip(items.index[rated].tolist(), (position[rated] + 1).tolist()))
            lookup.update({str(k): i for k, i in by_id.items()})
            lookup.update(by_id)
        else:
            lookup.update({str(k): i for k, i in by_key.items()})
            titles = items["title"][keys.get_indexer(items.index) >= 0]
            shared = titles.duplicated(keep=False).to_numpy()
            lookup.update(
                zip(titles[~shared].tolist(), (keys.get_indexer(titles.index[~shared]) + 1).tolist())
            )
            for title, ids in titles[shared].groupby(titles[shared], sort=False).groups.items():
                lookup[title] = sorted(ids.tolist())
        lookup.update(by_key)
        return lookup

    def _unknown_user(self, user: object) -> DataError:
        dataset, users = self.dataset, self.encoded.users[1:]
        if dataset.users is not None and str(user).strip() in set(map(str, dataset.users.index)):
            return DataError(f"user {user!r} is listed in {dataset.name}'s users but rated nothing, "
                             "so the model has no embedding for them")  # fmt: skip
        if all(isinstance(u, (int, np.integer)) for u in users[:1000]):
            return DataError(f"no user {user!r} in {dataset.name}: its {len(users):,} users have ids "
                             f"{min(users)}..{max(users)}")  # fmt: skip
        close = difflib.get_close_matches(str(user), [str(u) for u in users], n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        return DataError(f"no user {user!r} in {dataset.name} ({len(users):,} users){hint}")

    def _unknown_item(self, item: object) -> DataError:
        dataset = self.dataset
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
        titles = item_titles(dataset, self.encoded)[1:].tolist()
        close = close_titles(str(item), titles)
        if close:
            hint = ", ".join(map(repr, close))
            return DataError(f"no item {item!r} in {dataset.name}; did you mean {hint}?")
        return DataError(f"no item {item!r} in {dataset.name}: no title is like it ({len(titles):,} titles, "
                         f"with the year, e.g. {titles[len(titles) // 2]!r})")  # fmt: skip


def _as_int(value: object) -> int | None:
    """value as the integer id it names, as a dict of ids and their strings matches it: an int, an
    integral float, or the string an int prints as ("7", not "07" or " 7")."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else None
    if isinstance(value, str) and value.lstrip("-").isdigit() and value.isascii():
        return int(value) if str(int(value)) == value else None
    return None


def _position(ids: np.ndarray, value: int | None) -> int | None:
    """The embedding index of integer id `value` among sorted `ids` (index 0 is #na#), or None."""
    if value is None or not -(2**63) <= value < 2**63:
        return None
    at = int(np.searchsorted(ids, value))
    return at + 1 if at < len(ids) and ids[at] == value else None


def _get(lookup: dict, key: object) -> object:
    try:
        return lookup.get(key)
    except TypeError:  # unhashable input
        return None


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

"""Side features for `side_nn`: users' age, gender and occupation, movies' genres and year, encoded as
numbers the network reads beside the embeddings. No torch.

`FeatureSpec.of(dataset)` reads the vocabularies and scalings from the data; the spec then encodes
any user or movie, known or new (the cold start), the same way. Layout of the encoded rows:

    user:  [age z-score, age missing] [gender one-hot: unknown, F, M, ...] [occupation one-hot: unknown, ...]
    movie: [genre multi-hot: ..., unknown genre] [year z-score, year missing]

A category outside the vocabulary (or missing) lights the group's "unknown" slot. A feature the data
lacks (no users table, no age column, no genres, no years) is left out of the layout, each with a
one-line notice (`FeatureSpec.notices`): the documented fallback, so a ratings table alone still
trains (side_nn is then embedding_nn with the cold-start row). A column of the wrong type (ages that
are not numbers, genres that are not text) is a DataError.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from collab_core.errors import DataError

UNKNOWN = "(unknown)"


@dataclass(frozen=True)
class FeatureSpec:
    """The vocabularies and scalings of the side features, read from the data once."""

    age: tuple[float, float] | None  # (mean, std) of the users' ages; None: no age feature
    genders: tuple[str, ...]  # the genders seen (one-hot after an "unknown" slot); () none
    occupations: tuple[str, ...]  # likewise
    genres: tuple[str, ...]  # the genres seen (multi-hot, then an "unknown genre" slot); () none
    year: tuple[float, float] | None  # (mean, std) of the movies' years; None: no year feature
    notices: tuple[str, ...] = ()  # one line per feature left out, and why

    @property
    def user_width(self) -> int:
        return 2 * (self.age is not None) + _one_hot_width(self.genders) + _one_hot_width(self.occupations)

    @property
    def item_width(self) -> int:
        return (len(self.genres) + 1 if self.genres else 0) + 2 * (self.year is not None)

    @property
    def user_columns(self) -> list[str]:
        """A name per column of an encoded user row."""
        names = ["age (z)", "age missing"] if self.age is not None else []
        for group, vocab in (("gender", self.genders), ("occupation", self.occupations)):
            names += [f"{group}={v}" for v in (UNKNOWN, *vocab)] if vocab else []
        return names

    @property
    def item_columns(self) -> list[str]:
        """A name per column of an encoded movie row."""
        names = [*(f"genre={g}" for g in self.genres), f"genre={UNKNOWN}"] if self.genres else []
        return names + (["year (z)", "year missing"] if self.year is not None else [])

    @classmethod
    def of(cls, dataset) -> FeatureSpec:  # a data.Dataset (not imported: data.py sits above the models)
        """The spec of a dataset's users table and item genres/years (see the module docstring)."""
        notices = []
        users = dataset.users
        if users is None or len(users) == 0:
            notices.append("no users table: side_nn uses no user features (ml-100k's u.user and "
                           "ml-1m's users.dat have them)")  # fmt: skip
            users = pd.DataFrame()
        age = None
        if "age" in users:
            ages = _numbers(users["age"], "users' age")
            age = _scaling(ages)
        elif len(users.columns):
            notices.append("the users table has no age column: age is left out")
        genders, occupations = (
            _vocabulary(users, col, "the users table", notices) for col in ("gender", "occupation")
        )
        genre_text = dataset.items["genres"] if "genres" in dataset.items else pd.Series(dtype=object)
        genres = tuple(sorted({g for text in _texts(genre_text) for g in _split(text)}))
        if not genres:
            notices.append("no movie has genres: side_nn uses no genre features")
        years = dataset.items["year"] if "year" in dataset.items else pd.Series(dtype=float)
        year = _scaling(_numbers(years, "movies' year"))
        if year is None:
            notices.append("no movie has a year: side_nn uses no year feature")
        return cls(age, genders, occupations, genres, year, tuple(notices))

    def encode_users(self, users: pd.DataFrame) -> np.ndarray:
        """(n, user_width) float32 rows for users given by age, gender, occupation columns (missing
        columns or values: the unknown slots)."""
        n, parts = len(users), []
        if self.age is not None:
            ages = _numbers(users["age"], "age") if "age" in users else pd.Series(np.nan, index=users.index)
            parts.append(_scaled(ages.to_numpy(dtype=np.float64), self.age))
        for col, vocab in (("gender", self.genders), ("occupation", self.occupations)):
            if vocab:
                values = users[col] if col in users else pd.Series([None] * n, index=users.index)
                parts.append(_one_hot(values, vocab))
        return _stack(parts, n)

    def encode_items(self, genres: Sequence[object], years: Sequence[object]) -> np.ndarray:
        """(n, item_width) float32 rows for movies given by genre texts ("A|B") and years."""
        n, parts = len(genres), []
        if self.genres:
            index = {g: k for k, g in enumerate(self.genres)}
            hot = np.zeros((n, len(self.genres) + 1), dtype=np.float32)
            for row, text in enumerate(_texts(pd.Series(list(genres), dtype=object))):
                for g in _split(text):
                    hot[row, index.get(g, len(self.genres))] = 1.0
            parts.append(hot)
        if self.year is not None:
            values = _numbers(pd.Series(list(years), dtype=object), "year").to_numpy(dtype=np.float64)
            parts.append(_scaled(values, self.year))
        return _stack(parts, n)

    def user_row(self, age: float | None = None, gender: str | None = None,
                 occupation: str | None = None) -> np.ndarray:  # fmt: skip
        """(user_width,) one new user's features."""
        frame = pd.DataFrame({"age": [age], "gender": [gender], "occupation": [occupation]})
        return self.encode_users(frame)[0]

    def item_row(self, genres: Sequence[str] | str = (), year: float | None = None) -> np.ndarray:
        """(item_width,) one new movie's features (genres as a list or "A|B")."""
        text = genres if isinstance(genres, str) else "|".join(genres)
        return self.encode_items([text], [year])[0]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        raw = json.loads(text)
        pair = lambda v: None if v is None else (float(v[0]), float(v[1]))  # noqa: E731
        return cls(pair(raw["age"]), tuple(raw["genders"]), tuple(raw["occupations"]), tuple(raw["genres"]),
                   pair(raw["year"]), tuple(raw["notices"]))  # fmt: skip


def feature_matrices(dataset, encoded, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """(n_users, Du) and (n_items, Di) features of the encoded users and items; row 0 (#na#) zeros."""
    user_ids = pd.Index(encoded.users[1:])
    users = dataset.users.reindex(user_ids) if dataset.users is not None else pd.DataFrame(index=user_ids)
    user_x = np.vstack([np.zeros((1, spec.user_width), np.float32), spec.encode_users(users)])
    keys = pd.Index(encoded.items[1:])
    items = dataset.items
    if encoded.item_key == "title":  # several ids may share a title: the first id's metadata
        meta = items.loc[~items["title"].duplicated()].set_index("title").reindex(keys)
    else:
        meta = items.reindex(keys)
    genres = meta["genres"].fillna("").to_numpy() if "genres" in meta else [""] * len(keys)
    years = meta["year"].to_numpy(dtype=object) if "year" in meta else [None] * len(keys)
    item_x = np.vstack([np.zeros((1, spec.item_width), np.float32), spec.encode_items(genres, years)])
    return user_x, item_x


def _one_hot_width(vocab: tuple[str, ...]) -> int:
    return len(vocab) + 1 if vocab else 0


def _vocabulary(users: pd.DataFrame, col: str, where: str, notices: list[str]) -> tuple[str, ...]:
    if col not in users:
        if len(users.columns):
            notices.append(f"{where} has no {col} column: {col} is left out")
        return ()
    values = users[col].dropna()
    bad = values[~values.map(lambda v: isinstance(v, (str, int, np.integer)))]
    if len(bad):
        raise DataError(f"users' {col} must be text or whole-number codes, not {_shown(bad.iloc[0])}")
    return tuple(sorted({str(v) for v in values}))


def _numbers(values: pd.Series, what: str) -> pd.Series:
    """values as float64 (missing: NaN), or a DataError naming the first that is not a number."""
    if pd.api.types.is_bool_dtype(values):
        raise DataError(f"{what} must be numbers, not true/false")
    converted = pd.to_numeric(values.astype(object).where(values.notna(), None), errors="coerce")
    bad = converted.isna() & values.notna()
    if bad.any():
        raise DataError(f"{what} must be numbers, not {_shown(values[bad].iloc[0])}")
    return converted.astype(np.float64)


def _scaling(values: pd.Series) -> tuple[float, float] | None:
    finite = values[np.isfinite(values)]
    if finite.empty:
        return None
    std = float(finite.std(ddof=0))
    return float(finite.mean()), std if std > 0 and math.isfinite(std) else 1.0


def _scaled(values: np.ndarray, scaling: tuple[float, float]) -> np.ndarray:
    """(n, 2): the z-score (0 where missing, clipped to ±5) and a missing flag."""
    missing = ~np.isfinite(values)
    z = np.clip(np.where(missing, 0.0, (values - scaling[0]) / scaling[1]), -5, 5)
    return np.stack([z, missing.astype(np.float64)], axis=1).astype(np.float32)


def _one_hot(values: pd.Series, vocab: tuple[str, ...]) -> np.ndarray:
    index = {v: k + 1 for k, v in enumerate(vocab)}
    slots = [0 if v is None or (isinstance(v, float) and v != v) else index.get(str(v), 0) for v in values]
    hot = np.zeros((len(values), len(vocab) + 1), dtype=np.float32)
    hot[np.arange(len(values)), slots] = 1.0
    return hot


def _texts(genres: pd.Series) -> list[str]:
    """Genre texts, each "A|B" or empty; a DataError for anything that is not text."""
    values = genres.fillna("")
    bad = values[~values.map(lambda v: isinstance(v, str))]
    if len(bad):
        raise DataError(f"movies' genres must be text like 'Action|Comedy', not {_shown(bad.iloc[0])}")
    return values.tolist()


def _split(text: str) -> list[str]:
    return [g.strip() for g in text.split("|") if g.strip() and g.strip() != "(no genres listed)"]


def _stack(parts: list[np.ndarray], n: int) -> np.ndarray:
    return np.hstack(parts).astype(np.float32) if parts else np.zeros((n, 0), dtype=np.float32)


def _shown(value: object) -> str:
    """A value as an error message quotes it (a NumPy scalar as the number it holds)."""
    return repr(value.item() if isinstance(value, np.generic) else value)[:40]

"""Where the ratings, titles and users are in each layout: every MovieLens release and any table.

MovieLens 100k (u.data, u.item, u.user), 1M and 10M (`::`-separated ratings.dat, movies.dat and,
in 1M, users.dat), 20M/25M/32M and latest (ratings.csv, movies.csv), or any ratings table with an
items file beside it. Each reader returns `Parts`; `data.py` validates them into a Dataset.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from collab_core.config import FOLDS
from collab_core.errors import DataError
from collab_core.tables import (
    Progress,
    TableFormat,
    compact_ints,
    ids,
    one_line,
    pick_column,
    ratings_column,
    read_columns,
    read_table,
    sniff,
    timestamps,
)

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)  # fmt: skip  (codes 0..20 of users.dat)
USER_NAMES = (
    "user",
    "userid",
    "user_id",
    "user-id",
    "users",
    "uid",
    "reviewerid",
    "reviewer_id",
    "customer_id",
)
ITEM_NAMES = (
    "item", "itemid", "item_id", "movie", "movieid", "movie_id", "items", "iid", "book", "bookid",
    "book_id", "isbn", "asin", "product", "productid", "product_id",
)  # fmt: skip
RATING_NAMES = ("rating", "ratings", "score", "stars", "value", "book-rating", "overall", "star_rating")
TIMESTAMP_NAMES = ("timestamp", "time", "ts", "date", "unixreviewtime")
TITLE_NAMES = ("title", "name", "movie_title", "book-title", "book_title", "product_title")
GENRE_NAMES = ("genres", "genre", "category", "categories")
YEAR_NAMES = ("year", "year-of-publication", "release_year")
TABLE_SUFFIXES = (".csv", ".tsv", ".dat", ".txt")
ITEM_FILE_WORDS = ("movie", "item", "book", "product", "title")  # an items file's name holds one
_YEAR = re.compile(r"\((\d{4})\)\s*$")
Guard = Callable[[Path, TableFormat], None]  # called before a ratings file is parsed (size, memory)


@dataclass
class Parts:
    """What a layout reads, before validation: ratings with raw ids plus optional metadata."""

    name: str
    ratings: pd.DataFrame  # user, item (int32/int64 or Categorical), rating (float32)[, timestamp]
    items: pd.DataFrame | None = None  # index: item id; title[, year, genres]
    users: pd.DataFrame | None = None  # index: user id; demographics
    folds: Mapping[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def read_folder(
    folder: Path, columns: Mapping[str, str | None], guard: Guard, progress: Progress | None
) -> Parts:
    """The layout a folder holds, found by its files' names."""
    for base in (folder, folder / "ml-100k"):
        if (base / "u.data").is_file():
            return read_ml100k(base)
    if (folder / "ratings.dat").is_file():
        return read_ml_dat(folder, columns, guard, progress)
    if (folder / "ratings.csv").is_file():
        return read_ratings_file(folder / "ratings.csv", columns, guard, progress, name=folder.name)
    tables = sorted(p for p in folder.iterdir() if p.suffix.lower() in TABLE_SUFFIXES and p.is_file())
    rated = [p for p in tables if "rating" in p.name.lower()]
    if len(rated) == 1 or len(tables) == 1:
        return read_ratings_file((rated or tables)[0], columns, guard, progress)
    raise DataError(f"{folder} holds neither u.data (ml-100k) nor ratings.csv (MovieLens CSV), "
                    "ratings.dat (MovieLens 1M/10M) or one ratings table")  # fmt: skip


# --- MovieLens 100k --------------------------------------------------------------------------


def read_ml100k(folder: Path) -> Parts:
    """MovieLens 100k: u.data ratings, u.item titles/year/genres (latin-1), u.user demographics."""
    try:
        ratings = pd.read_csv(
            folder / "u.data", sep="\t", header=None, names=["user", "item", "rating", "timestamp"],
            dtype={"user": "int32", "item": "int32", "rating": "float32", "timestamp": "int64"},
        )  # fmt: skip
        item_cols = ["item", "title", "release_date", "video_release", "url", *ML100K_GENRES]
        raw_items = pd.read_csv(folder / "u.item", sep="|", header=None, names=item_cols, encoding="latin-1")
        users = pd.read_csv(
            folder / "u.user", sep="|", header=None,
            names=["user", "age", "gender", "occupation", "zip"], index_col="user",
        )  # fmt: skip
        folds = {
            fold: pd.read_csv(
                folder / f"{fold}.test", sep="\t", header=None, usecols=[0, 1], dtype="int64"
            ).to_numpy()
            for fold in FOLDS
            if (folder / f"{fold}.test").is_file()
        }
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{folder} is not a readable ml-100k folder: {one_line(e)}") from None
    flags = raw_items[list(ML100K_GENRES)].to_numpy(dtype=bool)
    items = pd.DataFrame(
        {
            "title": raw_items["title"].astype(str).to_numpy(),
            # the year in the title is the film's; the release date is often a re-release's
            "year": pd.Series(years(raw_items["title"]))
            .fillna(pd.to_datetime(raw_items["release_date"], format="%d-%b-%Y", errors="coerce").dt.year)
            .astype("Int64")
            .to_numpy(),
            "genres": ["|".join(g for g, f in zip(ML100K_GENRES, row) if f) for row in flags],
        },
        index=pd.Index(raw_items["item"].to_numpy(), name="item"),
    )
    return Parts("ml-100k", ratings, items, users, folds)


# --- MovieLens 1M and 10M: '::'-separated .dat files ------------------------------------------


def read_ml_dat(
    folder: Path, columns: Mapping[str, str | None], guard: Guard, progress: Progress | None
) -> Parts:
    """MovieLens 1M/10M: ratings.dat (user::movie::rating::timestamp), movies.dat, 1M's users.dat."""
    parts = read_ratings_file(
        folder / "ratings.dat", columns, guard, progress, name=folder.name, items_file=False
    )
    if (folder / "movies.dat").is_file():
        rows = [line.split("::") for line in _dat_lines(folder / "movies.dat")]
        if any(len(row) != 3 for row in rows):
            raise DataError(f"{folder.name}/movies.dat: expected MovieID::Title::Genres on every line")
        movies = pd.DataFrame(rows, columns=["item", "title", "genres"])
        parts.items = _items_frame(movies["item"], movies["title"], movies["genres"], folder.name)
    if (folder / "users.dat").is_file():
        rows = [line.split("::") for line in _dat_lines(folder / "users.dat")]
        if any(len(row) != 5 for row in rows):
            raise DataError(f"{folder.name}/users.dat: expected UserID::Gender::Age::Occupation::Zip-code")
        raw = pd.DataFrame(rows, columns=["user", "gender", "age", "occupation", "zip"])
        try:
            occupation = [ML1M_OCCUPATIONS[int(code)] for code in raw["occupation"]]
            parts.users = pd.DataFrame(
                {"age": raw["age"].astype(int).to_numpy(), "gender": raw["gender"].to_numpy(),
                 "occupation": occupation, "zip": raw["zip"].to_numpy()},
                index=pd.Index(compact_ints(raw["user"].astype(np.int64).to_numpy()), name="user"),
            )  # fmt: skip
        except (ValueError, IndexError):
            raise DataError(f"{folder.name}/users.dat: user ids, ages and occupation codes must be "
                            "whole numbers (occupations 0-20)") from None  # fmt: skip
    return parts


def _dat_lines(path: Path) -> list[str]:
    """The lines of a small .dat file: UTF-8 where it is, Latin-1 (1M's titles) where not."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return [line for line in text.splitlines() if line.strip()]


# --- any ratings table ------------------------------------------------------------------------


def read_ratings_file(
    path: Path,
    columns: Mapping[str, str | None],
    guard: Guard,
    progress: Progress | None,
    name: str | None = None,
    items_file: bool = True,
) -> Parts:
    """A ratings table (CSV/TSV/::, header or not); columns by name or 0-based position; titles
    from a title column or from an items file beside it."""
    unknown = set(columns) - {"user_col", "item_col", "rating_col", "timestamp_col", "title_col"}
    if unknown:
        raise DataError(f"unknown column options: {', '.join(sorted(unknown))}")
    fmt = sniff(path)
    guard(path, fmt)
    try:
        picked = _pick_columns(fmt, columns)
    except DataError as e:
        raise DataError(f"{path.name}: {e}") from None
    # int32 ids: ids beyond it fail the fast read and go the careful way, as text
    typed = {picked["user"]: pa.int32(), picked["item"]: pa.int32(), picked["rating"]: pa.float32()}
    table = read_columns(path, fmt, list(dict.fromkeys(picked.values())), typed, progress)
    if table.num_rows == 0:
        raise DataError(f"{path.name} has a header but no ratings")
    source = path.name
    columns_out = {}
    convert = {"user": ids, "item": ids, "rating": ratings_column, "timestamp": timestamps}
    for role, to_numpy in convert.items():  # column by column, each freed once converted
        if role in picked:
            columns_out[role] = to_numpy(table[picked[role]], picked[role], source)
            table = table.drop_columns([picked[role]])  # roles never share a column
    if columns_out.get("timestamp") is None:
        columns_out.pop("timestamp", None)
    ratings = pd.DataFrame(columns_out, copy=False)
    parts = Parts(name or path.name, ratings)
    if fmt.encoding != "utf-8":
        parts.warnings.append(f"{path.name} is not UTF-8: read as Latin-1")
    if "title" in picked:
        titles = pd.Series(table[picked["title"]].to_numpy(zero_copy_only=False)).astype(str).str.strip()
        first = titles.groupby(np.asarray(ratings["item"]), sort=True).first()
        keys, names = pd.Series(first.index), pd.Series(first.to_numpy())
        parts.items = _items_frame(keys, names, None, source, like=ratings["item"])
    elif items_file and (found := find_items_file(path, picked["item"])) is not None:
        parts.items, warning = read_items_file(found, picked["item"], ratings["item"])
        parts.warnings.extend(warning)
    return parts


def _pick_columns(fmt: TableFormat, columns: Mapping[str, str | None]) -> dict[str, str]:
    """The column of each role: given, known by name, or by position in a table without header."""
    names = fmt.names
    positional = not fmt.has_header
    picked = {}
    defaults = {"user": (USER_NAMES, 0), "item": (ITEM_NAMES, 1), "rating": (RATING_NAMES, 2)}
    for role, (known, position) in defaults.items():
        picked[role] = pick_column(
            names, role, columns.get(f"{role}_col"), known, position if positional else None
        )
    optional = {"timestamp": (TIMESTAMP_NAMES, 3), "title": (TITLE_NAMES, None)}
    for role, (known, position) in optional.items():
        given = columns.get(f"{role}_col")
        try:
            column = pick_column(names, role, given, known, position if positional else None)
        except DataError:
            if given is not None:
                raise
            continue
        if given is not None or column not in picked.values():  # a guess never takes a column twice
            picked[role] = column
    for (role, column), (other, other_column) in itertools.combinations(picked.items(), 2):
        if column == other_column:
            raise DataError(f"column {column!r} cannot be both the {role} and the {other} column: "
                            f"name each with --{role}-col and --{other}-col")  # fmt: skip
    return picked


def find_items_file(ratings_path: Path, item_column: str) -> Path | None:
    """A table beside the ratings whose name says it lists items (movies.csv, BX-Books.csv, ...)."""
    for path in sorted(ratings_path.parent.iterdir()):
        lower = path.name.lower()
        if path == ratings_path or path.suffix.lower() not in TABLE_SUFFIXES or not path.is_file():
            continue
        if any(word in lower for word in ITEM_FILE_WORDS) and "rating" not in lower:
            return path
    return None


def read_items_file(path: Path, item_column: str, rated: pd.Series) -> tuple[pd.DataFrame | None, list[str]]:
    """Titles (and years, genres) from an items file; a file we cannot use is skipped with a warning."""
    try:
        fmt = sniff(path)
        names = fmt.names
        lower = {n.lower(): n for n in names}
        key = lower.get(item_column.lower()) or next((lower[n] for n in ITEM_NAMES if n in lower), None)
        title = next((lower[n] for n in TITLE_NAMES if n in lower), None)
        if key is None or title is None or not fmt.has_header:
            return None, []
        genre = next((lower[n] for n in GENRE_NAMES if n in lower), None)
        year = next((lower[n] for n in YEAR_NAMES if n in lower), None)
        wanted = [c for c in dict.fromkeys((key, title, genre, year)) if c is not None]
        table = read_table(path, fmt, wanted, dict.fromkeys(wanted, pa.string()))
    except DataError as e:
        return None, [f"titles not read from {path.name}: {e}"]
    column = {c: pd.Series(table[c].to_numpy(zero_copy_only=False), dtype=object) for c in wanted}
    items = _items_frame(column[key], column[title], column.get(genre), path.name, like=rated)
    if year is not None:
        given = pd.to_numeric(column[year], errors="coerce").where(lambda y: y.between(1000, 3000))
        items["year"] = (
            pd.Series(items["year"]).fillna(given.set_axis(items.index)).astype("Int64").to_numpy()
        )
    return items, []


def _items_frame(
    keys: pd.Series, titles: pd.Series, genres: pd.Series | None, source: str, like: pd.Series | None = None
) -> pd.DataFrame:
    """Item metadata indexed by id, ids of the same kind as the ratings' (numbers or names)."""
    keys = keys.astype(str).str.strip()
    numeric = like is None or pd.api.types.is_integer_dtype(like.dtype)
    index = pd.to_numeric(keys, errors="coerce") if numeric else keys
    keep = index.notna().to_numpy()
    if numeric:
        index = index[keep].astype(np.int64)
    titles = titles.astype(str).str.strip()[keep]
    genre_text = (
        genres[keep].fillna("").astype(str).str.replace("(no genres listed)", "", regex=False)
        if genres is not None
        else ""
    )
    return pd.DataFrame(
        {
            "title": titles.to_numpy(),
            "year": years(titles),
            "genres": genre_text if genres is None else genre_text.to_numpy(),
        },
        index=pd.Index(index.to_numpy(), name="item"),
    )


def years(titles: pd.Series) -> np.ndarray:
    """The year in parentheses at the end of each title, as MovieLens writes it."""
    return titles.astype(str).str.extract(_YEAR)[0].astype("Int64").to_numpy()

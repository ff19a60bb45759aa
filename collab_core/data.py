"""Load and validate rating data: MovieLens 100k, MovieLens CSV folders, any ratings table.

Every loader returns a `Dataset`: one row per rating (raw ids, as in the files) plus item and
user metadata. Encoding to indices and splitting live in `encoding.py`.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import itertools
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from collab_core.config import FOLDS
from collab_core.errors import DataError

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
MAX_ROWS = 30_000_000  # a 25M-rating table fits; beyond it we refuse rather than run out of memory
MAX_FILE_BYTES = 2 * 1024**3  # the largest ratings file we read
MIN_RATINGS = 10  # fewer cannot be split into a useful train and validation set
USER_NAMES = ("user", "userid", "user_id", "users", "uid")
ITEM_NAMES = ("item", "itemid", "item_id", "movie", "movieid", "movie_id", "items", "iid")
RATING_NAMES = ("rating", "ratings", "score", "stars", "value")
TIMESTAMP_NAMES = ("timestamp", "time", "ts", "date")
TITLE_NAMES = ("title", "name", "movie_title")
_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Ratings with raw ids plus metadata; the one object every loader returns."""

    name: str  # "ml-100k", a folder or file name
    ratings: pd.DataFrame = field(repr=False)  # user, item, rating (float32)[, timestamp]
    items: pd.DataFrame = field(repr=False)  # index: item id; title, year, genres ("A|B")
    users: pd.DataFrame | None = field(default=None, repr=False)  # index: user id; demographics
    folds: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)  # "u1" -> (n, 2) test pairs
    warnings: tuple[str, ...] = ()  # non-fatal findings, e.g. duplicate pairs

    @functools.cached_property  # hashing every rating is worth doing once: callers ask often
    def fingerprint(self) -> str:
        """A short hash of the ratings and item titles: same data, same fingerprint."""
        h = hashlib.blake2b(digest_size=8)
        for col in ("user", "item", "rating"):
            h.update(np.ascontiguousarray(self.ratings[col].to_numpy()).tobytes())
        h.update("\x00".join(map(str, self.items["title"].tolist())).encode("utf-8", "replace"))
        return h.hexdigest()

    def with_titles(self) -> pd.DataFrame:
        """The ratings joined with their item titles (as the book's `ratings.merge(movies)`)."""
        return self.ratings.join(self.items["title"], on="item")

    def summary(self) -> dict[str, float]:
        """Counts and sparsity for display."""
        n, n_users, n_items = len(self.ratings), self.ratings.user.nunique(), self.ratings.item.nunique()
        return {
            "ratings": n,
            "users": n_users,
            "items": n_items,
            "density": n / (n_users * n_items),
            "mean_rating": float(self.ratings.rating.mean()),
        }


def load_dataset(
    path: str | Path | None = None,
    *,
    data_dir: str | None = None,
    cache_dir: Path | None = None,
    download: bool = True,
    progress: Callable[[int, int | None], None] | None = None,
    columns: Mapping[str, str | None] | None = None,
    download_url: str | None = None,
) -> Dataset:
    """Resolve and load a dataset: explicit path -> data_dir (COLLAB_DATA_DIR) -> cache -> download.

    download_url replaces GroupLens' address (a mirror, or a local server in tests).
    """
    if path is not None:
        return load_path(Path(path), columns=columns)
    if data_dir:
        return load_path(Path(data_dir), columns=columns)
    if cache_dir is None:
        raise DataError("no dataset given: pass --data PATH or set COLLAB_DATA_DIR")
    cached = cache_dir / "ml-100k"
    if (cached / "u.data").is_file():
        return load_ml100k(cached)
    if not download:
        raise DataError(f"ml-100k is not in {cache_dir} and downloading is off")
    from collab_core.download import ML100K_URL, download_ml100k

    return load_ml100k(download_ml100k(cache_dir, download_url or ML100K_URL, progress=progress))


def load_path(path: Path, columns: Mapping[str, str | None] | None = None) -> Dataset:
    """Load whatever `path` is: an ml-100k folder, a MovieLens CSV folder, a table, or a zip."""
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    if not (path.is_dir() or path.is_file()):  # a FIFO or device would block or never end
        raise DataError(f"{path} is not a regular file or folder")
    if path.is_dir():
        if (path / "u.data").is_file():
            return load_ml100k(path)
        if (path / "ml-100k" / "u.data").is_file():
            return load_ml100k(path / "ml-100k")
        if (path / "ratings.csv").is_file():
            return load_movielens_csv(path)
        raise DataError(f"{path} holds neither u.data (ml-100k) nor ratings.csv (MovieLens CSV)")
    if zipfile.is_zipfile(path):
        return load_zip(path, columns=columns)
    if path.suffix.lower() == ".zip":
        with open(path, "rb") as f:
            html = f.read(512).lstrip().lower().startswith((b"<!doctype html", b"<html"))
        what = "an HTML page saved as .zip" if html else "damaged or truncated"
        raise DataError(f"{path.name} is not a valid zip archive ({what})")
    return load_table(path, **dict(columns or {}))


def load_zip(path: Path, columns: Mapping[str, str | None] | None = None) -> Dataset:
    """Extract a zip safely to a temporary folder and load what it holds."""
    from collab_core.download import safe_extract

    with tempfile.TemporaryDirectory(prefix="collab-zip-") as tmp:
        safe_extract(path, Path(tmp))
        found = sorted(Path(tmp).rglob("u.data")) or sorted(Path(tmp).rglob("ratings.csv"))
        if found:
            return load_path(found[0].parent, columns=columns)
        tables = [p for p in Path(tmp).rglob("*") if p.suffix.lower() in (".csv", ".tsv", ".txt")]
        if len(tables) != 1:
            raise DataError(f"{path.name} holds no u.data, no ratings.csv and not exactly one CSV/TSV table")
        return load_table(tables[0], **dict(columns or {}))


def _check_size(path: Path) -> None:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"{path.name} is {_bytes(size)}; the limit is {_bytes(MAX_FILE_BYTES)}")


def _bytes(n: int) -> str:
    """A size for people: 512 bytes, 1.5 KB, 2.1 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def load_ml100k(folder: Path) -> Dataset:
    """MovieLens 100k: u.data ratings, u.item titles/year/genres (latin-1), u.user demographics."""
    try:
        ratings = pd.read_csv(
            folder / "u.data", sep="\t", header=None, names=["user", "item", "rating", "timestamp"],
            dtype={"user": "int64", "item": "int64", "rating": "float32", "timestamp": "int64"},
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
        raise DataError(f"{folder} is not a readable ml-100k folder: {_one_line(e)}") from None
    flags = raw_items[list(ML100K_GENRES)].to_numpy(dtype=bool)
    items = pd.DataFrame(
        {
            "title": raw_items["title"].astype(str).to_numpy(),
            # the year in the title is the film's; the release date is often a re-release's
            "year": pd.Series(_years(raw_items["title"]))
            .fillna(pd.to_datetime(raw_items["release_date"], format="%d-%b-%Y", errors="coerce").dt.year)
            .astype("Int64")
            .to_numpy(),
            "genres": ["|".join(g for g, f in zip(ML100K_GENRES, row) if f) for row in flags],
        },
        index=pd.Index(raw_items["item"].to_numpy(), name="item"),
    )
    return _finish("ml-100k", ratings, items, users, folds)


def load_movielens_csv(folder: Path) -> Dataset:
    """A MovieLens latest-small / 25M folder: ratings.csv (header, half stars) and movies.csv."""
    _check_size(folder / "ratings.csv")
    ratings = _read_csv(
        folder / "ratings.csv",
        usecols=["userId", "movieId", "rating", "timestamp"],
        dtype={"userId": "int64", "movieId": "int64", "rating": "float32", "timestamp": "int64"},
        **_fast_engine(folder / "ratings.csv"),
    ).rename(columns={"userId": "user", "movieId": "item"})
    items = None
    if (folder / "movies.csv").is_file():
        movies = _read_csv(folder / "movies.csv", usecols=["movieId", "title", "genres"])
        items = pd.DataFrame(
            {
                "title": movies["title"].astype(str).str.strip().to_numpy(),
                "year": _years(movies["title"]),
                "genres": movies["genres"].fillna("").str.replace("(no genres listed)", "").to_numpy(),
            },
            index=pd.Index(movies["movieId"].to_numpy(), name="item"),
        )
    return _finish(folder.name, ratings, items, None, {})


def load_table(
    path: Path,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    title_col: str | None = None,
) -> Dataset:
    """Any ratings table (CSV/TSV, header or not); columns by name or 0-based position."""
    _check_size(path)
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path.name} is UTF-16 text; save it as UTF-8")
    if b"\x00" in head:
        raise DataError(f"{path.name} is a binary file, not a CSV/TSV table")
    text = head.decode("utf-8-sig", errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path.name} is empty")
    sep = _sniff_separator(lines[:20])
    first = next(csv.reader(io.StringIO(lines[0]), delimiter=sep))
    has_header = not any(_is_number(cell) for cell in first)
    table = _read_csv(
        path, sep=sep, header=0 if has_header else None, dtype=str, keep_default_na=False,
        encoding="utf-8-sig", skipinitialspace=True, nrows=MAX_ROWS + 1,
    )  # fmt: skip
    if table.empty:
        raise DataError(f"{path.name} has a header but no ratings")
    if not has_header:
        table.columns = [str(i) for i in range(table.shape[1])]
    spec = {"user": user_col, "item": item_col, "rating": rating_col}
    defaults = {"user": (USER_NAMES, 0), "item": (ITEM_NAMES, 1), "rating": (RATING_NAMES, 2)}
    picked = {}
    for role, given in spec.items():
        names, position = defaults[role]
        picked[role] = _pick_column(table, role, given, names, position if not has_header else None)
    optional = {"timestamp": (timestamp_col, TIMESTAMP_NAMES, 3), "title": (title_col, TITLE_NAMES, None)}
    for role, (given, names, position) in optional.items():
        try:
            column = _pick_column(table, role, given, names, position if not has_header else None)
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
    ratings = pd.DataFrame({"user": table[picked["user"]], "item": table[picked["item"]]})
    ratings["rating"] = _numeric(table[picked["rating"]], picked["rating"], path.name)
    if "timestamp" in picked:
        ts = pd.to_numeric(table[picked["timestamp"]], errors="coerce")
        if ts.notna().all():
            ratings["timestamp"] = ts.astype("int64")
    for role in ("user", "item"):
        ratings[role] = _ids(ratings[role], picked[role], path.name)
    items = None
    if "title" in picked:
        titles = table[picked["title"]].astype(str).str.strip()
        first_title = titles.groupby(ratings["item"].to_numpy()).first()
        items = pd.DataFrame(
            {"title": first_title.to_numpy(), "year": _years(first_title), "genres": ""},
            index=pd.Index(first_title.index, name="item"),
        )
    return _finish(path.name, ratings, items, None, {})


def _finish(
    name: str,
    ratings: pd.DataFrame,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    folds: Mapping[str, np.ndarray],
) -> Dataset:
    """Validate the ratings, fill missing item metadata, count duplicates."""
    validate_ratings(ratings, name)
    ratings = ratings.reset_index(drop=True)
    ratings["rating"] = ratings["rating"].astype("float32")
    ids = np.unique(ratings["item"].to_numpy())
    if items is None:
        items = pd.DataFrame(index=pd.Index(ids, name="item"))
    items = items[~items.index.duplicated()].reindex(np.union1d(ids, items.index.to_numpy()))
    items.index.name = "item"
    missing = items["title"].isna() if "title" in items else pd.Series(True, index=items.index)
    items["title"] = items.get("title", pd.Series(index=items.index, dtype=object)).where(
        ~missing, items.index.astype(str)
    )
    items["year"] = items.get("year", pd.Series(pd.NA, index=items.index)).astype("Int64")
    items["genres"] = items.get("genres", pd.Series("", index=items.index)).fillna("")
    warnings = []
    n_dup = int(ratings.duplicated(["user", "item"]).sum())
    if 2 * n_dup >= len(ratings):  # re-ratings happen; a table that is mostly repeats is a mistake
        raise DataError(f"{name}: {n_dup:,} of {len(ratings):,} ratings repeat an earlier (user, item) "
                        "pair; is the table duplicated?")  # fmt: skip
    if n_dup:
        warnings.append(f"{n_dup:,} duplicate (user, item) pairs kept, as fastai does")
    return Dataset(name, ratings, items, users, folds, tuple(warnings))


def validate_ratings(ratings: pd.DataFrame, name: str) -> None:
    """Raise DataError on an empty, oversized or non-finite ratings table."""
    if len(ratings) == 0:
        raise DataError(f"{name} holds no ratings")
    if len(ratings) > MAX_ROWS:  # readers stop at MAX_ROWS + 1 rows, so memory stays bounded
        raise DataError(f"{name} has more than {MAX_ROWS:,} ratings, the limit; use a sample of it")
    if len(ratings) < MIN_RATINGS:
        raise DataError(f"{name} has only {len(ratings)} ratings; at least {MIN_RATINGS} are needed")
    r = ratings["rating"].to_numpy(dtype="float64")
    bad = ~np.isfinite(r)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name}: rating on row {row + 1} is {r[row]} (NaN or infinite)")
    if np.abs(r).max() > 1e6:
        raise DataError(f"{name}: ratings reach {np.abs(r).max():g}; a rating scale is expected")


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    # compression=None: pandas would inflate a .gz/.bz2/.xz by its name, unchecked (a bomb)
    try:
        return pd.read_csv(path, compression=None, **kwargs)
    except UnicodeDecodeError as e:  # a ValueError too, so first
        raise DataError(f"{path.name} is not UTF-8 text ({_one_line(e)}); save it as UTF-8") from None
    except ValueError as e:  # ParserError, missing usecols, bad dtype are all ValueErrors
        raise DataError(f"{path.name}: {_one_line(e)}") from None
    except OSError as e:
        raise DataError(f"cannot read {path.name}: {_one_line(e)}") from None


def _fast_engine(path: Path) -> dict:
    """pyarrow's multi-threaded CSV reader for big files (10x pandas' C parser), when present."""
    if path.stat().st_size < 50_000_000:
        return {}
    try:
        import pyarrow  # noqa: F401  (installed with Streamlit)
    except ImportError:
        return {}
    return {"engine": "pyarrow"}


def _sniff_separator(lines: list[str]) -> str:
    for sep in ("\t", ",", ";", "|", "::"):
        counts = {line.count(sep) for line in lines}
        if len(counts) == 1 and counts.pop() >= 2:
            return sep
    for sep in ("\t", ",", ";", "|", " "):
        if all(line.count(sep) >= 2 for line in lines):
            return sep
    for sep in ("\t", ",", ";", "|"):  # two columns: read them, so the missing one can be named
        if all(line.count(sep) == 1 for line in lines):
            return sep
    raise DataError("cannot find the columns: expected at least user, item and rating columns "
                    "separated by tabs, commas, semicolons or |")  # fmt: skip


def _pick_column(
    table: pd.DataFrame, role: str, given: str | None, names: tuple[str, ...], position: int | None
) -> str:
    cols = [str(c) for c in table.columns]
    if given is not None:
        if given in cols:
            return given
        if given.isdigit() and int(given) < len(cols):
            return cols[int(given)]
        raise DataError(f"no {role} column {given!r}; the columns are {', '.join(cols)}")
    by_lower = {c.lower().strip(): c for c in cols}
    for name in names:
        if name in by_lower:
            return by_lower[name]
    if position is not None and position < len(cols):
        return cols[position]
    raise DataError(f"no {role} column: name it with --{role}-col; the columns are {', '.join(cols)}")


def _numeric(values: pd.Series, column: str, name: str) -> pd.Series:
    out = pd.to_numeric(values.str.strip(), errors="coerce")
    bad = out.isna() & ~values.str.strip().str.lower().isin(["nan", "inf", "-inf"])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{name}: rating column {column!r} has a non-number {values.iloc[row]!r} "
                        f"on data row {row + 1}")  # fmt: skip
    return out


def _ids(values: pd.Series, column: str, name: str) -> pd.Series:
    """Ids stay integers when they all are, else strings (names); empty ids are refused, and so are
    numbers that cannot be ids (fractions, beyond 2^62): a misplaced column, most likely."""
    stripped = values.astype(str).str.strip()
    if (stripped == "").any():
        row = int(np.flatnonzero((stripped == "").to_numpy())[0])
        raise DataError(f"{name}: column {column!r} is empty on data row {row + 1}")
    as_number = pd.to_numeric(stripped, errors="coerce")
    if not as_number.notna().all():
        return stripped
    bad = ~(np.isfinite(as_number) & (as_number.abs() < 2**62) & (as_number % 1 == 0)).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name}: column {column!r} has {stripped.iloc[row]!r} on data row {row + 1}; "
                        "ids are integers below 2^62 or names (is it the right column?)")  # fmt: skip
    return as_number.astype("int64")


def _years(titles: pd.Series) -> np.ndarray:
    return titles.astype(str).str.extract(_YEAR)[0].astype("Int64").to_numpy()


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]

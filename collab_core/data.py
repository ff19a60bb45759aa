"""Load and validate rating data: every MovieLens release, any ratings table, a folder or a zip.

Every loader returns a `Dataset`: one row per rating (raw ids, as in the files, held as int32 or
categorical codes and float32 ratings) plus item and user metadata. Where the files are in each
layout is `layouts.py`; parsing is `tables.py`; the columnar cache of parsed tables is
`tablecache.py`. Encoding to indices and splitting live in `encoding.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from collab_core import tablecache
from collab_core.errors import DataError
from collab_core.layouts import ML100K_GENRES, Parts, read_folder, read_ml100k, read_ratings_file
from collab_core.memory import available_bytes, format_bytes
from collab_core.sources import source_key
from collab_core.tables import Progress, TableFormat

__all__ = ["ML100K_GENRES", "Dataset", "RatingScale", "load_dataset", "load_ml100k", "load_path"]

MAX_ROWS = 40_000_000  # MovieLens 32M fits; beyond it we refuse rather than run out of memory
MAX_FILE_BYTES = 2 * 1024**3  # the largest ratings file we read
MAX_ZIP_BYTES = 2**30  # the largest archive we open (MovieLens 25M's zip is 262 MB)
MIN_RATINGS = 10  # fewer cannot be split into a useful train and validation set
# peak memory of a load per rating, measured at 25M ratings (pyarrow's buffers, the columns, the
# duplicate check's sort): the estimate that refuses a table before it is read
LOAD_BYTES_PER_RATING = 60
CACHE_MIN_BYTES = 20_000_000  # smaller sources parse as fast as the cache reads: not cached
SKIPPED_MEMBERS = ("genome-", "tags.", "links.")  # MovieLens files of a zip that no loader reads
LEVELS_MAX = 21  # more distinct ratings than this: a continuous scale


@dataclass(frozen=True)
class RatingScale:
    """The ratings' observed scale and the output range it suggests for `sigmoid_range`."""

    low: float  # the smallest rating
    high: float  # the largest rating
    step: float | None  # the gap between levels (1 stars, 0.5 half stars); None when continuous
    levels: tuple[float, ...]  # the distinct ratings, when there are at most LEVELS_MAX

    @property
    def half_stars(self) -> bool:
        return self.step == 0.5

    @property
    def y_range(self) -> tuple[float, float]:
        """The range widened by an eighth of its span each side (rounded to half a step), never
        above 0 at the bottom: 1-5 -> (0, 5.5) as in fastai, 0.5-5 -> (0, 5.5), 1-10 -> (0, 11),
        0-10 -> (-1, 11)."""
        margin = (self.high - self.low) / 8 or 0.5
        if self.step:
            margin = max(round(margin / (self.step / 2)), 1) * self.step / 2
        return (min(0.0, self.low - margin), self.high + margin)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Ratings with raw ids plus metadata; the one object every loader returns."""

    name: str  # "ml-100k", a folder or file name
    ratings: pd.DataFrame = field(
        repr=False
    )  # user, item (int32, int64 or categorical), rating (float32)[, timestamp]
    items: pd.DataFrame = field(repr=False)  # index: item id; title, year, genres ("A|B")
    users: pd.DataFrame | None = field(default=None, repr=False)  # index: user id; demographics
    folds: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)  # "u1" -> (n, 2) test pairs
    warnings: tuple[str, ...] = ()  # non-fatal findings, e.g. duplicate pairs

    @functools.cached_property  # hashing every rating is worth doing once: callers ask often
    def fingerprint(self) -> str:
        """A short hash of the ratings and item titles: same data, same fingerprint."""
        h = hashlib.blake2b(digest_size=8)
        for col in ("user", "item"):
            values = self.ratings[col]
            if isinstance(values.dtype, pd.CategoricalDtype):  # names: their codes, then the names
                _update(h, values.cat.codes.to_numpy(), np.int64)
                h.update("\x00".join(map(str, values.cat.categories)).encode("utf-8", "replace"))
            else:  # hashed as int64 whatever their width, so a fingerprint outlives a dtype change
                _update(h, values.to_numpy(), np.int64)
        _update(h, self.ratings["rating"].to_numpy(), np.float32)
        h.update("\x00".join(map(str, self.items["title"].tolist())).encode("utf-8", "replace"))
        return h.hexdigest()

    @functools.cached_property
    def rating_scale(self) -> RatingScale:
        """The observed rating levels, their step, and a suggested y_range."""
        values = np.sort(pd.unique(self.ratings["rating"].to_numpy()).astype(np.float64))
        low, high = float(values[0]), float(values[-1])
        gaps = np.diff(values)
        step = None
        if 1 < len(values) <= LEVELS_MAX:
            smallest = float(gaps.min())
            if np.allclose(gaps / smallest, np.round(gaps / smallest)):
                step = smallest
        levels = tuple(float(v) for v in values) if len(values) <= LEVELS_MAX else ()
        return RatingScale(low, high, step, levels)

    def with_titles(self) -> pd.DataFrame:
        """The ratings joined with their item titles (as the book's `ratings.merge(movies)`)."""
        return self.ratings.join(self.items["title"], on="item")

    def summary(self) -> dict[str, float]:
        """Counts and sparsity for display."""
        return dict(self._summary)

    @functools.cached_property  # the sidebar shows it on every rerun: 0.7 s at 25M ratings
    def _summary(self) -> dict[str, float]:
        n = len(self.ratings)
        n_users, n_items = (len(distinct(self.ratings[col])) for col in ("user", "item"))
        return {
            "ratings": n,
            "users": n_users,
            "items": n_items,
            "density": n / (n_users * n_items),
            "mean_rating": float(self.ratings.rating.mean()),
        }


def _update(h, values: np.ndarray, dtype: type, chunk: int = 1 << 22) -> None:
    """Hash a column as `dtype`, a few MB at a time (no full-size copy)."""
    for start in range(0, len(values), chunk):
        h.update(np.ascontiguousarray(values[start : start + chunk], dtype=dtype).tobytes())


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

    cache_dir: the user cache folder: ml-100k is downloaded there, and big tables are cached there
    once parsed. progress: (bytes done, bytes total) while downloading (load_path takes its own for
    reading). download_url replaces GroupLens' address (a mirror, or a local server in tests).
    """
    if path is not None or data_dir:
        return load_path(Path(path if path is not None else data_dir), columns=columns, cache_dir=cache_dir)
    if cache_dir is None:
        raise DataError("no dataset given: pass --data PATH or set COLLAB_DATA_DIR")
    cached = cache_dir / "ml-100k"
    if (cached / "u.data").is_file():
        return load_ml100k(cached)
    if not download:
        raise DataError(f"ml-100k is not in {cache_dir} and downloading is off")
    from collab_core.download import ML100K_URL, download_ml100k

    return load_ml100k(download_ml100k(cache_dir, download_url or ML100K_URL, progress=progress))


def load_path(
    path: Path,
    columns: Mapping[str, str | None] | None = None,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """Load whatever `path` is: a MovieLens folder or zip (any release), a table, or a zip of one.

    cache_dir: where parsed tables are kept (Arrow IPC), so a second open is fast; None: no cache.
    progress: called with (bytes read, total bytes) after each block of the ratings is parsed, from
    the calling thread.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    if not (path.is_dir() or path.is_file()):  # a FIFO or device would block or never end
        raise DataError(f"{path} is not a regular file or folder")
    columns = {k: v for k, v in (columns or {}).items() if v is not None}
    key = None
    if cache_dir is not None and _source_bytes(path) >= CACHE_MIN_BYTES:
        key = source_key(path, columns)
        if key is not None and (cached := _from_cache(cache_dir, key)) is not None:
            if progress is not None:
                progress(1, 1)
            return cached
    dataset = _finish(_read(path, columns, progress))
    if key is not None:
        _to_cache(cache_dir, key, dataset)
    return dataset


def _read(path: Path, columns: Mapping[str, str], progress: Progress | None) -> Parts:
    if path.is_dir():
        return read_folder(path, columns, _guard, progress)
    if zipfile.is_zipfile(path):
        return _read_zip(path, columns, progress)
    if path.suffix.lower() == ".zip":
        with open(path, "rb") as f:
            html = f.read(512).lstrip().lower().startswith((b"<!doctype html", b"<html"))
        what = "an HTML page saved as .zip" if html else "damaged or truncated"
        raise DataError(f"{path.name} is not a valid zip archive ({what})")
    return read_ratings_file(path, columns, _guard, progress)


def _read_zip(path: Path, columns: Mapping[str, str], progress: Progress | None) -> Parts:
    """Extract a zip safely to a temporary folder (what a loader reads of it) and read that."""
    from collab_core.download import safe_extract

    def wanted(name: str) -> bool:
        return not Path(name).name.lower().startswith(SKIPPED_MEMBERS)

    with tempfile.TemporaryDirectory(prefix="collab-zip-") as tmp:
        safe_extract(path, Path(tmp), wanted=wanted, max_zip_bytes=MAX_ZIP_BYTES)
        for name in ("u.data", "ratings.dat", "ratings.csv"):
            found = sorted(Path(tmp).rglob(name))
            if found:
                return read_folder(found[0].parent, columns, _guard, progress)
        tables = [p for p in Path(tmp).rglob("*") if p.suffix.lower() in (".csv", ".tsv", ".txt", ".dat")]
        rated = [p for p in tables if "rating" in p.name.lower()]
        if len(rated) == 1 or len(tables) == 1:
            return read_ratings_file((rated or tables)[0], columns, _guard, progress)
        raise DataError(f"{path.name} holds no u.data, no ratings.csv and not exactly one CSV/TSV table")


def load_ml100k(folder: Path) -> Dataset:
    """MovieLens 100k: u.data ratings, u.item titles/year/genres (latin-1), u.user demographics."""
    return _finish(read_ml100k(folder))


def load_table(path: Path, **columns: str | None) -> Dataset:
    """Any ratings table (CSV/TSV/::, header or not); columns by name or 0-based position
    (user_col, item_col, rating_col, timestamp_col, title_col)."""
    return load_path(path, {k: v for k, v in columns.items() if v is not None})


# --- checks before and after reading ----------------------------------------------------------


def _guard(path: Path, fmt: TableFormat) -> None:
    """Refuse a ratings file before parsing it: too big a file, too many rows, too little memory."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"{path.name} is {_bytes(size)}; the limit is {_bytes(MAX_FILE_BYTES)}")
    rows = math.ceil(size / fmt.bytes_per_row)  # exact for small files: the head is all of it
    if rows > 1.2 * MAX_ROWS:  # a margin: rows in the head may be longer than the average
        raise DataError(f"{path.name} has more than {MAX_ROWS:,} ratings, the limit; use a sample of it "
                        f"(about {rows:,} by its size)")  # fmt: skip
    needed, free = rows * LOAD_BYTES_PER_RATING, available_bytes()
    if free is not None and needed > free:
        raise DataError(f"{path.name} holds about {rows:,} ratings; loading them needs about "
                        f"{format_bytes(needed)} ({LOAD_BYTES_PER_RATING} bytes per rating, measured) "
                        f"but only {format_bytes(free)} of memory is available")  # fmt: skip


def _finish(parts: Parts) -> Dataset:
    """Validate the ratings, fill missing item metadata, count duplicates."""
    name, ratings, items = parts.name, parts.ratings, parts.items
    validate_ratings(ratings, name)
    ratings = ratings.reset_index(drop=True)
    ratings["rating"] = ratings["rating"].astype("float32")
    ids = distinct(ratings["item"])
    if items is None:
        items = pd.DataFrame(index=pd.Index(ids, name="item"))
    items = items[~items.index.duplicated()]
    items = items.reindex(items.index.union(pd.Index(ids)).sort_values())
    items.index.name = "item"
    missing = items["title"].isna() if "title" in items else pd.Series(True, index=items.index)
    items["title"] = items.get("title", pd.Series(index=items.index, dtype=object)).where(
        ~missing, items.index.astype(str)
    )
    items["year"] = items.get("year", pd.Series(pd.NA, index=items.index)).astype("Int64")
    items["genres"] = items.get("genres", pd.Series("", index=items.index)).fillna("")
    warnings = list(parts.warnings)
    n_dup = count_duplicates(ratings["user"], ratings["item"])
    if 2 * n_dup >= len(ratings):  # re-ratings happen; a table that is mostly repeats is a mistake
        raise DataError(f"{name}: {n_dup:,} of {len(ratings):,} ratings repeat an earlier (user, item) "
                        "pair; is the table duplicated?")  # fmt: skip
    if n_dup:
        warnings.append(f"{n_dup:,} duplicate (user, item) pairs kept, as fastai does")
    return Dataset(name, ratings, items, parts.users, parts.folds, tuple(warnings))


def validate_ratings(ratings: pd.DataFrame, name: str) -> None:
    """Raise DataError on an empty, oversized or non-finite ratings table."""
    if len(ratings) == 0:
        raise DataError(f"{name} holds no ratings")
    if len(ratings) > MAX_ROWS:
        raise DataError(f"{name} has more than {MAX_ROWS:,} ratings, the limit; use a sample of it")
    if len(ratings) < MIN_RATINGS:
        raise DataError(f"{name} has only {len(ratings)} ratings; at least {MIN_RATINGS} are needed")
    r = ratings["rating"].to_numpy()
    finite = np.isfinite(r)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise DataError(f"{name}: rating on row {row + 1} is {float(r[row])} (NaN or infinite)")
    largest = float(max(-r.min(), r.max()))
    if largest > 1e6:
        raise DataError(f"{name}: ratings reach {largest:g}; a rating scale is expected")


def distinct(ids: pd.Series) -> np.ndarray:
    """The sorted distinct ids of a column: a presence mask for dense integers (25M ids in 0.1 s,
    against 1 s for np.unique), else a hash table."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        used = np.unique(ids.cat.codes.to_numpy())
        return ids.cat.categories.to_numpy()[used[used >= 0]]
    values = ids.to_numpy()
    if values.dtype.kind in "iu" and len(values):
        low, high = int(values.min()), int(values.max())
        if high - low < max(4 * len(values), 1 << 20):
            present = np.zeros(high - low + 1, dtype=bool)
            present[values - low] = True
            return (np.flatnonzero(present) + low).astype(values.dtype)
    return np.sort(pd.unique(values))


def index_table(ids: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vocabulary, table, keys): the sorted distinct ids, and each row's position in that
    vocabulary as table[keys] (int32). Dense integers index a table by value and categoricals by
    code, so a column of 25M becomes positions in one gather (0.2 s), never a Python object per
    rating; anything else takes np.unique's sort. A caller may relabel the small table first."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        keys, names = ids.cat.codes.to_numpy(), ids.cat.categories.to_numpy()
        used = np.zeros(len(names), dtype=bool)
        used[keys] = True
        kept = np.flatnonzero(used)
        kept = kept[np.argsort(names[kept], kind="stable")]  # tables.py sorts them; a hand-made table may not
        return names[kept], _positions(kept, len(names)), keys
    values = ids.to_numpy()
    if values.dtype.kind in "iu" and len(values):
        low, high = int(values.min()), int(values.max())
        if high - low < max(4 * len(values), 1 << 20):
            keys = values if low >= 0 else values - low  # non-negative ids index the table as they are
            present = np.zeros(int(keys.max()) + 1, dtype=bool)
            present[keys] = True
            kept = np.flatnonzero(present)
            return (kept + min(low, 0)).astype(values.dtype), _positions(kept, len(present)), keys
    vocabulary, inverse = np.unique(values, return_inverse=True)
    return vocabulary, np.arange(len(vocabulary), dtype=np.int32), inverse


def _positions(kept: np.ndarray, size: int) -> np.ndarray:
    """A table of `size` entries holding i at kept[i] (the others are never read)."""
    table = np.zeros(size, dtype=np.int32)
    table[kept] = np.arange(len(kept), dtype=np.int32)
    return table


def count_duplicates(users: pd.Series, items: pd.Series) -> int:
    """How many ratings repeat an earlier (user, item) pair: from one 64-bit key per rating,
    checked in order (MovieLens files are sorted by user then item) or else sorted."""
    u, i = (_codes(c) for c in (users, items))
    if u.dtype.itemsize > 4 or i.dtype.itemsize > 4:
        return int(pd.DataFrame({"u": u, "i": i}).duplicated().sum())
    key = (u.astype(np.int64) << 32) | (i.astype(np.int64) & 0xFFFFFFFF)
    if len(key) < 2 or bool((key[1:] > key[:-1]).all()):
        return 0
    key.sort()
    return int(np.count_nonzero(key[1:] == key[:-1]))


def _codes(ids: pd.Series) -> np.ndarray:
    return ids.cat.codes.to_numpy() if isinstance(ids.dtype, pd.CategoricalDtype) else ids.to_numpy()


def _bytes(n: int) -> str:
    """A size for people: 512 bytes, 1.5 KB, 2.1 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


# --- the columnar cache -----------------------------------------------------------------------


def _source_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def _from_cache(cache_dir: Path, key: str) -> Dataset | None:
    entry = tablecache.read_entry(cache_dir, key)
    if entry is None:
        return None
    frames, folds, meta = entry
    dataset = Dataset(
        meta["name"], frames["ratings"], frames["items"], frames["users"], folds, tuple(meta["warnings"])
    )
    dataset.__dict__["fingerprint"] = meta["fingerprint"]  # computed when the entry was written
    if "summary" in meta:  # as are these (the sidebar's counts: 0.7-1.5 s at 25M)
        dataset.__dict__["_summary"] = meta["summary"]
        dataset.__dict__["rating_scale"] = RatingScale(
            **{**meta["scale"], "levels": tuple(meta["scale"]["levels"])}
        )
    return dataset


def _to_cache(cache_dir: Path, key: str, dataset: Dataset) -> None:
    frames = {"ratings": dataset.ratings, "items": dataset.items, "users": dataset.users}
    meta = {
        "name": dataset.name,
        "warnings": list(dataset.warnings),
        "fingerprint": dataset.fingerprint,
        "summary": dataset.summary(),
        "scale": dataclasses.asdict(dataset.rating_scale),
    }
    tablecache.write_entry(cache_dir, key, frames, dict(dataset.folds), meta)

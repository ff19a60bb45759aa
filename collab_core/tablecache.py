"""A columnar cache of parsed tables: Arrow IPC files keyed by the source's signature.

A source (a file, a folder, a zip) is known by the paths, sizes and modification times of its
files plus the options it was read with (`sources.source_key`); the parsed tables are kept under
`cache_dir/tables/<key>/` (one Arrow IPC file per table, folds as .npy, a meta.json with each
file's size). Each entry is written to a temporary folder and moved into place with one
`os.replace`, so an interrupted load leaves no half-written entry; an entry that cannot be read,
or whose files have other sizes than it recorded, is removed and rebuilt.

Why Arrow IPC (uncompressed) and not Parquet: 25M ratings (500 MB of columns) read back in 0.4 s
memory-mapped, against 2.9-5.2 s for Parquet (lz4, zstd or none) on the same 2-core machine; the
cost is disk (500 MB against 230 MB).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather

VERSION = 2  # bump when what a loader produces changes: old entries are then never matched (2: counts)
STALE_SECONDS = 3600  # temporary folders older than this were left by an interrupted write


def read_entry(
    cache_dir: Path, key: str
) -> tuple[dict[str, pd.DataFrame | None], dict[str, np.ndarray], dict] | None:
    """The cached tables, folds and meta of a key; None on a miss or a damaged entry (then removed)."""
    folder = cache_dir / "tables" / key
    if not folder.is_dir():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") != VERSION:
            raise ValueError("an entry of another version")
        frames = {}
        for name, size in meta["tables"].items():
            path = folder / f"{name}.arrow"
            if size is None:
                frames[name] = None
                continue
            if path.stat().st_size != size:  # truncated or replaced: the mapped file would lie
                raise ValueError(f"{path} has another size than written")
            table = feather.read_table(path, memory_map=True)
            table.validate()
            frames[name] = table.to_pandas(split_blocks=True)
        # mapped copy-on-write: 200 MB of a 25M encoding's indices in 0.1 s instead of 1.8 s (load 17)
        # of reading into fresh memory; files are only ever replaced whole, never rewritten in place
        folds = {
            name: np.load(folder / f"{name}.npy", allow_pickle=False, mmap_mode="c") for name in meta["folds"]
        }
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return frames, folds, meta


def write_entry(
    cache_dir: Path,
    key: str,
    frames: Mapping[str, pd.DataFrame | None],
    folds: Mapping[str, np.ndarray],
    meta: dict,
) -> bool:
    """Write an entry atomically; False (and nothing left behind) when it cannot be written."""
    root = cache_dir / "tables"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    except OSError:
        return False
    try:
        sizes = {}
        for name, frame in frames.items():
            sizes[name] = None
            if frame is not None:
                feather.write_feather(
                    pa.Table.from_pandas(frame), tmp / f"{name}.arrow", compression="uncompressed"
                )
                sizes[name] = (tmp / f"{name}.arrow").stat().st_size
        for name, array in folds.items():
            with open(tmp / f"{name}.npy", "wb") as f:
                np.save(f, array, allow_pickle=False)
        full_meta = {
            **meta,
            "version": VERSION,
            "tables": sizes,
            "folds": list(folds),
        }
        (tmp / "meta.json").write_text(json.dumps(full_meta))
        os.replace(tmp, root / key)  # atomic; fails if another process wrote the same entry first
        return True
    except (OSError, ValueError, TypeError, pa.ArrowException):
        shutil.rmtree(tmp, ignore_errors=True)
        return False


def _remove_stale(root: Path, pattern: str = ".tmp-*") -> None:
    """Temporary files or folders of writes that were interrupted (a killed process) an hour ago or more."""
    now = time.time()
    for tmp in root.glob(pattern):
        try:
            if now - tmp.stat().st_mtime <= STALE_SECONDS:
                continue
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()
        except OSError:
            continue


# --- splits: a validation mask per (data, split kind, valid_pct, seed) -----------------------------
# A random split of 25M rows is a 25M permutation (1.2-1.5 s on 2 cores) that each process redoes
# before a stored model opens; kept as packed bits (3 MB at 25M) it reads back in a few ms.

SPLIT_DIGEST = 16  # bytes of blake2b over the packed mask, written before it
SPLIT_VERSION = 1  # bump when a split's rows change: old masks are then never matched


def derived_key(*parts: object) -> str:
    """The name of something made from a dataset (its encoding, a split): what it depends on, hashed."""
    return hashlib.blake2b(json.dumps(parts).encode(), digest_size=12).hexdigest()


def split_key(fingerprint: str, how: str, valid_pct: float, seed: int) -> str:
    """The file name stem of a split's mask."""
    return derived_key(SPLIT_VERSION, fingerprint, how, repr(float(valid_pct)), int(seed))


def read_split(cache_dir: Path, key: str, n: int) -> np.ndarray | None:
    """The (n,) bool validation mask written under key; None on a miss, or when the file is damaged
    or partial (then removed, so the caller writes it again)."""
    path = cache_dir / "splits" / f"{key}.bits"
    try:
        data = path.read_bytes()
    except OSError:
        return None
    packed = np.frombuffer(data, dtype=np.uint8, offset=min(SPLIT_DIGEST, len(data)))
    digest = hashlib.blake2b(packed, digest_size=SPLIT_DIGEST).digest()
    if len(data) != SPLIT_DIGEST + (n + 7) // 8 or data[:SPLIT_DIGEST] != digest:
        path.unlink(missing_ok=True)
        return None
    return np.unpackbits(packed, count=n).view(bool)


def write_split(cache_dir: Path, key: str, mask: np.ndarray) -> bool:
    """Write a validation mask atomically (temporary file + os.replace); False when it cannot be."""
    packed = np.packbits(mask)
    folder = cache_dir / "splits"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale(folder, ".*.tmp")
    except OSError:
        return False

    def write(f) -> None:
        f.write(hashlib.blake2b(packed, digest_size=SPLIT_DIGEST).digest())
        f.write(packed.tobytes())

    return _replace_file(folder / f"{key}.bits", key, write)


def _replace_file(path: Path, key: str, write: Callable) -> bool:
    """write(file) into a temporary file beside path (named for _remove_stale), then os.replace it
    to path; False, with nothing left behind, when it cannot be written."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
        return True
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return False


# The rows of a kept split, (train, valid) as two .npy files beside its mask, named by the mask's
# digest (the first SPLIT_DIGEST bytes of its file): mapped copy-on-write, a model's first open reads
# none of their pages, where making them from the mask (unpacking it, finding 32M rows) took
# 0.3-0.6 s and 130-160 MB of fresh memory at 25-32M. A mask written again under the key has another
# digest, so rows made from an older mask are never read (and are removed when new ones are written).
# Like the table cache's files, they are checked by their sizes, not by a digest of 100 MB.


def _rows_paths(cache_dir: Path, key: str) -> tuple[Path, Path] | None:
    """The row files of the mask now under key, by its digest; None if the mask has no readable header."""
    try:
        with open(cache_dir / "splits" / f"{key}.bits", "rb") as f:
            digest = f.read(SPLIT_DIGEST)
    except OSError:
        return None
    if len(digest) != SPLIT_DIGEST:
        return None
    stem = cache_dir / "splits" / f"{key}.{digest.hex()}"
    return Path(f"{stem}.train.npy"), Path(f"{stem}.valid.npy")


def read_split_rows(cache_dir: Path, key: str, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The (train, valid) rows kept for the mask under key, mapped copy-on-write; None on a miss, or
    when they do not fit n ratings (then removed)."""
    paths = _rows_paths(cache_dir, key)
    if paths is None or not all(path.is_file() for path in paths):
        return None
    try:
        train, valid = (np.load(path, mmap_mode="c", allow_pickle=False) for path in paths)
        if train.ndim != 1 or valid.ndim != 1 or len(train) + len(valid) != n or train.dtype != valid.dtype:
            raise ValueError("rows of another split")
        ends = (train[0], train[-1], valid[0], valid[-1])  # each sorted: the ends bound them
        if train.dtype.kind != "i" or min(ends) < 0 or max(ends) >= n:
            raise ValueError("rows outside the ratings")
    except (OSError, ValueError, IndexError):
        for path in paths:
            path.unlink(missing_ok=True)
        return None
    return train, valid


def write_split_rows(cache_dir: Path, key: str, train: np.ndarray, valid: np.ndarray) -> bool:
    """Write the rows of the mask now under key (each file atomically); remove rows of older masks."""
    paths = _rows_paths(cache_dir, key)
    if paths is None:
        return False
    for old in (cache_dir / "splits").glob(f"{key}.*.npy"):
        if old not in paths:
            old.unlink(missing_ok=True)
    return all(
        _replace_file(path, key, lambda f, rows=rows: np.save(f, rows, allow_pickle=False))
        for path, rows in zip(paths, (train, valid), strict=True)
    )

"""A data source named without reading it: the one signature that keys the parsed-table cache
(tablecache), the store's memo of data fingerprints and the noted data sizes (recipes).

Standard library only: the command line asks for it before pandas or torch are imported.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

MAX_SOURCE_FILES = 10_000  # a folder with more files than this is not worth signing file by file
KEY_FORMAT = 1  # hashed into every key (the table cache's first version: its entries keep their keys)


def source_key(path: Path, options: Mapping[str, object]) -> str | None:
    """A hash of what the source is (its files' paths, sizes, mtimes) and how it is read (options
    set to None count as not given); None when the source is missing or cannot be signed (too
    many files, unreadable)."""
    path = Path(path).resolve()
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if len(files) > MAX_SOURCE_FILES:
        return None
    given = sorted((k, str(v)) for k, v in options.items() if v is not None)
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps([KEY_FORMAT, str(path), given]).encode())
    for f in files:
        try:
            st = f.stat()
        except OSError:
            return None
        h.update(f"{f}\x00{st.st_size}\x00{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()

"""Download MovieLens 100k from GroupLens, verify it, and extract zips safely and atomically."""

import http.client
import os
import secrets
import shutil
import stat
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PureWindowsPath

from collab_core.errors import DataError
from collab_core.settings import ML100K_URL

ML100K_COUNTS = {"ratings": 100_000, "users": 943, "items": 1_682}
MAX_ZIP_BYTES = 200 * 2**20  # the download or archive itself (ml-100k is ~5 MB)
MAX_EXTRACT_BYTES = 2**30  # total uncompressed size of one archive
MAX_RATIO = 200  # uncompressed/compressed per member; deflate tops out near 1030
MAX_MEMBERS = 10_000  # many tiny entries exhaust inodes without tripping the size caps
RATIO_FLOOR = 2**20  # members smaller than this cannot be bombs, so skip the ratio check
CHUNK = 2**16

LOCAL_HINT = "to use a local copy, pass --data PATH (an ml-100k folder or zip) or set COLLAB_DATA_DIR"


def verify_ml100k(folder: Path) -> None:
    """Raise DataError unless `folder` holds the complete MovieLens 100k."""
    folder = Path(folder)
    missing = [name for name in ("u.data", "u.item", "u.user") if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder} is not an ml-100k folder: missing {', '.join(missing)}")
    users, items, n_ratings = set(), set(), 0
    with open(folder / "u.data", encoding="latin-1") as lines:
        for line_no, line in enumerate(lines, 1):
            fields = line.split("\t")
            if len(fields) != 4:
                raise DataError(
                    f"{folder / 'u.data'} line {line_no}: expected 4 tab-separated fields "
                    f"(user, item, rating, timestamp), got {len(fields)}"
                )
            users.add(fields[0])
            items.add(fields[1])
            n_ratings += 1
    found = {"ratings": n_ratings, "users": len(users), "items": len(items)}
    if found != ML100K_COUNTS:
        raise DataError(
            f"{folder / 'u.data'} has {n_ratings:,} ratings from {len(users):,} users on "
            f"{len(items):,} movies; ml-100k has 100,000 from 943 on 1,682 (damaged or not ml-100k)"
        )


def _member_path(info: zipfile.ZipInfo, root: Path) -> Path:
    """Where a member lands under `root`; DataError for anything that could escape it."""
    path = PureWindowsPath(info.filename)  # accepts both / and \\, and knows drive letters
    parts = path.parts
    if path.anchor:
        raise DataError(f"refusing to extract {info.filename!r}: absolute path in the archive")
    if not parts or ".." in parts:
        raise DataError(f"refusing to extract {info.filename!r}: it points outside the folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DataError(f"refusing to extract {info.filename!r}: symbolic links are not allowed")
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root):  # a symlink already inside dest
        raise DataError(f"refusing to extract {info.filename!r}: it points outside the folder")
    return target


def _check_sizes(zip_path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse zip bombs from the sizes the archive declares (zipfile enforces them when reading)."""
    if len(infos) > MAX_MEMBERS:
        raise DataError(f"{zip_path} has {len(infos):,} entries; the limit is {MAX_MEMBERS:,}")
    for info in infos:
        if info.flag_bits & 0x1:
            raise DataError(f"{zip_path}: {info.filename!r} is encrypted; use an unencrypted zip")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR and ratio > MAX_RATIO:
            raise DataError(
                f"{zip_path}: {info.filename!r} expands {ratio:,.0f}-fold (limit {MAX_RATIO}); "
                "refusing a likely zip bomb"
            )
    total = sum(info.file_size for info in infos)
    if total > MAX_EXTRACT_BYTES:
        raise DataError(f"{zip_path} expands to {total:,} bytes; the limit is {MAX_EXTRACT_BYTES:,} bytes")


def safe_extract(
    zip_path: Path,
    dest: Path,
    wanted: Callable[[str], bool] | None = None,
    max_zip_bytes: int = MAX_ZIP_BYTES,
) -> None:
    """Extract a zip into `dest`, checking every entry first; a late failure may leave a part.

    wanted: which members (by name) to extract; every member's path is checked all the same.
    """
    zip_path, root = Path(zip_path), Path(dest).resolve()
    try:
        if zip_path.stat().st_size > max_zip_bytes:
            raise DataError(f"{zip_path} is larger than {max_zip_bytes:,} bytes")
        with zipfile.ZipFile(zip_path) as archive:
            infos = archive.infolist()
            targets = [_member_path(info, root) for info in infos]
            pairs = [
                (i, t) for i, t in zip(infos, targets, strict=True) if wanted is None or wanted(i.filename)
            ]
            _check_sizes(zip_path, [info for info, _ in pairs])
            for info, target in pairs:
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
    except zipfile.BadZipFile as error:
        raise DataError(f"{zip_path} is not a valid zip archive ({error})") from error
    except (EOFError, zlib.error, NotImplementedError) as error:
        raise DataError(f"{zip_path} is damaged or truncated ({error})") from error
    except OSError as error:
        raise DataError(f"cannot extract {zip_path}: {error}") from error


def _fetch(url: str, dest: Path, progress: Callable[[int, int | None], None] | None, timeout: float) -> str:
    """Stream `url` into `dest` in chunks; return the server's content type."""
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "collab-explorer"})
    except ValueError as error:
        raise DataError(f"cannot download {url!r}: {error}") from error
    got, total = 0, None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            if total is not None and total > MAX_ZIP_BYTES:
                raise DataError(f"{url} is {total:,} bytes; the limit is {MAX_ZIP_BYTES:,}")
            while chunk := response.read(CHUNK):
                got += len(chunk)
                if got > MAX_ZIP_BYTES:
                    raise DataError(f"{url} sent more than {MAX_ZIP_BYTES:,} bytes; stopped")
                out.write(chunk)
                if progress is not None:
                    progress(got, total)
            content_type = response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        raise DataError(
            f"download of {url} failed: HTTP {error.code} {error.reason}; {LOCAL_HINT}"
        ) from error
    except http.client.IncompleteRead as error:  # a chunked body cut short
        raise DataError(
            f"download interrupted: got {got:,} bytes ({error!r}); try again or {LOCAL_HINT}"
        ) from error
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise DataError(f"download of {url} failed ({reason}); {LOCAL_HINT}") from error
    if total is not None and got < total:
        raise DataError(f"download interrupted: got {got:,} of {total:,} bytes; try again or {LOCAL_HINT}")
    return content_type


def download_ml100k(
    cache_dir: Path,
    url: str = ML100K_URL,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download, verify and extract ml-100k into `cache_dir`; return `cache_dir / 'ml-100k'`."""
    cache_dir = Path(cache_dir)
    target = cache_dir / "ml-100k"
    if target.exists():
        try:
            verify_ml100k(target)
        except DataError as error:
            raise DataError(f"{error}; remove {target} and try again") from error
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # unique names, so two processes downloading at once never touch each other's files
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    zip_path = cache_dir / f".ml-100k.zip.partial-{tag}"
    work = cache_dir / f".ml-100k.extract-{tag}"
    try:
        content_type = _fetch(url, zip_path, progress, timeout)
        if not zipfile.is_zipfile(zip_path):
            raise DataError(
                f"the download from {url} is not a zip archive (got {content_type}, "
                f"{zip_path.stat().st_size:,} bytes); try again later or {LOCAL_HINT}"
            )
        safe_extract(zip_path, work)
        try:
            verify_ml100k(work / "ml-100k")
        except DataError as error:
            raise DataError(f"the download from {url} is not MovieLens 100k: {error}") from error
        try:
            os.replace(work / "ml-100k", target)  # atomic: the folder appears whole or not at all
        except OSError as error:
            if not target.is_dir():
                raise DataError(f"cannot move the extracted data to {target}: {error}") from error
            verify_ml100k(target)  # another process got there first; use its copy if it verifies
        return target
    finally:
        zip_path.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)

"""Every MovieLens layout (folder and official zip), other tables, the rating scale, the columnar
cache and the memory guard; fixtures of a few hundred rows written here in the exact formats."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import collab_core.data as data
from collab_core.data import load_path
from collab_core.errors import DataError
from collab_core.layouts import ML1M_OCCUPATIONS

USERS, MOVIES = 12, 30
PAIRS = [(u, m) for u in range(1, USERS + 1) for m in range(1, MOVIES + 1) if (u * 7 + m) % 3]  # 240
TITLES = {m: f"Film {m}: Part {m % 3} ({1960 + m})" for m in range(1, MOVIES + 1)}
TITLES[5] = "Misérables, Les (1995)"  # Latin-1 in 1M's movies.dat


def stars(u: int, m: int, half: bool = False) -> float:
    return ((u * m) % 9 + 1) / 2 if half else (u + m) % 5 + 1


def write_dat(folder: Path, half: bool, users: bool) -> Path:
    """MovieLens 1M (users.dat, Latin-1 titles) or 10M (half stars, no users.dat) as released."""
    folder.mkdir(parents=True)
    rows = (f"{u}::{m}::{stars(u, m, half):g}::{978300000 + u * 100 + m}\n" for u, m in PAIRS)
    (folder / "ratings.dat").write_text("".join(rows))
    movies = "".join(f"{m}::{t}::Comedy|Drama\n" for m, t in TITLES.items())
    (folder / "movies.dat").write_bytes(movies.encode("latin-1" if users else "utf-8"))
    if users:
        lines = (
            f"{u}::{'MF'[u % 2]}::{(18, 25, 35)[u % 3]}::{u % 21}::{48000 + u}\n" for u in range(1, USERS + 1)
        )
        (folder / "users.dat").write_text("".join(lines))
    else:
        (folder / "tags.dat").write_text("1::1::funny::978300000\n")
    return folder


def write_csv_release(folder: Path) -> Path:
    """MovieLens 20M/25M/32M/latest: ratings.csv, movies.csv (quoted titles), and files not read."""
    folder.mkdir(parents=True)
    rows = (f"{u},{m},{stars(u, m, True):g},{1500000000 + u * 100 + m}\n" for u, m in PAIRS)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(rows))
    movies = "".join(f'{m},"{t}",Comedy|Drama\n' for m, t in TITLES.items())
    (folder / "movies.csv").write_text("movieId,title,genres\n" + movies)
    (folder / "genome-scores.csv").write_text("movieId,tagId,relevance\n1,1,0.5\n")
    (folder / "links.csv").write_text("movieId,imdbId,tmdbId\n1,114709,862\n")
    return folder


def zip_folder(folder: Path) -> Path:
    """The official zips hold one top folder named like the release."""
    archive = folder.parent / f"{folder.name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"{folder.name}/{f.name}")
    return archive


@pytest.mark.parametrize("zipped", [False, True], ids=["folder", "zip"])
def test_ml1m(tmp_path, zipped):
    folder = write_dat(tmp_path / "ml-1m", half=False, users=True)
    ds = load_path(zip_folder(folder) if zipped else folder)
    assert ds.name == "ml-1m" and len(ds.ratings) == len(PAIRS)
    assert ds.ratings.iloc[0].tolist() == [1, 1, 3.0, 978300101]
    assert ds.items.loc[5, "title"] == "Misérables, Les (1995)" and ds.items.loc[7, "year"] == 1967
    assert ds.items.loc[1, "title"] == "Film 1: Part 1 (1961)"  # a ':' in a title is not a separator
    assert ds.items.loc[1, "genres"] == "Comedy|Drama"
    assert ds.users.loc[2].to_dict() == {
        "age": 35,
        "gender": "M",
        "occupation": ML1M_OCCUPATIONS[2],
        "zip": "48002",
    }
    assert ds.rating_scale.y_range == (0.0, 5.5)


@pytest.mark.parametrize("zipped", [False, True], ids=["folder", "zip"])
def test_ml10m_half_stars(tmp_path, zipped):
    folder = write_dat(tmp_path / "ml-10M100K", half=True, users=False)
    ds = load_path(zip_folder(folder) if zipped else folder)
    assert ds.users is None and len(ds.ratings) == len(PAIRS)
    assert ds.rating_scale.half_stars and ds.rating_scale.levels[0] == 0.5
    assert ds.items.loc[5, "title"] == "Misérables, Les (1995)"  # 10M's movies.dat is UTF-8


def test_ratings_dat_given_directly(tmp_path):
    folder = write_dat(tmp_path / "ml-1m", half=False, users=True)
    ds = load_path(folder / "ratings.dat")  # was: '"delimiter" must be a 1-character string'
    assert len(ds.ratings) == len(PAIRS) and list(ds.ratings.columns) == [
        "user",
        "item",
        "rating",
        "timestamp",
    ]


@pytest.mark.parametrize("zipped", [False, True], ids=["folder", "zip"])
def test_csv_release(tmp_path, zipped):
    folder = write_csv_release(tmp_path / "ml-25m")
    ds = load_path(zip_folder(folder) if zipped else folder)
    assert ds.name == "ml-25m" and len(ds.ratings) == len(PAIRS)
    assert ds.items.loc[5, "title"] == "Misérables, Les (1995)" and ds.items.loc[5, "year"] == 1995
    assert str(ds.ratings.user.dtype) == "int32" and str(ds.ratings.rating.dtype) == "float32"


def test_zip_with_plain_column_names(tmp_path):
    """A zip whose ratings.csv says user,item,rating (it failed with pandas' own message)."""
    archive = tmp_path / "mine.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(
            "mine/ratings.csv", "user,item,rating\n" + "".join(f"{u},{m},{stars(u, m)}\n" for u, m in PAIRS)
        )
    ds = load_path(archive)
    assert len(ds.ratings) == len(PAIRS) and ds.ratings.rating.max() == 5


def test_book_crossing(tmp_path):
    """Semicolons, quotes everywhere, Latin-1, ISBNs as ids, a 0-10 scale, and titles beside it."""
    folder = tmp_path / "BX-CSV-Dump"
    folder.mkdir()
    isbns = [f"03{m:07d}X" if m % 4 == 0 else f"0{m:09d}" for m in range(1, MOVIES + 1)]
    rows = "".join(f'"{u * 11}";"{isbns[m - 1]}";"{(u + m) % 11}"\n' for u, m in PAIRS)
    (folder / "BX-Book-Ratings.csv").write_bytes(
        ('"User-ID";"ISBN";"Book-Rating"\n' + rows).encode("latin-1")
    )
    books = "".join(
        f'"{isbns[m - 1]}";"{TITLES[m]}";"Author {m}";"{1960 + m}"\n' for m in range(1, MOVIES + 1)
    )
    header = '"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication"\n'
    (folder / "BX-Books.csv").write_bytes((header + books).encode("latin-1"))
    (folder / "BX-Users.csv").write_text('"User-ID";"Location";"Age"\n"11";"x";"20"\n')
    ds = load_path(folder)
    r = ds.ratings
    assert len(r) == len(PAIRS) and isinstance(r.item.dtype, pd.CategoricalDtype)  # codes, not strings
    assert r.user.iloc[0] == 11 and r.item.iloc[0] == isbns[0]
    assert ds.items.loc[isbns[4], "title"] == "Misérables, Les (1995)"
    assert ds.items.loc[isbns[6], "year"] == 1967
    assert ds.rating_scale.low == 0 and ds.rating_scale.high == 10 and ds.rating_scale.y_range == (-1.0, 11.0)
    assert ds.warnings == ()  # the ratings are ASCII; only the titles were Latin-1
    assert load_path(folder).fingerprint == ds.fingerprint  # names hash the same every time


SEPARATED = {
    "comma": (",", "userId,movieId,rating"),
    "tab": ("\t", "user_id\titem_id\tscore"),
    "semicolon": (";", "User-ID;book;stars"),
    "double_colon": ("::", "user::movie::rating"),
    "pipe": ("|", "reviewerID|asin|overall"),
}


@pytest.mark.parametrize("case", SEPARATED)
def test_separators_and_common_names(tmp_path, case):
    sep, header = SEPARATED[case]
    path = tmp_path / "t.txt"
    path.write_text(header + "\n" + "".join(f"{u}{sep}{m}{sep}{stars(u, m)}\n" for u, m in PAIRS))
    ds = load_path(path)
    u, m = PAIRS[1]
    assert ds.ratings[["user", "item", "rating"]].iloc[1].tolist() == [u, m, float(stars(u, m))]
    assert len(ds.ratings) == len(PAIRS)


def test_ids_beyond_int32_stay_int64(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("user,item,rating\n" + "".join(f"{u + 2**40},{m},{stars(u, m)}\n" for u, m in PAIRS))
    r = load_path(path).ratings
    assert str(r.user.dtype) == "int64" and r.user.iloc[0] == 1 + 2**40 and str(r.item.dtype) == "int32"


@pytest.mark.parametrize(
    ("levels", "y_range", "step"),
    [
        ([1, 2, 3, 4, 5], (0.0, 5.5), 1.0),  # ml-100k: fastai's (0, 5.5), unchanged
        ([0.5 * k for k in range(1, 11)], (0.0, 5.5), 0.5),  # half stars
        (list(range(1, 11)), (0.0, 11.0), 1.0),
        (list(range(0, 11)), (-1.0, 11.0), 1.0),  # Book-Crossing
    ],
    ids=["1-5", "0.5-5", "1-10", "0-10"],
)
def test_rating_scale(tmp_path, levels, y_range, step):
    path = tmp_path / "scale.csv"
    path.write_text(
        "user,item,rating\n" + "".join(f"{u},{m},{levels[(u + m) % len(levels)]}\n" for u, m in PAIRS)
    )
    scale = load_path(path).rating_scale
    assert (scale.low, scale.high, scale.step) == (min(levels), max(levels), step)
    assert scale.levels == tuple(float(v) for v in levels) and scale.y_range == y_range


def test_ml100k_scale(ml100k):
    assert ml100k.rating_scale.y_range == (0.0, 5.5) and not ml100k.rating_scale.half_stars


# --- the columnar cache -----------------------------------------------------------------------


@pytest.fixture
def release(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CACHE_MIN_BYTES", 0)  # cache even a tiny source
    return write_csv_release(tmp_path / "ml-latest"), tmp_path / "cache"


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "tables").iterdir()) if (cache / "tables").is_dir() else []


def test_cache_round_trip(release):
    folder, cache = release
    seen = []
    cold = load_path(folder, cache_dir=cache, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] > 0
    assert len(entries(cache)) == 1
    warm = load_path(folder, cache_dir=cache)
    assert "fingerprint" in warm.__dict__ and warm.fingerprint == cold.fingerprint
    pd.testing.assert_frame_equal(warm.ratings, cold.ratings)
    pd.testing.assert_frame_equal(warm.items, cold.items)
    assert warm.name == cold.name and warm.rating_scale == cold.rating_scale
    assert {"_summary", "rating_scale"} <= warm.__dict__.keys()  # read from the entry, not counted again
    assert warm.summary() == cold.summary()
    (folder / "ratings.csv").write_text((folder / "ratings.csv").read_text() + "99,1,4,1600000000\n")
    changed = load_path(folder, cache_dir=cache)  # another size: another key, not the stale entry
    assert len(changed.ratings) == len(cold.ratings) + 1 and len(entries(cache)) == 2


def test_no_cache_without_a_folder(release, tmp_path):
    folder, cache = release
    load_path(folder)
    assert not cache.exists()


def test_damaged_cache_is_rebuilt(release):
    folder, cache = release
    cold = load_path(folder, cache_dir=cache)
    [key] = entries(cache)
    arrow = cache / "tables" / key / "ratings.arrow"
    arrow.write_bytes(arrow.read_bytes()[:100])  # truncated
    again = load_path(folder, cache_dir=cache)
    pd.testing.assert_frame_equal(again.ratings, cold.ratings)
    (cache / "tables" / key / "meta.json").write_text("{not json")
    assert load_path(folder, cache_dir=cache).fingerprint == cold.fingerprint
    assert entries(cache) == [key] and (cache / "tables" / key / "ratings.arrow").stat().st_size > 100


def test_interrupted_write_leaves_no_entry(release):
    """A process killed while writing the cache: no entry appears, and the next load rebuilds it."""
    folder, cache = release
    script = (
        "import os, sys, pyarrow.feather as f\n"
        "from pathlib import Path\n"
        "import collab_core.data as d\n"
        "d.CACHE_MIN_BYTES = 0\n"
        "real = f.write_feather\n"
        "def die(*a, **k):\n"
        "    real(*a, **k)\n"
        "    os._exit(9)\n"  # killed halfway: after the first file, before meta.json and the rename
        "f.write_feather = die\n"
        "d.load_path(Path(sys.argv[1]), cache_dir=Path(sys.argv[2]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script, str(folder), str(cache)], env=env, timeout=120)
    assert done.returncode == 9
    assert [name for name in entries(cache) if not name.startswith(".tmp-")] == []
    load_path(folder, cache_dir=cache)
    assert len([name for name in entries(cache) if not name.startswith(".tmp-")]) == 1


# --- refused before loading -------------------------------------------------------------------


def test_too_big_for_memory_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n" + "".join(f"{u},{m},{stars(u, m)}\n" for u, m in PAIRS))
    monkeypatch.setattr(data, "available_bytes", lambda: 1000)
    message = r"r\.csv holds about 240 ratings; loading them needs .* \(60 bytes per rating, measured\)"
    with pytest.raises(DataError, match=message + r" but only .* of memory is available"):
        load_path(path)


def test_duplicates_counted_in_any_order():
    users = pd.Series(np.array([3, 1, 2, 1, 3, 1], dtype=np.int32))
    items = pd.Series(np.array([1, 1, 2, 1, 1, 2], dtype=np.int32))
    assert data.count_duplicates(users, items) == 2
    assert (
        data.count_duplicates(pd.Series([1, 2, 3], dtype=np.int32), pd.Series([1, 1, 1], dtype=np.int32)) == 0
    )

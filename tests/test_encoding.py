"""Encoding (fastai's Categorify) and the splits: random, the ml-100k fold files, temporal."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collab_core import tablecache
from collab_core.config import FOLDS
from collab_core.data import Dataset, load_path
from collab_core.encoding import KEEP_FROM, NA, encode, item_titles, split
from collab_core.errors import ConfigError, DataError

# --- encoding ---------------------------------------------------------------------------------


def test_encode_by_title(ml100k):
    enc = encode(ml100k)
    assert (enc.n_users, enc.n_items) == (944, 1665)  # the book's 944 users and 1,664 titles + #na#
    assert enc.users[0] == NA and enc.items[0] == NA == "#na#"
    assert list(enc.users[1:]) == list(range(1, 944))
    assert list(enc.items[1:]) == sorted(enc.items[1:]) and len(set(enc.items[1:])) == 1664
    assert enc.items[1] == "'Til There Was You (1997)"
    # every row decodes back to its own user and title; index 0 is never used
    assert enc.user_idx.min() == 1 and enc.item_idx.min() == 1
    assert np.array_equal(enc.users[enc.user_idx.numpy()], ml100k.ratings.user.to_numpy())
    assert np.array_equal(enc.items[enc.item_idx.numpy()], ml100k.with_titles().title.to_numpy())
    assert np.array_equal(enc.rating.numpy(), ml100k.ratings.rating.to_numpy())
    assert str(enc.user_idx.dtype) == str(enc.item_idx.dtype) == "torch.int32"  # compact: 100 MB each at 25M


def test_encode_by_id(ml100k):
    enc = encode(ml100k, item_key="id")
    assert enc.n_items == 1683 and enc.items[0] == NA
    assert list(enc.items[1:]) == list(range(1, 1683))
    assert np.array_equal(enc.items[enc.item_idx.numpy()], ml100k.ratings.item.to_numpy())
    titles = item_titles(ml100k, enc)
    assert titles[0] == NA and titles[1] == "Toy Story (1995)" and len(titles) == 1683


def test_same_title_different_ids_share_one_row(ml100k):
    enc = encode(ml100k)
    ids = ml100k.items.index[ml100k.items.title == "Chasing Amy (1997)"]
    assert len(ids) == 2
    rows = ml100k.ratings.item.isin(ids).to_numpy()
    assert set(enc.item_idx.numpy()[rows]) == {list(enc.items).index("Chasing Amy (1997)")}


def test_items_are_keyed_by_title_or_id(ml100k):
    with pytest.raises(ConfigError, match="item_key must be 'title' or 'id'"):
        encode(ml100k, item_key="name")


def test_string_ids_get_sorted_vocabularies(tmp_path):
    path = tmp_path / "r.csv"
    rows = [f"u{u},m{i},{(u + i) % 5 + 1},Film {i} ({1990 + i})" for u in (3, 1, 2) for i in (2, 10, 1)]
    path.write_text("user,item,rating,title\n" + "\n".join(rows + rows[:1]))
    dataset = load_path(path)
    enc = encode(dataset, item_key="id")
    assert list(enc.users) == [NA, "u1", "u2", "u3"]
    assert list(enc.items) == [NA, "m1", "m10", "m2"]
    assert list(item_titles(dataset, enc)) == [NA, "Film 1 (1991)", "Film 10 (2000)", "Film 2 (1992)"]


# --- random split -----------------------------------------------------------------------------


def test_random_split_sizes_and_disjointness(ml100k):
    train, valid = split(ml100k)
    assert (len(train), len(valid)) == (80_000, 20_000)
    assert len(np.intersect1d(train, valid)) == 0
    assert np.array_equal(np.union1d(train, valid), np.arange(100_000))
    train10, valid10 = split(ml100k, valid_pct=0.1)
    assert (len(train10), len(valid10)) == (90_000, 10_000)


def test_random_split_is_seeded(ml100k):
    a, b, c = split(ml100k, seed=42), split(ml100k, seed=42), split(ml100k, seed=7)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])


def test_split_refuses_bad_options(ml100k):
    with pytest.raises(ConfigError, match="unknown split 'u6'"):
        split(ml100k, "u6")
    for pct in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ConfigError, match="valid_pct must be between 0 and 1"):
            split(ml100k, valid_pct=pct)


# --- the ml-100k fold files -------------------------------------------------------------------


def test_u1_to_u5_partition_the_ratings(ml100k, ml100k_dir):
    valids = []
    for fold in ("u1", "u2", "u3", "u4", "u5"):
        train, valid = split(ml100k, fold)
        assert (len(train), len(valid)) == (80_000, 20_000)
        assert len(np.intersect1d(train, valid)) == 0
        # the validation rows are exactly the pairs of the fold's .test file
        test = np.loadtxt(ml100k_dir / f"{fold}.test", dtype=np.int64, usecols=(0, 1))
        pairs = ml100k.ratings[["user", "item"]].to_numpy()[valid]
        assert {tuple(p) for p in pairs} == {tuple(p) for p in test}
        valids.append(valid)
    together = np.concatenate(valids)
    assert len(together) == 100_000 and len(np.unique(together)) == 100_000


@pytest.mark.parametrize("fold", ["ua", "ub"])
def test_ua_ub_hold_out_ten_ratings_per_user(ml100k, fold):
    train, valid = split(ml100k, fold)
    assert (len(train), len(valid)) == (90_570, 9_430)
    per_user = ml100k.ratings.user.to_numpy()[valid]
    assert (np.bincount(per_user)[1:] == 10).all()


def test_fold_split_needs_fold_files(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n" + "\n".join(f"{u},{i},3" for u in range(1, 5) for i in range(1, 5)))
    with pytest.raises(DataError, match=r"split u1 needs the ml-100k fold file u1\.test, which r\.csv lacks"):
        split(load_path(path), "u1")
    assert FOLDS == ("u1", "u2", "u3", "u4", "u5", "ua", "ub")


# --- temporal split ---------------------------------------------------------------------------


def test_temporal_split_puts_each_users_latest_ratings_in_validation(ml100k):
    train, valid = split(ml100k, "temporal")
    assert len(np.intersect1d(train, valid)) == 0 and len(train) + len(valid) == 100_000
    r = ml100k.ratings
    last_train = r.iloc[train].groupby("user").timestamp.max()
    first_valid = r.iloc[valid].groupby("user").timestamp.min()
    assert len(first_valid) == 943  # every ml-100k user has >= 20 ratings, so each gives some
    assert (first_valid >= last_train.reindex(first_valid.index)).all()
    per_user = r.groupby("user").size()
    assert np.array_equal(r.iloc[valid].groupby("user").size(), np.floor(per_user * 0.2).astype(int))


def test_temporal_split_needs_timestamps(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n" + "\n".join(f"{u},{i},3" for u in range(1, 5) for i in range(1, 9)))
    with pytest.raises(DataError, match="has no timestamps, so it cannot be split by time"):
        split(load_path(path), "temporal")


# --- splits kept on disk ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big() -> Dataset:
    """Just enough ratings for a split to be kept (not a multiple of 8: the packed mask's padding)."""
    n, rng = KEEP_FROM + 5, np.random.default_rng(0)
    ratings = pd.DataFrame(
        {
            "user": rng.integers(1, 3000, n, dtype=np.int32),
            "item": rng.integers(1, 500, n, dtype=np.int32),
            "rating": rng.integers(1, 6, n).astype(np.float32),
            "timestamp": rng.integers(0, 10**9, n),
        }
    )
    items = pd.DataFrame({"title": [f"Movie {i}" for i in range(1, 500)]}, index=pd.RangeIndex(1, 500))
    return Dataset("big", ratings, items)


def split_file(cache_dir: Path) -> Path:
    (path,) = (cache_dir / "splits").glob("*.bits")
    return path


@pytest.mark.parametrize(
    ("how", "valid_pct", "seed"), [("random", 0.2, 42), ("random", 0.1, 7), ("temporal", 0.2, 42)]
)
def test_a_kept_split_is_the_computed_one(big, tmp_path, how, valid_pct, seed):
    computed = split(big, how, valid_pct, seed)
    first = split(big, how, valid_pct, seed, cache_dir=tmp_path)  # made here, then written
    path = split_file(tmp_path)
    assert path.stat().st_size == tablecache.SPLIT_DIGEST + (len(big.ratings) + 7) // 8
    again = split(big, how, valid_pct, seed, cache_dir=tmp_path)  # read back
    for rows in (first, again):
        for got, want in zip(rows, computed, strict=True):
            assert got.dtype == want.dtype == np.int32 and np.array_equal(got, want)
    # what comes back is the file's mask: another (intact) mask written under the key is what split gives
    other = np.zeros(len(big.ratings), dtype=bool)
    other[:10] = True
    assert tablecache.write_split(tmp_path, path.stem, other)
    assert np.array_equal(split(big, how, valid_pct, seed, cache_dir=tmp_path)[1], np.arange(10))


def test_each_split_setting_has_its_own_file(big, tmp_path):
    a = split(big, "random", 0.2, 42, cache_dir=tmp_path)
    b = split(big, "random", 0.2, 43, cache_dir=tmp_path)
    c = split(big, "random", 0.25, 42, cache_dir=tmp_path)
    assert len(list((tmp_path / "splits").glob("*.bits"))) == 3
    assert not np.array_equal(a[1], b[1]) and len(c[1]) == int(0.25 * len(big.ratings))


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty", "longer"])
def test_a_damaged_or_partial_split_file_is_ignored_and_rewritten(big, tmp_path, damage):
    computed = split(big, cache_dir=tmp_path)
    path = split_file(tmp_path)
    intact = path.read_bytes()
    damaged = {
        "truncated": intact[: len(intact) // 2],
        "flipped": intact[:5000] + bytes([intact[5000] ^ 0x10]) + intact[5001:],
        "empty": b"",
        "longer": intact + b"\0",
    }[damage]
    path.write_bytes(damaged)
    for rows in (tmp_path / "splits").glob("*.npy"):  # without the rows kept beside it, the mask is read
        rows.unlink()
    got = split(big, cache_dir=tmp_path)
    assert all(np.array_equal(g, w) for g, w in zip(got, computed, strict=True))
    assert path.read_bytes() == intact  # written again, whole
    assert not list((tmp_path / "splits").glob(".*.tmp"))


def test_a_kept_splits_rows_are_mapped_and_checked(big, tmp_path):
    computed = split(big, cache_dir=tmp_path)
    train_file, valid_file = sorted((tmp_path / "splits").glob("*.npy"))  # .train.npy, .valid.npy
    assert train_file.name.endswith(".train.npy") and valid_file.name.endswith(".valid.npy")
    mapped = split(big, cache_dir=tmp_path)
    assert all(isinstance(rows, np.memmap) for rows in mapped)  # read back without being made
    assert all(np.array_equal(g, w) and g.dtype == w.dtype for g, w in zip(mapped, computed, strict=True))
    mapped[1][0] = -1  # copy-on-write: the caller's copy changes, the file does not
    assert np.array_equal(split(big, cache_dir=tmp_path)[1], computed[1])
    intact = valid_file.read_bytes()
    valid_file.write_bytes(intact[: len(intact) // 2])  # cut short: made again from the mask, rewritten
    assert np.array_equal(split(big, cache_dir=tmp_path)[1], computed[1])
    assert valid_file.read_bytes() == intact
    np.save(train_file, np.arange(5, dtype=np.int32))  # rows of some other split: not taken
    assert all(np.array_equal(g, w) for g, w in zip(split(big, cache_dir=tmp_path), computed, strict=True))


def test_small_splits_and_fold_files_are_not_kept(ml100k, tmp_path):
    assert np.array_equal(split(ml100k, cache_dir=tmp_path)[1], split(ml100k)[1])
    split(ml100k, "temporal", cache_dir=tmp_path)
    assert not (tmp_path / "splits").exists()


def assert_same_encoding(got, want) -> None:
    for name in ("users", "items"):
        assert list(getattr(got, name)) == list(getattr(want, name))
        assert {type(v) for v in getattr(got, name)} == {type(v) for v in getattr(want, name)}
    for name in ("user_idx", "item_idx", "rating"):
        assert getattr(got, name).dtype == getattr(want, name).dtype
        assert np.array_equal(getattr(got, name).numpy(), getattr(want, name).numpy())
    assert got.item_key == want.item_key
    for name in ("user_totals", "item_totals"):
        for got_part, want_part in zip(getattr(got, name), getattr(want, name), strict=True):
            assert got_part.dtype == want_part.dtype and np.array_equal(got_part, want_part)


@pytest.mark.parametrize("item_key", ["title", "id"])
def test_a_kept_encoding_is_the_computed_one(big, tmp_path, item_key):
    computed = encode(big, item_key)
    first = encode(big, item_key, cache_dir=tmp_path)  # made here, then written
    (entry,) = (tmp_path / "tables").glob("encoding-*")
    again = encode(big, item_key, cache_dir=tmp_path)  # read back
    assert {"user_totals", "item_totals"} <= set(vars(again))  # with its totals: not summed again
    assert_same_encoding(first, computed)
    assert_same_encoding(again, computed)
    counts, sums = computed.item_totals
    rows = big.ratings["item"].to_numpy() == big.ratings["item"].iloc[0]
    at = computed.item_idx[0].item()
    assert counts[at] == rows.sum() and sums[at] == big.ratings["rating"].to_numpy()[rows].sum()
    (entry / "user_idx.npy").write_bytes((entry / "user_idx.npy").read_bytes()[:1000])  # cut short
    assert_same_encoding(encode(big, item_key, cache_dir=tmp_path), computed)  # made again
    assert_same_encoding(encode(big, item_key, cache_dir=tmp_path), computed)  # and kept whole
    assert (entry / "user_idx.npy").stat().st_size > 4 * len(big.ratings)


def test_small_encodings_are_not_kept(ml100k, tmp_path):
    assert_same_encoding(encode(ml100k, cache_dir=tmp_path), encode(ml100k))
    assert not (tmp_path / "tables").exists()

"""Loaders: the real ml-100k, MovieLens CSV folders, any ratings table, and the precise errors."""

import shutil
import zipfile

import pandas as pd
import pytest

from collab_core.data import ML100K_GENRES, load_dataset, load_path, load_table
from collab_core.encoding import split
from collab_core.errors import DataError

OCCUPATIONS = 21  # lines of u.occupation
CORE_FILES = ("u.data", "u.item", "u.user")  # what the loader needs; the fold files are optional


def copy_ml100k(source, target):
    target.mkdir(parents=True)
    for name in CORE_FILES:
        shutil.copy(source / name, target / name)
    return target


# --- the real ml-100k -------------------------------------------------------------------------


def test_ml100k_counts(ml100k):
    r = ml100k.ratings
    assert len(r) == 100_000
    assert r.user.nunique() == 943
    assert r.item.nunique() == 1682
    assert list(r.columns) == ["user", "item", "rating", "timestamp"]
    assert str(r.rating.dtype) == "float32"
    assert sorted(r.rating.unique()) == [1, 2, 3, 4, 5]
    assert ml100k.warnings == ()  # ml-100k has no duplicate (user, item) pairs
    assert ml100k.summary()["density"] == pytest.approx(100_000 / (943 * 1682))


def test_ml100k_first_rows_and_title_merge(ml100k):
    merged = ml100k.with_titles()
    assert len(merged) == 100_000 and merged.title.notna().all()
    first = merged.iloc[0]  # u.data line 1: 196 242 3 881250949
    expected = {"user": 196, "item": 242, "rating": 3.0, "timestamp": 881250949, "title": "Kolya (1996)"}
    assert first.to_dict() == expected
    assert ml100k.items.loc[1, "title"] == "Toy Story (1995)"
    assert ml100k.items.title.nunique() == 1664  # 1,682 ids, 18 titles appear twice


def test_ml100k_titles_are_latin1(ml100k):
    # u.item holds the bytes EF BF BD in some titles; read as latin-1 (as the book does) they are 3 chars
    assert ml100k.items.loc[543, "title"] == "Mis\xef\xbf\xbdrables, Les (1995)"


def test_ml100k_item_metadata(ml100k):
    items = ml100k.items
    assert len(items) == 1682 and items.index.name == "item"
    assert items.loc[1, "year"] == 1995
    assert items.loc[1, "genres"] == "Animation|Children's|Comedy"
    assert items.loc[2, "genres"] == "Action|Adventure|Thriller"
    assert items.loc[30, "year"] == 1967
    assert items.loc[267, "title"] == "unknown" and pd.isna(items.loc[267, "year"])
    assert len(ML100K_GENRES) == 19
    used = {g for genres in items.genres for g in genres.split("|") if g}
    assert used == set(ML100K_GENRES)
    years = items.year.dropna()
    assert years.min() == 1922 and years.max() == 1998


def test_ml100k_user_metadata(ml100k):
    users = ml100k.users
    assert len(users) == 943
    assert users.loc[1].to_dict() == {"age": 24, "gender": "M", "occupation": "technician", "zip": "85711"}
    assert set(users.gender) == {"M", "F"}
    assert users.occupation.nunique() == OCCUPATIONS
    assert users.age.between(7, 73).all()


def test_fingerprint_is_stable_and_data_sensitive(ml100k, ml100k_dir, tmp_path):
    again = load_path(ml100k_dir)
    assert again.fingerprint == ml100k.fingerprint
    copy = copy_ml100k(ml100k_dir, tmp_path / "ml-100k")
    lines = (copy / "u.data").read_text().splitlines()
    user, item, rating, ts = lines[0].split("\t")
    lines[0] = "\t".join([user, item, "1" if rating != "1" else "2", ts])
    (copy / "u.data").write_text("\n".join(lines) + "\n")
    assert load_path(copy).fingerprint != ml100k.fingerprint


def test_resolution_order(ml100k, ml100k_dir, tmp_path):
    explicit = load_dataset(ml100k_dir, data_dir="/nowhere")
    assert explicit.fingerprint == ml100k.fingerprint
    from_env = load_dataset(None, data_dir=str(ml100k_dir), cache_dir=tmp_path)
    assert from_env.fingerprint == ml100k.fingerprint
    copy_ml100k(ml100k_dir, tmp_path / "cache" / "ml-100k")
    cached = load_dataset(None, data_dir=None, cache_dir=tmp_path / "cache", download=False)
    assert cached.fingerprint == ml100k.fingerprint
    with pytest.raises(DataError, match="downloading is off"):
        load_dataset(None, cache_dir=tmp_path / "empty", download=False)
    with pytest.raises(DataError, match="no dataset given"):
        load_dataset(None)


def test_parent_folder_and_zip(ml100k, ml100k_dir, tmp_path):
    assert load_path(ml100k_dir.parent).fingerprint == ml100k.fingerprint  # holds ml-100k/
    archive = ml100k_dir.parent / "ml-100k.zip"  # the official zip, or one made from the folder
    if not archive.is_file():
        archive = tmp_path / "ml-100k.zip"
        with zipfile.ZipFile(archive, "w") as z:
            for f in ml100k_dir.iterdir():
                z.write(f, f"ml-100k/{f.name}")
    zipped = load_path(archive)
    assert zipped.fingerprint == ml100k.fingerprint
    assert len(zipped.users) == 943
    # the fold files came from the zip too, although its temporary folder is gone
    train, valid = split(zipped, "u1")
    assert (len(train), len(valid)) == (80_000, 20_000)


# --- malformed tables: each gets its precise error --------------------------------------------

GOOD_ROWS = "\n".join(f"{u},{i},{(u * i) % 5 + 1}" for u in range(1, 5) for i in range(1, 6))  # 20 rows
HEADER = "user,item,rating\n"
MALFORMED = {
    "missing_rating_column": (
        "user,movie,grade\n" + GOOD_ROWS,
        r"no rating column: name it with --rating-col; the columns are user, movie, grade",
    ),
    "only_two_columns": ("user,item\n1,2\n1,3\n2,2\n", r"no rating column.*the columns are user, item"),
    "non_numeric_rating": (
        HEADER + GOOD_ROWS + "\n7,7,four\n",
        r"rating column 'rating' has a non-number 'four' on data row 21",
    ),
    "empty_rating": (HEADER + "1,1,\n" + GOOD_ROWS, r"non-number '' on data row 1\b"),
    "nan_rating": (HEADER + GOOD_ROWS + "\n7,7,NaN\n", r"rating on row 21 is nan \(NaN or infinite\)"),
    "inf_rating": (HEADER + "7,7,inf\n" + GOOD_ROWS, r"rating on row 1 is inf \(NaN or infinite\)"),
    "minus_inf_rating": (HEADER + GOOD_ROWS + "\n7,7,-inf\n", r"rating on row 21 is -inf"),
    "empty_file": ("", r"empty\.csv is empty"),
    "blank_lines_only": ("\n  \n\n", r"is empty"),
    "header_only": (HEADER, r"has a header but no ratings"),
    "too_few_ratings": (HEADER + "1,1,3\n1,2,4\n2,1,5\n", r"has only 3 ratings; at least 10 are needed"),
    "empty_user_id": (HEADER + GOOD_ROWS + "\n ,7,3\n", r"column 'user' is empty on data row 21"),
    "absurd_scale": (HEADER + GOOD_ROWS + "\n7,7,1e9\n", r"ratings reach 1e\+09"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_table_gets_precise_error(case, tmp_path):
    text, message = MALFORMED[case]
    path = tmp_path / ("empty.csv" if case == "empty_file" else f"{case}.csv")
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_path(path)


def test_binary_file(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match=r"ratings\.csv is a binary file, not a CSV/TSV table"):
        load_path(path)


def test_missing_paths_and_columns(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_path(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"holds neither u\.data"):
        load_path(tmp_path)
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n" + GOOD_ROWS)
    with pytest.raises(DataError, match=r"no user column 'who'; the columns are user, item, rating"):
        load_table(path, user_col="who")
    with pytest.raises(DataError, match=r"no timestamp column 'when'"):
        load_table(path, timestamp_col="when")


def test_split_refuses_too_few_ratings(tmp_path):
    path = tmp_path / "ten.csv"
    path.write_text("user,item,rating,timestamp\n" + "\n".join(f"{u},{u},3,{u}" for u in range(1, 11)))
    ten = load_path(path)
    with pytest.raises(DataError, match=r"10 ratings are too few to split with valid_pct=0\.05"):
        split(ten, valid_pct=0.05)
    with pytest.raises(DataError, match="too few ratings per user to split by time"):
        split(ten, "temporal")  # one rating per user: nothing can go to validation


# --- good tables load -------------------------------------------------------------------------


def test_csv_with_header(tmp_path):
    path = tmp_path / "r.csv"
    pairs = [(u, i) for u in range(1, 4) for i in range(1, 5)]
    rows = [f'{u},{i},{i}.5,{1000 + u * 10 + i},"Movie {i}, The ({1990 + i})"' for u, i in pairs]
    path.write_text("userId,movieId,rating,timestamp,title\n" + "\n".join(rows))
    ds = load_path(path)
    r = ds.ratings
    assert list(r.columns) == ["user", "item", "rating", "timestamp"]
    assert len(r) == 12 and str(r.user.dtype) == "int32" and str(r.item.dtype) == "int32"  # compact ids
    assert r.rating.tolist()[:4] == [1.5, 2.5, 3.5, 4.5]
    assert r.timestamp.tolist()[:2] == [1011, 1012]
    assert ds.items.loc[2, "title"] == "Movie 2, The (1992)" and ds.items.loc[2, "year"] == 1992
    assert ds.name == "r.csv" and ds.warnings == ()


def test_tsv_without_header(tmp_path):
    path = tmp_path / "u.tsv"
    rows = [f"{u}\t{i}\t{(u + i) % 5 + 1}\t{880000000 + u * i}" for u in range(1, 5) for i in range(1, 5)]
    path.write_text("\n".join(rows) + "\n")
    ds = load_path(path)
    assert len(ds.ratings) == 16
    assert ds.ratings.iloc[0].tolist() == [1, 1, 3, 880000001]
    assert ds.items.title.tolist() == ["1", "2", "3", "4"]  # no titles: the id stands in


def test_columns_by_name_with_string_ids(tmp_path):
    path = tmp_path / "named.csv"
    rows = [f"{u * 10 + i};{(u * i) % 5 + 1};m{i};u{u}" for u in range(1, 5) for i in range(1, 6)]
    path.write_text("when;stars;film;rater\n" + "\n".join(rows))
    ds = load_table(path, user_col="rater", item_col="film", rating_col="stars", timestamp_col="when")
    r = ds.ratings
    assert r.iloc[0].tolist() == ["u1", "m1", 2.0, 11]
    assert set(r.user) == {"u1", "u2", "u3", "u4"} and set(r.item) == {f"m{i}" for i in range(1, 6)}


def test_columns_by_position(tmp_path):
    path = tmp_path / "pos.tsv"
    rows = [f"{i}\t{1000 + i}\t{u}\t{(u * i) % 5 + 1}" for u in range(1, 5) for i in range(1, 6)]
    path.write_text("\n".join(rows))
    ds = load_table(path, user_col="2", item_col="0", rating_col="3")
    r = ds.ratings
    assert r.iloc[0].tolist() == [1, 1, 2.0]
    # no column was named as the timestamp: the rating column (position 3) must not double as it
    assert "timestamp" not in r
    with_time = load_table(path, user_col="2", item_col="0", rating_col="3", timestamp_col="1")
    assert with_time.ratings.timestamp.tolist()[:2] == [1001, 1002]


def test_one_column_for_two_roles_is_refused(tmp_path):
    path = tmp_path / "pos.tsv"
    path.write_text("\n".join(f"{i}\t{u}\t{(u * i) % 5 + 1}" for u in range(1, 5) for i in range(1, 6)))
    with pytest.raises(DataError, match=r"column '1' cannot be both the user and the item column"):
        load_table(path, user_col="1")


def test_latest_small_folder(tmp_path):
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    rows = [(u, m, (u * m) % 10 / 2 + 0.5, 964982000 + u * m) for u in range(1, 6) for m in (1, 2, 3, 50)]
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "\n".join(f"{u},{m},{r},{t}" for u, m, r, t in rows) + "\n"
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        "2,Jumanji (1995),Adventure|Children|Fantasy\n"
        '3,"American President, The (1995)",Comedy|Drama|Romance\n'
        "50,Usual Suspects (1995) ,(no genres listed)\n"
        "99,Never Rated (2001),Drama\n"
    )
    ds = load_path(folder)
    assert ds.name == "ml-latest-small" and len(ds.ratings) == 20
    assert ds.ratings.rating.tolist() == [r for _, _, r, _ in rows]
    assert {0.5, 1.5, 4.5} <= set(ds.ratings.rating)  # half stars
    assert ds.items.loc[1, "genres"].split("|") == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert ds.items.loc[3, "title"] == "American President, The (1995)"
    assert ds.items.loc[50, "title"] == "Usual Suspects (1995)" and ds.items.loc[50, "genres"] == ""
    assert ds.items.loc[3, "year"] == 1995
    assert ds.with_titles().title.iloc[0] == "Toy Story (1995)"


def test_duplicate_pairs_are_kept_and_counted(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("user,item,rating\n" + GOOD_ROWS + "\n1,1,5\n1,1,4\n2,3,1\n")
    ds = load_path(path)
    assert len(ds.ratings) == 23
    assert ds.warnings == ("3 duplicate (user, item) pairs kept, as fastai does",)


def test_zip_with_one_table(tmp_path):
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data/ratings.tsv", GOOD_ROWS.replace(",", "\t"))
    ds = load_path(archive)
    assert len(ds.ratings) == 20
    assert ds.ratings.rating.tolist() == [(u * i) % 5 + 1 for u in range(1, 5) for i in range(1, 6)]

"""The ratings table on codes (browse.py) against the join of every rating with its title that the
Ratings page made before: the same rows, in the same order, for every filter."""

import re

import numpy as np
import pandas as pd
import pytest

from collab_core import browse
from collab_core.browse import RatingFilter
from collab_core.data import load_path

FILTERS = [
    RatingFilter(),
    RatingFilter(title="star"),
    RatingFilter(title="STAR WARS"),
    RatingFilter(users=("1", "42")),
    RatingFilter(users=("42", " 7 ", "x", "99999")),
    RatingFilter(genres=("Comedy", "War")),
    RatingFilter(genres=("Film-Noir",), rating=(4.0, 5.0)),
    RatingFilter(title="the", users=("13",), genres=("Drama",), rating=(2.0, 4.0)),
    RatingFilter(title="no such movie"),
]


def joined(dataset, wanted: RatingFilter) -> pd.DataFrame:
    """The old Ratings page: every rating joined with its title, filtered as strings."""
    view = dataset.ratings.join(dataset.items[["title", "year", "genres"]], on="item")
    mask = view["rating"].between(*(wanted.rating or (-np.inf, np.inf)))
    if wanted.title:
        mask &= view["title"].str.contains(wanted.title, case=False, regex=False)
    if wanted.users:
        mask &= view["user"].astype(str).isin({u.strip() for u in wanted.users})
    if wanted.genres:
        mask &= view["genres"].str.contains(rf"(?:^|\|)(?:{'|'.join(map(re.escape, wanted.genres))})(?:\||$)")
    return view[mask]


@pytest.mark.parametrize("wanted", FILTERS, ids=repr)
def test_filters_on_codes_give_the_rows_of_the_join(ml100k, wanted):
    expected = joined(ml100k, wanted)
    mask = browse.matches(ml100k, wanted)
    assert browse.count(ml100k, mask) == len(expected)
    for start in (0, 50, max(0, len(expected) - 20), len(expected) + 10):
        shown = browse.page(ml100k, mask, start, 50)
        rows = expected.iloc[start : start + 50]
        assert shown["user"].tolist() == rows["user"].tolist()
        assert shown["title"].tolist() == rows["title"].tolist()
        assert shown["rating"].tolist() == rows["rating"].tolist()
        assert shown["genres"].tolist() == rows["genres"].tolist()
        if len(rows):
            assert shown["timestamp"].iloc[0] == pd.to_datetime(rows["timestamp"].iloc[0], unit="s")


def test_an_empty_filter_keeps_everything_without_a_mask(ml100k):
    assert browse.matches(ml100k, RatingFilter()) is None
    assert browse.count(ml100k, None) == 100_000
    assert len(browse.page(ml100k, None, 99_990, 50)) == 10


def test_a_page_is_found_chunk_by_chunk(monkeypatch):
    monkeypatch.setattr(browse, "CHUNK", 7)  # many chunks, pages straddling them
    mask = np.random.default_rng(0).random(1000) < 0.3
    hits = np.flatnonzero(mask)
    for start, size in ((0, 25), (3, 10), (100, 50), (len(hits) - 5, 50), (len(hits), 5)):
        assert browse._nth_rows(mask, start, size).tolist() == hits[start : start + size].tolist()


def test_counts_match_pandas(ml100k):
    expected = ml100k.ratings["rating"].value_counts().sort_index().rename(None)
    assert browse.rating_counts(ml100k).equals(expected)
    per_user = browse.ratings_per_user(ml100k)
    assert per_user.to_dict() == ml100k.ratings["user"].value_counts().to_dict()
    assert per_user.is_monotonic_decreasing and per_user.dtype == np.int64
    per_movie = browse.ratings_per_movie(ml100k)  # by title: Chasing Amy's two ids add up
    titles = ml100k.ratings["item"].map(ml100k.items["title"]).value_counts()
    assert per_movie.to_dict() == titles.to_dict() and per_movie.index[0] == "Star Wars (1977)"


def test_string_ids_are_filtered_by_their_names(tmp_path):
    path = tmp_path / "r.csv"
    rows = [f"u{u},m{i},{(u + i) % 5 + 1}" for u in range(1, 9) for i in range(1, 7)]
    path.write_text("user,item,rating\n" + "\n".join(rows))
    dataset = load_path(path)
    assert isinstance(dataset.ratings["user"].dtype, pd.CategoricalDtype)
    mask = browse.matches(dataset, RatingFilter(users=("u3", "u8", "nobody")))
    assert browse.page(dataset, mask, 0, 50)["user"].astype(str).tolist() == ["u3"] * 6 + ["u8"] * 6
    assert browse.ratings_per_user(dataset).to_dict() == {f"u{u}": 6 for u in range(1, 9)}


def test_counting_a_chunk_at_a_time_counts_as_bincount_does():
    """Values counted a chunk at a time (no column-sized temporary): the same counts as one bincount,
    whether the largest value comes in the first chunk or a later one, with or without a minimum length."""
    from collab_core.browse import CHUNK, _chunked_bincount

    rng = np.random.default_rng(0)
    values = rng.integers(0, 1000, 2 * CHUNK + 123).astype(np.int32)
    values[-1] = 5000  # the last chunk has the largest
    as_bins = lambda v: v.astype(np.intp)  # noqa: E731
    assert np.array_equal(_chunked_bincount(values, as_bins), np.bincount(values))
    assert np.array_equal(_chunked_bincount(values, as_bins, 9000), np.bincount(values, minlength=9000))
    assert np.array_equal(_chunked_bincount(values[::-1].copy(), as_bins), np.bincount(values))
    assert len(_chunked_bincount(values[:0], as_bins)) == 0

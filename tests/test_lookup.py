"""Raw user ids and item titles or ids -> embedding indices, straight from an encoding (no model):
the precise errors for what is not there, and the titles a misspelling probably meant."""

import re

import pytest

from collab_core.data import load_path
from collab_core.encoding import encode
from collab_core.errors import DataError
from collab_core.lookup import Lookup, close_titles


def test_users_by_raw_id_or_its_string(ml100k):
    lookup = Lookup(ml100k, encode(ml100k))
    assert lookup.user_index(1) == 1 and lookup.user_index("943") == 943
    assert lookup.user_indices([1, "2", 943]).tolist() == [1, 2, 943]
    with pytest.raises(DataError, match=r"no user 944 in ml-100k: its 943 users have ids 1\.\.943"):
        lookup.user_index(944)


def test_integer_ids_are_found_by_binary_search_as_a_dict_of_ids_and_strings_would(ml100k):
    encoded = encode(ml100k)
    lookup = Lookup(ml100k, encoded)
    assert lookup._integer_users is not None  # ml-100k's ids are integers: no dict is built
    users = encoded.users[1:]
    by_dict = {str(u): i for i, u in enumerate(users, start=1)} | {u: i for i, u in enumerate(users, start=1)}
    asked = [1, "1", 943, "943", 500.0, True, 0, "0", 944, "0944", " 1", "1.0", 1.5, -1, "-1", 2**80,
             float("nan"), "x", None, "٣"]  # fmt: skip
    for user in asked:
        try:
            found = lookup.user_index(user)
        except DataError:
            found = None
        assert found == by_dict.get(user), user
    assert "user_index" not in vars(lookup) and "_users" not in vars(lookup)


def test_items_by_title_raw_id_or_its_string(ml100k):
    encoded = encode(ml100k)
    lookup = Lookup(ml100k, encoded)
    toy = lookup.item_index("Toy Story (1995)")
    assert encoded.items[toy] == "Toy Story (1995)"
    assert lookup.item_index(1) == lookup.item_index("1") == toy
    assert lookup.item_indices(["Toy Story (1995)", 1]).tolist() == [toy, toy]
    with pytest.raises(DataError, match="no item 'Nope' in ml-100k"):
        lookup.item_index("Nope")
    with pytest.raises(DataError, match="no item"):
        lookup.item_index(["unhashable"])


def test_string_ids(tmp_path):
    path = tmp_path / "r.csv"
    rows = [f"u{u},m{i},{(u + i) % 5 + 1},Film {i} ({1990 + i})" for u in (3, 1, 2) for i in (2, 10, 1)]
    path.write_text("user,item,rating,title\n" + "\n".join(rows + rows[:1]))
    dataset = load_path(path)
    lookup = Lookup(dataset, encode(dataset, item_key="id"))
    assert lookup.user_index("u2") == 2 and lookup.item_index("m2") == 3
    assert lookup.item_index("Film 10 (2000)") == 2
    assert lookup._integer_users is None  # string ids: a dict
    with pytest.raises(DataError, match=r"no user 'u22' in r\.csv \(3 users\); did you mean 'u2'"):
        lookup.user_index("u22")


def test_a_title_shared_by_several_ids_names_them(ml100k):
    lookup = Lookup(ml100k, encode(ml100k, item_key="id"))
    shared = ml100k.items["title"][ml100k.items["title"].duplicated(keep=False)]
    title = shared.iloc[0]
    ids = sorted(shared.index[shared == title].tolist())
    with pytest.raises(DataError, match=re.escape(f"title {title!r} names 2 items (ids {ids[0]}, {ids[1]})")):
        lookup.item_index(title)
    assert [lookup.item_index(i) for i in ids] == [lookup.item_index(str(i)) for i in ids]
    once = ml100k.items["title"].drop_duplicates(keep=False)
    assert lookup.item_index(once.iloc[0]) == lookup.item_index(int(once.index[0]))


def test_close_titles_forgive_case_year_and_a_moved_article():
    titles = ["Shawshank Redemption, The (1994)", "Titanic (1997)", "Star Wars (1977)", "Star Trek (1979)"]
    assert close_titles("the shawshank redemption", titles) == ["Shawshank Redemption, The (1994)"]
    assert close_titles("Titanik", titles) == ["Titanic (1997)"]
    assert close_titles("star", titles)[:2] == ["Star Wars (1977)", "Star Trek (1979)"]
    assert close_titles("zzqxv", titles) == []

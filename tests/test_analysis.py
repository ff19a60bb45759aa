"""The analysis layer: on the seed model trained on the real ml-100k (biases, PCA, neighbours,
recommendations, new users, crosstabs, ranking metrics), and over every model on a synthetic
dataset with a known answer."""

import dataclasses
import gc
import weakref

import numpy as np
import pandas as pd
import pytest
import torch

from collab_core import stats
from collab_core.analysis import (
    bias_points,
    bias_table,
    crosstab,
    crosstab_filled,
    item_stats,
    nearest_items,
    nearest_users,
    pca_extremes,
    pca_items,
    similarities,
    tsne_items,
    tsne_seconds,
    user_stats,
)
from collab_core.config import TrainConfig
from collab_core.encoding import encode
from collab_core.errors import ConfigError, DataError
from collab_core.foldin import fold_in_user, new_user_scores
from collab_core.learner import Trained, build_model, prepare
from collab_core.nets import AutoEncoder
from collab_core.ranking import (
    dot_scores,
    metrics_at_k,
    predict_pairs,
    ranking_metrics,
    recommend,
    score_users,
    user_history,
)
from collab_core.train import predict

TOP_BIAS = ("Titanic", "Shawshank Redemption", "Schindler's List", "L.A. Confidential",
            "Silence of the Lambs", "Star Wars", "Good Will Hunting", "Rear Window",
            "Usual Suspects", "Casablanca")  # fmt: skip
LOW_BIAS = ("Children of the Corn: The Gathering", "Lawnmower Man 2", "Mortal Kombat: Annihilation",
            "Amityville 3-D", "Home Alone 3", "Robocop 3", "Beautician and the Beast",
            "Joe's Apartment", "Crow: City of Angels", "Barb Wire", "Bio-Dome")  # fmt: skip


def named(titles: pd.Series, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if titles.str.contains(name, regex=False).any()]


def untrained(dataset, **config) -> Trained:
    """A Trained around a freshly initialised model: for lookups and baselines, no training."""
    config = TrainConfig(**config)
    encoded, train_rows, valid_rows = prepare(dataset, config)
    model = build_model(config, encoded.n_users, encoded.n_items, torch.device("cpu")).eval()
    return Trained(config, model, dataset, encoded, train_rows, valid_rows, record=None)


# ---- the seed model on ml-100k ---------------------------------------------------------------


def test_item_and_user_stats_count_all_ratings(trained_edb):
    items, users = item_stats(trained_edb), user_stats(trained_edb)
    assert list(items.columns) == ["title", "year", "genres", "mean_rating", "n_ratings"]
    assert items["year"].dtype == "Int64" and items["n_ratings"].dtype == np.int64
    assert items.index.tolist() == list(range(1, 1665))  # 1,664 titles, #na# left out
    assert items["n_ratings"].sum() == users["n_ratings"].sum() == 100_000
    star_wars = items.loc[trained_edb.lookup.item_index("Star Wars (1977)")]
    assert (star_wars["n_ratings"], round(star_wars["mean_rating"], 4), star_wars["year"]) == (
        583,
        4.3585,
        1977,
    )
    assert star_wars["genres"] == "Action|Adventure|Romance|Sci-Fi|War"
    assert len(users) == 943 and users.loc[trained_edb.lookup.user_index(1), "occupation"] == "technician"
    assert users.loc[trained_edb.lookup.user_index(1), ["user", "age", "gender"]].tolist() == [1, 24, "M"]
    items.loc[1, "title"] = "changed"  # callers get a copy: the cached table stays intact
    assert item_stats(trained_edb).loc[1, "title"] != "changed"


def test_the_tables_of_the_ratings_are_made_once_per_encoding(ml100k):
    encoded = encode(ml100k)
    items, users = stats.item_table(ml100k, encoded), stats.user_table(ml100k, encoded)
    assert stats.item_table(ml100k, encoded) is items and stats.user_table(ml100k, encoded) is users
    other = encode(ml100k)  # another encoding (as another dataset's would be) gets its own
    assert stats.item_table(ml100k, other) is not items
    pd.testing.assert_frame_equal(stats.item_table(ml100k, other), items)
    kept = weakref.ref(items)
    del encoded, items, users
    gc.collect()
    assert kept() is None  # kept while its encoding lives, no longer


def test_bias_lists_are_the_books(trained_edb):
    lowest, highest = bias_table(trained_edb, n=10)
    assert list(highest.columns) == ["title", "bias", "mean_rating", "n_ratings"]
    assert len(lowest) == len(highest) == 10
    assert highest["bias"].is_monotonic_decreasing and lowest["bias"].is_monotonic_increasing
    assert lowest["bias"].max() < highest["bias"].min()
    assert len(named(highest["title"], TOP_BIAS)) >= 3, highest["title"].tolist()
    assert len(named(lowest["title"], LOW_BIAS)) >= 3, lowest["title"].tolist()


def test_bias_tables_filter_and_cover_users(trained_edb):
    lowest, highest = bias_table(trained_edb, n=5, min_ratings=100)
    assert (pd.concat([lowest, highest])["n_ratings"] >= 100).all()
    users_low, users_high = bias_table(trained_edb, n=3, of="users")
    assert list(users_high.columns) == ["user", "bias", "mean_rating", "n_ratings"]
    assert users_high["mean_rating"].mean() > users_low["mean_rating"].mean() + 1
    with pytest.raises(ConfigError, match="'items' or 'users'"):
        bias_table(trained_edb, of="movies")


def test_bias_points_are_the_most_rated(trained_edb):
    """The Biases page's scatter: the n most-rated of those with enough ratings, not everyone."""
    points = bias_points(trained_edb, n=50, min_ratings=20)
    counts = trained_edb.item_table["n_ratings"]
    assert len(points) == 50 and list(points.columns) == ["title", "bias", "mean_rating", "n_ratings"]
    assert points["n_ratings"].is_monotonic_decreasing
    assert points["n_ratings"].min() >= counts.nlargest(50).min()
    lowest, _ = bias_table(trained_edb, n=3)
    everyone = bias_points(trained_edb, n=10_000)
    assert len(everyone) == 1664 and np.allclose(everyone.loc[lowest.index, "bias"], lowest["bias"])
    assert len(bias_points(trained_edb, n=10_000, of="users")) == 943


def test_tsne_time_is_estimated_before_it_runs():
    assert 1 < tsne_seconds(1000) < 10  # measured: 3 s on two busy cores
    assert tsne_seconds(59_047) > 120 > tsne_seconds(3000)  # all of 25M's movies: minutes; the cap: seconds


def test_a_replaced_model_starts_with_fresh_tables(trained_edb):
    before = nearest_items(trained_edb, "Star Wars (1977)")
    config = TrainConfig(model="embedding_dot_bias")
    fresh = dataclasses.replace(trained_edb, model=build_model(config, 944, 1665, "cpu").eval())
    assert fresh.lookup is not trained_edb.lookup
    assert fresh.item_table is trained_edb.item_table  # of the ratings, not the model: one per encoding
    assert not fresh.item_vectors[0].equal(trained_edb.item_vectors[0])
    assert list(nearest_items(fresh, "Star Wars (1977)").index) != list(before.index)
    pd.testing.assert_frame_equal(nearest_items(trained_edb, "Star Wars (1977)"), before)


def test_models_without_biases_say_so(trained_edb):
    config = TrainConfig(model="collab_nn")
    nn_model = dataclasses.replace(trained_edb, config=config, model=build_model(config, 944, 1665, "cpu"))
    with pytest.raises(ConfigError, match=r"model 'collab_nn' has no bias terms; .*embedding_dot_bias"):
        bias_table(nn_model)


def test_pca_of_the_most_rated_items(trained_edb):
    result = pca_items(trained_edb, n_items=1000, k=3)
    coords, components, ratio = result.coords, result.components, result.explained_variance_ratio
    assert coords.shape == (1000, 8) and components.shape == (3, 50) and ratio.shape == (3,)
    assert list(coords.columns) == [
        "title",
        "year",
        "genres",
        "mean_rating",
        "n_ratings",
        "pc1",
        "pc2",
        "pc3",
    ]
    np.testing.assert_allclose(components @ components.T, np.eye(3), atol=1e-5)
    assert np.all(np.diff(ratio) < 0) and 0 < ratio.sum() < 1
    counts = item_stats(trained_edb)["n_ratings"]
    assert coords["n_ratings"].min() >= counts.drop(coords.index).max()  # the 1,000 most rated
    weights = trained_edb.model.factors()[1][torch.tensor(coords.index)].numpy()
    projected = (weights - weights.mean(axis=0)) @ components.T
    np.testing.assert_allclose(coords[["pc1", "pc2", "pc3"]].to_numpy(), projected, atol=1e-4)
    assert coords[["pc1", "pc2"]].var().is_monotonic_decreasing


def test_principal_axes_are_scikit_learns(trained_edb):
    """The NumPy PCA gives scikit-learn's components (signs included), shares and coordinates."""
    from sklearn.decomposition import PCA

    result = pca_items(trained_edb, n_items=1000, k=3)
    weights = trained_edb.model.factors()[1][torch.tensor(result.coords.index)].numpy()
    reference = PCA(n_components=3, svd_solver="covariance_eigh").fit(weights)
    np.testing.assert_allclose(result.components, reference.components_, atol=1e-4)
    ratio = reference.explained_variance_ratio_
    np.testing.assert_allclose(result.explained_variance_ratio, ratio, rtol=1e-4)
    xy = result.coords[["pc1", "pc2", "pc3"]].to_numpy()
    np.testing.assert_allclose(xy, reference.transform(weights), atol=1e-4)


def test_pca_extremes(trained_edb):
    result = pca_items(trained_edb, n_items=1000, k=3)
    lowest, highest = pca_extremes(result, component=2, n=10)
    assert len(lowest) == len(highest) == 10 and list(lowest.columns)[:2] == ["title", "pc2"]
    assert lowest["pc2"].is_monotonic_increasing and highest["pc2"].is_monotonic_decreasing
    assert lowest["pc2"].max() <= result.coords["pc2"].nsmallest(10).max()
    assert highest["pc2"].iloc[0] == result.coords["pc2"].max()
    with pytest.raises(ConfigError, match=r"component must be 1\.\.3"):
        pca_extremes(result, component=4)
    with pytest.raises(ConfigError, match="k=60"):
        pca_items(trained_edb, k=60)


def test_tsne_map(trained_edb):
    xy = tsne_items(trained_edb, n_items=150, perplexity=20.0)
    assert xy.shape == (150, 7) and list(xy.columns[-2:]) == ["x", "y"]
    assert np.isfinite(xy[["x", "y"]].to_numpy()).all() and xy[["x", "y"]].std().min() > 0
    with pytest.raises(ConfigError, match="perplexity"):
        tsne_items(trained_edb, n_items=20, perplexity=30.0)


def test_nearest_items_are_sorted_and_exclude_the_item(trained_edb):
    star_wars = trained_edb.lookup.item_index("Star Wars (1977)")
    near = nearest_items(trained_edb, "Star Wars (1977)", n=10)
    assert list(near.columns) == ["title", "similarity", "mean_rating", "n_ratings"]
    assert len(near) == 10 and star_wars not in near.index
    assert near["similarity"].is_monotonic_decreasing and near["similarity"].iloc[0] < 1
    assert {"Return of the Jedi (1983)", "Empire Strikes Back, The (1980)"} & set(near["title"])
    everything = similarities(trained_edb, "Star Wars (1977)")
    assert everything[star_wars] == pytest.approx(1.0, abs=1e-6)  # a vector's cosine with itself
    assert everything.drop(star_wars).max() == pytest.approx(near["similarity"].iloc[0])
    weights = trained_edb.model.factors()[1].numpy()
    unit = weights / np.linalg.norm(weights, axis=1, keepdims=True)
    np.testing.assert_allclose(near["similarity"], unit[near.index] @ unit[star_wars], atol=1e-5)


def test_nearest_by_distance_and_popularity(trained_edb):
    near = nearest_items(trained_edb, 50, n=20, metric="euclidean", min_ratings=100)  # id 50 is Star Wars
    assert near["distance"].is_monotonic_increasing and (near["n_ratings"] >= 100).all()
    assert "Star Wars (1977)" not in set(near["title"])
    with pytest.raises(ConfigError, match="metric"):
        nearest_items(trained_edb, 50, metric="manhattan")


def test_nearest_users(trained_edb):
    near = nearest_users(trained_edb, 42, n=5)
    assert list(near.columns) == [
        "user",
        "similarity",
        "mean_rating",
        "n_ratings",
        "age",
        "gender",
        "occupation",
    ]
    assert 42 not in set(near["user"]) and near["similarity"].is_monotonic_decreasing
    assert similarities(trained_edb, 42, of="users")[trained_edb.lookup.user_index(42)] == pytest.approx(1.0)


@pytest.mark.parametrize("user", [1, 42, "405"])
def test_recommendations_exclude_rated_items(trained_edb, user):
    rated = set(user_history(trained_edb, user)["title"])
    recs = recommend(trained_edb, user, n=25)
    assert list(recs.columns) == ["title", "predicted", "mean_rating", "n_ratings", "genres", "year"]
    assert len(recs) == 25 and not rated & set(recs["title"])
    assert recs["predicted"].is_monotonic_decreasing
    np.testing.assert_allclose(recs["predicted"], predict_pairs(trained_edb, user, recs["title"]), atol=1e-5)
    popular = recommend(trained_edb, user, n=10, min_ratings=200)
    assert (popular["n_ratings"] >= 200).all()


def test_user_history_marks_the_validation_ratings(trained_edb):
    history = user_history(trained_edb, 42)
    assert list(history.columns) == ["title", "rating", "predicted", "error", "in_valid"]
    rows = np.flatnonzero(trained_edb.dataset.ratings["user"].to_numpy() == 42)
    assert len(history) == len(rows) == 183
    assert history["in_valid"].sum() == np.isin(rows, trained_edb.valid_rows).sum() > 0
    np.testing.assert_allclose(history["error"], history["predicted"] - history["rating"], atol=1e-6)
    np.testing.assert_allclose(
        history["predicted"], predict_pairs(trained_edb, 42, history["title"]), atol=1e-5
    )
    valid = history[history["in_valid"]]
    assert np.sqrt((valid["error"] ** 2).mean()) < 1.3


def test_predict_pairs_takes_raw_ids_titles_and_strings(trained_edb):
    by_title = predict_pairs(trained_edb, [1, 2, 3], ["Star Wars (1977)", "Toy Story (1995)", "Fargo (1996)"])
    by_id = predict_pairs(trained_edb, ["1", "2", "3"], [50, "1", 100])  # Star Wars, Toy Story, Fargo
    np.testing.assert_array_equal(by_title, by_id)
    assert by_title.shape == (3,) and ((by_title > 0) & (by_title < 5.5)).all()
    u, i, _ = trained_edb.tensors(trained_edb.valid_rows[:500])
    expected = predict(trained_edb.model, u, i).numpy()
    users = trained_edb.encoded.users[u.numpy()]
    np.testing.assert_allclose(
        predict_pairs(trained_edb, users, trained_edb.encoded.items[i.numpy()]), expected
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: nearest_items(t, "star wars"), r"no item 'star wars' in ml-100k; did you mean 'Star W"),
        (lambda t: nearest_items(t, "The Shawshank Redemption"), r"mean 'Shawshank Redemption, The \("),
        (lambda t: recommend(t, 1, n=0), "n must be a positive integer"),
        (lambda t: nearest_items(t, "Titanik"), r"did you mean 'Titanic \(1997\)'"),
        (lambda t: nearest_items(t, 99999), r"no item with id 99999 in ml-100k \(ids 1..1682\)"),
        (lambda t: nearest_items(t, "zzqxv"), "no item 'zzqxv' in ml-100k: no title is like it"),
        (lambda t: recommend(t, 944), "no user 944 in ml-100k: its 943 users have ids 1..943"),
        (lambda t: user_history(t, "x7"), "no user 'x7' in ml-100k"),
        (lambda t: predict_pairs(t, [1, 2], ["Fargo (1996)", "Fargo"]), r"no item 'Fargo'.*'Fargo \(1996\)'"),
    ],
)  # fmt: skip
def test_unknown_users_and_items_are_named_precisely(trained_edb, call, message):
    with pytest.raises((DataError, ConfigError), match=message):
        call(trained_edb)


def test_id_keyed_models_resolve_titles_and_flag_shared_ones(ml100k):
    by_id = untrained(ml100k, item_key="id")
    lookup = by_id.lookup
    assert lookup.item_index("Star Wars (1977)") == lookup.item_index(50) == lookup.item_index("50") == 50
    with pytest.raises(DataError, match=r"title 'Body Snatchers \(1993\)' names 2 items \(ids 573, 670\)"):
        lookup.item_index("Body Snatchers (1993)")
    assert item_stats(by_id).loc[573, "title"] == item_stats(by_id).loc[670, "title"]


def test_listed_users_and_items_without_ratings_are_explained(ml100k):
    ratings = ml100k.ratings[(ml100k.ratings["user"] != 7) & (ml100k.ratings["item"] != 1)]
    thinner = dataclasses.replace(ml100k, ratings=ratings.reset_index(drop=True))
    trained = untrained(thinner)
    with pytest.raises(DataError, match="user 7 is listed in ml-100k's users but rated nothing"):
        recommend(trained, 7)
    with pytest.raises(
        DataError, match=r"item 1 \(Toy Story \(1995\)\) is listed in ml-100k but has no ratings"
    ):
        nearest_items(trained, 1)
    with pytest.raises(DataError, match=r"'Toy Story \(1995\)' is listed in ml-100k but has no ratings"):
        nearest_items(trained, "Toy Story (1995)")


def test_fold_in_horror_fan_prefers_horror_to_childrens_films(trained_edb):
    stats = item_stats(trained_edb)
    horror = stats["genres"].str.contains("Horror")
    childrens = stats["genres"].str.contains("Children's") & ~horror
    rated = stats[stats["genres"] == "Horror"].nlargest(10, "n_ratings")  # horror and nothing else
    scores = new_user_scores(trained_edb, dict.fromkeys(rated["title"], 5.0)).numpy()
    average = new_user_scores(trained_edb, {}).numpy()
    others = stats.index[horror & ~stats.index.isin(rated.index) & (stats["n_ratings"] >= 20)]
    kids = stats.index[childrens & (stats["n_ratings"] >= 20)]
    assert scores[others].mean() > scores[kids].mean()
    assert average[others].mean() < average[kids].mean()  # so it is the fold-in that turned it round
    recs = fold_in_user(trained_edb, dict.fromkeys(rated["title"], 5.0), n=30)
    assert not set(recs["title"]) & set(rated["title"]) and recs["predicted"].is_monotonic_decreasing


def test_fold_in_predicts_real_users_as_well_as_their_embeddings(trained_edb):
    """Folding in each user's training ratings predicts their validation ratings ~ as well as the model."""
    fold_in, model = [], []
    for user in range(1, 944, 19):
        history = user_history(trained_edb, user)
        train, valid = history[~history["in_valid"]], history[history["in_valid"]]
        scores = new_user_scores(trained_edb, dict(zip(train["title"], train["rating"]))).numpy()
        fold_in += list(scores[valid.index] - valid["rating"])
        model += list(valid["error"])
    rmse_fold_in, rmse_model = np.sqrt(np.mean(np.square(fold_in))), np.sqrt(np.mean(np.square(model)))
    assert rmse_fold_in < rmse_model + 0.03, (rmse_fold_in, rmse_model)


def test_fold_in_of_nobody_is_the_average_user(trained_edb):
    average = fold_in_user(trained_edb, {}, n=10)
    users = trained_edb.model.factors()[0][1:].mean(dim=0)
    user_bias, _ = trained_edb.model.biases()
    expected = dot_scores(trained_edb.model, users[None], user_bias[1:].mean()[None])[0]
    np.testing.assert_allclose(average["predicted"], expected[average.index].numpy(), atol=1e-5)
    with pytest.raises(ConfigError, match=r"rating of 'Fargo \(1996\)' must be a finite number in 0..5.5"):
        fold_in_user(trained_edb, {"Fargo (1996)": 7})
    with pytest.raises(DataError, match="did you mean"):
        fold_in_user(trained_edb, {"Fargo": 4})


def test_crosstab_of_the_most_active_users(trained_edb, ml100k):
    grid = crosstab(trained_edb)
    assert grid.shape == (15, 15) and grid.index[0] == 405 and grid.columns[0] == "Star Wars (1977)"
    counts = ml100k.ratings["user"].value_counts()
    assert set(grid.index) == set(counts.index[:15])
    assert grid.isna().any().any() and grid.notna().sum().sum() > 150
    r = ml100k.with_titles()
    assert (
        grid.loc[13, "Star Wars (1977)"] == r[(r.user == 13) & (r.title == "Star Wars (1977)")].rating.item()
    )
    pd.testing.assert_frame_equal(crosstab(ml100k), grid)  # from the dataset alone, the same grid
    filled, mask = crosstab_filled(trained_edb)
    assert mask.equals(grid.isna()) and filled.notna().all().all()
    pd.testing.assert_frame_equal(filled[~mask], grid[~mask])
    user, title = next((u, t) for u in grid.index for t in grid.columns if mask.loc[u, t])
    assert filled.loc[user, title] == pytest.approx(predict_pairs(trained_edb, user, title)[0], abs=1e-5)
    pd.testing.assert_frame_equal(crosstab(trained_edb, fill=True), filled)
    with pytest.raises(ConfigError, match="needs a trained model"):
        crosstab(ml100k, fill=True)


def test_ranking_metrics_beat_an_untrained_model(trained_edb, ml100k):
    metrics = ranking_metrics(trained_edb, k=10)
    assert set(metrics) == {"precision@10", "recall@10", "ndcg@10", "k", "threshold", "n_users"}
    assert 900 < metrics["n_users"] <= 943
    baseline = ranking_metrics(untrained(ml100k), k=10)
    for name in ("precision@10", "recall@10", "ndcg@10"):
        assert 0 < metrics[name] < 1
        assert metrics[name] > 3 * baseline[name], (name, metrics[name], baseline[name])


def test_metrics_at_k_by_hand():
    hits = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1]], dtype=bool)  # 3 users, k = 3
    precision, recall, ndcg = metrics_at_k(hits, np.array([2, 4, 5]), k=3)
    np.testing.assert_allclose(precision, [2 / 3, 0, 1])
    np.testing.assert_allclose(recall, [1, 0, 3 / 5])
    ideal_two = 1 + 1 / np.log2(3)
    np.testing.assert_allclose(ndcg, [(1 + 1 / np.log2(4)) / ideal_two, 0, 1])


# ---- every model on a dataset with a known answer --------------------------------------------


def test_scores_match_the_forward_pass(taste_model):
    users = np.arange(1, taste_model.encoded.n_users)
    scores = score_users(taste_model, users)  # matrices for dot models, one batch for NN models
    u = torch.from_numpy(users).repeat_interleave(taste_model.encoded.n_items)
    i = torch.arange(taste_model.encoded.n_items).repeat(len(users))
    expected = predict(taste_model.model, u, i).reshape(scores.shape)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_every_model_recommends_unseen_items_of_the_users_taste(taste_model):
    for user in (2, 3):  # a horror fan, a children's film fan
        recs = recommend(taste_model, user, n=30)
        seen = taste_model.dataset.ratings.query("user == @user")["item"]
        assert not set(recs.index) & {taste_model.lookup.item_index(i) for i in seen}
        assert len(recs) == 24 - len(seen)
        loved = "Horror" if user % 2 == 0 else "Children's"
        assert (recs["genres"].iloc[:3] == loved).all(), recs


def test_every_model_folds_in_a_horror_fan(taste_model):
    rated = {"Horror 0 (1980)": 5.0, "Horror 1 (1981)": 5.0, "Kids 12 (1992)": 1.0}
    if isinstance(taste_model.model, AutoEncoder):  # no output unit for a new user: refused
        with pytest.raises(ConfigError, match="has no fold-in"):
            fold_in_user(taste_model, rated)
        return
    recs = fold_in_user(taste_model, rated, n=21)
    assert len(recs) == 21 and not set(recs["title"]) & set(rated)
    by_genre = recs.groupby("genres")["predicted"].mean()
    assert by_genre["Horror"] > by_genre["Children's"] + 2
    assert (recs["genres"].iloc[:10] == "Horror").all()

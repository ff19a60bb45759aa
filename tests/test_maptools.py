"""The map tools of collab_core/maps.py on the real ml-100k: one genre against the rest, a movie's
neighbours in the full embedding space, a movie placed on a PCA map, UMAP."""

import time

import numpy as np
import pytest

from collab_core.analysis import most_rated, pca_items
from collab_core.maps import genre_flags, genres_of, in_genre, map_neighbours, pca_place, umap_items

STAR_WARS = "Star Wars (1977)"


def test_a_movie_counts_in_each_of_its_genres(trained_edb):
    items = trained_edb.item_table
    star_wars = trained_edb.lookup.item_index(STAR_WARS)
    for genre in ("Action", "Adventure", "Romance", "Sci-Fi", "War"):
        members = in_genre(items["genres"], genre)
        assert members[star_wars], genre
        assert members.sum() == items["genres"].str.split("|").map(lambda g, x=genre: x in g).sum()
    assert not in_genre(items["genres"], "Horror")[star_wars]
    assert not in_genre(items["genres"], "no such genre").any()
    # the one-genre-per-movie colour counted Star Wars as Action only; here every genre's count is its own
    assert sum(in_genre(items["genres"], g).sum() for g in genres_of(trained_edb)) > len(items)
    assert genres_of(trained_edb) == genre_flags(items["genres"]).columns.tolist()  # the same genres


def test_neighbours_are_the_nearest_by_full_space_cosine(trained_edb):
    mapped = most_rated(trained_edb, 300)
    found = map_neighbours(trained_edb, STAR_WARS, mapped, k=8)
    weights = trained_edb.item_vectors[0].double().numpy()
    me = trained_edb.lookup.item_index(STAR_WARS)
    others = mapped[mapped != me]
    norms = np.linalg.norm(weights[others], axis=1) * np.linalg.norm(weights[me])
    cosine = weights[others] @ weights[me] / norms
    expected = others[np.argsort(-cosine)[:8]]
    assert found.index.tolist() == expected.tolist()
    np.testing.assert_allclose(found["similarity"], np.sort(cosine)[::-1][:8], rtol=1e-5)
    assert set(found.index) <= set(mapped) and me not in found.index
    # not the nearest on the 2-D map: PCA's two axes keep only part of the 50-wide space
    pca = pca_items(trained_edb, 300, k=2)
    xy = pca.coords[["pc1", "pc2"]]
    on_map = ((xy.loc[others] - xy.loc[me]) ** 2).sum(axis=1).nsmallest(8).index
    assert set(on_map) != set(found.index)


def test_pca_place_puts_any_movie_where_the_projection_would(trained_edb):
    pca = pca_items(trained_edb, 100, k=3)
    on_map, off_map = pca.coords.index[0], int(most_rated(trained_edb, 500)[-1])
    placed = pca_place(trained_edb, pca, [on_map, off_map])
    assert placed.index.tolist() == [on_map, off_map]
    np.testing.assert_allclose(placed.loc[on_map, ["pc1", "pc2", "pc3"]].astype(float),
                               pca.coords.loc[on_map, ["pc1", "pc2", "pc3"]].astype(float))  # fmt: skip
    weights = trained_edb.item_vectors[0].double().numpy()
    mean = weights[pca.coords.index].mean(axis=0)
    expected = (weights[off_map] - mean) @ pca.components.T
    np.testing.assert_allclose(placed.loc[off_map, ["pc1", "pc2", "pc3"]].astype(float), expected, rtol=1e-4)
    assert placed.loc[off_map, "title"] == trained_edb.item_table.loc[off_map, "title"]


@pytest.mark.slow  # a process's first UMAP compiles numba's kernels: 30 s to 90 s on the loaded 2 cores
def test_umap_maps_1000_movies_to_finite_2d(trained_edb):
    pytest.importorskip("umap")
    started = time.perf_counter()
    found = umap_items(trained_edb, n_items=1000)
    took = time.perf_counter() - started
    assert len(found) == 1000 and found.index.tolist() == most_rated(trained_edb, 1000).tolist()
    xy = found[["x", "y"]].to_numpy()
    assert np.isfinite(xy).all() and xy.std(axis=0).min() > 0.1
    print(f"\nUMAP of 1,000 movies: {took:.1f} s")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_neighbors": 1}, "n_neighbors must be from 2"),
        ({"n_items": 20, "n_neighbors": 20}, "one less than the movies mapped"),
        ({"min_dist": 1.5}, "min_dist must be between 0 and 1"),
        ({"metric": "jaccard"}, "metric must be one of cosine"),
    ],
)
def test_umap_refuses_bad_parameters_before_it_runs(trained_edb, kwargs, message):
    with pytest.raises(ValueError, match=message):
        umap_items(trained_edb, **{"n_items": 100, **kwargs})


def test_the_map_modules_do_not_import_umap():
    """umap-learn (with numba and llvmlite) is imported by the first UMAP only: the app's cold start
    and every other map skip its seconds of import."""
    import subprocess
    import sys

    loaded = "print('umap' in sys.modules, 'numba' in sys.modules)"
    code = f"import sys, collab_core.maps, collab_core.export; {loaded}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_a_pca_map_does_not_import_scikit_learn(ml100k_dir):
    """The default map is NumPy's: scikit-learn (1.2 s to import with SciPy's statistics) waits for
    t-SNE or a genre's separability."""
    import subprocess
    import sys

    code = (
        "import sys; from collab_core.data import load_dataset; from collab_core.config import preset;"
        "from collab_core.learner import get_or_train; from collab_core.analysis import pca_items;"
        f"t = get_or_train(load_dataset({str(ml100k_dir)!r}), preset('fast', epochs=1), None, 'cpu');"
        "pca_items(t, 500, k=2); print('sklearn' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False"]

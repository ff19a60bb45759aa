"""Exports of a trained model (collab_core/export.py) and the `export` command: the Embedding
Projector's two TSV files and the CSV tables, on the real ml-100k; a key not in the store or of
other data exits 2 with one line that says which."""

import csv
import shutil

import numpy as np
import pandas as pd
import pytest
from test_cli import Cli, last_json

from collab_core import export


def read_projector(folder):
    """(vectors as an array, metadata header, metadata rows) as the Projector reads the files."""
    vector_lines = (folder / export.VECTORS).read_text(encoding="utf-8").splitlines()
    vectors = np.array([[float(v) for v in line.split("\t")] for line in vector_lines])
    header, *rows = [line.split("\t") for line in (folder / export.METADATA).read_text().splitlines()]
    return vectors, header, rows


def test_projector_files_match_row_for_row(trained_edb, tmp_path):
    rows = export.write_export(trained_edb, tmp_path, "projector")
    vectors, header, meta = read_projector(tmp_path)
    n_lines = len((tmp_path / export.METADATA).read_text().splitlines())
    assert vectors.shape == (1664, 50) == (n_lines - 1, trained_edb.config.n_factors)
    assert rows == {export.VECTORS: 1664, export.METADATA: 1664}
    assert header == ["title", "genres", "year", "n_ratings", "mean_rating", "bias"]
    assert all(len(row) == len(header) for row in meta)
    np.testing.assert_allclose(vectors, trained_edb.item_vectors[0][1:].numpy(), rtol=1e-6, atol=1e-8)
    star_wars = trained_edb.lookup.item_index("Star Wars (1977)")
    assert meta[star_wars - 1][:3] == ["Star Wars (1977)", "Action|Adventure|Romance|Sci-Fi|War", "1977"]
    bias = trained_edb.model.biases()[1][star_wars].item()
    assert float(meta[star_wars - 1][5]) == pytest.approx(bias, rel=1e-6)


def test_text_that_would_break_a_tsv_is_flattened(trained_edb):
    messy = pd.Series(["A\tB", "line\nbreak", "ok"])
    assert export._cell(messy).tolist() == ["A B", "line break", "ok"]


def test_csv_tables_read_back_with_pandas(trained_edb, tmp_path):
    rows = export.write_export(trained_edb, tmp_path, "csv")
    assert rows == {"items.csv": 1664, "item_vectors.csv": 1664, "users.csv": 943}
    items = pd.read_csv(tmp_path / "items.csv")
    vectors = pd.read_csv(tmp_path / "item_vectors.csv")
    users = pd.read_csv(tmp_path / "users.csv")
    assert list(items.columns) == ["item", "title", "genres", "year", "n_ratings", "mean_rating", "bias"]
    assert (items["item"] == vectors["item"]).all() and (items["title"] == vectors["title"]).all()
    assert vectors.filter(like="f").shape == (1664, 50)
    np.testing.assert_allclose(vectors.filter(like="f").to_numpy(), trained_edb.item_vectors[0][1:].numpy(),
                               rtol=1e-6, atol=1e-8)  # fmt: skip
    assert {"user", "bias", "age", "occupation"} <= set(users.columns)
    with open(tmp_path / "items.csv", newline="") as f:  # the csv module agrees with pandas on quoting
        assert sum(1 for _ in csv.reader(f)) == 1665


def test_a_page_table_as_csv_reads_back(trained_edb):
    from io import StringIO

    from collab_core.ranking import recommend

    recs = recommend(trained_edb, 42, n=10)
    back = pd.read_csv(StringIO(export.table_csv(recs)))
    assert back["title"].tolist() == recs["title"].tolist()
    np.testing.assert_allclose(back["predicted"], recs["predicted"], rtol=1e-6)


def test_an_unknown_format_is_refused(trained_edb, tmp_path):
    with pytest.raises(ValueError, match="format must be one of projector, csv"):
        export.write_export(trained_edb, tmp_path, "parquet")


@pytest.fixture
def store_cli(tmp_path, ml100k_dir, trained_edb, session_store) -> Cli:
    """The CLI on ml-100k with a store holding the seed model (trained once per session)."""
    cli = Cli(tmp_path, ml100k_dir)
    cli.models.mkdir()
    for suffix in (".pt", ".json"):
        shutil.copy(session_store.root / f"{trained_edb.key}{suffix}", cli.models)
    return cli


@pytest.mark.parametrize("form", ["projector", "csv"])
def test_the_export_command(store_cli, trained_edb, tmp_path, form):
    out = tmp_path / "out"
    done = store_cli("export", "--model-key", trained_edb.key, "--format", form, str(out), "--json")
    assert done.returncode == 0, done.stderr
    result = last_json(done.stdout)
    assert result["model_key"] == trained_edb.key and result["factors"] == 50
    if form == "projector":
        assert result["files"] == {"vectors.tsv": 1664, "metadata.tsv": 1664}
        vectors, header, meta = read_projector(out)
        assert vectors.shape == (len(meta), 50) and header[0] == "title"
    else:
        assert sorted(result["files"]) == ["item_vectors.csv", "items.csv", "users.csv"]
        assert len(pd.read_csv(out / "items.csv")) == result["files"]["items.csv"] == 1664


def test_export_of_a_key_not_in_the_store_exits_2(store_cli, tmp_path):
    done = store_cli("export", "--model-key", "0123456789abcdef", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: model key '0123456789abcdef' is not in the store {store_cli.models}"
    ]
    assert not (tmp_path / "out").exists()


def test_export_of_a_model_of_other_data_exits_2(store_cli, trained_edb, tmp_path):
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("user,item,rating\n" + "\n".join(f"{u},{i},{(u + i) % 5 + 1}" for u in range(9)
                                                         for i in range(7)) + "\n")  # fmt: skip
    done = store_cli("export", "--data", str(ratings), "--model-key", trained_edb.key, str(tmp_path / "out"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: model {trained_edb.key} was trained on ml-100k")
    assert "ml-100k" in lines[0] and "ratings.csv" in lines[0]

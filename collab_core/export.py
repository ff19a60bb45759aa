"""A trained model's movie embeddings and tables written out: two TSV files for TensorFlow's
Embedding Projector (projector.tensorflow.org, "Load"), or CSV tables for a spreadsheet or pandas.

The Projector's format: vectors.tsv holds one movie per row, its factors as tab-separated floats,
no header; metadata.tsv holds a header row, then one row per movie in the same order. (With a
single metadata column the Projector wants no header; these files always have several.)
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from collab_core.errors import ConfigError
from collab_core.learner import Trained

VECTORS, METADATA = "vectors.tsv", "metadata.tsv"
CSV_FILES = ("items.csv", "item_vectors.csv", "users.csv")
FORMATS = ("projector", "csv")
FLOAT = "%.7g"  # float32 round-trips through 9 digits; 7 keep the files small and lose nothing a map shows


def item_metadata(trained: Trained) -> pd.DataFrame:
    """Index: item index 1..n_items-1; title, genres, year, n_ratings, mean_rating[, bias]."""
    table = trained.item_table[["title", "genres", "year", "n_ratings", "mean_rating"]]
    biases = trained.model.biases()
    if biases is not None:
        table = table.assign(bias=biases[1].cpu().numpy()[1:])
    return table


def item_vectors(trained: Trained) -> np.ndarray:
    """(n_items - 1, F) float32: every movie's factors, in item_metadata's order (#na# left out)."""
    return trained.item_vectors[0][1:].numpy()


def projector_files(trained: Trained) -> dict[str, str]:
    """{"vectors.tsv": text, "metadata.tsv": text} in the Projector's format (module docstring)."""
    vectors = io.StringIO()
    np.savetxt(vectors, item_vectors(trained), fmt=FLOAT, delimiter="\t")
    meta = item_metadata(trained)
    text = meta.assign(**{c: _cell(meta[c]) for c in ("title", "genres")})
    return {VECTORS: vectors.getvalue(), METADATA: text.to_csv(sep="\t", index=False, float_format=FLOAT)}


def _cell(values: pd.Series) -> pd.Series:
    """A text column safe in a TSV without quoting: tabs and line breaks become spaces."""
    return values.astype(str).str.replace(r"[\t\r\n]+", " ", regex=True)


def csv_tables(trained: Trained) -> dict[str, pd.DataFrame]:
    """items.csv (metadata and bias per movie), item_vectors.csv (item, title, f1..fF) and users.csv
    (user id, mean rating, count[, bias][, demographics]), each with the embedding index first."""
    items = item_metadata(trained).reset_index()
    vectors = item_vectors(trained)
    factors = pd.DataFrame(vectors, columns=[f"f{j + 1}" for j in range(vectors.shape[1])])
    item_rows = pd.concat([items[["item", "title"]], factors], axis=1)
    users = trained.user_table
    biases = trained.model.biases()
    if biases is not None:
        users = users.assign(bias=biases[0].cpu().numpy()[1:])
    return dict(zip(CSV_FILES, (items, item_rows, users.reset_index())))


def write_export(trained: Trained, out_dir: Path, format: str) -> dict[str, int]:
    """Write the projector's two TSV files or the CSV tables into out_dir (made if missing);
    returns {file name: data rows} (metadata.tsv's header row not counted)."""
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {}
    if format == "projector":
        for name, text in projector_files(trained).items():
            (out_dir / name).write_text(text, encoding="utf-8")
            rows[name] = text.count("\n") - (name == METADATA)
        return rows
    for name, table in csv_tables(trained).items():
        table.to_csv(out_dir / name, index=False, float_format=FLOAT)
        rows[name] = len(table)
    return rows


def table_csv(table: pd.DataFrame) -> str:
    """A page's table as CSV text (a download button's contents): genres kept as "A|B" strings."""
    return table.to_csv(index=False, float_format=FLOAT)

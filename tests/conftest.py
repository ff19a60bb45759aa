"""Shared fixtures: the real ml-100k (skipped with a reason when it is absent)."""

import os
from pathlib import Path

import pytest

from collab_core.data import Dataset, load_ml100k

ML100K_DIR = Path(
    os.environ.get("COLLAB_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared/data/ml-100k"
)


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The real ml-100k folder (COLLAB_DATA_DIR, else ../shared/data/ml-100k)."""
    if not (ML100K_DIR / "u.data").is_file():
        pytest.skip(f"real ml-100k not found at {ML100K_DIR} (set COLLAB_DATA_DIR to its folder)")
    return ML100K_DIR


@pytest.fixture(scope="session")
def ml100k(ml100k_dir: Path) -> Dataset:
    """ml-100k loaded once per session; tests must not modify it."""
    return load_ml100k(ml100k_dir)

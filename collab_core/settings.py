"""Where things live, read from the environment in this one place: no torch, no pandas.

An empty variable counts as unset (`COLLAB_DATA_DIR= streamlit run ...` means "no data folder").
torchrun's own variables (RANK, WORLD_SIZE, LOCAL_RANK) are read by `distributed.py`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"  # GroupLens' own
# Seconds the default recipe may take (recipes.py): where the book's recipe is estimated above it, the
# default is the sparse one sized to fit; the app starts a default model on its own only within it.
TRAIN_BUDGET = 120.0
VARIABLES = ("COLLAB_DATA_DIR", "COLLAB_MODELS_DIR", "COLLAB_ML100K_URL", "COLLAB_ALLOW_PATHS",
             "COLLAB_TRAIN_BUDGET", "XDG_CACHE_HOME", "HOME")  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """The app's and the CLI's places and switches."""

    data_dir: Path | None = None  # COLLAB_DATA_DIR: a local ml-100k (or other) folder used by default
    models_dir: Path = REPO / "models"  # COLLAB_MODELS_DIR: the model store
    cache_dir: Path = Path.home() / ".cache" / "collab-explorer"  # downloads; $XDG_CACHE_HOME/collab-explorer
    ml100k_url: str = ML100K_URL  # COLLAB_ML100K_URL: a mirror of GroupLens' ml-100k.zip
    allow_paths: bool = True  # COLLAB_ALLOW_PATHS=0: a public deployment must not read server files
    train_budget: float = TRAIN_BUDGET  # COLLAB_TRAIN_BUDGET: seconds the default recipe may take

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """The settings the environment asks for; unset or empty variables keep the defaults."""
        env = {name: env[name] for name in VARIABLES if env.get(name)}  # an empty variable is unset
        home = Path(env["HOME"]) if "HOME" in env else Path.home()
        return cls(
            data_dir=Path(env["COLLAB_DATA_DIR"]) if "COLLAB_DATA_DIR" in env else None,
            models_dir=Path(env.get("COLLAB_MODELS_DIR", REPO / "models")),
            cache_dir=Path(env.get("XDG_CACHE_HOME", home / ".cache")) / "collab-explorer",
            ml100k_url=env.get("COLLAB_ML100K_URL", ML100K_URL),
            allow_paths=env.get("COLLAB_ALLOW_PATHS") != "0",
            train_budget=_seconds(env.get("COLLAB_TRAIN_BUDGET"), cls.train_budget),
        )


def _seconds(value: str | None, default: float) -> float:
    """A positive number of seconds, or the default (a bad value must not stop the app)."""
    try:
        seconds = float(value) if value is not None else default
    except ValueError:
        return default
    return seconds if seconds > 0 and seconds < float("inf") else default


def current() -> Settings:
    """The settings of the environment as it is now (tests and deployments change it between runs)."""
    return _cached(tuple((name, os.environ.get(name)) for name in VARIABLES))


@functools.lru_cache(maxsize=8)
def _cached(items: tuple[tuple[str, str | None], ...]) -> Settings:
    return Settings.from_env({name: value for name, value in items if value is not None})

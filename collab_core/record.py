"""A stored model's record: the store's JSON beside each checkpoint, as a typed object. No torch, no pandas.

`StoredModel.from_json` checks every field a reader relies on, so a damaged or foreign JSON fails
there (ValueError, TypeError or KeyError: the store turns it into a miss with a warning), never
later in a page. `to_json` writes the same layout the store has always written (FORMAT 1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from collab_core.config import FORMAT, TrainConfig


@dataclass(frozen=True)
class DataIdentity:
    """Which data the model was trained on."""

    name: str  # shown to people ("ml-100k", a file name)
    fingerprint: str  # hash of the ratings: the data half of the store key
    n_users: int  # embedding rows, #na# included
    n_items: int
    n_ratings: int


@dataclass(frozen=True)
class Split:
    how: str  # "random", "temporal" or a fold file
    n_train: int  # ratings
    n_valid: int


@dataclass(frozen=True)
class History:
    train_loss: tuple[float, ...]  # per epoch, fastai's smoothed training loss
    valid_loss: tuple[float, ...]  # per epoch, MSE
    batch_loss: tuple[float, ...]  # per batch, mean-pooled to at most store.MAX_BATCH_POINTS
    n_batches: int  # batches before pooling
    valid_log_loss: tuple[float, ...] = ()  # per epoch, cross-entropy models only (train_loss is theirs)


@dataclass(frozen=True)
class Metrics:
    """On the validation ratings, after the last epoch."""

    mse: float
    rmse: float
    mae: float
    accuracy: float | None = None  # cross-entropy models: the most probable level is the rating's
    log_loss: float | None = None  # cross-entropy models: mean cross-entropy of the rating's level


@dataclass(frozen=True)
class StoredModel:
    """What the store knows about one trained model, without its weights."""

    key: str  # entry_key(config, data.fingerprint): names <key>.pt and <key>.json
    config: TrainConfig
    data: DataIdentity
    split: Split
    history: History
    metrics: Metrics
    fit_seconds: float
    device: str  # where it was trained ("cpu", "cuda:0")
    checkpoint_sha256: str = ""  # the next four are set by the store when it saves
    checkpoint_bytes: int = 0
    saved_at: str = ""  # UTC, ISO 8601 to the second
    versions: Mapping[str, str] = field(default_factory=dict, hash=False)  # collab_core, torch, python
    snapshots: int = 0  # frames of the movie map through training in the checkpoint (older entries: 0)
    size_bytes: int = field(default=0, compare=False)  # checkpoint + JSON on disk (ModelStore.list)

    @property
    def label(self) -> str:
        """The model's name wherever a person picks or compares models."""
        c = self.config
        return f"{c.model} · {c.n_factors}f · {c.epochs}ep · lr {c.lr:g} · wd {c.wd:g} ({self.key[:6]})"

    def to_json(self) -> dict:
        """The store's JSON layout (size_bytes is a fact of the disk, not of the model: left out)."""
        out = {"format": FORMAT, **asdict(self)}
        del out["size_bytes"]
        out["versions"] = dict(self.versions)
        for part, name in (("metrics", "accuracy"), ("metrics", "log_loss"), ("history", "valid_log_loss")):
            if out[part][name] in (None, ()):  # the cross-entropy models' own: left out for the others
                del out[part][name]
        return json.loads(json.dumps(out))  # tuples become lists, as a reader will see them

    @classmethod
    def from_json(cls, meta: object) -> StoredModel:
        """The record of a store JSON; ValueError/TypeError/KeyError if it is not a sound one."""
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else "?"
            raise ValueError(f"format {found} is not {FORMAT}")
        config = _typed(meta, "config", dict)
        return cls(
            key=_typed(meta, "key", str),
            config=TrainConfig(**{**config, "y_range": tuple(config["y_range"])}),
            data=_nested(DataIdentity, meta, "data"),
            split=_nested(Split, meta, "split"),
            history=_nested(History, meta, "history"),
            metrics=_nested(Metrics, meta, "metrics"),
            fit_seconds=_typed(meta, "fit_seconds", float),
            device=_typed(meta, "device", str),
            checkpoint_sha256=_typed(meta, "checkpoint_sha256", str),
            checkpoint_bytes=_typed(meta, "checkpoint_bytes", int),
            saved_at=_typed(meta, "saved_at", str),
            versions=_typed(meta, "versions", dict),
            snapshots=_typed(meta, "snapshots", int) if "snapshots" in meta else 0,
        )

    @classmethod
    def read(cls, path: Path) -> StoredModel:
        """The record in a store JSON file (OSError if unreadable, else as from_json)."""
        return cls.from_json(json.loads(path.read_text()))


_KINDS = {"str": str, "int": int, "float": float, "tuple[float, ...]": tuple, "float | None": float}


def _nested(cls: type, meta: dict, name: str):
    """One of the nested records, each field type-checked (a field with a default may be absent)."""
    part = _typed(meta, name, dict)
    return cls(**{f.name: _typed(part, f.name, _KINDS[f.type], where=f"{name}.") for f in fields(cls)
                  if f.name in part or f.default is MISSING})  # fmt: skip


def _typed(part: dict, name: str, kind: type, where: str = ""):
    """part[name] if it is a kind (a finite number for float, a list of them for tuple), else TypeError."""
    value = part[name]
    if kind is float and _is_number(value):
        return float(value)
    if kind is tuple and isinstance(value, list) and all(map(_is_number, value)):
        return tuple(float(x) for x in value)
    if kind in (str, int, dict) and isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise TypeError(f"{where}{name} is not a {_NAMES[kind]}: {str(value)[:40]!r}")


_NAMES = {str: "string", int: "integer", float: "finite number", tuple: "list of numbers", dict: "dict"}


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

"""Training configs, presets and the store's key and metadata checks: no torch, no pandas.

The command line answers a request that is already in the store from here alone, without
importing torch, so that a stored answer comes back at once.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from collab_core.errors import ConfigError

MODEL_KEYS = (
    "dot",
    "dot_range",
    "dot_bias",
    "dot_bias_params",
    "embedding_dot_bias",
    "collab_nn",
    "embedding_nn",
)
FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")  # ml-100k's canonical splits: u1.base/u1.test, ...
SPLITS = ("random", "temporal", *FOLDS)
FORMAT = 1  # bump when the checkpoint layout changes; older entries become misses
LIMITS = {"n_factors": (1, 1024), "epochs": (1, 1000), "bs": (1, 1_000_000)}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model (the device does not: it is chosen per run)."""

    model: str = "embedding_dot_bias"  # a key of nets.MODELS (MODEL_KEYS)
    n_factors: int = 50  # embedding width of the dot-product models (NN models use get_emb_sz)
    epochs: int = 5  # passes over the training ratings
    lr: float = 5e-3  # peak learning rate of the one cycle
    wd: float = 0.1  # decoupled weight decay
    bs: int = 64  # ratings per batch
    seed: int = 42  # seeds the init, the split and the shuffling
    y_range: tuple[float, float] = (0.0, 5.5)  # output range of sigmoid_range
    split: str = "random"  # "random", "temporal" or a fold file "u1".."u5", "ua", "ub"
    valid_pct: float = 0.2  # validation share of the random and temporal splits
    item_key: str = "title"  # items keyed by "title" (as the book) or "id"
    wd_bias: float | None = None  # weight decay of the bias terms; None = wd (fastai's choice)
    sparse: bool = False  # row-wise AdamW: only a batch's rows decay and move (dot models, big data)

    def __post_init__(self) -> None:
        if self.model not in MODEL_KEYS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(MODEL_KEYS)}")
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if not (isinstance(value, int) and low <= value <= high):
                raise ConfigError(f"{name} must be an integer from {low} to {high}, not {value!r}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 10):
            raise ConfigError(f"lr must be in (0, 10], not {self.lr}")
        for name in ("wd", "wd_bias"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0 <= value <= 10):
                raise ConfigError(f"{name} must be in [0, 10], not {value}")
        low, high = self.y_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ConfigError(f"y_range must be two finite numbers low < high, not {self.y_range}")
        object.__setattr__(self, "y_range", (float(low), float(high)))

    def to_dict(self) -> dict:
        return asdict(self)


# Named recipes. "book" is the chapter's fit_one_cycle(5, 5e-3, wd=0.1) at bs 64. "fast" trades
# batch size for speed: 8x larger batches mean 8x fewer decay steps, so wd rises (0.1 -> 0.6) to
# keep its total effect, and the biases are not decayed (decaying them pulls every prediction
# towards the middle of y_range); on ml-100k it is as accurate in a fraction of the time.
PRESETS = {
    "book": {},
    "fast": {"bs": 512, "epochs": 6, "lr": 8e-3, "wd": 0.6, "wd_bias": 0.0},
}


def preset(name: str, **overrides) -> TrainConfig:
    """A named recipe with any fields overridden."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **overrides})


def entry_key(config: TrainConfig, fingerprint: str) -> str:
    """A stable hash of the config and the data it was trained on."""
    blob = json.dumps({"format": FORMAT, "config": config.to_dict(), "data": fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# the fields every reader relies on, with their JSON types
META_TYPES = {
    "key": str,
    "checkpoint_sha256": str,
    "config": dict,
    "data": dict,
    "history": dict,
    "metrics": dict,
    "fit_seconds": (int, float),
    "device": str,
}


def read_meta(path: Path) -> dict:
    """Read and type-check an entry's JSON; ValueError/TypeError/KeyError if it is not right."""
    meta = json.loads(path.read_text())
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format') if isinstance(meta, dict) else '?'} "
                         f"is not {FORMAT}")  # fmt: skip
    for name, kind in META_TYPES.items():
        if not isinstance(meta[name], kind) or isinstance(meta[name], bool):
            raise TypeError(
                f"{name} is a {type(meta[name]).__name__}, not a {getattr(kind, '__name__', 'number')}"
            )
    config_from_meta(meta)
    if not (isinstance(meta["data"]["fingerprint"], str) and isinstance(meta["data"]["name"], str)):
        raise TypeError("data.fingerprint and data.name must be strings")
    for name in ("train_loss", "valid_loss", "batch_loss"):
        if not (isinstance(meta["history"][name], list) and all(map(_is_number, meta["history"][name]))):
            raise TypeError(f"history.{name} is not a list of finite numbers")
    if not all(map(_is_number, meta["metrics"].values())):
        raise TypeError("metrics must be finite numbers")
    return meta


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def config_from_meta(meta: dict) -> TrainConfig:
    """The TrainConfig stored in an entry's JSON (ConfigError/TypeError if it is not one)."""
    return TrainConfig(**{**meta["config"], "y_range": tuple(meta["config"]["y_range"])})

"""Training configs (each field described once), presets and the store's key: no torch, no pandas.

The command line answers a request that is already in the store without importing torch, so that
a stored answer comes back at once: this module, `record.py` and `store.py`'s fast path are all it
needs.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from collab_core.errors import ConfigError

MODEL_KEYS = (
    "dot",
    "dot_range",
    "dot_bias",
    "dot_bias_params",
    "embedding_dot_bias",
    "collab_nn",
    "embedding_nn",
    "autorec",
    "glocal_k",
    "side_nn",  # embedding_nn with user and movie side features (features.py)
    "dot_bias_ce",  # ratings as classes: cross-entropy over the rating levels
)
FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")  # ml-100k's canonical splits: u1.base/u1.test, ...
SPLITS = ("random", "temporal", *FOLDS)
FORMAT = 1  # bump when the checkpoint layout changes; older entries become misses


@dataclass(frozen=True)
class Field:
    """One TrainConfig field as people meet it: its CLI flag, its help, the values it accepts.

    The command line's flags, the Train page's widgets and TrainConfig's own checks all read this
    table, so they cannot disagree.
    """

    flag: str  # the command-line flag (a contract: scripts use it)
    kind: type  # int, float, str (one of choices), bool, or tuple (a LOW HIGH pair)
    help: str
    low: float | None = None  # the accepted range, inclusive unless open
    high: float | None = None
    open_low: bool = False  # lr must be above 0, not at it
    open_high: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False  # None is accepted too (wd_bias: None means "as wd")

    def check(self, name: str, value: object) -> None:
        """ConfigError with the accepted range or choices if value is not one of them."""
        if value is None and self.optional:
            return
        if self.choices and value not in self.choices:
            raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(self.choices)}")
        if self.kind is int and not (_is_int(value) and self.low <= value <= self.high):
            raise ConfigError(f"{name} must be an integer from {self.low} to {self.high}, not {value!r}")
        if self.kind is float and not (_is_number(value) and self._inside(value)):
            low, high = "(" if self.open_low else "[", ")" if self.open_high else "]"
            raise ConfigError(f"{name} must be in {low}{self.low:g}, {self.high:g}{high}, not {value}")
        if self.kind is bool and not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, not {value!r}")

    def _inside(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below


# fmt: off
FIELDS = {  # TrainConfig's fields in its order: flag, type, help, accepted values
    "model": Field(
        "--model", str, "the chapter's seven, side_nn, dot_bias_ce, autorec or glocal_k", choices=MODEL_KEYS
    ),
    "n_factors": Field("--factors", int, "embedding width (the NN models size their own)", low=1, high=1024),
    "epochs": Field("--epochs", int, "passes over the training ratings", low=1, high=1000),
    "lr": Field("--lr", float, "peak learning rate of the one cycle", low=0.0, high=10.0, open_low=True),
    "wd": Field("--wd", float, "decoupled weight decay (autoencoders: the L2 weight λ)", low=0.0, high=100.0),
    "bs": Field("--bs", int, "ratings per batch", low=1, high=1_000_000),
    "seed": Field("--seed", int, "seeds the init, the split and the shuffling", low=0, high=2**32 - 1),
    "y_range": Field("--y-range", tuple, "output range of sigmoid_range: LOW HIGH"),
    "split": Field("--split", str, "random (fastai's), per-user temporal, or an ml-100k fold",
                   choices=SPLITS),
    "valid_pct": Field("--valid-pct", float, "validation share of the random and temporal splits",
                       low=0.0, high=1.0, open_low=True, open_high=True),
    "item_key": Field("--item-key", str, "items keyed by title (as the book) or id", choices=("title", "id")),
    "wd_bias": Field("--wd-bias", float, "weight decay of the biases (default: --wd)", low=0.0, high=10.0,
                     optional=True),
    "sparse": Field("--sparse", bool, "row-wise AdamW: only a batch's rows decay and move (big data)"),
}
# fmt: on


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
        for name, spec in FIELDS.items():
            spec.check(name, getattr(self, name))
        low, high = self.y_range
        if not (_is_number(low) and _is_number(high) and low < high):
            raise ConfigError(f"y_range must be two finite numbers low < high, not {self.y_range}")
        object.__setattr__(self, "y_range", (float(low), float(high)))

    def to_dict(self) -> dict:
        return asdict(self)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# Named recipes. "book" is the chapter's fit_one_cycle(5, 5e-3, wd=0.1) at bs 64. "fast" trades
# batch size for speed: 8x larger batches mean 8x fewer decay steps, so wd rises (0.1 -> 0.6) to
# keep its total effect, and the biases are not decayed (decaying them pulls every prediction
# towards the middle of y_range); on ml-100k it is as accurate in a fraction of the time.
PRESETS = {
    "book": {},
    "fast": {"bs": 512, "epochs": 6, "lr": 8e-3, "wd": 0.6, "wd_bias": 0.0},
}


# Per-family defaults (model key -> TrainConfig fields), over a preset, under explicit fields. The
# autoencoders fit full-batch with L-BFGS (autofit.py): n_factors is the hidden width, epochs the
# L-BFGS rounds (glocal_k: fine-tuning rounds, after epochs // 2 pre-training ones), lr L-BFGS's step
# scale, wd the L2 weight λ of their summed squared error (GLocal-K's ml-100k settings).
AUTOENCODERS = ("autorec", "glocal_k")  # the keys fitted by autofit.py, not by the one cycle
FAMILY_DEFAULTS: dict[str, dict] = {
    # autorec's λ chosen on 5% held out of u1.base (torch's 6-evaluation rounds): held-out RMSE 0.8883 at λ 1,
    # 0.8841 at 20, 0.8805 at 50, 0.8763 at 100, 0.8784 at 150; it stops by itself (PATIENCE) before 60 rounds
    "autorec": {"n_factors": 500, "epochs": 60, "lr": 1.0, "wd": 100.0, "wd_bias": None, "sparse": False},
    "glocal_k": {"n_factors": 500, "epochs": 60, "lr": 1.0, "wd": 20.0, "wd_bias": None, "sparse": False},
    "side_nn": {"epochs": 5, "lr": 5e-3, "wd": 0.1},  # embedding_nn's recipe: the features are the difference
    # cross-entropy overfits sooner: on 10% carved from u1.base, 3 epochs reach MSE 0.825, 5 reach 0.836
    "dot_bias_ce": {"epochs": 3, "lr": 5e-3, "wd": 0.1},
}


def preset(name: str, **overrides) -> TrainConfig:
    """A named recipe with any fields overridden; a model family's defaults come between the two."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    family = FAMILY_DEFAULTS.get(overrides.get("model"), {})
    return TrainConfig(**{**PRESETS[name], **family, **overrides})


def entry_key(config: TrainConfig, fingerprint: str) -> str:
    """A stable hash of the config and the data it was trained on."""
    blob = json.dumps({"format": FORMAT, "config": config.to_dict(), "data": fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

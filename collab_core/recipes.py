"""The default recipe, sized to the data and this machine's measured speed: no torch, no pandas.

The rule: the chapter's recipe (`book`: fit_one_cycle(5, 5e-3, wd=0.1), bs 64, dense AdamW)
wherever its estimated fit time is within the budget (settings.TRAIN_BUDGET, 2 minutes, or
COLLAB_TRAIN_BUDGET); beyond that a scalable recipe (`sparse`:
row-wise sparse AdamW, large batches, its own lr and weight decay, as many epochs as fit the
budget, at most SPARSE_MAX_EPOCHS).

Why a second recipe: dense AdamW moves every weight at every step, so a step costs
O((n_users + n_items)·(F + 1)) whatever the batch, and the book's bs 64 makes many steps. At
MovieLens-25M's shape that is 11.3M weights and ~390k steps: hours. Row-wise AdamW decays and moves
only the rows of a batch's users and items, so a step costs O(batch). Its weight decay then acts
once per batch a row appears in (about once per rating of that row, as the classic L2 of matrix
factorization) rather than once per step, which is why its wd is larger than the book's; its
biases are not decayed (decay pulls every prediction towards the middle of y_range).

Estimates are honest because they come from this machine: `Speed` holds the measured seconds per
step of each step kind at two batch sizes on the data's own shape (calibrate.py times a few dozen
steps of a model of that shape on synthetic indices), and the per-rating cost of an epoch's
shuffle and validation. Measurements are cached in `<cache_dir>/recipes.json` per machine (torch
version, CPU count and model) and per data shape; the data sources' sizes are noted there too, so
the command line can pick the default recipe of a stored request without reading the data.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from collab_core.config import AUTOENCODERS, MODEL_KEYS, PRESETS, TrainConfig, preset
from collab_core.settings import TRAIN_BUDGET
from collab_core.speed import Speed

BUDGET_S = TRAIN_BUDGET  # the longest fit the app starts on its own, and the CLI's default recipe's
DOT_MODELS = MODEL_KEYS[:5]  # the dot-product models: the steps calibrate.py times (NN models: no estimate)
CACHE_FILE = "recipes.json"
CACHE_FROM = 10_000  # ratings from which measurements and sizes are kept on disk
_MEASURED: dict[str, Speed] = {}  # this process's measurements, by data shape
FORMAT = 6  # bump when Speed or its measurement changes: older measurements are taken again

# The scalable recipe's hyper-parameters per batch size, chosen on the random 80/20 validation split
# of ml-100k and of a 1M-rating synthetic set (README, "The default recipe"); the batch grows with
# the data so a 25M-rating epoch is ~2,400 steps instead of ~390,000.
SPARSE = {  # bs: (lr, wd)
    1024: (1e-2, 0.8),
    4096: (2e-2, 0.8),
    8192: (2e-2, 0.8),
}
SPARSE_MAX_EPOCHS = 8
SPARSE_STEPS_PER_EPOCH = 2500  # the batch is the smallest of SPARSE's that keeps an epoch near this


@dataclass(frozen=True)
class DataSize:
    """What the rule needs of a dataset: its counts of ratings, users and items (by id), and the
    output range its rating scale suggests (1-5 and half stars: fastai's (0, 5.5); 1-10: (0, 11))."""

    ratings: int
    users: int
    items: int
    y_range: tuple[float, float] = (0.0, 5.5)

    @classmethod
    def of(cls, dataset) -> DataSize:
        """The counts and output range of a collab_core.data.Dataset."""
        s = dataset.summary()
        return cls(s["ratings"], s["users"], s["items"], dataset.rating_scale.y_range)

    @property
    def shape(self) -> str:
        """The embedding tables' shape (with fastai's #na# row): the key of a measured Speed."""
        return f"{self.users + 1}x{self.items + 1}"


@dataclass(frozen=True)
class Recipe:
    """A named config and its estimated fit time here (None: no estimate for this model)."""

    name: str  # "book", "fast" or "sparse"
    config: TrainConfig
    seconds: float | None

    def fits(self, budget: float = BUDGET_S) -> bool:
        return self.seconds is not None and self.seconds <= budget

    def describe(self) -> str:
        """One line: `book: embedding_dot_bias, 5 epochs, bs 64, lr 0.005, wd 0.1, dense AdamW, ~1.3 s`."""
        c = self.config
        optimizer = "row-wise sparse AdamW" if c.sparse else "dense AdamW"
        optimizer = "full-batch L-BFGS rounds" if c.model in AUTOENCODERS else optimizer
        return (
            f"{self.name}: {c.model}, {c.epochs} epochs, bs {c.bs}, lr {c.lr:g}, wd {c.wd:g}, {optimizer}, "
            f"~{format_seconds(self.seconds)}"
        )


def format_seconds(seconds: float | None) -> str:
    """1.3 s, 42 s, 7 min, 6.1 h; '?' when unknown."""
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate(config: TrainConfig, size: DataSize, speed: Speed) -> float | None:
    """Seconds this config's fit takes here: its steps at the measured step cost, plus each epoch's
    shuffle and validation. None for the NN models (their autograd step is not measured)."""
    if config.model not in DOT_MODELS:
        return None
    n_valid = round(size.ratings * config.valid_pct) if config.split in ("random", "temporal") else 0
    n_valid = n_valid or size.ratings // 5  # ml-100k's fold files hold out a fifth too
    n_train = size.ratings - n_valid
    steps = n_train // config.bs * config.epochs
    step = (speed.sparse if config.sparse else speed.dense)(config.bs)
    width = (config.n_factors + 1) / (speed.factors + 1)  # a step's work grows with the row width
    return steps * step * width + config.epochs * (n_train * speed.shuffle + n_valid * speed.predict)


def sparse_recipe(size: DataSize, speed: Speed, budget: float = BUDGET_S, **overrides) -> Recipe:
    """The scalable recipe: row-wise AdamW, the batch sized to the data, epochs to fit the budget."""
    n_train = size.ratings * 4 // 5
    bs = next((bs for bs in SPARSE if n_train / bs <= SPARSE_STEPS_PER_EPOCH), max(SPARSE))
    lr, wd = SPARSE[bs]
    bs = min(bs, max(1, n_train // 8))  # a small table (a tight budget) still gets a few steps an epoch
    base = {
        "sparse": True,
        "bs": bs,
        "lr": lr,
        "wd": wd,
        "wd_bias": 0.0,
        "y_range": size.y_range,
        **overrides,
    }
    one_epoch = estimate(TrainConfig(**{**base, "epochs": 1}), size, speed)
    if "epochs" not in base:
        fit = int(budget // one_epoch) if one_epoch else SPARSE_MAX_EPOCHS
        base["epochs"] = max(1, min(SPARSE_MAX_EPOCHS, fit))
    config = TrainConfig(**base)
    return Recipe(_named("sparse", overrides), config, estimate(config, size, speed))


def named_recipe(name: str, size: DataSize, speed: Speed, **overrides) -> Recipe:
    """A preset (book, fast) with its estimate, its output range from the data's rating scale."""
    config = preset(name, **{"y_range": size.y_range, **overrides})
    return Recipe(_named(name, overrides), config, estimate(config, size, speed))


def _named(name: str, overrides: dict) -> str:
    """`book`, or `book+flags` once flags (or form fields) changed it: it is no longer the book's."""
    return f"{name}+flags" if overrides else name


def default_recipe(size: DataSize, speed: Speed, budget: float = BUDGET_S, **overrides) -> Recipe:
    """The rule: the book's recipe where its estimate fits the budget, else the sparse one.

    overrides (explicit flags or form fields) apply to whichever recipe the rule picks.
    """
    book = named_recipe("book", size, speed, **overrides)
    if book.fits(budget) or book.seconds is None:  # an NN model has no sparse step: keep the book's
        return book
    return sparse_recipe(size, speed, budget, **overrides)


def recipes(size: DataSize, speed: Speed, budget: float = BUDGET_S) -> dict[str, Recipe]:
    """What the Train page offers: `auto` (the rule's pick) beside every preset, each with its estimate."""
    return {"auto": default_recipe(size, speed, budget), **{n: named_recipe(n, size, speed) for n in PRESETS}}


# --- the per-machine cache -------------------------------------------------------------------


def machine() -> dict:
    """What a measurement is valid for: this CPU, its count and torch's version (read without torch)."""
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    model = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    cpu = model or platform.machine()
    return {"format": FORMAT, "torch": torch_version, "cpus": os.cpu_count(), "cpu": cpu}


def _read(cache_dir: Path) -> dict:
    try:
        cached = json.loads((cache_dir / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) and cached.get("machine") == machine() else {}


def _write(cache_dir: Path, cached: dict) -> None:
    """Atomically; a cache that cannot be written only means measuring again next time."""
    with contextlib.suppress(OSError):
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f"{CACHE_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({**cached, "machine": machine()}, indent=1))
        os.replace(tmp, cache_dir / CACHE_FILE)


def cached_speed(size: DataSize, cache_dir: Path) -> Speed | None:
    """This machine's measured speed on the data's shape, if it was measured before."""
    if size.shape in _MEASURED:
        return _MEASURED[size.shape]
    found = _read(cache_dir).get("speeds", {}).get(size.shape)
    try:
        return Speed.from_dict(found) if found else None
    except (KeyError, TypeError):
        return None


def machine_speed(size: DataSize, cache_dir: Path) -> Speed:
    """The cached speed, or measured now (0.3-2 s; imports torch) and cached: on disk from
    CACHE_FROM ratings, in this process below (a small table's measurement is quick, and a run on
    one leaves no file behind but its model)."""
    speed = cached_speed(size, cache_dir)
    if speed is None:
        from collab_core.calibrate import measure

        speed = _MEASURED[size.shape] = measure(size.users + 1, size.items + 1)
        if size.ratings >= CACHE_FROM:
            cached = _read(cache_dir)
            cached.setdefault("speeds", {})[size.shape] = asdict(speed)
            _write(cache_dir, cached)
    return speed


def remembered_size(signature: str | None, cache_dir: Path) -> DataSize | None:
    """The size noted for a data source (sources.source_key), without reading it."""
    found = _read(cache_dir).get("sizes", {}).get(signature) if signature else None
    try:
        ratings, users, items, (low, high) = found
        return DataSize(ratings, users, items, (float(low), float(high)))
    except (TypeError, ValueError):
        return None


def remember_size(signature: str | None, size: DataSize, cache_dir: Path) -> None:
    """Note a data source's size, so the next run picks its default recipe without reading it."""
    if signature is None or size.ratings < CACHE_FROM:
        return
    cached = _read(cache_dir)
    sizes = cached.setdefault("sizes", {})
    noted = [size.ratings, size.users, size.items, list(size.y_range)]
    if sizes.get(signature) != noted:
        sizes[signature] = noted
        _write(cache_dir, cached)

"""Dataset + config -> a trained model, from the store when it is there, or an lr sweep: the one
prepare -> build -> fit / find path that the command line, the pages, the benchmark and the tests
all take."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from collab_core import memory, stats
from collab_core.config import TrainConfig
from collab_core.data import Dataset
from collab_core.encoding import Encoded, encode, split
from collab_core.errors import ConfigError, DataError
from collab_core.lookup import Lookup
from collab_core.nets import MODELS, AutoEncoder, CollabModel, create_model, without_initial_weights
from collab_core.optim import one_thread_fit
from collab_core.record import DataIdentity, History, Metrics, Split, StoredModel
from collab_core.snapshots import N_ITEMS, Snapshots, plan
from collab_core.store import ModelStore, StoreWarning, downsample, entry_key
from collab_core.train import Callback, FitResult, LRFind, fit_one_cycle, lr_find, pick_device

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(eq=False)
class Trained:
    """A trained model with the data, encoding and split it was trained on, and the tables derived
    from them, each built on first use (the model must not change afterwards; a copy made with
    dataclasses.replace starts without them, so it never sees stale tables). The tables of the
    ratings alone (item_table, user_table) are shared by every model of the encoding."""

    config: TrainConfig
    model: CollabModel = field(repr=False)
    dataset: Dataset = field(repr=False)
    encoded: Encoded = field(repr=False)
    train_rows: np.ndarray = field(repr=False)  # rows of dataset.ratings used for training
    valid_rows: np.ndarray = field(repr=False)
    record: StoredModel = field(repr=False)  # history, metrics, fit time, device (the store's JSON)
    from_store: bool = False
    snapshots: Snapshots | None = field(default=None, repr=False)  # the map through training, if kept

    @property
    def key(self) -> str:
        return self.record.key

    def tensors(self, rows: np.ndarray) -> Tensors:
        return rows_to_tensors(self.encoded, rows)

    @cached_property
    def lookup(self) -> Lookup:
        """Raw user ids and item titles or ids -> embedding indices."""
        return Lookup(self.dataset, self.encoded)

    @cached_property
    def item_table(self) -> pd.DataFrame:
        """Index: item index; title, year, genres, mean_rating, n_ratings. Read it, never modify it."""
        return stats.item_table(self.dataset, self.encoded)

    @cached_property
    def user_table(self) -> pd.DataFrame:
        """Index: user index; user, mean_rating, n_ratings[, demographics]. Read it, never modify it."""
        return stats.user_table(self.dataset, self.encoded)

    def user_rows(self, user: int) -> np.ndarray:
        """Rows of dataset.ratings holding the ratings of user index `user` (train and validation)."""
        return self.encoded.user_rows(user)

    @cached_property
    def valid_mask(self) -> np.ndarray:
        """(n_ratings,) bool: is each row of dataset.ratings in the validation split."""
        mask = np.zeros(len(self.encoded.rating), dtype=bool)
        mask[self.valid_rows] = True
        return mask

    @cached_property
    def item_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The item embeddings (n_items, F) on the CPU, and the same rows scaled to length 1."""
        return stats.embeddings(self.model, "items")

    @cached_property
    def user_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The user embeddings (n_users, F) on the CPU, and the same rows scaled to length 1."""
        return stats.embeddings(self.model, "users")

    @cached_property
    def user_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (D,) and covariance (D, D) of the users' vectors [and biases]: the fold-in prior."""
        return stats.user_prior(self.model)


def rows_to_tensors(encoded: Encoded, rows: np.ndarray, index: torch.dtype = torch.int64) -> Tensors:
    """(users, items, ratings) tensors of the given rows; the indices as `index` (int64, as torch's
    layers take them; the fused step's NumPy takes int32)."""
    ix = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    return encoded.user_idx[ix].to(index), encoded.item_idx[ix].to(index), encoded.rating[ix]


def prepare(
    dataset: Dataset,
    config: TrainConfig,
    encoded: Encoded | None = None,
    rows: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Encoded, np.ndarray, np.ndarray]:
    """Encode and split as the config says (or take an encoding by its item_key and a split by its
    settings made before: the models of one dataset share them); check the ratings fit its y_range
    and a batch."""
    if encoded is None:
        encoded = encode(dataset, config.item_key)
    elif encoded.item_key != config.item_key:
        raise ConfigError(f"the encoding given is by {encoded.item_key}, the config's by {config.item_key}")
    train_rows, valid_rows = rows or split(dataset, config.split, config.valid_pct, config.seed)
    low, high = config.y_range
    r = encoded.rating
    if float(r.min()) < low or float(r.max()) > high:
        raise DataError(
            f"ratings span {float(r.min()):g}..{float(r.max()):g}, outside y_range {low:g}..{high:g}: "
            "set a y_range that covers them"
        )
    if len(train_rows) < config.bs:  # caught here, before a lock or a model exists
        raise ConfigError(f"batch size {config.bs} is larger than the {len(train_rows)} training ratings")
    return encoded, train_rows, valid_rows


def kept_inputs(dataset: Dataset, config: TrainConfig, cache_dir: Path) -> dict[str, object]:
    """get_or_train's encoded= and rows= for config, kept in (or read back from) cache_dir: a later
    process on big data reads them back instead of making them again (see encode and split)."""
    rows = split(dataset, config.split, config.valid_pct, config.seed, cache_dir=cache_dir)
    return {"encoded": encode(dataset, config.item_key, cache_dir=cache_dir), "rows": rows}


def build_model(
    config: TrainConfig, n_users: int, n_items: int, device: torch.device, inputs: dict | None = None
) -> CollabModel:
    """Seeded construction of the configured model on `device`; inputs: see `model_inputs`."""
    torch.manual_seed(config.seed)
    model = create_model(config.model, n_users, n_items, config.n_factors, config.y_range, **(inputs or {}))
    return model.to(device)


def model_inputs(config: TrainConfig, dataset: Dataset, encoded: Encoded) -> dict:
    """What the configured family reads from the data besides its sizes (side_nn: the side features,
    dot_bias_ce: the rating levels; the chapter's models: nothing)."""
    return MODELS[config.model].data_inputs(dataset, encoded)


def fit(
    config: TrainConfig,
    encoded: Encoded,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    device: torch.device,
    callback: Callback | None = None,
    should_stop: Callable[[], bool] | None = None,
    snapshot_items: int = N_ITEMS,
    inputs: dict | None = None,
) -> tuple[CollabModel, FitResult]:
    """Build the configured model on `device` and fit it on prepared rows; it is left in eval mode.

    snapshot_items: how many of the most-rated movies the map's snapshots keep (0: none);
    inputs: what the family reads from the data (see `model_inputs`)."""
    model = build_model(config, encoded.n_users, encoded.n_items, device, inputs)
    if isinstance(model, AutoEncoder):  # their own full-batch fit (autofit.py), not the one cycle
        from collab_core.autofit import fit_autoencoder

        return model, fit_autoencoder(model, encoded, train_rows, valid_rows, config, callback, should_stop)
    # the fused step reads int32 indices: handed int64, it held both (32M: 0.4 GB more at its peak)
    index = torch.int32 if one_thread_fit(config) and device.type == "cpu" else torch.int64
    train, valid = rows_to_tensors(encoded, train_rows, index), rows_to_tensors(encoded, valid_rows, index)
    keep = plan(encoded, snapshot_items)
    result = fit_one_cycle(model, train, valid, config, callback, should_stop, snapshots=keep)
    model.eval()  # as a loaded model is: analysis must never run BatchNorm in training mode
    return model, result


def find_lr(dataset: Dataset, config: TrainConfig, device: str = "auto") -> LRFind:
    """fastai's lr finder on a fresh model of the config, over the config's training rows."""
    encoded, train_rows, _ = prepare(dataset, config)
    inputs = model_inputs(config, dataset, encoded)
    model = build_model(config, encoded.n_users, encoded.n_items, pick_device(device), inputs)
    return lr_find(model, rows_to_tensors(encoded, train_rows), bs=config.bs, wd=config.wd, seed=config.seed)


def get_or_train(
    dataset: Dataset,
    config: TrainConfig,
    store: ModelStore | None = None,
    device: str = "auto",
    callback: Callback | None = None,
    should_stop: Callable[[], bool] | None = None,
    reuse: bool = True,
    encoded: Encoded | None = None,
    rows: tuple[np.ndarray, np.ndarray] | None = None,
    snapshot_items: int = N_ITEMS,
) -> Trained:
    """The model for (dataset, config): loaded from the store if there, else trained (and saved).

    reuse=False always trains (and still saves), e.g. for each rank of a distributed run.
    encoded and rows: the dataset's encoding and split made before (see `prepare`), e.g. those the
    app already holds; by default both are made here.
    snapshot_items: the most-rated movies whose embeddings are kept through training (0: none).
    """
    encoded, train_rows, valid_rows = prepare(dataset, config, encoded, rows)
    key = entry_key(config, dataset.fingerprint)
    dev = pick_device(device)
    args = (config, dataset, encoded, train_rows, valid_rows)
    if store is not None and reuse:
        found = _from_store(store, key, dev, *args)
        if found is not None:
            return found
    n_parameters = memory.n_parameters(config.model, encoded.n_users, encoded.n_items, config.n_factors)
    memory.check_memory(memory.training_bytes(len(encoded.rating), n_parameters), memory.available_bytes())
    if issubclass(MODELS[config.model], AutoEncoder):  # dense (n_items, n_users): refused before it starts
        from collab_core.autofit import check

        check(encoded.n_items, encoded.n_users, config.n_factors, n_parameters, memory.available_bytes())
    with store.lock(key) if store is not None else contextlib.nullcontext():
        if store is not None and reuse:  # another process may have trained it while we waited
            found = _from_store(store, key, dev, *args)
            if found is not None:
                return found
        inputs = model_inputs(config, dataset, encoded)
        model, result = fit(
            config, encoded, train_rows, valid_rows, dev, callback, should_stop, snapshot_items, inputs
        )
        record = fitted_record(key, config, dataset, encoded, train_rows, valid_rows, result)
        if store is not None:
            record = store.save(key, model, record, result.snapshots)
    return Trained(config, model, dataset, encoded, train_rows, valid_rows, record, False, result.snapshots)


def fitted_record(
    key: str,
    config: TrainConfig,
    dataset: Dataset,
    encoded: Encoded,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    result: FitResult,
) -> StoredModel:
    """The record of a model just fitted (the store adds the checkpoint's hash, size and versions)."""
    return StoredModel(
        key=key,
        config=config,
        data=DataIdentity(
            dataset.name, dataset.fingerprint, encoded.n_users, encoded.n_items, len(dataset.ratings)
        ),
        split=Split(config.split, len(train_rows), len(valid_rows)),
        history=History(
            train_loss=tuple(result.train_loss),
            valid_loss=tuple(result.valid_loss),
            batch_loss=tuple(downsample(result.batch_loss)),
            n_batches=len(result.batch_loss),
            valid_log_loss=tuple(result.valid_log_loss),
        ),
        metrics=Metrics(**result.metrics),
        fit_seconds=result.fit_seconds,
        device=result.device,
        snapshots=len(result.snapshots) if result.snapshots is not None else 0,
    )


def load_trained(
    dataset: Dataset,
    record: StoredModel,
    store: ModelStore,
    device: str = "auto",
    encoded: Encoded | None = None,
    rows: tuple[np.ndarray, np.ndarray] | None = None,
) -> Trained:
    """Open a stored model (as listed by store.list()) on the dataset it was trained on; encoded and
    rows: its encoding and split made before (see `prepare`)."""
    if record.data.fingerprint != dataset.fingerprint:
        raise DataError(f"model {record.key} was trained on {record.data.name}, not on this data")
    config = record.config
    encoded, train_rows, valid_rows = prepare(dataset, config, encoded, rows)
    found = _from_store(store, record.key, pick_device(device), config, dataset, encoded,
                        train_rows, valid_rows)  # fmt: skip
    if found is None:
        raise DataError(f"model {record.key} could not be loaded from {store.root}")
    return found


def _from_store(
    store: ModelStore,
    key: str,
    device: torch.device,
    config: TrainConfig,
    dataset: Dataset,
    encoded: Encoded,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
) -> Trained | None:
    entry = store.load(key)
    if entry is None:
        return None
    if entry.record.data.fingerprint != dataset.fingerprint or entry.record.config != config:
        warnings.warn(f"model {key} in the store was trained on other data ({entry.record.data.name}) "
                      "or with another config and will be retrained", StoreWarning, stacklevel=2)  # fmt: skip
        return None
    try:  # built from the checkpoint's own tensors (side features, rating levels): it needs no more
        inputs = MODELS[config.model].state_inputs(entry.state)
        with without_initial_weights():  # the checkpoint sets them
            model = build_model(config, encoded.n_users, encoded.n_items, device, inputs)
        model.load_state_dict(entry.state)
    except (RuntimeError, KeyError, ConfigError, UnicodeDecodeError) as e:
        message = " ".join(str(e).split())[:200]
        warnings.warn(f"model {key} does not fit this data and will be retrained: {message}",
                      StoreWarning, stacklevel=2)  # fmt: skip
        return None
    model.eval()
    rows = (train_rows, valid_rows)
    return Trained(config, model, dataset, encoded, *rows, entry.record, True, entry.snapshots)

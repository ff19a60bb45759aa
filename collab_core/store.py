"""The model store: one checkpoint + one JSON file (a `StoredModel` record) per trained (config, data, split).

Checkpoints hold tensors only and are read with `torch.load(weights_only=True)`. Writes go to a
temporary file then `os.replace`; the JSON (written last) names the checkpoint's SHA-256, so an
entry is valid only when both halves agree. A damaged or incompatible entry is a miss with a
`StoreWarning`, never a crash.

torch is imported inside save, load and downsample only: `stored_record` answers the command
line's "is this exact request stored?" from the JSON and a memo of data fingerprints, torch-free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from collab_core import __version__
from collab_core.config import TrainConfig, entry_key
from collab_core.errors import CollabError
from collab_core.record import StoredModel

if TYPE_CHECKING:
    import torch
    from torch import nn

    from collab_core.snapshots import Snapshots

MAX_BATCH_POINTS = 500  # per-batch loss history is downsampled to this many points
MEMO = ".fingerprints.json"  # in the store: data source signature -> data fingerprint
UNREADABLE = (OSError, ValueError, KeyError, TypeError)  # what a bad JSON raises (see record.py)


class StoreWarning(UserWarning):
    """A store entry was unreadable or incompatible and is treated as missing."""


@dataclass(frozen=True)
class Entry:
    key: str
    record: StoredModel
    state: dict[str, torch.Tensor]  # the model's state_dict
    snapshots: Snapshots | None = None  # the movie map through training, when the checkpoint has it


def downsample(values: list[float], n: int = MAX_BATCH_POINTS) -> list[float]:
    """Mean-pool a long curve to at most n points."""
    if len(values) <= n:
        return list(values)
    import torch

    t = torch.tensor(values, dtype=torch.float64)
    edges = torch.linspace(0, len(values), n + 1).long()
    return [float(t[a:b].mean()) for a, b in itertools.pairwise(edges)]


class ModelStore:
    """The models/ folder: save, load, list and delete trained models."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.pt", self.root / f"{key}.json"

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """An inter-process lock per key, so two trainings of one key run one after the other."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{key}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def save(
        self, key: str, model: nn.Module, record: StoredModel, snapshots: Snapshots | None = None
    ) -> StoredModel:
        """Write the checkpoint (with the snapshots' tensors, if any) then the JSON, each atomically;
        refuse a non-finite model.

        Call it holding lock(key): it clears what a killed writer of this key left behind.
        Returns the record as a later load will read it.
        """
        import torch

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise CollabError(f"the model has non-finite weights ({bad[0]}); it was not saved")
        if snapshots is not None:  # in the same file: one hash vouches for both, one rename lands both
            state.update(snapshots.to_state())
        self.root.mkdir(parents=True, exist_ok=True)
        ckpt, js = self._paths(key)
        # the JSON vouches for its checkpoint's hash, so it goes first and comes back last: a save
        # cut short anywhere (kill -9) leaves a miss, never a JSON naming another checkpoint
        js.unlink(missing_ok=True)
        for stale in self.root.glob(f".{key}.*.tmp"):  # temporary files of a killed writer
            stale.unlink(missing_ok=True)
        digest, size = _atomic_write(ckpt, lambda f: torch.save(state, f))
        record = dataclasses.replace(
            record,
            key=key,
            checkpoint_sha256=digest,
            checkpoint_bytes=size,
            saved_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            snapshots=len(snapshots) if snapshots is not None else 0,
            versions={
                "collab_core": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        )
        meta = record.to_json()
        _atomic_write(js, lambda f: f.write(json.dumps(meta, indent=1).encode()))
        return StoredModel.from_json(meta)

    def load(self, key: str) -> Entry | None:
        """The entry for key, or None (with a StoreWarning if something was there but bad)."""
        import torch

        from collab_core.snapshots import split_state

        ckpt, js = self._paths(key)
        if not js.exists() and not ckpt.exists():
            return None
        try:
            record = StoredModel.read(js)
            if record.key != key:
                raise ValueError(f"it names key {record.key}")
            data = ckpt.read_bytes()
            if hashlib.sha256(data).hexdigest() != record.checkpoint_sha256:
                raise ValueError("the checkpoint does not match its metadata (damaged or half-written)")
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise ValueError("the checkpoint is not a dict of tensors")
            state, snapshots = split_state(state)
            if (len(snapshots) if snapshots is not None else 0) != record.snapshots:
                raise ValueError(f"its snapshots do not match the {record.snapshots} of its metadata")
        except (*UNREADABLE, RuntimeError, EOFError) as e:
            _warn(f"model {key} in {self.root} is unusable and will be retrained: {_short(e)}")
            return None
        except Exception as e:  # noqa: BLE001 -- torch's unpickler raises many types on hostile input
            _warn(f"model {key} in {self.root} was refused ({type(e).__name__}: {_short(e)})")
            return None
        return Entry(key, record, state, snapshots)

    def list(self) -> list[StoredModel]:
        """The record of every readable entry (newest first), each with its size in bytes."""
        out = []
        for js in self.root.glob("*.json"):
            try:
                record = StoredModel.read(js)
            except UNREADABLE:
                continue
            ckpt = js.with_suffix(".pt")
            if ckpt.exists():
                out.append(dataclasses.replace(record, size_bytes=ckpt.stat().st_size + js.stat().st_size))
        return sorted(out, key=lambda r: r.saved_at, reverse=True)

    def delete(self, key: str) -> bool:
        """Remove an entry; True if anything was there."""
        removed = False
        for path in self._paths(key):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed = True
        return removed

    def stored_record(self, signature: str | None, config: TrainConfig) -> StoredModel | None:
        """The record of this exact request if it is stored and intact, else None; torch-free.

        signature names the data source (sources.source_key); the memo maps it to the data's
        fingerprint, so neither the data nor torch is needed to find the entry.
        """
        fingerprint = self._read_memo().get(signature) if signature else None
        if not isinstance(fingerprint, str):
            return None
        key = entry_key(config, fingerprint)
        ckpt, js = self._paths(key)
        try:
            record = StoredModel.read(js)
            intact = hashlib.sha256(ckpt.read_bytes()).hexdigest() == record.checkpoint_sha256
        except UNREADABLE:
            return None
        return record if intact and record.key == key else None

    def remember_fingerprint(self, signature: str | None, fingerprint: str) -> None:
        """Note which fingerprint a data source has, so the next run can find its entry unread."""
        if signature is None:
            return
        memo = self._read_memo()
        if memo.get(signature) == fingerprint:
            return
        memo[signature] = fingerprint
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{MEMO}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, self.root / MEMO)

    def _read_memo(self) -> dict:
        try:
            memo = json.loads((self.root / MEMO).read_text())
        except (OSError, ValueError):
            return {}
        return memo if isinstance(memo, dict) else {}


def _atomic_write(path: Path, write) -> tuple[str, int]:
    """Write via a temporary file in the same folder, fsync, then os.replace; return sha256, size."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        data = Path(tmp).read_bytes()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return hashlib.sha256(data).hexdigest(), len(data)


def _warn(message: str) -> None:
    warnings.warn(message, StoreWarning, stacklevel=3)


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]

"""The model store: one checkpoint + one JSON file per trained (config, data, split).

Checkpoints hold tensors only and are read with `torch.load(weights_only=True)`. Writes go to a
temporary file then `os.replace`; the JSON (written last) names the checkpoint's SHA-256, so an
entry is valid only when both halves agree. A damaged or incompatible entry is a miss with a
`StoreWarning`, never a crash.
"""

from __future__ import annotations

import contextlib
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

import torch
from torch import nn

from collab_core import __version__
from collab_core.config import FORMAT, config_from_meta, entry_key, read_meta
from collab_core.errors import CollabError

__all__ = ["FORMAT", "config_from_meta", "entry_key", "read_meta"]  # torch-free, in config.py

MAX_BATCH_POINTS = 500  # per-batch loss history is downsampled to this many points


class StoreWarning(UserWarning):
    """A store entry was unreadable or incompatible and is treated as missing."""


@dataclass(frozen=True)
class Entry:
    key: str
    meta: dict  # the JSON metadata
    state: dict[str, torch.Tensor]  # the model's state_dict


def downsample(values: list[float], n: int = MAX_BATCH_POINTS) -> list[float]:
    """Mean-pool a long curve to at most n points."""
    if len(values) <= n:
        return list(values)
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

    def save(self, key: str, model: nn.Module, meta: dict) -> dict:
        """Write the checkpoint then the JSON, each atomically; refuse a non-finite model.

        Call it holding lock(key): it clears what a killed writer of this key left behind.
        """
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise CollabError(f"the model has non-finite weights ({bad[0]}); it was not saved")
        self.root.mkdir(parents=True, exist_ok=True)
        ckpt, js = self._paths(key)
        # the JSON vouches for its checkpoint's hash, so it goes first and comes back last: a save
        # cut short anywhere (kill -9) leaves a miss, never a JSON naming another checkpoint
        js.unlink(missing_ok=True)
        for stale in self.root.glob(f".{key}.*.tmp"):  # temporary files of a killed writer
            stale.unlink(missing_ok=True)
        digest, size = _atomic_write(ckpt, lambda f: torch.save(state, f))
        meta = {
            **meta,
            "format": FORMAT,
            "key": key,
            "checkpoint_sha256": digest,
            "checkpoint_bytes": size,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {
                "collab_core": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }
        text = json.dumps(meta, indent=1)
        _atomic_write(js, lambda f: f.write(text.encode()))
        return json.loads(text)  # as a later load will see it (tuples become lists)

    def load(self, key: str) -> Entry | None:
        """The entry for key, or None (with a StoreWarning if something was there but bad)."""
        ckpt, js = self._paths(key)
        if not js.exists() and not ckpt.exists():
            return None
        try:
            meta = read_meta(js)
            if meta["key"] != key:
                raise ValueError(f"it names key {meta['key']}")
            data = ckpt.read_bytes()
            if hashlib.sha256(data).hexdigest() != meta["checkpoint_sha256"]:
                raise ValueError("the checkpoint does not match its metadata (damaged or half-written)")
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise ValueError("the checkpoint is not a dict of tensors")
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError) as e:
            _warn(f"model {key} in {self.root} is unusable and will be retrained: {_short(e)}")
            return None
        except Exception as e:  # noqa: BLE001 -- torch's unpickler raises many types on hostile input
            _warn(f"model {key} in {self.root} was refused ({type(e).__name__}: {_short(e)})")
            return None
        return Entry(key, meta, state)

    def list(self) -> list[dict]:
        """Metadata of every readable entry (newest first), each with its size in bytes."""
        out = []
        for js in self.root.glob("*.json"):
            try:
                meta = read_meta(js)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            ckpt = js.with_suffix(".pt")
            if ckpt.exists():
                meta["size_bytes"] = ckpt.stat().st_size + js.stat().st_size
                out.append(meta)
        return sorted(out, key=lambda m: m.get("saved_at", ""), reverse=True)

    def delete(self, key: str) -> bool:
        """Remove an entry; True if anything was there."""
        removed = False
        for path in self._paths(key):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed = True
        return removed


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

"""Snapshots of the movie embeddings through training: the frames of the map's animation.

The fit loop copies the item factors of the N most-rated movies (the map's default movies) a few
times per epoch, as float16, from wherever the live weights are (the model, or a fused step's own
buffer). A copy reads the weights and nothing else: no RNG draw, no write, so a fit with snapshots
gives the same numbers as one without. At ml-100k a frame is 1000 x 50 x 2 bytes = 100 KB.

Frames are projected for display on a basis that does not move (see `project`; trajectory.py puts a
stored model's frames on its final PCA axes), so that a movie's motion between frames is its own
and not the axes'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from collab_core.encoding import Encoded

N_ITEMS = 1000  # movies kept per frame: the Embeddings page's default map
FRAMES = 30  # aimed-at frames over a whole fit (ml-100k's 5 epochs: 6 per epoch)
MAX_PER_EPOCH = 10  # long runs keep one per epoch; short ones at most this many
PREFIX = "snapshots."  # their keys in a checkpoint, beside the model's state_dict


@dataclass(frozen=True)
class SnapshotPlan:
    """Which movies to keep and how often; frames are taken after evenly spaced steps of each epoch."""

    items: tuple[int, ...]  # item indices, most-rated first
    labels: tuple[str, ...]  # their titles (or ids), for a live map's hover
    mean_rating: tuple[float, ...] = ()  # their mean ratings, for a live map's colour
    frames: int = FRAMES
    max_per_epoch: int = MAX_PER_EPOCH

    def per_epoch(self, epochs: int, n_batches: int) -> int:
        """max(1, ceil(frames / epochs)), at most max_per_epoch and at most one per batch."""
        return max(1, min(math.ceil(self.frames / epochs), self.max_per_epoch, n_batches))

    def steps(self, epochs: int, n_batches: int) -> list[int]:
        """The steps (optimizer updates done) after which a frame is taken: 0 (the initial weights),
        then per_epoch per epoch, the last at the epoch's end."""
        k = self.per_epoch(epochs, n_batches)
        within = [round(n_batches * (j + 1) / k) for j in range(k)]
        return [0] + [epoch * n_batches + b for epoch in range(epochs) for b in within]


def plan(encoded: Encoded, n: int = N_ITEMS) -> SnapshotPlan | None:
    """The n most-rated items of the encoded ratings (ties: lower index first), as
    analysis.most_rated picks the map's movies; None when n is 0."""
    if n <= 0 or encoded.n_items <= 1:
        return None
    counts = torch.bincount(encoded.item_idx, minlength=encoded.n_items)  # (n_items,)
    sums = torch.bincount(encoded.item_idx, weights=encoded.rating.double(), minlength=encoded.n_items)
    index = np.argsort(-counts.numpy()[1:], kind="stable")[:n] + 1
    means = (sums / counts.clamp(min=1)).numpy()
    return SnapshotPlan(
        tuple(int(i) for i in index),
        tuple(str(encoded.items[i]) for i in index),
        tuple(float(means[i]) for i in index),
    )


@dataclass(frozen=True)
class Snapshots:
    """S frames of the item factors of N movies through training."""

    items: torch.Tensor  # (N,) int64 item indices
    frames: torch.Tensor  # (S, N, F) float16
    epochs: torch.Tensor  # (S,) float64: epochs done when each was taken (0 = the initial weights)

    def __len__(self) -> int:
        return len(self.frames)

    def to_state(self) -> dict[str, torch.Tensor]:
        """The tensors to save beside a model's state_dict (keys start with PREFIX)."""
        return {PREFIX + "items": self.items, PREFIX + "frames": self.frames, PREFIX + "epochs": self.epochs}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> Snapshots | None:
        """The snapshots in a checkpoint's tensors, None if it has none; ValueError if malformed."""
        if PREFIX + "frames" not in state:
            return None
        items, frames, epochs = (state[PREFIX + name] for name in ("items", "frames", "epochs"))
        if frames.dim() != 3 or items.shape != frames.shape[1:2] or epochs.shape != frames.shape[:1]:
            raise ValueError(f"snapshots of shapes {tuple(items.shape)}, {tuple(frames.shape)}, "
                             f"{tuple(epochs.shape)} do not fit together")  # fmt: skip
        return cls(items.long(), frames, epochs.double())


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Snapshots | None]:
    """A checkpoint's tensors -> the model's state_dict and its snapshots (None if none)."""
    model = {k: v for k, v in state.items() if not k.startswith(PREFIX)}
    return model, Snapshots.from_state(state)


class Recorder:
    """Takes the frames of a plan during a fit: `take(step, weights)` after each optimizer step."""

    def __init__(self, plan: SnapshotPlan, epochs: int, n_batches: int, device: torch.device):
        self.index = torch.tensor(plan.items, dtype=torch.long, device=device)
        self.labels, self.n_batches = plan.labels, n_batches
        self.wanted = set(plan.steps(epochs, n_batches))
        self.total = len(self.wanted)
        self.frames: list[torch.Tensor] = []
        self.epochs: list[float] = []

    def take(self, step: int, weights: torch.Tensor) -> torch.Tensor | None:
        """A float16 copy of the planned rows of the (n_items, F) weights if `step` is planned."""
        if step not in self.wanted:
            return None
        with torch.no_grad():
            frame = weights.index_select(0, self.index).to("cpu", torch.float16)  # (N, F)
        self.frames.append(frame)
        self.epochs.append(step / self.n_batches)
        return frame

    def result(self) -> Snapshots | None:
        if not self.frames:
            return None
        epochs = torch.tensor(self.epochs, dtype=torch.float64)
        return Snapshots(self.index.cpu(), torch.stack(self.frames), epochs)


def project(frames: np.ndarray, components: np.ndarray) -> np.ndarray:
    """(S, N, F) frames -> (S, N, k) coordinates on fixed axes: each frame centred on its own mean,
    then projected on the (k, F) orthonormal components (the final model's PCA: its last frame is
    then the final PCA map, and every frame is drawn in the same basis)."""
    x = np.asarray(frames, dtype=np.float32)
    x = x - x.mean(axis=1, keepdims=True)
    return x @ np.asarray(components, dtype=np.float32).T


def live_basis(frame: np.ndarray, previous: np.ndarray | None, k: int = 2) -> np.ndarray:
    """The (k, F) principal axes of one frame, each signed to agree with the previous frame's axis.

    A live map must not flip: an axis's sign is arbitrary in PCA, so each new axis takes the sign
    that points it the way the previous one pointed."""
    x = np.asarray(frame, dtype=np.float32)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)  # (F, F) at most: 1000 x 50 takes ~1 ms
    basis = vt[:k]
    if previous is not None and previous.shape == basis.shape:
        signs = np.sign(np.sum(basis * previous, axis=1))
        basis = basis * np.where(signs == 0, 1.0, signs)[:, None]
    return basis

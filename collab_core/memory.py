"""How much memory a training run needs, estimated before it starts, and how much is free.

The estimate is deliberately generous (peak growth measured on 0.5-2M synthetic ratings: ~140 MB
that any first training touches, 30-60 bytes per rating, ~9 copies of the weights), so a run it
lets through does not die of memory halfway.
"""

from __future__ import annotations

import os
from pathlib import Path

from collab_core.errors import ConfigError

FIXED_BYTES = 100_000_000  # torch's code and buffers a first training touches (no torch._dynamo import now)
BYTES_PER_RATING = 100  # index and rating tensors, encoding's sorts, the split, an epoch's shuffle
COPIES_PER_WEIGHT = 10  # weights, gradients, Adam's two moments, the fused step's buffers, temporaries
# (limit, usage) files of the process's cgroup, v2 then v1: a container's cap, below the machine's
CGROUP_FILES = (
    (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
    (
        Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ),
)


def n_parameters(model: str, n_users: int, n_items: int, n_factors: int) -> int:
    """The exact parameter count of a model: counted for the dot-product family, whose weights are
    its rows; the NN models are built on the meta device (no memory allocated). Not every model on
    the meta device: its init imports torch._dynamo, 1.4-3 s of a first training in a process."""
    import torch  # here: the data layer reads available_bytes without paying torch's import

    from collab_core.nets import MODELS, create_model, fused_family

    if fused_family(model):  # (not dot_bias_ce: it has level weights too)
        return (n_users + n_items) * (n_factors + int(MODELS[model].has_bias))
    with torch.device("meta"):
        return sum(p.numel() for p in create_model(model, n_users, n_items, n_factors).parameters())


def training_bytes(n_ratings: int, n_parameters: int) -> int:
    """Peak memory of a training run beyond the loaded ratings table, over-estimated on purpose."""
    return FIXED_BYTES + n_ratings * BYTES_PER_RATING + n_parameters * 4 * COPIES_PER_WEIGHT


def available_bytes() -> int | None:
    """Memory this process can still take: the machine's available memory (/proc/meminfo, else
    os.sysconf's free pages), capped by a container's cgroup limit; None if the system cannot say."""
    free = None
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    for limit_file, usage_file in CGROUP_FILES:
        try:
            limit, usage = int(limit_file.read_text()), int(usage_file.read_text())
        except (OSError, ValueError):  # absent, or "max" (no limit)
            continue
        if limit < 2**60:  # v1 writes a huge number for "no limit"
            free = min(free, max(limit - usage, 0))
        break
    return free


def check_memory(needed: int, available: int | None) -> None:
    """ConfigError when a run would need more memory than is available."""
    if available is not None and needed > available:
        raise ConfigError(
            f"training needs about {format_bytes(needed)} of memory but only "
            f"{format_bytes(available)} is available: use fewer factors or a sample of the ratings"
        )


def format_bytes(n: int) -> str:
    """0.35 MB, 2.41 GB."""
    return f"{n / 1e9:.2f} GB" if n >= 1e7 else f"{n / 1e6:.1f} MB"

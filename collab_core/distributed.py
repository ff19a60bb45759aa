"""The process group of a run on several processes, launched by torchrun: gloo on the CPU,
nccl on GPUs. The training step of each process is optim.ShardedStep."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from collab_core.errors import ConfigError


def init_from_env(device: str = "auto") -> tuple[int, int, str]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR...); (rank, world, device)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ConfigError(
            "--distributed needs torchrun: torchrun --nproc_per_node=N -m collab_core train ..."
        )
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def leave() -> None:
    """Leave the process group once this rank is done: a process that exits while gloo's threads
    still run is aborted by the C++ runtime ("terminate called without an active exception")."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

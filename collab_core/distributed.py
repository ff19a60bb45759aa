"""Training on several processes with DistributedDataParallel, launched by torchrun.

Every rank shuffles with the same seed, so all see the same batches; each computes its 1/world
share of every batch and DDP averages the gradients, which equals the whole batch's gradient.
The result matches a single process up to float rounding. gloo on the CPU, nccl on GPUs.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from collab_core.errors import ConfigError
from collab_core.train import AutogradStep


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


class ShardedStep(AutogradStep):
    """AutogradStep on this rank's share of each batch, gradients averaged by DDP."""

    def __init__(self, model: nn.Module, train: tuple[torch.Tensor, ...], bs: int, lr: float,
                 wd: float, wd_bias: float | None = None):  # fmt: skip
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if bs % self.world:
            raise ConfigError(f"batch size {bs} must be a multiple of the {self.world} processes")
        super().__init__(model, train, bs, lr, wd, wd_bias)
        device = next(model.parameters()).device
        self.ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def __call__(self, batch: int, lr: float, beta1: float) -> torch.Tensor:
        for group in self.opt.param_groups:
            group["lr"], group["betas"] = lr, (beta1, 0.99)
        share = self.bs // self.world
        start = batch * self.bs + self.rank * share
        s = slice(start, start + share)
        loss = nn.functional.mse_loss(self.ddp(self.u[s], self.i[s]), self.r[s])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()  # DDP all-reduces (averages) the gradients here
        self.opt.step()
        loss = loss.detach()
        dist.all_reduce(loss)  # report the whole batch's loss, as one process would
        return loss / self.world

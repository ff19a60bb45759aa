"""fastai's optimizer and one-cycle schedule, and the training steps that apply them.

Adam (β₁ scheduled, β₂ 0.99, eps 1e-5) with decoupled weight decay (`p *= 1 - lr·wd`); the
learning rate cosine-annealed lr_max/25 -> lr_max over the first 25% of the steps, then ->
lr_max/1e5; β₁ 0.95 -> 0.85 -> 0.95 on the same schedule. Every number is in `OneCycleHyper`.

A step is one optimizer update per call, given that step's lr and β₁ by the fit loop:
`AutogradStep` for any model on any device, `ShardedStep` for several processes, and
`FusedDotStep` for the dot-product models on the CPU (see its docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from collab_core import distributed
from collab_core.config import TrainConfig
from collab_core.errors import ConfigError
from collab_core.nets import DotModel, fused_family
from collab_core.rowadam import RowAdamW, adamw_, loss_and_grad

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class OneCycleHyper:
    """fastai's `fit_one_cycle` defaults: Adam's constants and the schedule's shape."""

    beta1: tuple[float, float, float] = (0.95, 0.85, 0.95)  # β₁ at the start, at the peak lr, at the end
    beta2: float = 0.99  # Adam's decay of the squared gradients (fastai's sqr_mom)
    eps: float = 1e-5  # added to Adam's denominator
    div: float = 25.0  # the first lr is lr_max / div
    div_final: float = 1e5  # the last lr is lr_max / div_final
    pct_start: float = 0.25  # share of the steps over which the lr rises
    find_beta1: float = 0.9  # β₁ of the lr finder, which has no schedule (fastai's Adam default)


HYPER = OneCycleHyper()


def _cos(start: float, end: float, pos: float) -> float:
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def one_cycle(pos: float, lr_max: float, hyper: OneCycleHyper = HYPER) -> tuple[float, float]:
    """fastai's one-cycle (lr, β₁) at position pos in [0, 1) of training."""
    start, middle, end = hyper.beta1
    if pos < hyper.pct_start:
        p = pos / hyper.pct_start
        return _cos(lr_max / hyper.div, lr_max, p), _cos(start, middle, p)
    p = (pos - hyper.pct_start) / (1 - hyper.pct_start)
    return _cos(lr_max, lr_max / hyper.div_final, p), _cos(middle, end, p)


def make_optimizer(
    model: nn.Module, wd: float, wd_bias: float | None = None, hyper: OneCycleHyper = HYPER
) -> torch.optim.AdamW:
    """fastai's Adam: decoupled wd on all but Linear biases and BatchNorm (wd_bn_bias=False).

    wd_bias, when given, is the decay of the model's `bias_parameters()` (the dot-product models'
    user and item biases). The lr and β₁ are set before each step (`set_lr_beta1`).
    """
    no_decay = {id(m.bias) for m in model.modules() if isinstance(m, nn.Linear) and m.bias is not None}
    no_decay |= {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm1d) for p in m.parameters()}
    biases = set() if wd_bias is None else {id(p) for p in model.bias_parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in no_decay | biases], "weight_decay": wd},
        {"params": [p for p in model.parameters() if id(p) in biases], "weight_decay": wd_bias or 0.0},
        {"params": [p for p in model.parameters() if id(p) in no_decay], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, betas=(hyper.beta1[0], hyper.beta2), eps=hyper.eps, foreach=True)


def set_lr_beta1(opt: torch.optim.Optimizer, lr: float, beta1: float, hyper: OneCycleHyper = HYPER) -> None:
    """This step's learning rate and β₁, in every parameter group."""
    for group in opt.param_groups:
        group["lr"], group["betas"] = lr, (beta1, hyper.beta2)


class Step(Protocol):
    """One optimizer step per call, on the batch-th batch of the current epoch's order."""

    def shuffle(self, perm: torch.Tensor) -> None:
        """Reorder the training ratings once per epoch; batches are then plain slices."""

    def __call__(self, batch: int, lr: float, beta1: float) -> torch.Tensor | float:
        """Step on one batch; its MSE (a 0-dim tensor may stay on the device)."""

    def sync(self) -> None:
        """Bring the model's own parameters up to date (before validation)."""

    def item_factors(self) -> torch.Tensor | None:
        """The live (n_items, F) item embeddings as this step holds them, or None for a family without."""


def one_thread_fit(config: TrainConfig) -> bool:
    """Whether a CPU fit of `config` takes FusedDotStep, as pick_step decides: NumPy and torch on
    one thread, so it can run in a process forked from a threaded server (collab_ui.jobs)."""
    return fused_family(config.model) and not distributed.active()


def pick_step(
    model: nn.Module, train: Tensors, config: TrainConfig, fused: bool = True, hyper: OneCycleHyper = HYPER
) -> Step:
    """Sharded under torchrun; fused for a dot-product model on the CPU (unless fused=False) and
    for sparse updates; autograd otherwise."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    fusable = isinstance(model, DotModel) and model.fusable and on_cpu
    if config.sparse and not fusable:
        raise ConfigError(f"sparse updates need a dot-product model on the CPU, not {config.model}")
    args = (model, train, config.bs, config.wd, config.wd_bias)
    if distributed.active():
        return ShardedStep(*args, hyper=hyper)
    if config.sparse or (fused and fusable):
        return FusedDotStep(*args, sparse=config.sparse, hyper=hyper)
    return AutogradStep(*args, hyper=hyper)


class AutogradStep:
    """One optimizer step per call for any model on any device: autograd and torch's AdamW."""

    def __init__(self, model: nn.Module, train: Tensors, bs: int, wd: float, wd_bias: float | None = None,
                 hyper: OneCycleHyper = HYPER):  # fmt: skip
        self.model, self.bs, self.hyper = model, bs, hyper
        self.net: nn.Module = model  # what computes the predictions (ShardedStep wraps the model)
        self.users, self.items, self.ratings = train
        self.opt = make_optimizer(model, wd, wd_bias, hyper)

    def shuffle(self, perm: torch.Tensor) -> None:
        self.u, self.i, self.r = self.users[perm], self.items[perm], self.ratings[perm]

    def rows(self, batch: int) -> slice:
        """The ratings of this batch that this process computes: all of them."""
        return slice(batch * self.bs, (batch + 1) * self.bs)

    def batch_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The whole batch's loss from this process's share of it: the same here."""
        return loss

    def __call__(self, batch: int, lr: float, beta1: float) -> torch.Tensor:
        set_lr_beta1(self.opt, lr, beta1, self.hyper)
        s = self.rows(batch)
        loss = self.model.training_loss(self.net(self.u[s], self.i[s]), self.r[s])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return self.batch_loss(loss.detach())

    def sync(self) -> None:
        """The model's own parameters are already up to date."""

    def item_factors(self) -> torch.Tensor | None:
        """The model's item embeddings as they are now (a view, or a copy for a family whose factors()
        joins more than the weights); None for a family without factors()."""
        try:
            return self.model.factors()[1]
        except (AttributeError, NotImplementedError):  # a family with no item embedding table
            return None


class ShardedStep(AutogradStep):
    """AutogradStep on this rank's share of each batch, with DistributedDataParallel (torchrun).

    Every rank shuffles with the same seed, so all see the same batches; each computes its 1/world
    share of every batch and DDP averages the gradients, which equals the whole batch's gradient.
    The result matches a single process up to float rounding.
    """

    def __init__(self, model: nn.Module, train: Tensors, bs: int, wd: float, wd_bias: float | None = None,
                 hyper: OneCycleHyper = HYPER):  # fmt: skip
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if bs % self.world:
            raise ConfigError(f"batch size {bs} must be a multiple of the {self.world} processes")
        super().__init__(model, train, bs, wd, wd_bias, hyper)
        device = next(model.parameters()).device
        device_ids = [device.index] if device.type == "cuda" else None
        self.net = DistributedDataParallel(model, device_ids=device_ids)  # averages gradients in backward

    def rows(self, batch: int) -> slice:
        share = self.bs // self.world
        start = batch * self.bs + self.rank * share
        return slice(start, start + share)

    def batch_loss(self, loss: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(loss)  # report the whole batch's loss, as one process would
        return loss / self.world


class FusedDotStep:
    """One optimizer step per call for a dot-product model on the CPU; `sync()` writes weights back.

    At batch size 64 an ml-100k step moves a few kilobytes; autograd's dozens of small tensor ops
    and a per-parameter optimizer then cost far more than the arithmetic. This step computes the
    same maths with hand-written gradients in NumPy (op overhead ~1 µs instead of ~10 µs; the
    formulas are in rowadam.py), keeps every weight in one flat buffer (user rows = [factors | bias],
    item rows likewise) and applies torch's fused AdamW to that buffer in one call: the same
    decoupled weight decay, moments and bias correction as the autograd step, so the results agree
    up to float rounding.

    sparse=False is fastai's dense AdamW: every weight decays and moves with its momentum at every
    step. sparse=True is row-wise ("lazy") AdamW for large data (`rowadam.RowAdamW`): only the rows
    of the batch's users and items are decayed and updated, so a step costs O(batch) instead of
    O(all weights).
    """

    def __init__(self, model: DotModel, train: Tensors, bs: int, wd: float, wd_bias: float | None = None,
                 sparse: bool = False, hyper: OneCycleHyper = HYPER):  # fmt: skip
        self.model, self.bs, self.wd, self.sparse, self.hyper, self.n_steps = model, bs, wd, sparse, hyper, 0
        self.wd_bias = wd if wd_bias is None else wd_bias
        user_f, item_f = model.factors()
        self.n_users, self.has_bias, self.y_range = len(user_f), model.has_bias, model.y_range
        # training data as NumPy, int32 indices (half the bytes to shuffle); item indices offset so
        # they address item rows of the one matrix
        users, items, ratings = (t.cpu() for t in train)
        self.users = users.numpy().astype(np.int32, copy=False)
        self.items = (items + self.n_users).numpy().astype(np.int32, copy=False)
        self.ratings = ratings.numpy()
        # each epoch's shuffle is taken into these, not into fresh arrays beside the last epoch's
        self.u, self.i, self.r = (np.empty_like(a) for a in (self.users, self.items, self.ratings))
        # every weight in one (n_users + n_items, F + 1) matrix: rows [factors | bias]; with AdamW's
        # state, stepped by torch's fused kernel directly (torch.optim's wrapper around the same
        # kernel costs more per call than the kernel itself at this size). NumPy allocates them:
        # it asks Linux for huge pages, and a sparse step's random rows of 3 x 45 MB (25M ratings)
        # then took 1.0-1.3x less time than in torch's 4 KB pages (A/B in one process)
        shape = (len(user_f) + len(item_f), user_f.shape[1] + 1)
        self.rows, self.weights = _zeros(shape)  # the forward pass reads the NumPy view with no copy
        self.weights[:, :-1] = torch.cat([user_f, item_f])
        if self.has_bias:
            self.weights[:, -1] = torch.cat(model.biases())
        self.grad = torch.zeros_like(self.weights)
        (exp_avg, self.exp_avg), (exp_avg_sq, self.exp_avg_sq) = _zeros(shape), _zeros(shape)
        if sparse:
            self.row_adamw = RowAdamW(
                self.rows, exp_avg, exp_avg_sq, bs, self.has_bias, self.y_range,
                wd, self.wd_bias, hyper.beta2, hyper.eps,
            )  # fmt: skip

    def shuffle(self, perm: torch.Tensor) -> None:
        p = perm.cpu().numpy()
        for source, shuffled in ((self.users, self.u), (self.items, self.i), (self.ratings, self.r)):
            np.take(source, p, out=shuffled, mode="clip")  # "clip": no buffer (p is a permutation)

    def __call__(self, batch: int, lr: float, beta1: float) -> float:
        s = slice(batch * self.bs, (batch + 1) * self.bs)
        users, items, ratings = self.u[s], self.i[s], self.r[s]
        self.n_steps += 1
        if self.sparse:
            return self.row_adamw(users, items, ratings, lr, beta1, self.n_steps)
        # forward
        user_rows, item_rows = self.rows[users], self.rows[items]  # (B, F+1) copies
        loss, g = loss_and_grad(user_rows, item_rows, ratings, self.has_bias, self.y_range)
        # backward: each row's gradient (reusing the gathered copies)
        item_rows *= g[:, None]  # ∂L/∂u = g·m
        user_rows *= g[:, None]  # ∂L/∂m = g·u
        item_rows[:, -1] = user_rows[:, -1] = g if self.has_bias else 0.0
        index = torch.from_numpy(np.concatenate([users, items]).astype(np.int64))  # (2B,)
        row_grads = torch.from_numpy(np.concatenate([item_rows, user_rows]))  # (2B, F+1)
        # step
        self.grad.index_add_(0, index, row_grads)
        adamw_(self.weights, self.grad, self.exp_avg, self.exp_avg_sq, lr, beta1, self.hyper.beta2,
               self.hyper.eps, self.wd, self.wd_bias, self.has_bias, self.n_steps)  # fmt: skip
        self.grad.index_fill_(0, index, 0.0)  # clear only the rows we touched
        return loss

    def evaluate(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor,
                 chunk: int = 65536) -> dict[str, float]:  # fmt: skip
        """MSE, RMSE and MAE from the step's own weights, in NumPy chunks: 5M validation ratings in
        ~0.3 s where the model's torch forward takes 3-10 s on 2 cores."""
        users, items, ratings = users.numpy(), items.numpy() + self.n_users, ratings.numpy()
        squared = absolute = 0.0
        for start in range(0, len(ratings), chunk):
            s = slice(start, start + chunk)
            user_rows, item_rows = np.take(self.rows, users[s], axis=0), np.take(self.rows, items[s], axis=0)
            x = np.einsum("bf,bf->b", user_rows[:, :-1], item_rows[:, :-1])  # (B,)
            if self.has_bias:
                x += user_rows[:, -1] + item_rows[:, -1]
            if self.y_range is not None:
                low, high = self.y_range
                x = low + (high - low) / (1.0 + np.exp(-x))
            err = (x - ratings[s]).astype(np.float64)
            squared, absolute = squared + float(np.dot(err, err)), absolute + float(np.abs(err).sum())
        mse = squared / len(ratings)
        return {"mse": mse, "rmse": math.sqrt(mse), "mae": absolute / len(ratings)}

    def item_factors(self) -> torch.Tensor:
        """The item rows' factors in the step's own buffer, where the current weights are (live)."""
        return self.weights[self.n_users :, :-1]

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the trained weights back into the model's own parameters."""
        user_f, item_f = self.model.factors()
        user_f.copy_(self.weights[: self.n_users, :-1])
        item_f.copy_(self.weights[self.n_users :, :-1])
        if self.has_bias:
            user_b, item_b = self.model.biases()
            user_b.copy_(self.weights[: self.n_users, -1])
            item_b.copy_(self.weights[self.n_users :, -1])


def _zeros(shape: tuple[int, int]) -> tuple[np.ndarray, torch.Tensor]:
    """A float32 matrix of zeros allocated by NumPy (huge pages), as an array and a tensor view."""
    array = np.zeros(shape, dtype=np.float32)
    return array, torch.from_numpy(array)

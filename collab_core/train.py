"""fastai's `fit_one_cycle` (MSE loss) as one loop, the lr finder, and progress events.

The optimizer, the schedule and the training steps are in optim.py.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from collab_core.config import TrainConfig
from collab_core.errors import ConfigError, TrainingCancelled, TrainingDiverged
from collab_core.optim import HYPER, FusedDotStep, make_optimizer, one_cycle, pick_step, set_lr_beta1
from collab_core.snapshots import Recorder, SnapshotPlan, Snapshots

DIVERGED = 100  # a smoothed loss this many times the first batch's (or 1) means the fit diverged


@dataclass(frozen=True)
class BatchEvent:
    """Sent every few batches: the raw losses of the batches since the last event."""

    epoch: int  # 0-based
    step: int  # batches done so far, over all epochs
    total_steps: int
    losses: list[float]  # raw MSE of each batch since the previous BatchEvent
    lr: float  # learning rate of the last of them
    elapsed: float  # seconds since the fit started
    eta: float  # seconds left, extrapolated from the speed so far


@dataclass(frozen=True)
class EpochEvent:
    """Sent after each epoch: one row of fastai's table."""

    epoch: int  # 0-based
    epochs: int
    train_loss: float  # fastai's smoothed training loss (EMA, β = 0.98) at the epoch's end
    valid_loss: float  # MSE on the validation set
    seconds: float  # this epoch's time
    elapsed: float
    eta: float
    holdout_loss: float | None = None  # autoencoders: MSE on the held-out training ratings (chooses)


@dataclass(frozen=True)
class SnapshotEvent:
    """Sent when a frame of the map is taken: the planned movies' embeddings as they are now."""

    epoch: float  # epochs done, fractional (0 = the initial weights)
    step: int  # batches done so far, over all epochs
    frame: torch.Tensor = field(repr=False)  # (N, F) float16 on the CPU, rows in plan.items order
    plan: SnapshotPlan = field(repr=False)  # the movies: item indices, titles, mean ratings
    index: int = 0  # 0-based frame number
    total: int = 0  # frames planned for the whole fit


@dataclass
class FitResult:
    train_loss: list[float] = field(default_factory=list)  # per epoch, smoothed
    valid_loss: list[float] = field(default_factory=list)  # per epoch, MSE
    batch_loss: list[float] = field(default_factory=list)  # per batch, raw
    metrics: dict[str, float] = field(default_factory=dict)  # mse, rmse, mae[, accuracy, log_loss]
    valid_log_loss: list[float] = field(default_factory=list)  # per epoch, for the cross-entropy models
    fit_seconds: float = 0.0
    device: str = "cpu"
    holdout_loss: list[float] = field(default_factory=list)  # autoencoders: per round, the choosing loss
    best_epoch: int | None = None  # autoencoders: the round kept (0-based)
    snapshots: Snapshots | None = None  # the item embeddings through training, when a plan was given


Callback = Callable[[BatchEvent | EpochEvent | SnapshotEvent], None]


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu'/'cuda' forced (CUDA checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but CUDA is not available here")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)


def evaluate(
    model: nn.Module, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor
) -> dict[str, float]:
    """MSE, RMSE and MAE of the model on the given ratings [and its family's own: see extra_metrics]."""
    preds = predict(model, users, items)
    err = preds - ratings.to(preds.device)
    mse = float((err * err).mean())
    extra = model.extra_metrics(users, items, ratings) if hasattr(model, "extra_metrics") else {}
    return {"mse": mse, "rmse": math.sqrt(mse), "mae": float(err.abs().mean()), **extra}


@torch.no_grad()
def predict(model: nn.Module, users: torch.Tensor, items: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Predictions in eval mode, in chunks so any number of pairs fits in memory."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [
        model(users[i : i + chunk].to(device), items[i : i + chunk].to(device))
        for i in range(0, len(users), chunk)
    ]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, device=device)


def fit_one_cycle(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    valid: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    config: TrainConfig,
    callback: Callback | None = None,
    should_stop: Callable[[], bool] | None = None,
    report_every: int = 50,
    fused: bool = True,
    snapshots: SnapshotPlan | None = None,
) -> FitResult:
    """Train `model` (already on its device) with fastai's fit_one_cycle; report via callback.

    train/valid are (users, items, ratings) tensors. The dot-product models on the CPU take the
    fused step unless fused=False (same maths, far less overhead; see optim.pick_step). Raises
    TrainingCancelled when should_stop() turns true, TrainingDiverged on a non-finite loss.
    snapshots: the movies whose embeddings are copied a few times per epoch (none for a family
    without item factors); they only read the weights, so the results are the same without them.
    """
    device = next(model.parameters()).device
    train = tuple(t.to(device) for t in train)
    n_batches = len(train[2]) // config.bs  # fastai drops the last partial training batch
    if n_batches == 0:
        raise ConfigError(f"batch size {config.bs} is larger than the {len(train[2])} training ratings")
    total = n_batches * config.epochs
    step_fn = pick_step(model, train, config, fused)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    pending: list = []  # losses since the last report: floats, or 0-dim tensors left on the device
    result, start = FitResult(device=str(device)), time.perf_counter()
    smooth = _SmoothLoss()
    has_items = snapshots is not None and step_fn.item_factors() is not None
    recorder = Recorder(snapshots, config.epochs, n_batches, device) if has_items else None

    def snap(step: int) -> None:
        frame = recorder.take(step, step_fn.item_factors())  # asked each time: a family may copy
        if frame is not None and callback:
            n = len(recorder.frames)
            callback(SnapshotEvent(step / n_batches, step, frame, snapshots, n - 1, recorder.total))

    def report(step: int, epoch: int, lr: float) -> None:
        chunk = torch.stack(pending).tolist() if torch.is_tensor(pending[0]) else list(pending)
        pending.clear()
        if not all(map(math.isfinite, chunk)):
            raise TrainingDiverged(
                f"the loss became {chunk[-1]} at batch {step} (lr {lr:.3g}): lower the learning rate"
            )
        smooth.update(chunk)
        result.batch_loss += chunk
        first = result.batch_loss[0]
        if smooth.value > DIVERGED * max(first, 1.0):  # Adam keeps an exploding loss finite
            raise TrainingDiverged(f"the loss rose from {first:.3g} to {smooth.value:.3g} by batch {step} "
                                   f"(lr {lr:.3g}): lower the learning rate")  # fmt: skip
        if callback:
            elapsed = time.perf_counter() - start
            callback(BatchEvent(epoch, step, total, chunk, lr, elapsed, elapsed / step * (total - step)))

    threads = torch.get_num_threads()
    if isinstance(step_fn, FusedDotStep):
        torch.set_num_threads(1)  # its ops are small: a second thread costs more than it gives
    # overflow in the fused NumPy step is reported below as divergence; NumPy's own warnings would
    # only repeat it, once per batch
    numpy_errors = np.seterr(over="ignore", invalid="ignore")
    try:
        model.train()
        if recorder is not None:
            snap(0)
        for epoch in range(config.epochs):
            epoch_start = time.perf_counter()
            step_fn.shuffle(torch.randperm(len(train[2]), device=device, generator=generator))
            for b in range(n_batches):
                step = epoch * n_batches + b
                # schedule: this step's learning rate and momentum
                lr, beta1 = one_cycle(step / total, config.lr)
                # forward, backward and optimizer step
                pending.append(step_fn(b, lr, beta1))
                # a frame of the map, on the steps the plan names
                if recorder is not None:
                    snap(step + 1)
                # report every few batches, and let the caller cancel
                if (step + 1) % report_every == 0 or b == n_batches - 1:
                    report(step + 1, epoch, lr)
                if should_stop is not None and should_stop():
                    raise TrainingCancelled(f"training stopped at epoch {epoch + 1}, batch {b + 1}")
            # validate at the end of each epoch
            step_fn.sync()
            bad = next((n for n, p in model.named_parameters() if not torch.isfinite(p).all()), None)
            if bad is not None:  # a saturated sigmoid keeps the loss finite while the weights blow up
                raise TrainingDiverged(
                    f"the weights ({bad}) became infinite or NaN in epoch {epoch + 1} "
                    f"(lr {config.lr:g}, wd {config.wd:g}): lower the learning rate"
                )
            # the sparse step (big data) validates from its own weights in NumPy, 10x faster than the
            # model's forward; the dense path keeps the forward, so ml-100k's figures stay bit-identical
            sparse = isinstance(step_fn, FusedDotStep) and step_fn.sparse
            metrics = step_fn.evaluate(*valid) if sparse else evaluate(model, *valid)
            if not math.isfinite(metrics["mse"]):
                mse = metrics["mse"]
                raise TrainingDiverged(f"the validation loss became {mse}: lower the learning rate")
            result.train_loss.append(smooth.value)
            result.valid_loss.append(metrics["mse"])
            if "log_loss" in metrics:
                result.valid_log_loss.append(metrics["log_loss"])
            result.metrics = metrics
            if callback:
                elapsed = time.perf_counter() - start
                eta = elapsed / (epoch + 1) * (config.epochs - epoch - 1)
                seconds = time.perf_counter() - epoch_start
                row = (smooth.value, metrics["mse"], seconds, elapsed, eta)
                callback(EpochEvent(epoch, config.epochs, *row))
    finally:
        np.seterr(**numpy_errors)
        torch.set_num_threads(threads)
    result.fit_seconds = time.perf_counter() - start
    result.snapshots = recorder.result() if recorder is not None else None
    return result


class _SmoothLoss:
    """fastai's AvgSmoothLoss: a debiased exponential moving average, β = 0.98."""

    def __init__(self, beta: float = 0.98):
        self.beta, self.avg, self.count = beta, 0.0, 0

    def update(self, values: list[float]) -> None:
        for v in values:
            self.avg = self.avg * self.beta + v * (1 - self.beta)
            self.count += 1

    @property
    def value(self) -> float:
        return self.avg / (1 - self.beta**self.count)


@dataclass(frozen=True)
class LRFind:
    lrs: list[float]  # learning rate of each recorded batch
    losses: list[float]  # fastai's smoothed loss at each batch
    suggestion: float  # the "valley" learning rate


def lr_find(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    bs: int = 64,
    wd: float = 0.1,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    seed: int = 42,
) -> LRFind:
    """fastai's lr finder: exponential sweep, stop on divergence, 'valley' suggestion.

    The model's weights (and its train/eval mode) are restored afterwards.
    """
    device = next(model.parameters()).device
    saved = copy.deepcopy(model.state_dict())
    users, items, ratings = (t.to(device) for t in train)
    opt = make_optimizer(model, wd)
    generator = torch.Generator(device=device).manual_seed(seed)
    lrs, smoothed, best, smooth = [], [], math.inf, _SmoothLoss()
    was_training = model.training
    model.train()
    try:
        perm = torch.randperm(len(ratings), device=device, generator=generator)
        for i in range(num_it):
            if (i + 1) * bs > len(perm):
                perm = torch.randperm(len(ratings), device=device, generator=generator)
            lr = start_lr * (end_lr / start_lr) ** (i / num_it)
            set_lr_beta1(opt, lr, HYPER.find_beta1)
            idx = perm[(i * bs) % (len(perm) - bs + 1) :][:bs]
            loss = model.training_loss(model(users[idx], items[idx]), ratings[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            smooth.update([loss.item()])
            value = smooth.value
            if not math.isfinite(value) or value > 4 * best:
                break
            best = min(best, value)
            lrs.append(lr)
            smoothed.append(value)
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    lo, hi = num_it // 10, max(len(lrs) - 5, num_it // 10 + 1)
    suggestion = valley(lrs[lo:hi], smoothed[lo:hi]) if hi - lo >= 2 else lrs[len(lrs) // 2]
    return LRFind(lrs, smoothed, suggestion)


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's 'valley': the lr partway down the longest stretch of decreasing loss."""
    n = len(losses)
    longest = [1] * n  # longest decreasing subsequence ending at i
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
            if longest[max_end] < longest[i]:
                max_end, max_start = i, i - longest[i]
    sections = (max_end - max_start) / 3
    return float(lrs[max_start + int(sections) + int(sections / 2)])

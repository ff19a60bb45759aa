"""Fitting the autoencoder family (nets.AutoEncoder): full-batch L-BFGS rounds on the rating matrix,
not the chapter's one-cycle SGD.

The protocol is honest: HOLDOUT of the training ratings is set aside before anything is fitted;
the network reads and learns from the rest, and the round whose weights predict the held-out
ratings best is the one kept (rounds stop PATIENCE rounds after the last improvement). The split's
validation ratings (a fold's test file) are only reported, round by round, never used to choose.
At the end the kept network reads every training rating, the held-out ones too.

Each round is one L-BFGS run of LBFGS_ITERATIONS iterations whose memory starts afresh, as
GLocal-K's reference restarts scipy's L-BFGS-B every 5 iterations. GLocal-K has two stages:
epochs // 2 pre-training rounds of the local kernels on R, then `epochs` fine-tuning rounds on
the globally convolved input; AutoRec has one stage of `epochs` rounds.

Every product is dense: on this CPU torch's sparse kernels (CSR @ dense, sampled products) ran
no faster than the dense matmul they replace (at ml-100k, 6% of the matrix is rated) and gathers
of the scored cells were 5-10x slower in the backward pass. One exact rewrite is kept: GLocal-K's
global kernel needs the pre-trained reconstruction's mean over users, which the linear output
layer gives from the last hidden layer (mean_u r̂_iu = h_i · mean_u v_u + mean_u c_u), so that
pass needs no (I, U) output.

Memory: the model holds R densely (n_items x n_users floats, a few copies while fitting), so a
run whose matrices would not fit is refused before it starts (`training_bytes`, `check`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from collab_core.config import TrainConfig
from collab_core.encoding import Encoded
from collab_core.errors import ConfigError, TrainingCancelled, TrainingDiverged
from collab_core.memory import FIXED_BYTES, format_bytes
from collab_core.nets import AutoEncoder, GlocalK
from collab_core.train import BatchEvent, Callback, EpochEvent, FitResult

HOLDOUT = 0.05  # share of the training ratings held out to choose the round (never the test fold)
PATIENCE = 10  # rounds without a better holdout loss before the fit stops
LBFGS_ITERATIONS = 5  # per round; the curvature memory restarts each round
LBFGS_HISTORY = 10  # scipy's maxcor, as in the GLocal-K reference
KERNEL_WD = 0.006  # GLocal-K's λ_s on the kernels' squares (ml-100k's setting)
DENSE_COPIES = 8  # (n_items, n_users) float matrices alive while fitting: R's, the conv's, their grads
HIDDEN_COPIES = 12  # (n_items, n_hidden) activations and their grads, both stages


def training_bytes(n_items: int, n_users: int, n_hidden: int, n_parameters: int) -> int:
    """Peak memory of a fit, over-estimated on purpose: dense matrices, activations, L-BFGS history."""
    dense = n_items * n_users * 4 * DENSE_COPIES
    hidden = n_items * n_hidden * 4 * HIDDEN_COPIES
    return FIXED_BYTES + dense + hidden + n_parameters * 4 * (2 * LBFGS_HISTORY + 6)


def check(n_items: int, n_users: int, n_hidden: int, n_parameters: int, available: int | None) -> None:
    """ConfigError, with the estimate, when the dense formulation would not fit in memory."""
    needed = training_bytes(n_items, n_users, n_hidden, n_parameters)
    if available is not None and needed > available:
        raise ConfigError(
            f"an autoencoder holds the rating matrix densely ({n_items:,} items x {n_users:,} users): "
            f"fitting needs about {format_bytes(needed)} but only {format_bytes(available)} is available; "
            "use a dot-product model (row-wise sparse AdamW) for data this size"
        )


class _Ratings:
    """Some ratings as (items, users, ratings) tensors on a device, and as a dense (I, U) matrix."""

    def __init__(self, encoded: Encoded, rows: np.ndarray, device: torch.device):
        ix = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        self.items = encoded.item_idx[ix].long().to(device)
        self.users = encoded.user_idx[ix].long().to(device)
        self.ratings = encoded.rating[ix].to(device)
        self.shape = (encoded.n_items, encoded.n_users)

    def dense(self) -> torch.Tensor:
        matrix = torch.zeros(self.shape, device=self.ratings.device)
        matrix[self.items, self.users] = self.ratings
        return matrix

    def mse(self, reconstruction: torch.Tensor, model: AutoEncoder) -> float:
        if len(self.ratings) == 0:
            return math.nan
        err = model.clamp(reconstruction[self.items, self.users]) - self.ratings
        return float((err * err).mean())


def objective(model: AutoEncoder, dense: torch.Tensor, mask: torch.Tensor, wd: float) -> torch.Tensor:
    """½ Σ_observed (r - r̂)² + wd · ½‖W‖² [+ λ_s · ½‖K‖² for the kernels], as the references sum it."""
    err = (model.reconstruct(dense) - dense) * mask  # (I, U), zero where nothing is rated
    loss = 0.5 * (err * err).sum() + wd * model.penalty()
    if isinstance(model, GlocalK):
        loss = loss + KERNEL_WD * model.kernel_penalty()
    return loss


def lbfgs_round(model: AutoEncoder, dense: torch.Tensor, mask: torch.Tensor, config: TrainConfig) -> float:
    """One L-BFGS run of LBFGS_ITERATIONS iterations, its curvature memory fresh; the last loss."""
    optimizer = torch.optim.LBFGS(model.parameters(), lr=config.lr, max_iter=LBFGS_ITERATIONS,
                                  history_size=LBFGS_HISTORY, line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = objective(model, dense, mask, config.wd)
        loss.backward()
        return loss

    return float(optimizer.step(closure).detach())


def fit_autoencoder(
    model: AutoEncoder,
    encoded: Encoded,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    config: TrainConfig,
    callback: Callback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Fit `model` (on its device) as the module docstring says; it is left with the kept weights,
    reading every training rating. Events: one BatchEvent and one EpochEvent per round."""
    device = next(model.parameters()).device
    order = np.random.default_rng(config.seed).permutation(len(train_rows))
    n_hold = max(1, round(HOLDOUT * len(train_rows)))
    held = _Ratings(encoded, train_rows[order[:n_hold]], device)
    seen = _Ratings(encoded, train_rows[order[n_hold:]], device)
    valid = _Ratings(encoded, valid_rows, device)
    dense = seen.dense()
    mask = (dense > 0).float()
    model.set_ratings(dense)
    with torch.no_grad():  # start at the mean rating, not at 0: the first rounds need not find it
        model.output.bias.fill_(float(seen.ratings.mean()))
    stages = [(False, max(1, config.epochs // 2)), (True, config.epochs)]
    stages = stages if isinstance(model, GlocalK) else [(False, config.epochs)]
    total = sum(rounds for _, rounds in stages)
    result, start, done = FitResult(device=str(device)), time.perf_counter(), 0
    best_loss, best_state, best_round = math.inf, None, 0
    model.train()
    for finetune, rounds in stages:
        if isinstance(model, GlocalK):
            model.finetuned.fill_(finetune)
        last_stage, since_best = finetune or len(stages) == 1, 0
        for _ in range(rounds):
            round_start = time.perf_counter()
            loss = lbfgs_round(model, dense, mask, config)
            done += 1
            # report: fitted, held-out and validation MSE of this round's weights
            with torch.no_grad():
                reconstruction = model.reconstruct(dense)
            train_mse, held_mse = seen.mse(reconstruction, model), held.mse(reconstruction, model)
            valid_mse = valid.mse(reconstruction, model)
            if not (math.isfinite(loss) and math.isfinite(train_mse)):
                raise TrainingDiverged(f"the loss became {loss} in round {done}: lower the learning rate")
            result.train_loss.append(train_mse)
            result.valid_loss.append(valid_mse)
            result.batch_loss.append(loss / max(1, len(seen.ratings)))
            result.holdout_loss.append(held_mse)
            if callback:
                elapsed = time.perf_counter() - start
                eta = elapsed / done * (total - done)
                callback(BatchEvent(done - 1, done, total, [train_mse], config.lr, elapsed, eta))
                callback(EpochEvent(done - 1, total, train_mse, valid_mse, time.perf_counter() - round_start,
                                    elapsed, eta, holdout_loss=held_mse))  # fmt: skip
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"training stopped at round {done} of {total}")
            # keep the best round of the last stage, chosen on the held-out ratings
            if last_stage and held_mse < best_loss:
                best_loss, best_round, since_best = held_mse, done, 0
                best_state = copy.deepcopy(model.state_dict())
            elif last_stage:
                since_best += 1
                if since_best >= PATIENCE:
                    break
    model.load_state_dict(best_state)
    model.set_ratings(_Ratings(encoded, train_rows, device).dense())  # not a sum: titles share cells
    model.eval()
    with torch.no_grad():
        result.metrics = _metrics(model, valid)
    result.best_epoch = best_round - 1
    result.fit_seconds = time.perf_counter() - start
    return result


def _metrics(model: AutoEncoder, valid: _Ratings) -> dict[str, float]:
    if len(valid.ratings) == 0:
        return {"mse": math.nan, "rmse": math.nan, "mae": math.nan}
    err = model(valid.users, valid.items) - valid.ratings
    mse = float((err * err).mean())
    return {"mse": mse, "rmse": math.sqrt(mse), "mae": float(err.abs().mean())}

"""Fitting the autoencoder family (nets.AutoEncoder): full-batch L-BFGS rounds on the rating matrix,
not the chapter's one-cycle SGD.

The protocol is honest. HOLDOUT of the training ratings is set aside before
anything is fitted; the network reads and learns from the rest, and the round whose weights predict
the held-out ratings best is the one chosen (rounds stop PATIENCE rounds after the last improvement).
Then either the chosen network reads every training rating, the held-out ones too, or, for the
families in REFIT, it starts again from the same initial weights and runs the same rounds on every
training rating, and its last round is kept. Which is better was measured on ratings held out of
u1.base (not on u1.test): refitting helps glocal_k and costs autorec (see REFIT). The split's
validation ratings (a fold's test file) are only reported, round by round, never used to choose.

Each round is one L-BFGS run of LBFGS_ITERATIONS iterations whose memory starts afresh, as
GLocal-K's reference restarts scipy's L-BFGS-B every 5 iterations; LBFGS_EVALUATIONS lets the line
searches of a fresh run's first iterations (short steps) take the loss evaluations they need.
GLocal-K has two stages: PRETRAIN_SHARE x epochs pre-training rounds of the local kernels on R,
then `epochs` fine-tuning rounds on the globally convolved input; AutoRec has one stage of `epochs`
rounds.

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
LBFGS_EVALUATIONS = 12  # loss evaluations per round at most (7 used); torch's default, 6, cut rounds short
LBFGS_HISTORY = 10  # scipy's maxcor, as in the GLocal-K reference
PRETRAIN_SHARE = 0.5  # GLocal-K's pre-training rounds, as a share of its fine-tuning rounds (30 of 60)
# Families whose chosen rounds are fitted again on every training rating. Measured by running the whole
# fit on 95% of u1.base and scoring the other 5% (u1.test untouched): glocal_k RMSE 0.8716 refitted,
# 0.8718 not (a tie, at twice the rounds); autorec 0.8749 refitted, 0.8740 not.
REFIT: tuple[type[AutoEncoder], ...] = (GlocalK,)
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
                                  max_eval=LBFGS_EVALUATIONS, history_size=LBFGS_HISTORY,
                                  line_search_fn="strong_wolfe")  # fmt: skip

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
    every, valid = _Ratings(encoded, train_rows, device), _Ratings(encoded, valid_rows, device)
    initial = copy.deepcopy(model.state_dict())
    plan = [(False, max(1, round(PRETRAIN_SHARE * config.epochs))), (True, config.epochs)]
    plan = plan if isinstance(model, GlocalK) else [(False, config.epochs)]
    result, start = FitResult(device=str(device)), time.perf_counter()
    refit = isinstance(model, REFIT)
    done, total = 0, sum(rounds for _, rounds in plan) * (2 if refit else 1)  # total: for the ETA

    def run(fitted: _Ratings, plan: list[tuple[bool, int]], choose: _Ratings | None) -> int:
        """The plan's stages of rounds on the `fitted` ratings, from the initial weights. With `choose`,
        the last stage keeps its round best on those ratings and stops PATIENCE rounds after it;
        without, it keeps the last. Returns how many rounds of the last stage were kept."""
        nonlocal done
        dense = fitted.dense()
        mask = (dense > 0).float()
        model.load_state_dict(initial)
        model.set_ratings(dense)
        with torch.no_grad():  # start at the mean rating, not at 0: the first rounds need not find it
            model.output.bias.fill_(float(fitted.ratings.mean()))
        model.train()
        best_loss, best_state, kept = math.inf, None, 0
        for finetune, rounds in plan:
            if isinstance(model, GlocalK):
                model.finetuned.fill_(finetune)
            last_stage, since_best = finetune or len(plan) == 1, 0
            for n in range(1, rounds + 1):
                round_start = time.perf_counter()
                loss = lbfgs_round(model, dense, mask, config)
                done += 1
                # report: fitted, choosing and validation MSE of this round's weights
                with torch.no_grad():
                    reconstruction = model.reconstruct(dense)
                train_mse, valid_mse = fitted.mse(reconstruction, model), valid.mse(reconstruction, model)
                held_mse = choose.mse(reconstruction, model) if choose else None
                if not (math.isfinite(loss) and math.isfinite(train_mse)):
                    raise TrainingDiverged(f"the loss became {loss} in round {done}: lower the learning rate")
                result.train_loss.append(train_mse)
                result.valid_loss.append(valid_mse)
                result.batch_loss.append(loss / max(1, len(fitted.ratings)))
                if held_mse is not None:
                    result.holdout_loss.append(held_mse)
                if callback:
                    elapsed = time.perf_counter() - start
                    eta = elapsed / done * (total - done)
                    callback(BatchEvent(done - 1, done, total, [train_mse], config.lr, elapsed, eta))
                    seconds = time.perf_counter() - round_start
                    callback(EpochEvent(done - 1, total, train_mse, valid_mse, seconds, elapsed, eta,
                                        holdout_loss=held_mse))  # fmt: skip
                if should_stop is not None and should_stop():
                    raise TrainingCancelled(f"training stopped at round {done} of {total}")
                if not last_stage:
                    continue
                # keep the best round of the last stage on the choosing ratings (or the last round)
                if choose is None:
                    kept = n
                elif held_mse < best_loss:
                    best_loss, kept, since_best = held_mse, n, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    since_best += 1
                    if since_best >= PATIENCE:
                        break
        if choose is not None:
            model.load_state_dict(best_state)
        return kept

    # choose: the rounds, on the held-out training ratings
    kept = run(seen, plan, choose=held)
    result.best_epoch = sum(rounds for _, rounds in plan[:-1]) + kept - 1
    if refit:
        # refit: the same rounds from the same initial weights, on every training rating
        refit_plan = [*plan[:-1], (plan[-1][0], kept)]
        total = done + sum(rounds for _, rounds in refit_plan)
        run(every, refit_plan, choose=None)
        result.best_epoch = done - 1
    model.set_ratings(every.dense())  # not a sum: titles share cells
    model.eval()
    with torch.no_grad():
        result.metrics = _metrics(model, valid)
    result.fit_seconds = time.perf_counter() - start
    return result


def _metrics(model: AutoEncoder, valid: _Ratings) -> dict[str, float]:
    if len(valid.ratings) == 0:
        return {"mse": math.nan, "rmse": math.nan, "mae": math.nan}
    err = model(valid.users, valid.items) - valid.ratings
    mse = float((err * err).mean())
    return {"mse": mse, "rmse": math.sqrt(mse), "mae": float(err.abs().mean())}

"""Ratings as classes (`dot_bias_ce`): the predicted distribution over the rating levels of one
(user, movie), and how well those probabilities are calibrated on the validation ratings.

Calibration asks: of the pairs given probability p for a level, does about p of them carry that
rating? Two views: per level, the mean predicted probability against the observed frequency
(a calibrated model matches them, and so its expected rating is unbiased), and the reliability
diagram: each level's predictions binned by probability, the observed frequency per bin against the
bin's mean prediction, and the expected calibration error (ECE: the bins' gaps weighted by size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from collab_core.errors import ConfigError
from collab_core.learner import Trained
from collab_core.nets import DotBiasCE


@dataclass(frozen=True)
class Calibration:
    """The calibration of a cross-entropy model on its validation ratings."""

    per_level: pd.DataFrame  # level, predicted (mean probability), observed (frequency), n
    reliability: pd.DataFrame  # level, bin, predicted (mean in bin), observed (frequency in bin), n
    ece: float  # expected calibration error over every level's bins, weighted by count
    accuracy: float  # the most probable level is the rating's
    log_loss: float  # mean cross-entropy of the rating's level
    n: int  # validation ratings


def ce_model(trained: Trained) -> DotBiasCE:
    """The model, or a ConfigError if it does not predict a distribution over the levels."""
    if not isinstance(trained.model, DotBiasCE):
        raise ConfigError(f"model {trained.config.model!r} predicts one number per rating, not a "
                          "distribution over the rating levels: train dot_bias_ce")  # fmt: skip
    return trained.model


def distribution(trained: Trained, user: object, item: object) -> pd.DataFrame:
    """The predicted probability of each rating level for one (raw user id, title or id): level,
    probability; with the expected rating as their weighted mean."""
    model = ce_model(trained)
    device = model.levels.device
    u = torch.tensor([trained.lookup.user_index(user)], device=device)
    i = torch.tensor([trained.lookup.item_index(item)], device=device)
    probs = model.distribution(u, i)[0].cpu().numpy().astype(np.float64)
    return pd.DataFrame({"level": model.levels.cpu().numpy(), "probability": probs})


def calibration(trained: Trained, bins: int = 10) -> Calibration:
    """Calibration on the validation ratings (module docstring), `bins` equal-width probability bins."""
    model = ce_model(trained)
    users, items, ratings = trained.tensors(trained.valid_rows)
    if len(ratings) == 0:
        raise ConfigError("the model has no validation ratings to calibrate on")
    device = model.levels.device
    probs = (
        torch.cat(
            [
                model.distribution(users[s].to(device), items[s].to(device)).cpu()
                for s in (slice(i, i + 65536) for i in range(0, len(ratings), 65536))
            ]
        )
        .double()
        .numpy()
    )  # fmt: skip  (n, L)
    target = model.level_index(ratings.to(device)).cpu().numpy()
    n, n_levels = probs.shape
    observed = np.zeros_like(probs)
    observed[np.arange(n), target] = 1.0
    levels = model.levels.cpu().numpy()
    per_level = pd.DataFrame(
        {"level": levels, "predicted": probs.mean(axis=0), "observed": observed.mean(axis=0),
         "n": observed.sum(axis=0).astype(int)}
    )  # fmt: skip
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows, gap = [], 0.0
    for k in range(n_levels):
        which = np.clip(np.digitize(probs[:, k], edges[1:-1]), 0, bins - 1)
        for b in range(bins):
            inside = which == b
            count = int(inside.sum())
            if count:
                predicted, seen = float(probs[inside, k].mean()), float(observed[inside, k].mean())
                rows.append((levels[k], b, predicted, seen, count))
                gap += count * abs(predicted - seen)
    reliability = pd.DataFrame(rows, columns=["level", "bin", "predicted", "observed", "n"])
    eps = 1e-12
    log_loss = float(-np.log(np.clip(probs[np.arange(n), target], eps, 1.0)).mean())
    accuracy = float((probs.argmax(axis=1) == target).mean())
    return Calibration(per_level, reliability, gap / (n * n_levels), accuracy, log_loss, n)

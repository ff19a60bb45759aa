"""A new user, the chapter's bootstrapping problem: fit a user vector (and bias) to a handful of
ratings against the frozen item embeddings, then rank every other item for them.

The prior is the trained users themselves: w ~ N(w̄, Σ), their mean and covariance (built once
per model: `Trained.user_prior`), so a new user moves along the directions in which real users
differ, and with no ratings is the "average taste" user w̄. Dot-product models, in closed form
(the MAP estimate, ridge regression in the model's logit space: targets are the ratings through
the inverse of sigmoid_range, less the item biases; row i of X holds item i's factors and a 1
for the user bias):

    w = argmin ‖X w - t‖² + l2 (w - w̄)ᵀ Σ⁻¹ (w - w̄)   =>   (XᵀX + l2 Σ⁻¹) w = Xᵀt + l2 Σ⁻¹ w̄

l2 plays the noise variance: the seed model's residual variance in logit space is 0.48 (train)
to 0.75 (valid), and 0.5 predicts ml-100k users' validation ratings from their training ratings
about as well as their trained embeddings do. NN models: Adam steps on the same objective in
rating space, on w = w̄ + L z (Σ = L Lᵀ, so the penalty is l2 ‖z‖²), every weight frozen.

`solve_user` returns the fitted vector itself (a `UserVector`), so a new user can be explained
(explain.py) and placed on the map (maps.py), and an existing user's edited ratings re-solved
(whatif.py); `vector_scores` scores any such vector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import torch

from collab_core.errors import ConfigError
from collab_core.learner import Trained
from collab_core.nets import CollabModel, DotModel, NNModel
from collab_core.ranking import dot_scores, top_items

LOGIT_CLIP = 1e-3  # ratings at the ends of y_range map to logit(0.001) .. logit(0.999)


@dataclass(frozen=True, eq=False)
class UserVector:
    """One user's embedding (F,) [and bias], from the model's table or solved for: a row the model
    can score and explain without holding it."""

    factors: torch.Tensor  # (F,) on the model's device
    bias: torch.Tensor | None = None  # () for the models with biases

    @classmethod
    def of(cls, model: CollabModel, user: int) -> UserVector:
        """The trained vector [and bias] of user index `user`."""
        users, _ = model.factors()
        biases = model.biases()
        return cls(users[user].clone(), None if biases is None else biases[0][user].clone())


def fold_in_user(
    trained: Trained,
    ratings: Mapping[object, float],
    n: int = 10,
    l2: float = 0.5,
    min_ratings: int = 0,
    steps: int = 60,
    lr: float = 0.1,
) -> pd.DataFrame:
    """Recommendations for a new user who rated a few items ({title or id: rating}); {} = average."""
    scores = new_user_scores(trained, ratings, l2, steps, lr)
    return top_items(trained, scores, trained.lookup.item_indices(ratings), n, min_ratings)


def new_user_scores(
    trained: Trained, ratings: Mapping[object, float], l2: float = 0.5, steps: int = 60, lr: float = 0.1
) -> torch.Tensor:
    """(n_items,) predictions for a new user fitted to `ratings` (steps and lr: NN models only)."""
    return vector_scores(trained, new_user_vector(trained, ratings, l2, steps, lr))


def new_user_vector(
    trained: Trained, ratings: Mapping[object, float], l2: float = 0.5, steps: int = 60, lr: float = 0.1
) -> UserVector:
    """The vector [and bias] of a new user fitted to `ratings` ({title or id: rating})."""
    items = trained.lookup.item_indices(ratings)
    return solve_user(trained, torch.from_numpy(items), check_ratings(ratings, trained.model.y_range),
                      l2, steps, lr)  # fmt: skip


def solve_user(
    trained: Trained, items: torch.Tensor, ratings: list[float], l2: float = 0.5, steps: int = 60,
    lr: float = 0.1,
) -> UserVector:  # fmt: skip
    """The user vector [and bias] that fits these ratings of item indices under the prior, the
    items held fixed: closed form for dot models, Adam steps for NN models."""
    if not (isinstance(l2, (int, float)) and math.isfinite(l2) and l2 > 0):
        raise ConfigError(f"l2 must be a positive number, not {l2!r}")
    model = trained.model
    if not model.folds_in:
        raise ConfigError(
            f"model {trained.config.model!r} has no fold-in: an autoencoder reads a user's rating of a "
            "movie from the movie's reconstruction, through an output unit per trained user, and a new "
            "user has none; train a dot-product or NN model for new users"
        )
    device = next(model.parameters()).device
    items = items.to(device)
    values = torch.tensor(ratings, dtype=torch.float32, device=device)
    mean, cov = trained.user_prior
    if isinstance(model, DotModel):
        w = _map_estimate(model, items, values, mean, cov, l2)  # (F,) or (F + 1,) with the bias
        n_factors = model.factors()[0].shape[1]
        return UserVector(w[:n_factors], w[n_factors] if len(w) > n_factors else None)
    if not isinstance(model, NNModel):
        raise ConfigError(f"fold-in of model {trained.config.model!r} (neither a dot product nor an MLP "
                          "over embeddings) is not supported")  # fmt: skip
    mean, chol = mean.float(), torch.linalg.cholesky(cov).float()
    z = _fit_new_user(model, items, values, mean, chol, l2, steps, lr)
    return UserVector(mean + chol @ z)


@torch.no_grad()
def vector_scores(trained: Trained, user: UserVector) -> torch.Tensor:
    """(n_items,) predictions on the CPU for one user vector (column 0 is #na#)."""
    model = trained.model
    if isinstance(model, DotModel):
        return dot_scores(model, user.factors[None], None if user.bias is None else user.bias[None]).cpu()[0]
    _, item_w = model.factors()
    return model.link(model.raw(user.factors.expand(len(item_w), -1), item_w)).cpu()


def check_ratings(ratings: Mapping[object, float], y_range: tuple[float, float] | None) -> list[float]:
    """The ratings' values, each a finite number within y_range, or a ConfigError naming the item."""
    values = []
    for item, value in ratings.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"the rating of {item!r} must be a number, not {value!r}") from None
        if not math.isfinite(value) or (y_range is not None and not y_range[0] <= value <= y_range[1]):
            span = f" in {y_range[0]:g}..{y_range[1]:g}" if y_range is not None else ""
            raise ConfigError(f"the rating of {item!r} must be a finite number{span}, not {value!r}")
        values.append(value)
    return values


def _inverse_link(values: torch.Tensor, y_range: tuple[float, float] | None) -> torch.Tensor:
    """The logits that sigmoid_range maps to these ratings (the ratings themselves without a range)."""
    if y_range is None:
        return values
    low, high = y_range
    return torch.logit(((values - low) / (high - low)).clamp(LOGIT_CLIP, 1 - LOGIT_CLIP))


@torch.no_grad()
def _map_estimate(
    model: DotModel,
    items: torch.Tensor,
    values: torch.Tensor,
    mean: torch.Tensor,
    cov: torch.Tensor,
    l2: float,
) -> torch.Tensor:
    """The closed-form user vector [and bias] of the module docstring."""
    _, item_w = model.factors()
    x = item_w[items].double()  # (k, F)
    if hasattr(model, "inverse_link"):  # a link other than sigmoid_range (dot_bias_ce's expected level)
        target = model.inverse_link(values).double()
    else:
        target = _inverse_link(values, model.y_range).double()  # (k,)
    biases = model.biases()
    if biases is not None:
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # (k, F + 1)
        target = target - biases[1][items].double()
    precision = torch.linalg.inv(cov)
    w = torch.linalg.solve(x.T @ x + l2 * precision, x.T @ target + l2 * precision @ mean)
    return w.float()


def _fit_new_user(
    model: NNModel,
    items: torch.Tensor,
    values: torch.Tensor,
    mean: torch.Tensor,
    chol: torch.Tensor,
    l2: float,
    steps: int,
    lr: float,
) -> torch.Tensor:
    """Adam on z only, w = w̄ + L z: Σ (r̂ - r)² + l2 ‖z‖²; the model's weights never get a .grad.

    Adam is written out: torch.optim would import torch._dynamo, seconds of start-up for one vector.
    """
    z = torch.zeros_like(mean, requires_grad=True)  # (F,), N(0, I) under the prior
    m, v = torch.zeros_like(z), torch.zeros_like(z)  # Adam's moments, betas (0.9, 0.999)
    _, item_w = model.factors()
    item_w = item_w[items]  # (k, F_items)
    with torch.enable_grad():
        for step in range(1, (steps if len(items) else 0) + 1):
            w = (mean + chol @ z).expand(len(items), -1)  # (k, F)
            loss = ((model.link(model.raw(w, item_w)) - values) ** 2).sum() + l2 * (z * z).sum()
            (grad,) = torch.autograd.grad(loss, [z])
            with torch.no_grad():
                m.mul_(0.9).add_(grad, alpha=0.1)
                v.mul_(0.999).addcmul_(grad, grad, value=0.001)
                z -= lr * (m / (1 - 0.9**step)) / ((v / (1 - 0.999**step)).sqrt() + 1e-8)
    return z.detach()

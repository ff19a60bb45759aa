"""Why the model predicts what it does for one (user, movie): the raw score split into parts that sum
to it, then the output link; and the movies the user rated that lie closest to the target.

Dot-product models are exact: raw = b_u + b_m + Σ_k u_k m_k, each factor's product u_k m_k a part
(the largest few by magnitude, the rest summed), then r̂ = sigmoid_range(raw) (the identity for
`dot`). NN models, raw = f([u; m]), are split by integrated gradients (Sundararajan et al. 2017)
along the straight path from the baseline x₀ = [ū; m̄] (the average user and movie embeddings):

    attributionⱼ = (xⱼ - x₀ⱼ) ∫₀¹ ∂f/∂xⱼ (x₀ + α (x - x₀)) dα,    Σⱼ attributionⱼ = f(x) - f(x₀)

summed over the user's and the movie's coordinates, beside "the network's baseline" f(x₀), so the
three parts sum to f(x). The integral is a midpoint sum, its steps doubled until the parts sum to
the raw score within `tol` (f is piecewise linear: only the steps that cross a ReLU's kink err);
`Breakdown.residual` is what is left.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from collab_core.errors import ConfigError, check_n
from collab_core.foldin import UserVector
from collab_core.learner import Trained
from collab_core.nets import AutoEncoder, DotModel, NNModel

START_STEPS = 64  # integrated gradients: the first midpoint sum, doubled until within tol
MAX_STEPS = 1 << 16


@dataclass(frozen=True)
class Part:
    """One term of the raw score."""

    name: str
    value: float


@dataclass(frozen=True)
class Breakdown:
    """Where one prediction comes from: parts that sum to the raw score, then the link to the rating."""

    user: object  # raw user id, or None for a user not in the table (folded in)
    item: int  # the movie's embedding index
    title: str
    parts: tuple[Part, ...]  # sum to raw (within residual)
    raw: float  # the score before the link
    prediction: float  # link(raw): the predicted rating, as the model's forward gives it
    y_range: tuple[float, float] | None  # the link's output range (None: the identity)
    method: str  # how the parts were found
    residual: float  # raw - Σ parts: float rounding for dot models, the integral's error for NN ones
    link: str = ""  # the link from raw to prediction, as people read it (nets.CollabModel.link_text)

    @property
    def position(self) -> float | None:
        """Where the prediction lies within y_range, 0 (low) to 1 (high); None without a range."""
        if self.y_range is None:
            return None
        low, high = self.y_range
        return (self.prediction - low) / (high - low)

    def to_dict(self) -> dict:
        return {**asdict(self), "parts": [asdict(p) for p in self.parts], "position": self.position}


def breakdown(trained: Trained, user: object, item: object, top: int = 5, tol: float = 1e-4) -> Breakdown:
    """The breakdown of user `user`'s (raw id) prediction for `item` (title or id)."""
    u = trained.lookup.user_index(user)
    return _breakdown(trained, UserVector.of(trained.model, u), trained.lookup.item_index(item), top, tol,
                      user=trained.lookup.user_id(u))  # fmt: skip


def vector_breakdown(
    trained: Trained, vector: UserVector, item: object, top: int = 5, tol: float = 1e-4
) -> Breakdown:
    """The breakdown for a user vector not in the table (e.g. foldin.new_user_vector's)."""
    return _breakdown(trained, vector, trained.lookup.item_index(item), top, tol, user=None)


def _breakdown(trained: Trained, vector: UserVector, i: int, top: int, tol: float, user: object) -> Breakdown:
    model = trained.model
    title = trained.item_table.at[i, "title"]
    y_range = None if model.y_range is None else tuple(map(float, model.y_range))
    if isinstance(model, DotModel):
        parts, raw, method = _dot_parts(model, vector, i, check_n(top, "top"))
    elif isinstance(model, NNModel):
        parts, raw, method = _nn_parts(model, vector, i, tol)
    elif isinstance(model, AutoEncoder):
        if user is None:
            raise ConfigError(f"model {trained.config.model!r} has no output unit for a new user: "
                              "an autoencoder explains only the users it was trained on")  # fmt: skip
        parts, raw, method = _autoencoder_parts(
            model, trained.lookup.user_index(user), i, check_n(top, "top")
        )
    else:
        raise ConfigError(f"no breakdown for model {trained.config.model!r}: neither a dot product "
                          "nor an MLP over embeddings")  # fmt: skip
    with torch.no_grad():
        prediction = float(model.link(torch.tensor([raw], dtype=torch.float32))[0])
    residual = raw - sum(p.value for p in parts)
    return Breakdown(user, i, title, parts, raw, prediction, y_range, method, residual, model.link_text())


@torch.no_grad()
def _dot_parts(model: DotModel, vector: UserVector, i: int, top: int) -> tuple[tuple[Part, ...], float, str]:
    """Biases and per-factor products u_k m_k (the `top` largest by magnitude, the rest summed); the
    raw score is computed as the forward computes it, in float32."""
    _, item_w = model.factors()
    products = vector.factors * item_w[i]  # (F,)
    raw = products[None].sum(dim=1)  # (1,), the forward's reduction
    parts = []
    biases = model.biases()
    if biases is not None:
        raw = raw + vector.bias + biases[1][i]
        parts += [Part("user bias", float(vector.bias)), Part("movie bias", float(biases[1][i]))]
    values = products.double().cpu().numpy()
    order = np.argsort(-np.abs(values), kind="stable")
    parts += [Part(f"factor {k + 1}", float(values[k])) for k in order[:top]]
    if len(order) > top:
        rest = len(order) - top
        parts.append(Part(f"other {rest} factor{'s' * (rest > 1)}", float(values[order[top:]].sum())))
    method = "exact: user and movie biases plus the dot product's per-factor products u_k·m_k"
    return tuple(parts), float(raw[0]), method


@torch.no_grad()
def _autoencoder_parts(model: AutoEncoder, u: int, i: int, top: int) -> tuple[tuple[Part, ...], float, str]:
    """The linear output layer's terms: c_u plus v_uk h_ik per hidden unit (the `top` largest, the
    rest summed); raw computed as the reconstruction computes it."""
    weight, bias = model.decoder()  # (H, U), (U,)
    code = model.hidden(model.ratings)[i]  # (H,)
    products = code * weight[:, u]
    raw = float((code[None] @ weight[:, u : u + 1])[0, 0] + bias[u])
    values = products.double().cpu().numpy()
    order = np.argsort(-np.abs(values), kind="stable")
    parts = [Part("user's output bias", float(bias[u]))]
    parts += [Part(f"hidden unit {k + 1}", float(values[k])) for k in order[:top]]
    if len(order) > top:
        rest = len(order) - top
        parts.append(Part(f"other {rest} hidden units", float(values[order[top:]].sum())))
    method = (
        "exact: the output layer's bias for the user plus per-hidden-unit products v_uk·h_ik, h the "
        "movie's code from the ratings it received (the user's other ratings do not enter it); the "
        "chapter's user and movie biases do not apply to an autoencoder; clipped to the ratings' range"
    )
    return tuple(parts), raw, method


def _nn_parts(model: NNModel, vector: UserVector, i: int, tol: float) -> tuple[tuple[Part, ...], float, str]:
    """Integrated gradients from the average user and movie (module docstring)."""
    users, items = model.factors()
    x = torch.cat([vector.factors, items[i]]).double().cpu()  # (Fu + Fi,)
    x0 = torch.cat([users[1:].mean(dim=0), items[1:].mean(dim=0)]).double().cpu()  # row 0 is #na#
    width = users.shape[1]
    groups = model.groups()
    layers_were_training = model.training
    model.eval()  # BatchNorm with its running statistics, as predictions use it
    try:
        with torch.no_grad():
            ends = _raw(model, torch.stack([x0, x]), width)
        baseline, raw = float(ends[0]), float(ends[1])
        steps = START_STEPS
        while True:
            attribution = (x - x0) * _mean_gradient(model, x0, x, steps, width)  # (Fu + Fi,)
            shares = {name: float(attribution[where].sum()) for name, where in groups.items()}
            if abs(raw - baseline - sum(shares.values())) <= tol or steps >= MAX_STEPS:
                break
            steps *= 2
    finally:
        model.train(layers_were_training)
    parts = (*(Part(name, share) for name, share in shares.items()), Part("the network's baseline", baseline))
    method = (f"integrated gradients from the average user and movie embeddings, {steps} steps: the user's "
              "and the movie's coordinates' shares of f(x) - f(baseline), plus f(baseline)")  # fmt: skip
    return parts, raw, method


def _raw(model: NNModel, x: torch.Tensor, width: int) -> torch.Tensor:
    """f at rows x (B, Fu + Fi) of float64, through the float32 network."""
    x = x.float().to(next(model.parameters()).device)
    return model.raw(x[:, :width], x[:, width:]).double().cpu()


def _mean_gradient(model: NNModel, x0: torch.Tensor, x: torch.Tensor, steps: int, width: int) -> torch.Tensor:
    """∫₀¹ ∇f(x₀ + α (x - x₀)) dα as a midpoint sum of `steps` points (one batch), in float64."""
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    path = (x0 + alphas[:, None] * (x - x0)).float().to(next(model.parameters()).device)  # (steps, D)
    path.requires_grad_(True)
    with torch.enable_grad():
        out = model.raw(path[:, :width], path[:, width:])  # (steps,)
        (grad,) = torch.autograd.grad(out.sum(), [path])
    return grad.double().cpu().mean(dim=0)


def because_you_rated(trained: Trained, user: object, item: object, n: int = 5) -> pd.DataFrame:
    """The movies user `user` rated closest to `item` in the model's item space (cosine), closest
    first, the movie itself left out: title, rating, similarity, in_valid (a held-out rating)."""
    u, i = trained.lookup.user_index(user), trained.lookup.item_index(item)
    rows = trained.user_rows(u)
    items = trained.encoded.item_idx.numpy()[rows]
    ratings = trained.encoded.rating.numpy()[rows]
    return _closest_rated(trained, i, items, ratings, trained.valid_mask[rows], n)


def because_new_user_rated(
    trained: Trained, ratings: Mapping[object, float], item: object, n: int = 5
) -> pd.DataFrame:
    """The same for a new user's ratings ({title or id: rating}): title, rating, similarity."""
    items = trained.lookup.item_indices(ratings)
    values = np.array(list(ratings.values()), dtype=np.float32)
    i, held_out = trained.lookup.item_index(item), np.zeros(len(items), dtype=bool)
    return _closest_rated(trained, i, items, values, held_out, n).drop(columns="in_valid")


def _closest_rated(
    trained: Trained, i: int, items: np.ndarray, ratings: np.ndarray, in_valid: np.ndarray, n: int
) -> pd.DataFrame:
    _, unit = trained.item_vectors
    keep = items != i
    items, ratings, in_valid = items[keep], ratings[keep], in_valid[keep]
    similarity = (unit[torch.from_numpy(items)] @ unit[i]).numpy()  # (k,)
    order = np.argsort(-similarity, kind="stable")[: check_n(n)]
    out = pd.DataFrame(
        {
            "title": trained.item_table["title"].to_numpy()[items[order] - 1],
            "rating": ratings[order],
            "similarity": similarity[order],
            "in_valid": in_valid[order],
        },
        index=pd.Index(items[order], name="item"),
    )
    return out

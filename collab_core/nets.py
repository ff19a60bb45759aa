"""The models of fastai's chapter 8, by name. Every forward takes (users, items) index tensors.

Shapes: B = batch size, F = number of factors.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from collab_core.config import MODEL_KEYS
from collab_core.errors import ConfigError

YRange = tuple[float, float]


def sigmoid_range(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Squash x into (low, high) with a sigmoid, as fastai does."""
    return torch.sigmoid(x) * (high - low) + low


def get_emb_sz(n_cat: int) -> int:
    """fastai's rule of thumb for an embedding's width: 944 -> 74, 1665 -> 102."""
    return min(600, round(1.6 * n_cat**0.56))


def trunc_normal_embedding(n: int, width: int, std: float = 0.01) -> nn.Embedding:
    """fastai's `Embedding`: N(0, 1) folded into (-2, 2), scaled by std."""
    emb = nn.Embedding(n, width)
    with torch.no_grad():
        emb.weight.normal_().fmod_(2).mul_(std)
    return emb


class CollabModel(nn.Module):
    """Any model of the chapter: forward(users, items) -> (B,) ratings, from a user and an item embedding.

    Its family's facts are class attributes; the accessors give live (writable) views of the weights.
    """

    has_bias: bool = False  # user and item biases b_u, b_m beside the factors
    user_factors: nn.Embedding | nn.Parameter
    item_factors: nn.Embedding | nn.Parameter
    y_range: YRange | None

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (n_users, F) and (n_items, F) embeddings; writing into them changes the model."""
        return _weight(self.user_factors).detach(), _weight(self.item_factors).detach()

    def biases(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The (n_users,) and (n_items,) biases, live, or None for models without them."""
        if not self.has_bias:
            return None
        return _weight(self.user_bias).detach().view(-1), _weight(self.item_bias).detach().view(-1)

    def bias_parameters(self) -> list[nn.Parameter]:
        """The user and item bias parameters (none without biases): the optimizer's bias group."""
        return [_weight(self.user_bias), _weight(self.item_bias)] if self.has_bias else []

    def link(self, x: torch.Tensor) -> torch.Tensor:
        """The output link from the raw score: sigmoid_range into y_range, or the identity without one."""
        return x if self.y_range is None else sigmoid_range(x, *self.y_range)


def _weight(layer: nn.Embedding | nn.Parameter) -> nn.Parameter:
    """An embedding layer's weight, or the raw parameter that stands for one."""
    return layer.weight if isinstance(layer, nn.Embedding) else layer


class DotModel(CollabModel):
    """The dot-product family: r̂ = link(u·m [+ b_u + b_m]), so its matrices give every score."""


class NNModel(CollabModel):
    """The neural family: r̂ = σ_range(f([u; m])), an MLP `layers` over the concatenated embeddings.

    User and item embeddings are separate spaces (of different widths) that only meet inside f.
    """

    layers: nn.Sequential

    def raw(self, user_vectors: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor:
        """f([u; m]), the score before the link, from embedding rows (B, Fu) and (B, Fi)."""
        return self.layers(torch.cat([user_vectors, item_vectors], dim=1))[:, 0]  # (B,)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.link(self.raw(self.user_factors(users), self.item_factors(items)))


class DotProduct(DotModel):
    """r̂ = u·m, or σ_range(u·m) with a y_range.

    The book's `Embedding` is fastai's (truncated normal, std 0.01), not nn.Embedding's N(0, 1):
    with N(0, 1) a 50-factor dot product starts near ±7 and the sigmoid saturates.
    """

    def __init__(self, n_users: int, n_items: int, n_factors: int, y_range: YRange | None = None):
        super().__init__()
        self.user_factors = trunc_normal_embedding(n_users, n_factors)
        self.item_factors = trunc_normal_embedding(n_items, n_factors)
        self.y_range = y_range

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        x = (self.user_factors(users) * self.item_factors(items)).sum(dim=1)  # (B,)
        return self.link(x)


class DotProductBias(DotModel):
    """r̂ = σ_range(u·m + b_u + b_m): the book's class, with fastai's `Embedding` layers as in the book."""

    has_bias = True

    def __init__(self, n_users: int, n_items: int, n_factors: int, y_range: YRange = (0, 5.5)):
        super().__init__()
        self.user_factors = trunc_normal_embedding(n_users, n_factors)
        self.user_bias = trunc_normal_embedding(n_users, 1)
        self.item_factors = trunc_normal_embedding(n_items, n_factors)
        self.item_bias = trunc_normal_embedding(n_items, 1)
        self.y_range = y_range

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        x = (self.user_factors(users) * self.item_factors(items)).sum(dim=1)  # (B,)
        x = x + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0]
        return self.link(x)


class EmbeddingDotBias(DotProductBias):
    """fastai's `EmbeddingDotBias`: r̂ = σ_range(u·m + b_u + b_m), truncated-normal(0.01) init.

    The book's DotProductBias as fastai ships it; its layers are drawn in fastai's order (both
    factor tables, then both biases), so a seed gives it other initial weights than dot_bias.
    """

    def __init__(self, n_users: int, n_items: int, n_factors: int, y_range: YRange = (0, 5.5)):
        nn.Module.__init__(self)
        self.user_factors = trunc_normal_embedding(n_users, n_factors)
        self.item_factors = trunc_normal_embedding(n_items, n_factors)
        self.user_bias = trunc_normal_embedding(n_users, 1)
        self.item_bias = trunc_normal_embedding(n_items, 1)
        self.y_range = y_range


def create_params(*size: int) -> nn.Parameter:
    """The book's `create_params`: a raw parameter drawn from N(0, 0.01)."""
    return nn.Parameter(torch.zeros(*size).normal_(0, 0.01))


class DotProductBiasParams(DotModel):
    """r̂ = σ_range(u·m + b_u + b_m) from raw parameters indexed directly (the book's own Embedding)."""

    has_bias = True

    def __init__(self, n_users: int, n_items: int, n_factors: int, y_range: YRange = (0, 5.5)):
        super().__init__()
        self.user_factors = create_params(n_users, n_factors)
        self.user_bias = create_params(n_users)
        self.item_factors = create_params(n_items, n_factors)
        self.item_bias = create_params(n_items)
        self.y_range = y_range

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        x = (self.user_factors[users] * self.item_factors[items]).sum(dim=1)  # (B,)
        x = x + self.user_bias[users] + self.item_bias[items]
        return self.link(x)


class CollabNN(NNModel):
    """r̂ = σ_range(W₂ ReLU(W₁ [u; m] + c₁) + c₂), embedding widths from get_emb_sz."""

    def __init__(self, n_users: int, n_items: int, n_hidden: int = 100, y_range: YRange = (0, 5.5)):
        super().__init__()
        self.user_factors = trunc_normal_embedding(n_users, get_emb_sz(n_users))
        self.item_factors = trunc_normal_embedding(n_items, get_emb_sz(n_items))
        width = self.user_factors.embedding_dim + self.item_factors.embedding_dim
        self.layers = nn.Sequential(nn.Linear(width, n_hidden), nn.ReLU(), nn.Linear(n_hidden, 1))
        self.y_range = y_range


def _batch_norm(width: int) -> nn.BatchNorm1d:
    """fastai's BatchNorm init: weight 1, bias 1e-3."""
    bn = nn.BatchNorm1d(width)
    with torch.no_grad():
        bn.bias.fill_(1e-3)
    return bn


class EmbeddingNN(NNModel):
    """fastai's `EmbeddingNN` (a TabularModel): [u; m] -> (Linear, ReLU, BatchNorm) per layer -> Linear(1).

    r̂ = σ_range(w·h + c), h = BN(ReLU(W₂ BN(ReLU(W₁ [u; m])))); hidden Linears have no bias.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        layers: tuple[int, ...] = (100, 50),
        y_range: YRange = (0, 5.5),
    ):
        super().__init__()
        self.user_factors = trunc_normal_embedding(n_users, get_emb_sz(n_users))
        self.item_factors = trunc_normal_embedding(n_items, get_emb_sz(n_items))
        sizes = [self.user_factors.embedding_dim + self.item_factors.embedding_dim, *layers]
        blocks: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(sizes):
            blocks += [nn.Linear(n_in, n_out, bias=False), nn.ReLU(), _batch_norm(n_out)]
        self.layers = nn.Sequential(*blocks, nn.Linear(sizes[-1], 1))
        self.y_range = y_range


# key -> class; "dot" is the book's first DotProduct, without an output range
MODELS: dict[str, type[CollabModel]] = {
    "dot": DotProduct,
    "dot_range": DotProduct,
    "dot_bias": DotProductBias,
    "dot_bias_params": DotProductBiasParams,
    "embedding_dot_bias": EmbeddingDotBias,
    "collab_nn": CollabNN,
    "embedding_nn": EmbeddingNN,
}


assert tuple(MODELS) == MODEL_KEYS, "config.MODEL_KEYS must list nets.MODELS"


def create_model(
    key: str, n_users: int, n_items: int, n_factors: int = 50, y_range: YRange = (0, 5.5)
) -> CollabModel:
    """Build the model registered under `key`; the NN models size their own embeddings."""
    if key not in MODELS:
        raise ConfigError(f"unknown model {key!r}; choose one of {', '.join(MODELS)}")
    model = MODELS[key]
    if issubclass(model, DotModel):
        return model(n_users, n_items, n_factors, None if key == "dot" else y_range)
    return model(n_users, n_items, y_range=y_range)

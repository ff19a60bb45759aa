"""The models of fastai's chapter 8, by name. Every forward takes (users, items) index tensors.

Shapes: B = batch size, F = number of factors.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import warnings
from collections.abc import Iterator

import numpy as np
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


_INIT = threading.local()


@contextlib.contextmanager
def without_initial_weights() -> Iterator[None]:
    """Build models, in this thread, whose embeddings skip their random draws: for a checkpoint's
    weights to replace (a model opened from the store: 11M weights at 25M took 0.1 s to draw)."""
    _INIT.skip = True
    try:
        yield
    finally:
        _INIT.skip = False


def trunc_normal_embedding(n: int, width: int, std: float = 0.01) -> nn.Embedding:
    """fastai's `Embedding`: N(0, 1) folded into (-2, 2), scaled by std (unset weights inside
    without_initial_weights)."""
    if getattr(_INIT, "skip", False):
        return nn.Embedding(n, width, _weight=torch.empty(n, width))
    emb = nn.Embedding(n, width)
    with torch.no_grad():
        emb.weight.normal_().fmod_(2).mul_(std)
    return emb


class CollabModel(nn.Module):
    """Any model of the chapter: forward(users, items) -> (B,) ratings, from a user and an item embedding.

    Its family's facts are class attributes; the accessors give live (writable) views of the weights.
    """

    has_bias: bool = False  # user and item biases b_u, b_m beside the factors
    folds_in: bool = True  # a new user can be solved for against the frozen items (foldin.py)
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

    def link_text(self) -> str:
        """The link as people read it (explain's last step)."""
        return "identity" if self.y_range is None else "sigmoid_range({:g}, {:g})".format(*self.y_range)

    def training_loss(self, output: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """What the optimizer minimises, from forward's output in train mode: the MSE (fastai's)."""
        return nn.functional.mse_loss(output, ratings)

    def extra_metrics(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor) -> dict:
        """Validation metrics beside MSE, RMSE and MAE (none for the chapter's models)."""
        return {}

    @classmethod
    def data_inputs(cls, dataset, encoded) -> dict:
        """Constructor arguments read from the data besides its sizes (none for the chapter's models)."""
        return {}

    @classmethod
    def state_inputs(cls, state: dict[str, torch.Tensor]) -> dict:
        """The same arguments rebuilt from a checkpoint's tensors, so it loads without the data."""
        return {}


def _weight(layer: nn.Embedding | nn.Parameter) -> nn.Parameter:
    """An embedding layer's weight, or the raw parameter that stands for one."""
    return layer.weight if isinstance(layer, nn.Embedding) else layer


class DotModel(CollabModel):
    """The dot-product family: r̂ = link(u·m [+ b_u + b_m]), so its matrices give every score."""

    fusable: bool = True  # trained by optim.FusedDotStep on the CPU (hand-written MSE gradients)


class NNModel(CollabModel):
    """The neural family: r̂ = σ_range(f([u; m])), an MLP `layers` over the concatenated embeddings.

    User and item embeddings are separate spaces (of different widths) that only meet inside f.
    """

    layers: nn.Sequential

    def groups(self) -> dict[str, slice]:
        """Which coordinates of a [user; movie] row are whose: explain sums its attributions so."""
        width = _weight(self.user_factors).shape[1]
        return {"the user": slice(0, width), "the movie": slice(width, None)}

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
        self.layers = tabular_mlp(self.user_factors.embedding_dim + self.item_factors.embedding_dim, layers)
        self.y_range = y_range


class AutoEncoder(CollabModel):
    """The autoencoder family: items are rows of the (n_items, n_users) rating matrix R (0 = unrated),
    and the network reconstructs each row from itself: r̂_i = decode(encode(R_i)), read at (i, u).

    The training ratings it reads are part of the model (the `ratings` buffer, stored with the
    weights), so forward(users, items) needs nothing else. The decoder is linear, so
    r̂_ui = clamp(v_u · h_i + c_u): the item embedding is its hidden code h_i, the user's is the
    decoder column v_u. No biases in the chapter's sense (c_u is the decoder's, not a rating bias).
    No fold-in: a new user has no output unit.
    """

    folds_in = False

    def __init__(self, n_users: int, n_items: int):
        super().__init__()
        self.register_buffer("ratings", torch.zeros(n_items, n_users))  # (I, U) the input R
        self.register_buffer("scale", torch.tensor([1.0, 5.0]))  # the training ratings' low, high

    def set_ratings(self, matrix: torch.Tensor) -> None:
        """Feed another input (same shape): the training ratings, or an edited copy of them."""
        self.ratings.copy_(matrix)
        observed = matrix[matrix > 0]
        if len(observed):
            self.scale.copy_(torch.stack([observed.min(), observed.max()]))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's code (I, H) of input rows x (I, U)."""
        raise NotImplementedError

    def decoder(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The output layer's effective weight (H, U) and bias (U,)."""
        raise NotImplementedError

    def reconstruct(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """r̂ (I, U) before clamping, from input x (default: the stored ratings)."""
        weight, bias = self.decoder()
        return self.hidden(self.ratings if x is None else x) @ weight + bias

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.clamp(self.reconstruct()[items, users])

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions clipped to the training ratings' range (the output layer is linear)."""
        return x.clamp(float(self.scale[0]), float(self.scale[1]))

    def link(self, x: torch.Tensor) -> torch.Tensor:
        return self.clamp(x)

    def link_text(self) -> str:
        return "clip({:g}, {:g})".format(*self.y_range)

    @property
    def y_range(self) -> YRange:
        """The range predictions are clipped to (the training ratings'), not a sigmoid's."""
        return float(self.scale[0]), float(self.scale[1])

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder columns (U, H) and the items' hidden codes (I, H); computed, not live."""
        with torch.no_grad():
            return self.decoder()[0].T.contiguous(), self.hidden(self.ratings)


class AutoRec(AutoEncoder):
    """I-AutoRec (Sedhain et al. 2015): r̂_i = V σ(W r_i + b) + c, one sigmoid hidden layer."""

    def __init__(self, n_users: int, n_items: int, n_hidden: int = 500):
        super().__init__(n_users, n_items)
        self.encoder = nn.Linear(n_users, n_hidden)
        self.output = nn.Linear(n_hidden, n_users)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.encoder(x))  # (I, H)

    def decoder(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.output.weight.T, self.output.bias

    def penalty(self) -> torch.Tensor:
        """½‖W‖² + ½‖V‖²: the L2 term, times the config's wd in the loss."""
        return 0.5 * (self.encoder.weight.square().sum() + self.output.weight.square().sum())


class KernelLinear(nn.Module):
    """GLocal-K's local kernel layer: y = x (W ⊙ K) + b, K_jk = max(0, 1 - ‖u_j - v_k‖²) between
    learned n_dim-vectors of each input unit j and output unit k, so weights whose units lie far apart
    are switched off (finite support)."""

    def __init__(self, n_in: int, n_out: int, n_dim: int = 5):
        super().__init__()
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_in, n_out)))
        self.u = nn.Parameter(nn.init.trunc_normal_(torch.empty(n_in, n_dim), std=1e-3, a=-2e-3, b=2e-3))
        self.v = nn.Parameter(nn.init.trunc_normal_(torch.empty(n_out, n_dim), std=1e-3, a=-2e-3, b=2e-3))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def kernel(self) -> torch.Tensor:
        return torch.relu(1 - torch.cdist(self.u, self.v).square())  # (n_in, n_out)

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.kernel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.effective_weight() + self.bias


class GlocalK(AutoEncoder):
    """GLocal-K (Han et al. 2021): two sigmoid KernelLinear layers and a linear KernelLinear output.

    Pre-trained on R; then fine-tuned on R convolved with a global 3x3 kernel (ReLU after), the
    kernel a mix of learned ones weighted by the pre-trained reconstruction's item means:
    g = mean_u(r̂) @ C (C: (I, 9)), input = relu(conv2d(R, g)). `finetuned` says which stage it is in.
    """

    def __init__(self, n_users: int, n_items: int, n_hidden: int = 500):
        super().__init__(n_users, n_items)
        self.layer1 = KernelLinear(n_users, n_hidden)
        self.layer2 = KernelLinear(n_hidden, n_hidden)
        self.output = KernelLinear(n_hidden, n_users)
        self.conv_kernel = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(n_items, 9), std=0.1, a=-0.2, b=0.2)
        )
        self.register_buffer("finetuned", torch.zeros((), dtype=torch.bool))
        self.dot_scale = 1.0  # the reference's scale of g at ml-100k

    def local_hidden(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.layer2(torch.sigmoid(self.layer1(x))))  # (I, H)

    def global_input(self, x: torch.Tensor) -> torch.Tensor:
        """relu(conv2d(R, g)) (I, U): the fine-tuning input. The output layer is linear, so the local
        reconstruction's mean over users comes from the codes: h_i · mean_u v_u + mean_u c_u."""
        weight, bias = self.decoder()
        item_means = self.local_hidden(x) @ weight.mean(dim=1) + bias.mean()  # (I,)
        g = (item_means @ self.conv_kernel).view(1, 1, 3, 3) * self.dot_scale
        return torch.relu(nn.functional.conv2d(x[None, None], g, padding=1))[0, 0]

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_hidden(self.global_input(x) if bool(self.finetuned) else x)

    def decoder(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.output.effective_weight(), self.output.bias

    def penalty(self) -> torch.Tensor:
        """½‖W‖² over the layers' weights; the kernels' own term is in kernel_penalty."""
        return 0.5 * sum(layer.weight.square().sum() for layer in self.kernel_layers())

    def kernel_penalty(self) -> torch.Tensor:
        """½‖K‖² over the layers' kernels: pushes them towards finite support."""
        return 0.5 * sum(layer.kernel().square().sum() for layer in self.kernel_layers())

    def kernel_layers(self) -> tuple[KernelLinear, ...]:
        return self.layer1, self.layer2, self.output


def tabular_mlp(width: int, layers: tuple[int, ...]) -> nn.Sequential:
    """fastai's TabularModel body: (Linear without bias, ReLU, BatchNorm) per layer, then Linear(1)."""
    sizes = [width, *layers]
    blocks: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        blocks += [nn.Linear(n_in, n_out, bias=False), nn.ReLU(), _batch_norm(n_out)]
    return nn.Sequential(*blocks, nn.Linear(sizes[-1], 1))


class SideNN(NNModel):
    """embedding_nn with side features: r̂ = σ_range(f([u; x_u; m; x_m])), x_u the user's encoded age,
    gender and occupation, x_m the movie's genres and year (features.py), f embedding_nn's MLP.

    factors() gives each row's whole representation [embedding; features]: what the map, neighbours,
    explain and fold-in read. Row 0 (#na#) is the cold-start embedding: in training a rating's user
    or movie embedding is swapped for it with probability `cold_p`, so [e₀; x] scores a user or a
    movie nobody has rated from its features alone. The features and their vocabularies (JSON bytes)
    are buffers: the checkpoint holds all it needs to rebuild the model.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        layers: tuple[int, ...] = (100, 50),
        y_range: YRange = (0, 5.5),
        user_features: torch.Tensor | None = None,  # (n_users, Du)
        item_features: torch.Tensor | None = None,  # (n_items, Di)
        spec: str = "{}",  # features.FeatureSpec as JSON
        cold_p: float = 0.1,
    ):
        super().__init__()
        user_x = torch.zeros(n_users, 0) if user_features is None else torch.as_tensor(user_features).float()
        item_x = torch.zeros(n_items, 0) if item_features is None else torch.as_tensor(item_features).float()
        if len(user_x) != n_users or len(item_x) != n_items:
            raise ConfigError(f"side features for {len(user_x)} users and {len(item_x)} items, "
                              f"not {n_users} and {n_items}")  # fmt: skip
        self.register_buffer("user_x", user_x)
        self.register_buffer("item_x", item_x)
        self.register_buffer("feature_spec", torch.tensor(list(spec.encode()), dtype=torch.uint8))
        self.user_factors = trunc_normal_embedding(n_users, get_emb_sz(n_users))
        self.item_factors = trunc_normal_embedding(n_items, get_emb_sz(n_items))
        width = self.user_factors.embedding_dim + user_x.shape[1] + self.item_factors.embedding_dim
        self.layers = tabular_mlp(width + item_x.shape[1], layers)
        self.y_range, self.cold_p = y_range, cold_p

    def groups(self) -> dict[str, slice]:
        fu, du, fi = self.user_factors.embedding_dim, self.user_x.shape[1], self.item_factors.embedding_dim
        ends = np.cumsum([0, fu, du, fi, self.item_x.shape[1]])
        names = (
            "the user's embedding",
            "the user's features",
            "the movie's embedding",
            "the movie's features",
        )
        return {name: slice(a, b) for name, a, b in zip(names, ends[:-1], ends[1:]) if b > a}  # data's own

    @property
    def spec(self) -> str:
        """The feature vocabularies and scalings, as features.FeatureSpec's JSON."""
        return bytes(self.feature_spec.tolist()).decode()

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[embedding; features] of every user (n_users, Fu + Du) and movie (n_items, Fi + Di): copies."""
        return (torch.cat([self.user_factors.weight, self.user_x], dim=1).detach(),
                torch.cat([self.item_factors.weight, self.item_x], dim=1).detach())  # fmt: skip

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u = torch.cat([self.user_factors(self._cold(users)), self.user_x[users]], dim=1)  # (B, Fu + Du)
        m = torch.cat([self.item_factors(self._cold(items)), self.item_x[items]], dim=1)  # (B, Fi + Di)
        return self.link(self.raw(u, m))

    def _cold(self, ix: torch.Tensor) -> torch.Tensor:
        """In training, a random cold_p of the indices replaced by 0, the cold-start row."""
        if not self.training or self.cold_p == 0:
            return ix
        return ix.masked_fill(torch.rand(ix.shape, device=ix.device) < self.cold_p, 0)

    @classmethod
    def data_inputs(cls, dataset, encoded) -> dict:
        from collab_core.features import FeatureSpec, feature_matrices

        spec = FeatureSpec.of(dataset)
        for notice in spec.notices:
            warnings.warn(notice, FeatureNotice, stacklevel=2)
        user_x, item_x = feature_matrices(dataset, encoded, spec)
        return {"user_features": torch.from_numpy(user_x), "item_features": torch.from_numpy(item_x),
                "spec": spec.to_json()}  # fmt: skip

    @classmethod
    def state_inputs(cls, state: dict[str, torch.Tensor]) -> dict:
        return {"user_features": state["user_x"], "item_features": state["item_x"],
                "spec": bytes(state["feature_spec"].tolist()).decode()}  # fmt: skip


class FeatureNotice(UserWarning):
    """A side feature the data lacks, left out (features.py's documented fallback)."""


class DotBiasCE(DotModel):
    """Ratings as classes: a score s = u·m + b_u + b_m, logits over the data's L rating levels
    z_k = a_k s + c_k, trained with cross-entropy; r̂ = Σ_k softmax(z)_k level_k, the expected rating.

    In train mode forward gives the logits (B, L), which training_loss takes; in eval mode the
    expected rating (B,), as every model's forward does. link(s) maps raw scores of any shape to
    it, so the dot-product family's code (ranking, explain, the map) reads this model as it is.
    """

    has_bias = True
    fusable = False  # FusedDotStep's gradients are the MSE's

    def __init__(self, n_users: int, n_items: int, n_factors: int, y_range: YRange | None = None,
                 levels: torch.Tensor | tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0)):  # fmt: skip
        super().__init__()
        self.user_factors = trunc_normal_embedding(n_users, n_factors)
        self.item_factors = trunc_normal_embedding(n_items, n_factors)
        self.user_bias = trunc_normal_embedding(n_users, 1)
        self.item_bias = trunc_normal_embedding(n_items, 1)
        values = levels.tolist() if torch.is_tensor(levels) else [float(v) for v in levels]
        self.register_buffer("levels", torch.tensor(values))  # (L,)
        self.level_slope = nn.Parameter(torch.linspace(-2.0, 2.0, len(values)))  # a_k: higher s, higher k
        self.level_offset = nn.Parameter(torch.zeros(len(values)))  # c_k
        self.y_range = (values[0], values[-1])  # the expected rating's range

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """s = u·m + b_u + b_m, (B,)."""
        x = (self.user_factors(users) * self.item_factors(items)).sum(dim=1)
        return x + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0]

    def logits(self, score: torch.Tensor) -> torch.Tensor:
        """z = a s + c: (..., L) from scores of any shape (...)."""
        return score[..., None] * self.level_slope + self.level_offset

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        z = self.logits(self.score(users, items))  # (B, L)
        return z if self.training else torch.softmax(z, dim=-1) @ self.levels

    def link_text(self) -> str:
        levels = self.levels.tolist()
        span = f"{levels[0]:g}..{levels[-1]:g}"
        return f"expected rating of softmax(a·raw + c) over the {len(levels)} levels {span}"

    def link(self, x: torch.Tensor) -> torch.Tensor:
        """The expected rating Σ_k softmax(a x + c)_k level_k of raw scores x of any shape."""
        return torch.softmax(self.logits(x), dim=-1) @ self.levels

    def level_index(self, ratings: torch.Tensor) -> torch.Tensor:
        """Each rating's class: the index of the nearest level, (B,) int64."""
        return (ratings[:, None] - self.levels).abs().argmin(dim=1)

    def training_loss(self, output: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(output, self.level_index(ratings))

    @torch.no_grad()
    def distribution(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B, L) predicted probability of each rating level."""
        return torch.softmax(self.logits(self.score(users, items)), dim=-1)

    @torch.no_grad()
    def extra_metrics(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor,
                      chunk: int = 65536) -> dict:  # fmt: skip
        """accuracy (the most probable level is the rating's) and log loss (mean cross-entropy)."""
        device = self.levels.device
        hits, nll = 0.0, 0.0
        for i in range(0, len(ratings), chunk):
            u, m, r = (t[i : i + chunk].to(device) for t in (users, items, ratings))
            z, target = self.logits(self.score(u, m)), self.level_index(r)
            hits += float((z.argmax(dim=1) == target).sum())
            nll += float(nn.functional.cross_entropy(z, target, reduction="sum"))
        n = max(len(ratings), 1)
        return {"accuracy": hits / n, "log_loss": nll / n}

    @torch.no_grad()
    def inverse_link(self, values: torch.Tensor) -> torch.Tensor:
        """Raw scores whose expected rating is `values` (fold-in's targets), read off a fine grid."""
        grid = torch.linspace(-20.0, 20.0, 4001, device=self.levels.device)
        expected = torch.cummax(self.link(grid), dim=0).values.cpu().double().numpy()
        out = np.interp(values.detach().cpu().double().numpy(), expected, grid.cpu().double().numpy())
        return torch.from_numpy(out).to(values.device)

    @classmethod
    def data_inputs(cls, dataset, encoded) -> dict:
        levels = dataset.rating_scale.levels
        if len(levels) < 2:
            many = "more than 21" if not levels else "one"
            raise ConfigError(f"dot_bias_ce predicts rating levels, but {dataset.name} has {many} "
                              "distinct rating values")  # fmt: skip
        return {"levels": torch.tensor(levels, dtype=torch.float32)}

    @classmethod
    def state_inputs(cls, state: dict[str, torch.Tensor]) -> dict:
        return {"levels": state["levels"]}


# key -> class; "dot" is the book's first DotProduct, without an output range
MODELS: dict[str, type[CollabModel]] = {
    "dot": DotProduct,
    "dot_range": DotProduct,
    "dot_bias": DotProductBias,
    "dot_bias_params": DotProductBiasParams,
    "embedding_dot_bias": EmbeddingDotBias,
    "collab_nn": CollabNN,
    "embedding_nn": EmbeddingNN,
    "autorec": AutoRec,
    "glocal_k": GlocalK,
    "side_nn": SideNN,
    "dot_bias_ce": DotBiasCE,
}


assert tuple(MODELS) == MODEL_KEYS, "config.MODEL_KEYS must list nets.MODELS"


def fused_family(key: str) -> bool:
    """Whether the model key is a dot-product family that optim.FusedDotStep trains on the CPU."""
    cls = MODELS.get(key)
    return cls is not None and issubclass(cls, DotModel) and cls.fusable


def create_model(
    key: str, n_users: int, n_items: int, n_factors: int = 50, y_range: YRange = (0, 5.5), **inputs
) -> CollabModel:
    """Build the model registered under `key`; the NN models size their own embeddings. inputs: what
    the family reads from the data (its `data_inputs`: side_nn's features, dot_bias_ce's levels)."""
    if key not in MODELS:
        raise ConfigError(f"unknown model {key!r}; choose one of {', '.join(MODELS)}")
    model = MODELS[key]
    if issubclass(model, DotModel):
        return model(n_users, n_items, n_factors, None if key == "dot" else y_range, **inputs)
    if issubclass(model, AutoEncoder):  # n_factors: the hidden layer's width; clipped, not y_range
        return model(n_users, n_items, n_factors)
    return model(n_users, n_items, y_range=y_range, **inputs)

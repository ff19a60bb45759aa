"""The chapter's models: one suite over every key of MODELS, plus each model's own init."""

import pytest
import torch
from torch import nn

from collab_core.config import TrainConfig
from collab_core.errors import ConfigError
from collab_core.learner import build_model
from collab_core.nets import (
    MODELS,
    CollabNN,
    EmbeddingNN,
    create_model,
    get_emb_sz,
)
from collab_core.train import fit_one_cycle

DOT_FAMILY = ["dot", "dot_range", "dot_bias", "dot_bias_params", "embedding_dot_bias"]
DESIGN_KEYS = [*DOT_FAMILY, "collab_nn", "embedding_nn"]
UNBOUNDED = {"dot"}  # the only model without a y_range
N_USERS, N_ITEMS = 201, 151  # 200 users and 150 items + #na# at index 0

# a short one-cycle fit that reaches far below the ratings' variance, per model (epochs, lr, wd)
RECIPES = {
    "dot": (6, 5e-2, 0.0),  # no bias, no range: the factors must learn the mean rating too
    "dot_range": (4, 2e-2, 0.01),
    "dot_bias": (4, 2e-2, 0.01),
    "dot_bias_params": (4, 2e-2, 0.01),
    "embedding_dot_bias": (4, 2e-2, 0.01),
    "collab_nn": (12, 2e-2, 0.0),  # an MLP needs longer to learn products of factors
    "embedding_nn": (5, 1e-2, 0.01),
}

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def low_rank_ratings(rank: int = 3, density: float = 0.5, noise: float = 0.1) -> tuple[Tensors, Tensors]:
    """Ratings with a known answer: 3 + b_u + b_m + u·m + noise, half the pairs observed, 80/20 split."""
    g = torch.Generator().manual_seed(0)
    n_users, n_items = N_USERS - 1, N_ITEMS - 1
    user_f = torch.randn(n_users, rank, generator=g) * 0.6
    item_f = torch.randn(n_items, rank, generator=g) * 0.6
    user_b, item_b = torch.randn(n_users, generator=g) * 0.3, torch.randn(n_items, generator=g) * 0.4
    users, items = (torch.rand(n_users, n_items, generator=g) < density).nonzero(as_tuple=True)
    ratings = 3.0 + user_b[users] + item_b[items] + (user_f[users] * item_f[items]).sum(1)
    ratings += noise * torch.randn(len(ratings), generator=g)
    perm = torch.randperm(len(ratings), generator=g)
    valid, train = perm[: len(perm) // 5], perm[len(perm) // 5 :]
    return tuple((users[rows] + 1, items[rows] + 1, ratings[rows]) for rows in (train, valid))


@pytest.fixture(scope="module")
def synthetic() -> tuple[Tensors, Tensors]:
    return low_rank_ratings()


def a_batch(n_users: int = 12, n_items: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Every user and every item, index 0 (#na#) included, in 36 pairs."""
    users = torch.arange(36) % n_users
    items = torch.arange(36) % n_items
    return users, items


def test_registry_has_the_designs_keys():
    wave_2 = {"side_nn", "dot_bias_ce", "autorec", "glocal_k"}  # DESIGN.md's later keys, after the chapter's
    assert list(MODELS)[: len(DESIGN_KEYS)] == DESIGN_KEYS and set(list(MODELS)[len(DESIGN_KEYS) :]) <= wave_2
    with pytest.raises(ConfigError, match="unknown model 'svd'; choose one of dot, dot_range"):
        create_model("svd", 10, 10)


@pytest.mark.parametrize("key", DESIGN_KEYS)
def test_output_shape(key):
    torch.manual_seed(0)
    model = create_model(key, 12, 9, n_factors=4)
    out = model(*a_batch())
    assert out.shape == (36,) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("key", DESIGN_KEYS)
def test_y_range_is_respected(key):
    torch.manual_seed(0)
    model = create_model(key, 12, 9, n_factors=4, y_range=(1.0, 2.0)).eval()
    with torch.no_grad():  # weights far from their init push any unbounded output far outside (1, 2)
        for p in model.parameters():
            p.normal_(0, 5)
    out = model(*a_batch())
    if key in UNBOUNDED:
        assert model.y_range is None and (out.abs() > 2).any()
    else:
        assert model.y_range == (1.0, 2.0)
        assert ((out >= 1.0) & (out <= 2.0)).all()
        assert out.min() < 1.2 and out.max() > 1.8  # squashed, not clipped to a constant


@pytest.mark.parametrize("key", DOT_FAMILY)
def test_dot_models_compute_their_formula(key):
    torch.manual_seed(0)
    model = create_model(key, 12, 9, n_factors=4)
    users, items = a_batch()
    user_f, item_f = model.factors()
    x = (user_f[users] * item_f[items]).sum(1)
    biases = model.biases()
    if biases is not None:
        x = x + biases[0][users] + biases[1][items]
    expected = x if key in UNBOUNDED else torch.sigmoid(x) * 5.5
    assert torch.allclose(model(users, items), expected, atol=1e-6)
    assert (biases is None) == (key in {"dot", "dot_range"})


@pytest.mark.parametrize("key", DESIGN_KEYS)
def test_gradients_reach_every_parameter(key):
    torch.manual_seed(0)
    model = create_model(key, 12, 9, n_factors=4)
    users, items = a_batch()
    loss = nn.functional.mse_loss(model(users, items), torch.linspace(1, 5, 36))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


@pytest.mark.parametrize("key", DESIGN_KEYS)
def test_learns_a_known_low_rank_answer(key, synthetic):
    train, valid = synthetic
    epochs, lr, wd = RECIPES[key]
    config = TrainConfig(model=key, n_factors=8, epochs=epochs, lr=lr, wd=wd, bs=64, seed=0)
    model = build_model(config, N_USERS, N_ITEMS, torch.device("cpu"))
    result = fit_one_cycle(model, train, valid, config)
    variance = float(valid[2].var())
    # predicting the mean scores the variance (~0.65); the noise floor is 0.01
    assert result.valid_loss[-1] < 0.15 * variance, (
        f"{key}: valid MSE {result.valid_loss} vs variance {variance}"
    )


def test_get_emb_sz():
    assert get_emb_sz(944) == 74
    assert get_emb_sz(1665) == 102
    assert get_emb_sz(10**6) == 600  # capped


def test_embedding_dot_bias_init_is_truncated_normal():
    torch.manual_seed(0)
    model = create_model("embedding_dot_bias", 944, 1665, 50)
    for name, p in model.named_parameters():
        w = p.detach()
        assert w.abs().max() <= 0.02, name  # fastai's trunc_normal_: N(0, 1) folded into (-2, 2), x 0.01
        assert 0.0080 < w.std() < 0.0095, name  # the fold trims the std to ~0.0086
        assert w.abs().max() > 0.018, name  # and it reaches the edge


def test_dot_bias_params_init_is_normal():
    torch.manual_seed(0)
    model = create_model("dot_bias_params", 944, 1665, 50)
    factors = torch.cat([model.user_factors.detach().flatten(), model.item_factors.detach().flatten()])
    assert abs(float(factors.mean())) < 5e-4
    assert 0.0097 < float(factors.std()) < 0.0103
    assert float(factors.abs().max()) > 0.03  # not truncated
    assert isinstance(model.user_factors, nn.Parameter) and model.user_bias.shape == (944,)


@pytest.mark.parametrize("key", ["dot", "dot_range", "dot_bias"])
def test_book_models_use_fastais_embedding_init(key):
    torch.manual_seed(0)
    model = create_model(key, 944, 1665, 50)
    for name, p in model.named_parameters():
        assert p.detach().abs().max() <= 0.02, name  # the book's Embedding, not nn.Embedding's N(0, 1)


def test_nn_models_follow_fastai():
    collab = CollabNN(944, 1665)
    assert (collab.user_factors.embedding_dim, collab.item_factors.embedding_dim) == (74, 102)
    assert [type(m) for m in collab.layers] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (collab.layers[0].in_features, collab.layers[0].out_features) == (176, 100)
    tabular = EmbeddingNN(944, 1665)
    kinds = [type(m) for m in tabular.layers]
    assert kinds == [nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Linear]
    widths = [(m.in_features, m.out_features) for m in tabular.layers if isinstance(m, nn.Linear)]
    assert widths == [(176, 100), (100, 50), (50, 1)]
    assert [m.bias is None for m in tabular.layers if isinstance(m, nn.Linear)] == [True, True, False]
    for bn in (tabular.layers[2], tabular.layers[5]):
        assert (bn.weight == 1).all() and (bn.bias == 1e-3).all()  # fastai's BatchNorm init


@pytest.mark.parametrize("key", list(MODELS))
def test_a_model_built_without_initial_weights_then_loaded_is_the_model(ml100k, key):
    """A stored model opens on a build that skipped its random draws: its checkpoint sets every
    tensor, so it predicts exactly what the saved model did."""
    from collab_core.encoding import encode
    from collab_core.learner import model_inputs
    from collab_core.nets import without_initial_weights

    config = TrainConfig(model=key, n_factors=8)
    encoded = encode(ml100k)
    sizes = (encoded.n_users, encoded.n_items, torch.device("cpu"))
    saved = build_model(config, *sizes, model_inputs(config, ml100k, encoded))
    state = saved.state_dict()
    with without_initial_weights():
        opened = build_model(config, *sizes, MODELS[key].state_inputs(state))
    assert build_model(config, *sizes, MODELS[key].state_inputs(state)).state_dict().keys() == state.keys()
    opened.load_state_dict(state)
    users, items = encoded.user_idx[:500].long(), encoded.item_idx[:500].long()
    with torch.no_grad():
        assert torch.equal(saved.eval()(users, items), opened.eval()(users, items))

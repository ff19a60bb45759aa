"""A fast training step for the dot-product models on the CPU.

At batch size 64 an ml-100k step moves a few kilobytes; autograd's dozens of small tensor ops
and a per-parameter optimizer then cost far more than the arithmetic. This step computes the
same maths with hand-written gradients in NumPy (op overhead ~1 µs instead of ~10 µs), keeps
every weight in one flat buffer (user rows = [factors | bias], item rows likewise) and applies
torch's fused AdamW to that buffer in one call: the same decoupled weight decay, moments and
bias correction as the autograd path, so the results agree up to float rounding.

    x = u·m + b_u + b_m,   r̂ = lo + (hi - lo)·σ(x),   L = mean((r̂ - r)²)
    ∂L/∂x = 2(r̂ - r)/B · (hi - lo)·σ(x)(1 - σ(x)),   ∂L/∂u = ∂L/∂x · m,   ∂L/∂b_u = ∂L/∂x
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from collab_core.nets import DotProduct, DotProductBias, DotProductBiasParams, dot_parts


def supports(model: nn.Module) -> bool:
    """True for the dot-product models when they live on the CPU."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    return on_cpu and isinstance(model, (DotProduct, DotProductBias, DotProductBiasParams))


class FusedDotStep:
    """One optimizer step per call, for a dot-product model; `sync()` writes weights back."""

    def __init__(self, model: nn.Module, train: tuple[torch.Tensor, ...], bs: int, lr: float, wd: float):
        self.model, self.bs = model, bs
        self.users, self.items, self.ratings = (t.cpu().numpy() for t in train)
        user_f, user_b, item_f, item_b = dot_parts(model)
        self.n_factors = user_f.shape[1]
        self.has_bias = user_b is not None
        self.y_range = model.y_range
        n_users, n_items, width = len(user_f), len(item_f), self.n_factors + 1
        # one flat buffer: user rows then item rows, each [factors | bias]; NumPy views share it
        self.flat = nn.Parameter(torch.zeros((n_users + n_items) * width))
        self.flat.grad = torch.zeros_like(self.flat)
        self.user_rows = self.flat.data[: n_users * width].view(n_users, width).numpy()
        self.item_rows = self.flat.data[n_users * width :].view(n_items, width).numpy()
        grad = self.flat.grad
        self.user_grad = grad[: n_users * width].view(n_users, width)
        self.item_grad = grad[n_users * width :].view(n_items, width)
        self.user_rows[:, :-1], self.item_rows[:, :-1] = user_f.numpy(), item_f.numpy()
        if self.has_bias:
            self.user_rows[:, -1], self.item_rows[:, -1] = user_b.numpy(), item_b.numpy()
        # AdamW state, stepped by torch's fused kernel directly: torch.optim's wrapper around the
        # same kernel costs more per call than the kernel itself at this size
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(self.flat), torch.zeros_like(self.flat)
        self.n_steps, self.wd = 0, wd

    def shuffle(self, perm: torch.Tensor) -> None:
        """Reorder the training ratings once per epoch; batches are then plain slices."""
        p = perm.numpy()
        self.u, self.i, self.r = self.users[p], self.items[p], self.ratings[p]

    def __call__(self, batch: int, lr: float, beta1: float) -> float:
        s = slice(batch * self.bs, (batch + 1) * self.bs)
        users, items, ratings = self.u[s], self.i[s], self.r[s]
        # forward
        user_rows, item_rows = self.user_rows[users], self.item_rows[items]  # (B, F+1) copies
        x = np.einsum("bf,bf->b", user_rows[:, :-1], item_rows[:, :-1])  # (B,)
        if self.has_bias:
            x += user_rows[:, -1] + item_rows[:, -1]
        if self.y_range is None:
            pred, dpred_dx = x, np.float32(1.0)
        else:
            low, high = self.y_range
            sig = 1.0 / (1.0 + np.exp(-x))
            pred, dpred_dx = low + (high - low) * sig, (high - low) * sig * (1.0 - sig)
        diff = pred - ratings
        loss = float(np.dot(diff, diff)) / len(diff)
        # backward: the rows' gradients, scattered into the flat gradient buffer
        g = (diff * dpred_dx * np.float32(2.0 / len(diff))).astype(np.float32)  # (B,) ∂L/∂x
        item_rows *= g[:, None]  # ∂L/∂u = g·m (reuses the gathered copy)
        user_rows *= g[:, None]  # ∂L/∂m = g·u
        item_rows[:, -1] = user_rows[:, -1] = g if self.has_bias else 0.0
        users_t, items_t = torch.from_numpy(users), torch.from_numpy(items)
        self.user_grad.index_add_(0, users_t, torch.from_numpy(item_rows))
        self.item_grad.index_add_(0, items_t, torch.from_numpy(user_rows))
        # step: fused AdamW over every weight at once, then clear only the rows we touched
        self.n_steps += 1
        torch._fused_adamw_(
            [self.flat.data], [self.flat.grad], [self.exp_avg], [self.exp_avg_sq], [],
            [torch.tensor(float(self.n_steps))], lr=lr, beta1=beta1, beta2=0.99,
            weight_decay=self.wd, eps=1e-5, amsgrad=False, maximize=False,
        )  # fmt: skip
        self.user_grad.index_fill_(0, users_t, 0.0)
        self.item_grad.index_fill_(0, items_t, 0.0)
        return loss

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the trained weights back into the model's own parameters."""
        user_f, user_b, item_f, item_b = dot_parts(self.model)
        user_f.copy_(torch.from_numpy(self.user_rows[:, :-1]))
        item_f.copy_(torch.from_numpy(self.item_rows[:, :-1]))
        if self.has_bias:
            user_b.copy_(torch.from_numpy(self.user_rows[:, -1]))
            item_b.copy_(torch.from_numpy(self.item_rows[:, -1]))

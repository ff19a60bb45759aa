"""This machine's training speed on a data shape, measured in a second or two (speed.Speed).

A model of the data's shape (embedding_dot_bias, 50 factors) steps a few dozen times on synthetic
indices with each step kind the fit loop would pick on the CPU (dense and row-wise sparse AdamW,
optim.pick_step), at two batch sizes; the mean step time is kept, not the median: on a busy
machine a few steps take several times the usual and a fit's time is the sum of all of them
(median 0.28 ms but mean 0.43-0.55 ms at a 1M-rating shape); a line through the two sizes gives
fixed + per_rating·bs.
An epoch's shuffle and validation are timed per rating on a synthetic sample.
"""

from __future__ import annotations

import time

import torch

from collab_core.config import TrainConfig
from collab_core.learner import build_model
from collab_core.optim import pick_step
from collab_core.speed import Speed, StepCost
from collab_core.train import evaluate

STEPS = 32  # timed steps per (kind, batch size), after WARMUP untimed ones
WARMUP = 3
BATCHES = {"dense": (64, 1024), "sparse": (512, 8192)}  # the sizes the recipes use lie between
SAMPLE = 200_000  # ratings of the shuffle and validation timing


def measure(n_users: int, n_items: int, factors: int = 50) -> Speed:
    """Seconds per step of each step kind at this shape (rows include fastai's #na#)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as fit_one_cycle runs these steps
    try:
        generator = torch.Generator().manual_seed(0)
        costs = {kind: _step_cost(kind, n_users, n_items, factors, generator) for kind in BATCHES}
        shuffle, predict = _epoch_costs(n_users, n_items, factors, generator)
    finally:
        torch.set_num_threads(threads)
    return Speed(factors, costs["dense"], costs["sparse"], shuffle, predict)


def _ratings(n: int, n_users: int, n_items: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """n ratings: users uniform (MovieLens' users are mildly skewed: at least 20 ratings each), items
    as skewed as MovieLens' (synth.py's Zipf-like law), so a batch repeats popular items as real
    ones do, which the sparse step's row merge profits from."""
    users = torch.randint(1, max(n_users, 2), (n,), generator=generator)
    return users, _popular(n, n_items, generator), torch.rand(n, generator=generator) * 4 + 1


def _popular(n: int, n_rows: int, generator: torch.Generator) -> torch.Tensor:
    """n indices in 1..n_rows-1, index k drawn with weight 1 / (k + 10) ** 1.1."""
    weights = 1.0 / (torch.arange(max(n_rows - 1, 1), dtype=torch.float64) + 10.0) ** 1.1
    cdf = torch.cumsum(weights / weights.sum(), 0)
    return (
        torch.searchsorted(cdf, torch.rand(n, generator=generator, dtype=torch.float64)).clamp_(
            max=len(cdf) - 1
        )
        + 1
    )


def _step_cost(kind: str, n_users: int, n_items: int, factors: int, generator: torch.Generator) -> StepCost:
    seconds = []
    for bs in BATCHES[kind]:
        config = TrainConfig(n_factors=factors, bs=bs, sparse=kind == "sparse")
        model = build_model(config, n_users, n_items, torch.device("cpu"))
        n = bs * (STEPS + WARMUP)
        step = pick_step(model, _ratings(n, n_users, n_items, generator), config)
        step.shuffle(torch.arange(n))
        times = []
        for b in range(STEPS + WARMUP):
            start = time.perf_counter()
            step(b, 1e-3, 0.9)
            times.append(time.perf_counter() - start)
        seconds.append(sum(times[WARMUP:]) / STEPS)
    (small, large), (t_small, t_large) = BATCHES[kind], seconds
    per_rating = max((t_large - t_small) / (large - small), 0.0)
    return StepCost(fixed=max(t_small - per_rating * small, 0.0), per_rating=per_rating)


def _epoch_costs(n_users: int, n_items: int, factors: int, generator: torch.Generator) -> tuple[float, float]:
    """Seconds per rating of an epoch's shuffle (randperm + the step's gathers) and of validation."""
    config = TrainConfig(n_factors=factors, bs=1024, sparse=True)
    model = build_model(config, n_users, n_items, torch.device("cpu"))
    ratings = _ratings(SAMPLE, n_users, n_items, generator)
    step = pick_step(model, ratings, config)
    start = time.perf_counter()
    step.shuffle(torch.randperm(SAMPLE, generator=generator))
    shuffle = (time.perf_counter() - start) / SAMPLE
    start = time.perf_counter()
    evaluate(model, *ratings)
    return shuffle, (time.perf_counter() - start) / SAMPLE

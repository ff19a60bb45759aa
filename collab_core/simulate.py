"""Feedback loops, simulated: a recommender that feeds on the ratings it causes (the chapter's warning
in "Bootstrapping a Collaborative Filtering Model"), measured round by round.

The world: a "true taste" model (the fast recipe, trained once per world on every real rating but
the probe) stands in for the users; a user's rating of a movie they are shown is its prediction plus
Gaussian noise (sd: its residual sd on the ratings it was trained on), rounded to the data's step
and clipped to its scale. The system starts from a seed sample of each user's real ratings and never
sees the probe, a fixed share of real ratings kept for the probe RMSE.

A round: each simulated user is shown k movies they have not rated (in the system's data) nor hold
in the probe, chosen by the policy from the system model's predictions; they consume each with a
probability rising with their true (noise-free) rating (the choice model), rate what they consume,
those ratings join the data, and the system model is fine-tuned on the grown data (warm start from
the previous round's weights, `finetune_epochs` epochs of the fast recipe).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from collab_core.config import preset
from collab_core.data import Dataset
from collab_core.encoding import Encoded, encode
from collab_core.errors import ConfigError, TrainingCancelled, check_n
from collab_core.learner import build_model
from collab_core.nets import CollabModel, DotModel
from collab_core.ranking import dot_scores
from collab_core.train import fit_one_cycle, pick_device, predict

POLICIES = ("topk", "explore", "damped")
CHOICES = ("logistic", "linear")
EXPLORE_FROM = ("random", "longtail")
MAX_CELLS = 200_000_000  # users x movies the dense "already rated" mask may hold (200 MB)
MIN_BS = 16  # the smallest batch of the fast recipe here (small data: an eighth of the seed)
ACTIVE_SHARE = 0.05  # "the most active users": this share of users, by their real ratings


@dataclass(frozen=True)
class WorldParams:
    """How the simulated world is built from the real ratings (shared by every policy compared)."""

    seed: int = 42  # seeds the samples, the noise, the choices and the models
    seed_share: float = 0.2  # share of each user's real ratings the system starts from
    seed_min: int = 5  # ... but at least this many per user (all of them if the user has fewer)
    probe_share: float = 0.1  # real ratings held out from everything, for the probe RMSE
    noise_sd: float | None = None  # sd of the rating noise; None = the true model's residual sd

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be an integer from 0 to 2**32 - 1, not {self.seed!r}")
        _check_share(self.seed_share, "seed share", open_low=True, open_high=True)
        check_n(self.seed_min, "seed_min")
        _check_share(self.probe_share, "probe share", open_low=True, high=0.5)
        if self.noise_sd is not None and not (_number(self.noise_sd) and self.noise_sd >= 0):
            raise ConfigError(f"noise sd must be a number >= 0, not {self.noise_sd!r}")


@dataclass(frozen=True)
class PolicyParams:
    """One run of the loop: the policy, what users are shown and how they choose."""

    policy: str = "topk"  # topk | explore | damped
    rounds: int = 10
    k: int = 10  # movies shown to each user per round
    explore_share: float = 0.2  # explore: share of the k slots filled by exploration
    explore_from: str = "random"  # explore: random unrated movies, or the less popular half (longtail)
    damping: float = 0.1  # damped: score = prediction - damping * log(1 + ratings in the system's data)
    choice: str = "logistic"  # logistic: P = sigmoid((true - center) / T); linear: (true - low) / span
    center: float = 3.5  # logistic choice: the true rating at which P(consume) = 1/2
    temperature: float = 0.5  # logistic choice: T, how sharply P rises with the true rating
    finetune_epochs: int = 2  # epochs of the fast recipe per round from the last weights; 0: never learns
    users_per_round: int | None = None  # simulated users shown a list per round; None = all

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        check_n(self.rounds, "rounds")
        check_n(self.k, "k")
        if self.rounds > 1000:
            raise ConfigError(f"rounds must be at most 1000, not {self.rounds}")
        _check_share(self.explore_share, "explore share")
        if self.explore_from not in EXPLORE_FROM:
            raise ConfigError(f"unknown exploration source {self.explore_from!r}; choose random or longtail")
        if not (_number(self.damping) and self.damping >= 0):
            raise ConfigError(f"damping must be a number >= 0, not {self.damping!r}")
        if self.choice not in CHOICES:
            raise ConfigError(f"unknown choice model {self.choice!r}; choose logistic or linear")
        if not _number(self.center):
            raise ConfigError(f"choice center must be a number, not {self.center!r}")
        if not (_number(self.temperature) and self.temperature > 0):
            raise ConfigError(f"temperature must be a number > 0, not {self.temperature!r}")
        epochs = self.finetune_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or not 0 <= epochs <= 100:
            raise ConfigError(f"finetune epochs must be an integer from 0 to 100, not {epochs!r}")
        if self.users_per_round is not None:
            check_n(self.users_per_round, "users per round")


@dataclass(eq=False)
class World:
    """The real data split into seed, probe and the rest, the true tastes, and the seed-trained system."""

    params: WorldParams
    encoded: Encoded = field(repr=False)
    titles: np.ndarray = field(repr=False)  # (n_items,) item titles (index 0: #na#)
    true_scores: np.ndarray = field(repr=False)  # (n_users, n_items) the true model's predictions
    noise_sd: float
    true_probe_rmse: float  # the true model's RMSE on the probe: about the best any model could do
    seed_rows: np.ndarray = field(repr=False)  # rows of the real ratings the system starts from
    probe_rows: np.ndarray = field(repr=False)
    popularity: np.ndarray = field(repr=False)  # (n_items,) ratings per movie in the real data
    active: np.ndarray = field(repr=False)  # (n_users,) bool: the most active 5% by real ratings
    system_state: dict = field(repr=False)  # the system model trained on the seed (each policy copies it)
    initial_probe_rmse: float
    scale: tuple[float, float, float | None]  # low, high, step of the rating scale
    y_range: tuple[float, float]  # the models' output range (the data's, as the app trains with)
    bs: int  # the fast recipe's batch size (512, or an eighth of the seed on small data)
    device: torch.device = field(repr=False)
    seconds: float = 0.0

    @property
    def seed_gini_data(self) -> float:
        """Gini of the ratings per movie in the seed: where the system's data starts."""
        return gini(np.bincount(self.encoded.item_idx.numpy()[self.seed_rows], minlength=self.n_items)[1:])

    @property
    def n_users(self) -> int:
        return self.encoded.n_users

    @property
    def n_items(self) -> int:
        return self.encoded.n_items

    def assumptions(self) -> dict[str, str]:
        """The world's assumptions in words (the outcome depends on them)."""
        p, low_high = self.params, f"{self.scale[0]:g}..{self.scale[1]:g}"
        step = f", rounded to steps of {self.scale[2]:g}" if self.scale[2] else ""
        return {
            "users": "a 'true taste' model (fast recipe, trained on every real rating but the probe) "
            f"stands in for the users; a rating = its prediction + N(0, {self.noise_sd:.3f}²) noise"
            f"{step}, clipped to {low_high}",
            "seed": f"the system starts from {p.seed_share:.0%} of each user's real ratings "
            f"(at least {p.seed_min}; all if fewer)",
            "probe": f"{p.probe_share:.0%} of the real ratings, held out from both models, score the "
            f"system (probe RMSE); the true model scores {self.true_probe_rmse:.3f} on it",
            "popularity": "mean popularity = ratings per movie in the real data; the damped policy uses the "
            "count in the system's current data (all it knows)",
            "activity": "the top-5% users are the most active 5% by their number of real ratings",
            "exposure": "coverage and Gini are over every movie of the catalogue, of cumulative shown "
            "counts; "
            "Gini = Σ(2i − n − 1)·x_i / (n·Σx) over ascending counts: 0 equal, (n−1)/n all on one",
        }


@dataclass(frozen=True)
class Round:
    """What one round showed and measured."""

    round: int  # 1-based
    coverage: float  # share of the catalogue shown at least once so far
    gini: float  # Gini of the cumulative shown counts over all movies
    gini_round: float  # Gini of this round's shown counts
    gini_data: float  # Gini of the ratings per movie in the system's data after this round
    mean_popularity: float  # mean real-data ratings of the movies shown this round
    probe_rmse: float  # the system model's RMSE on the probe, after this round's fine-tuning
    top5_share: float  # share of this round's new ratings from the most active 5% of users
    shown: int  # slots shown this round
    consumed: int  # new ratings this round
    mean_new_rating: float  # mean of this round's new ratings
    n_ratings: int  # ratings in the system's data after this round
    seconds: float


@dataclass
class Simulation:
    """A finished (or stopped) run of one policy."""

    params: PolicyParams
    world: WorldParams
    assumptions: dict[str, str]
    rounds: list[Round]
    initial_probe_rmse: float
    true_probe_rmse: float
    noise_sd: float
    first_exposure: np.ndarray = field(repr=False)  # (n_items,) shown counts of round 1
    last_exposure: np.ndarray = field(repr=False)  # (n_items,) shown counts of the last round
    titles: np.ndarray = field(repr=False)
    popularity: np.ndarray = field(repr=False)
    stopped: bool = False
    seconds: float = 0.0
    initial_gini_data: float = math.nan  # Gini of the seed's ratings per movie (round 0 of gini_data)

    def to_dict(self) -> dict:
        """The CLI's JSON: parameters, assumptions and the per-round measures."""
        return {
            "policy": self.params.policy,
            "params": asdict(self.params),
            "world": asdict(self.world),
            "assumptions": self.assumptions,
            "noise_sd": self.noise_sd,
            "initial_probe_rmse": self.initial_probe_rmse,
            "initial_gini_data": self.initial_gini_data,
            "true_probe_rmse": self.true_probe_rmse,
            "stopped": self.stopped,
            "seconds": self.seconds,
            "rounds": [asdict(r) for r in self.rounds],
        }


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: Σ(2i − n − 1)·x_i / (n·Σx) over ascending x (i from 1).

    0 when all are equal, (n − 1)/n when everything is on one; 0 for all-zero counts."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def coverage(counts: np.ndarray) -> float:
    """Share of the catalogue with a count above 0."""
    counts = np.asarray(counts)
    return float((counts > 0).mean()) if len(counts) else 0.0


def build_world(dataset: Dataset, params: WorldParams | None = None, device: str = "auto",
                should_stop: Callable[[], bool] | None = None) -> World:  # fmt: skip
    """Split the real ratings, train the true model and the seed system model (fast recipe each)."""
    params = params or WorldParams()
    start, dev = time.perf_counter(), pick_device(device)
    encoded = encode(dataset, "title")
    n, n_users, n_items = len(encoded.rating), encoded.n_users, encoded.n_items
    if n_users * n_items > MAX_CELLS:
        raise ConfigError(
            f"{n_users - 1:,} users x {n_items - 1:,} movies is too large to simulate here "
            f"(at most {MAX_CELLS:,} pairs): use a smaller dataset"
        )
    rng = np.random.default_rng(params.seed)
    users = encoded.user_idx.numpy()
    # the probe: a random share of all real ratings, never seen by either model
    probe = rng.random(n) < params.probe_share
    rest = np.flatnonzero(~probe)
    # the seed: per user, seed_share of their remaining ratings, at least seed_min
    order = rest[np.lexsort((rng.random(len(rest)), users[rest]))]  # by user, shuffled within each
    counts = np.bincount(users[order], minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    wanted = np.minimum(counts, np.maximum(np.ceil(params.seed_share * counts), params.seed_min))
    rank = np.arange(len(order)) - starts[users[order]]
    seed_rows = np.sort(order[rank < wanted[users[order]]])
    probe_rows = np.flatnonzero(probe)
    if len(seed_rows) < 4 * MIN_BS or len(probe_rows) == 0:
        raise ConfigError(f"{n:,} ratings are too few to simulate on (the seed needs a few batches)")
    # the true tastes: the fast recipe on every rating but the probe (smaller batches on small data)
    bs = min(preset("fast").bs, max(MIN_BS, len(seed_rows) // 8))
    config = preset("fast", seed=params.seed, y_range=dataset.rating_scale.y_range, bs=bs)
    true_model, fit = _fit(config, encoded, rest, probe_rows, dev, should_stop)
    true_scores = _all_scores(true_model, n_users, n_items, dev)
    residual = true_scores[users[rest], encoded.item_idx.numpy()[rest]] - encoded.rating.numpy()[rest]
    noise_sd = float(np.sqrt(np.mean(residual**2))) if params.noise_sd is None else float(params.noise_sd)
    # the system as it starts: the fast recipe on the seed
    system, seed_fit = _fit(config, encoded, seed_rows, probe_rows, dev, should_stop)
    popularity = np.bincount(encoded.item_idx.numpy(), minlength=n_items)
    activity = np.bincount(users, minlength=n_users).astype(np.float64)
    activity[0] = -1  # #na# is nobody
    n_active = max(1, round(ACTIVE_SHARE * (n_users - 1)))
    active = np.zeros(n_users, dtype=bool)
    active[np.argsort(-activity, kind="stable")[:n_active]] = True
    scale = dataset.rating_scale
    titles = np.asarray(encoded.items, dtype=object)
    return World(
        params, encoded, titles, true_scores, noise_sd, fit.metrics["rmse"], seed_rows, probe_rows,
        popularity, active, copy.deepcopy(system.state_dict()), seed_fit.metrics["rmse"],
        (scale.low, scale.high, scale.step), config.y_range, bs, dev, time.perf_counter() - start,
    )  # fmt: skip


def run_policy(
    world: World,
    params: PolicyParams,
    callback: Callable[[Round], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Simulation:
    """Run the loop for one policy from the world's seed state; stops early (keeping the finished
    rounds) when should_stop() turns true."""
    start = time.perf_counter()
    n_users, n_items = world.n_users, world.n_items
    if params.k >= n_items - 1:
        raise ConfigError(f"k must be below the {n_items - 1:,} movies of the catalogue, not {params.k}")
    wp = world.params
    rng = np.random.default_rng([wp.seed, POLICIES.index(params.policy), 1])  # a stream per policy
    enc = world.encoded
    users_all, items_all = enc.user_idx.numpy().astype(np.int64), enc.item_idx.numpy().astype(np.int64)
    data_users, data_items = users_all[world.seed_rows], items_all[world.seed_rows]
    data_ratings = enc.rating.numpy()[world.seed_rows]
    # what a user may not be shown: what the system holds for them, their probe movies, and #na#
    blocked = np.zeros((n_users, n_items), dtype=bool)
    blocked[data_users, data_items] = True
    blocked[users_all[world.probe_rows], items_all[world.probe_rows]] = True
    blocked[:, 0] = True
    known = np.bincount(data_items, minlength=n_items)  # ratings per movie in the system's data
    config = preset("fast", seed=wp.seed, y_range=world.y_range, bs=world.bs)
    system = build_model(config, n_users, n_items, world.device)
    system.load_state_dict(world.system_state)
    probe_rows = world.probe_rows
    probe = _tensors(users_all[probe_rows], items_all[probe_rows], enc.rating.numpy()[probe_rows])
    cumulative, first, last = (np.zeros(n_items, dtype=np.int64) for _ in range(3))
    rounds: list[Round] = []
    stopped = False
    for r in range(1, params.rounds + 1):
        if should_stop is not None and should_stop():
            stopped = True
            break
        round_start = time.perf_counter()
        # who is shown a list, and what: the policy over the system's predictions
        users = np.arange(1, n_users)
        if params.users_per_round is not None and params.users_per_round < len(users):
            users = np.sort(rng.choice(users, params.users_per_round, replace=False))
        scores = _all_scores(system, n_users, n_items, world.device)[users]
        shown, filled = _choose(scores, blocked[users], known, params, rng)  # (U, k) each
        # what users consume, and how they rate it
        true = world.true_scores[users[:, None], shown]
        take = (rng.random(shown.shape) < _consume_probability(true, params, world.scale)) & filled
        noisy = true + rng.normal(0.0, world.noise_sd, shown.shape)
        rated = _to_scale(noisy, world.scale)
        new_users = np.broadcast_to(users[:, None], shown.shape)[take]
        new_items, new_ratings = shown[take], rated[take]
        # the data grows
        blocked[new_users, new_items] = True
        known += np.bincount(new_items, minlength=n_items)
        data_users = np.concatenate([data_users, new_users])
        data_items = np.concatenate([data_items, new_items])
        data_ratings = np.concatenate([data_ratings, new_ratings.astype(np.float32)])
        # the system learns from it: a few epochs of the fast recipe from last round's weights
        train = _tensors(data_users, data_items, data_ratings)
        round_config = (
            replace(config, seed=wp.seed + r, epochs=params.finetune_epochs)
            if params.finetune_epochs
            else None
        )
        try:
            probe_rmse = _learn(system, train, probe, round_config, should_stop, world.initial_probe_rmse)
        except TrainingCancelled:
            stopped = True
            break
        # the measures
        counts = np.bincount(shown[filled], minlength=n_items)
        cumulative += counts
        if r == 1:
            first = counts
        last = counts
        n_new = len(new_items)
        rounds.append(
            Round(
                round=r,
                coverage=coverage(cumulative[1:]),
                gini=gini(cumulative[1:]),
                gini_round=gini(counts[1:]),
                gini_data=gini(known[1:]),
                mean_popularity=float(world.popularity[shown[filled]].mean()) if filled.any() else math.nan,
                probe_rmse=probe_rmse,
                top5_share=float(world.active[new_users].mean()) if n_new else 0.0,
                shown=int(filled.sum()),
                consumed=int(n_new),
                mean_new_rating=float(new_ratings.mean()) if n_new else math.nan,
                n_ratings=len(data_ratings),
                seconds=time.perf_counter() - round_start,
            )
        )
        if callback is not None:
            callback(rounds[-1])
    return Simulation(
        params, wp, world.assumptions() | policy_assumptions(params), rounds, world.initial_probe_rmse,
        world.true_probe_rmse, world.noise_sd, first, last, world.titles, world.popularity, stopped,
        time.perf_counter() - start, world.seed_gini_data,
    )  # fmt: skip


def simulate(
    dataset: Dataset,
    params: PolicyParams,
    world: WorldParams | None = None,
    device: str = "auto",
    callback: Callable[[Round], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Simulation:
    """Build the world and run one policy in it (the true model is trained once per call)."""
    built = build_world(dataset, world, device, should_stop)
    return run_policy(built, params, callback, should_stop)


def policy_assumptions(params: PolicyParams) -> dict[str, str]:
    """The policy's and the choice model's assumptions in words."""
    policy = {
        "topk": f"each user is shown the {params.k} unrated movies with the highest predicted rating",
        "explore": f"top-k, with {round(params.explore_share * params.k)} of the {params.k} slots "
        f"filled by {'random' if params.explore_from == 'random' else 'long-tail (less popular half)'} "
        "unrated movies",
        "damped": f"top-k of prediction − {params.damping:g}·log(1 + ratings in the system's data)",
    }[params.policy]
    if params.choice == "logistic":
        choice = f"P(consume) = sigmoid((true rating − {params.center:g}) / {params.temperature:g})"
    else:
        choice = "P(consume) rises linearly with the true rating, from 0 at the scale's low to 1 at its high"
    who = "every user" if params.users_per_round is None else f"{params.users_per_round} random users"
    return {
        "policy": policy,
        "choice": f"{choice} (the true rating before noise); {who} per round",
        "learning": f"after each round the system is fine-tuned for {params.finetune_epochs} epochs "
        "(fast recipe) on all its data, from the previous round's weights",
    }


def exposure_change(sim: Simulation, n: int = 10) -> tuple[list[dict], list[dict]]:
    """The movies whose share of the shown slots rose and fell most from the first round to the last."""
    first = sim.first_exposure / max(sim.first_exposure.sum(), 1)
    last = sim.last_exposure / max(sim.last_exposure.sum(), 1)
    change = (last - first)[1:]
    order = np.argsort(change, kind="stable")

    def rows(idx: np.ndarray) -> list[dict]:
        return [{"title": str(sim.titles[i + 1]), "first_share": float(first[i + 1]),
                 "last_share": float(last[i + 1]), "change": float(change[i]),
                 "popularity": int(sim.popularity[i + 1])} for i in idx]  # fmt: skip

    return rows(order[::-1][:n]), rows(order[:n])


def _choose(scores: np.ndarray, blocked: np.ndarray, known: np.ndarray, params: PolicyParams,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(U, k) movie indices shown to each user under the policy, and (U, k) bool: is the slot filled
    (False where a user has fewer than k movies left to be shown)."""
    scores = np.where(blocked, -np.inf, scores)
    if params.policy == "damped":
        scores = scores - params.damping * np.log1p(known)[None, :]
    n_explore = round(params.explore_share * params.k) if params.policy == "explore" else 0
    top, filled = _top(scores, params.k - n_explore)
    if n_explore == 0:
        return top, filled
    keys = rng.random(scores.shape)  # a uniform random sample = the top n of uniform keys
    keys[blocked] = -np.inf
    np.put_along_axis(keys, top, -np.inf, axis=1)
    if params.explore_from == "longtail":
        keys[:, known > np.median(known[1:])] = -np.inf
    explored, explored_filled = _top(keys, n_explore)
    return np.concatenate([top, explored], axis=1), np.concatenate([filled, explored_filled], axis=1)


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(U, k) column indices of each row's k highest scores, and whether each is finite (a candidate)."""
    if k == 0:
        return np.zeros((len(scores), 0), dtype=np.int64), np.zeros((len(scores), 0), dtype=bool)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    picked = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.isfinite(np.take_along_axis(picked, order, axis=1))


def _consume_probability(true: np.ndarray, params: PolicyParams, scale: tuple) -> np.ndarray:
    if params.choice == "logistic":
        return 1.0 / (1.0 + np.exp(-(true - params.center) / params.temperature))
    low, high, _ = scale
    return np.clip((true - low) / (high - low), 0.0, 1.0)


def _to_scale(values: np.ndarray, scale: tuple) -> np.ndarray:
    """Round to the scale's step (from its low end) and clip to its range."""
    low, high, step = scale
    if step:
        values = low + np.round((values - low) / step) * step
    return np.clip(values, low, high)


def _learn(system: CollabModel, train: tuple, probe: tuple, config, should_stop, frozen_rmse: float) -> float:
    """Fine-tune the system on its grown data (config None: it does not learn); its probe RMSE after."""
    if config is None:
        return frozen_rmse
    result = fit_one_cycle(system, train, probe, config, should_stop=should_stop)
    system.eval()
    return float(result.metrics["rmse"])


def _tensors(users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(np.ascontiguousarray(users, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(items, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(ratings, dtype=np.float32)))  # fmt: skip


def _fit(config, encoded: Encoded, rows: np.ndarray, probe_rows: np.ndarray, device: torch.device,
         should_stop: Callable[[], bool] | None) -> tuple[CollabModel, object]:  # fmt: skip
    """A fresh model of the config fitted on the given real rows, scored on the probe."""
    model = build_model(config, encoded.n_users, encoded.n_items, device)
    users, items, ratings = encoded.user_idx.numpy(), encoded.item_idx.numpy(), encoded.rating.numpy()
    train = _tensors(users[rows], items[rows], ratings[rows])
    probe = _tensors(users[probe_rows], items[probe_rows], ratings[probe_rows])
    result = fit_one_cycle(model, train, probe, config, should_stop=should_stop)
    model.eval()
    return model, result


def _all_scores(model: CollabModel, n_users: int, n_items: int, device: torch.device) -> np.ndarray:
    """(n_users, n_items) predictions for every pair, as float32 NumPy: one matrix product for the
    dot-product models (10x faster than their forward over 1.6M pairs), pair by pair otherwise."""
    if isinstance(model, DotModel):
        user_f, _ = model.factors()
        biases = model.biases()
        return dot_scores(model, user_f, None if biases is None else biases[0]).float().cpu().numpy()
    users = torch.arange(n_users).repeat_interleave(n_items)
    items = torch.arange(n_items).repeat(n_users)
    return predict(model, users, items, chunk=1 << 20).float().cpu().numpy().reshape(n_users, n_items)


def _check_share(x: object, what: str, open_low: bool = False, open_high: bool = False,
                 high: float = 1.0) -> None:  # fmt: skip
    ok = _number(x) and (x > 0 if open_low else x >= 0) and (x < high if open_high else x <= high)
    if not ok:
        low_b, high_b = "(" if open_low else "[", ")" if open_high else "]"
        raise ConfigError(f"{what} must be in {low_b}0, {high:g}{high_b}, not {x!r}")


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

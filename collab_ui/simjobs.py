"""Feedback-loop simulations that outlive a page: one worker thread per (data, parameters), as the
training jobs of jobs.py. The worker makes no Streamlit calls; the page redraws from `progress()` in a
fragment; Stop sets an event the simulation polls between rounds and batches."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace

from collab_core.data import Dataset
from collab_core.errors import TrainingCancelled
from collab_core.simulate import PolicyParams, Round, Simulation, WorldParams, build_world, run_policy
from collab_ui.jobs import RUNNING, BackgroundJob

RunKey = tuple[str, WorldParams, tuple[PolicyParams, ...]]  # data fingerprint, world, policies


@dataclass(frozen=True)
class SimProgress:
    """What the page draws: a consistent copy, safe to read without the lock."""

    status: str  # running, done, stopped or failed
    policies: tuple[PolicyParams, ...]
    stage: str = "starting…"  # what the worker is doing now
    rounds: dict[str, tuple[Round, ...]] = field(default_factory=dict)  # policy -> its rounds so far
    results: tuple[Simulation, ...] = ()  # the finished (or stopped) runs, in order
    world: dict[str, float] = field(default_factory=dict)  # noise sd, probe RMSEs, seed size, build time
    message: str = ""  # why it stopped or failed
    started: float = field(default_factory=time.time)
    elapsed: float = 0.0

    @property
    def total_rounds(self) -> int:
        return sum(p.rounds for p in self.policies)

    @property
    def done_rounds(self) -> int:
        return sum(len(r) for r in self.rounds.values())


class SimulationJob(BackgroundJob):
    """One simulation (one world, one or several policies) in a daemon thread, stoppable from any session."""

    def __init__(self, dataset: Dataset, world: WorldParams, policies: tuple[PolicyParams, ...], device: str):
        self._dataset, self._world, self._device = dataset, world, device
        self._progress = SimProgress(RUNNING, policies)  # Stop keeps the rounds finished so far
        super().__init__("simulate")

    def progress(self) -> SimProgress:
        with self._lock:
            p = self._progress
            elapsed = time.time() - p.started if p.status == RUNNING else p.elapsed
            return replace(p, rounds=dict(p.rounds), elapsed=elapsed)

    def _update(self, **changes) -> None:
        with self._lock:
            self._progress = replace(self._progress, **changes)

    def _on_round(self, policy: str, r: Round) -> None:
        with self._lock:
            p = self._progress
            rounds = {**p.rounds, policy: (*p.rounds.get(policy, ()), r)}
            total = next(x.rounds for x in p.policies if x.policy == policy)
            self._progress = replace(p, rounds=rounds, stage=f"{policy}: round {r.round} of {total} done")

    def _work(self) -> dict:
        self._update(stage="building the world: training the true model and the seed model…")
        world = build_world(self._dataset, self._world, self._device, self._stop.is_set)
        info = {"noise_sd": world.noise_sd, "true_probe_rmse": world.true_probe_rmse,
                "initial_probe_rmse": world.initial_probe_rmse,
                "seed_gini_data": world.seed_gini_data, "seed_ratings": len(world.seed_rows),
                "probe_ratings": len(world.probe_rows), "seconds": world.seconds}  # fmt: skip
        self._update(world=info)
        results: list[Simulation] = []
        for params in self._progress.policies:
            self._update(stage=f"{params.policy}: round 1 of {params.rounds}…")
            sim = run_policy(world, params, lambda r, name=params.policy: self._on_round(name, r),
                             self._stop.is_set)  # fmt: skip
            results.append(sim)
            self._update(results=tuple(results))
            if sim.stopped:
                raise TrainingCancelled(f"stopped during {params.policy}, after {len(sim.rounds)} rounds")
        return {}

    def _finish(self, status: str, message: str = "") -> None:
        with self._lock:
            elapsed = time.time() - self._progress.started
            self._progress = replace(self._progress, status=status, message=message, elapsed=elapsed)
        self._dataset = None  # the registry outlives the run; the data need not


class SimulationRegistry:
    """All simulations of this server by (data, world, policies); a running one is shared."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[RunKey, SimulationJob] = {}

    def start(self, dataset: Dataset, world: WorldParams, policies: tuple[PolicyParams, ...],
              device: str) -> tuple[RunKey, SimulationJob]:  # fmt: skip
        """The running job for these parameters, or a new one."""
        key = (dataset.fingerprint, world, policies)
        with self._lock:
            job = self._jobs.get(key)
            if job is None or job.status != RUNNING:
                job = self._jobs[key] = SimulationJob(dataset, world, policies, device).start()
            return key, job

    def get(self, key: RunKey) -> SimulationJob | None:
        with self._lock:
            return self._jobs.get(key)

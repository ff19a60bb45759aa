"""Snapshots of the map through training at ml-100k: fit-time overhead, store size, animation build time.

    python bench/snapshots_bench.py [--runs 3] [--model embedding_dot_bias]

Fits the seed recipe (fit_one_cycle(5, 5e-3, wd=0.1), bs 64) alternately with and without
snapshots, saves each into a temporary store and times building the Embeddings page's animation.
Figures are printed beside their targets.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collab_core.config import TrainConfig
from collab_core.data import load_dataset
from collab_core.learner import get_or_train
from collab_core.settings import Settings
from collab_core.snapshots import N_ITEMS, Recorder, plan
from collab_core.store import ModelStore
from collab_core.trajectory import trajectory

OVERHEAD_TARGET = 0.03  # at most 3% more fit time
BUILD_TARGET = 1.0  # seconds to build the animation (trajectory + figure)


def recorder_seconds(trained) -> float:
    """What a fit spends on snapshots: the plan's check after every step and the frames' copies."""
    import torch

    keep = plan(trained.encoded, N_ITEMS)
    n_batches = trained.record.history.n_batches // trained.config.epochs
    weights = trained.model.factors()[1]
    start = time.perf_counter()
    recorder = Recorder(keep, trained.config.epochs, n_batches, torch.device("cpu"))
    for step in range(trained.config.epochs * n_batches + 1):
        recorder.take(step, weights)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="embedding_dot_bias")
    args = parser.parse_args()
    from collab_ui.animation import animation_figure  # Streamlit imports: after the core's

    settings = Settings.from_env()
    dataset = load_dataset(data_dir=settings.data_dir and str(settings.data_dir), download=False)
    config = TrainConfig(model=args.model)
    seconds: dict[int, list[float]] = {N_ITEMS: [], 0: []}
    sizes: dict[int, int] = {}
    kept = None
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for n in (N_ITEMS, 0) if run % 2 == 0 else (0, N_ITEMS):  # alternate, so drift hits both
                store = ModelStore(Path(tmp) / f"{n}-{run}")
                trained = get_or_train(dataset, config, store, "cpu", snapshot_items=n)
                seconds[n].append(trained.record.fit_seconds)
                sizes[n] = next(r.size_bytes for r in store.list())  # checkpoint + JSON
                if n:
                    kept = trained
        import sklearn.decomposition  # noqa: F401  (imported by the page's static map before this)

        builds = []
        for _ in range(3):
            start = time.perf_counter()
            figure = animation_figure(trajectory(kept))
            builds.append(time.perf_counter() - start)
        build = statistics.median(builds)
    cost = recorder_seconds(kept)
    with_, without = statistics.median(seconds[N_ITEMS]), statistics.median(seconds[0])
    overhead = with_ / without - 1
    print(f"model {args.model}, seed recipe, {args.runs} runs each (median fit seconds)")
    print(f"fit with snapshots    {with_:.3f} s   without {without:.3f} s   "
          f"overhead {overhead:+.1%} (target <= {OVERHEAD_TARGET:.0%})")  # fmt: skip
    print(f"snapshot work alone   {cost * 1e3:.1f} ms per fit ({cost / without:.2%} of it): the check "
          "after every step and the copies, timed alone (the A/B difference is noise)")  # fmt: skip
    print(f"store size per model  with {sizes[N_ITEMS] / 1e6:.2f} MB ({kept.record.snapshots} frames of "
          f"{N_ITEMS} movies)   without {sizes[0] / 1e6:.2f} MB")  # fmt: skip
    print(f"animation build       {build:.3f} s for {len(figure.frames)} frames, median of 3 "
          f"(target <= {BUILD_TARGET} s)")  # fmt: skip
    print(f"load (uptime)         {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

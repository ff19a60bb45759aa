"""The feedback-loop simulation timed on ml-100k: 10 rounds at k 10 for each policy, each in a fresh
world (true model + seed model trained, as `python -m collab_core simulate` does), against the target
of 60 s per run on 2 cores.

    python bench/simulate_bench.py [--data DIR] [--rounds N] [--k K] [--threads T]

The machine's load (1-minute average) is printed beside each figure: timings taken on a shared
machine are only comparable with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from collab_core.data import load_dataset  # noqa: E402
from collab_core.settings import Settings  # noqa: E402
from collab_core.simulate import POLICIES, PolicyParams, WorldParams, build_world, run_policy  # noqa: E402

TARGET_S = 60.0  # a 10-round run at ml-100k on 2 cores (issue 15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="default: COLLAB_DATA_DIR or the cached ml-100k")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target is for 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = Settings.from_env()
    dataset = load_dataset(args.data, data_dir=settings.data_dir, cache_dir=settings.cache_dir)
    print(f"{dataset.name}: {len(dataset.ratings):,} ratings; {args.rounds} rounds, k {args.k}, "
          f"{args.threads} torch threads, {os.cpu_count()} CPUs seen")  # fmt: skip
    print(f"{'policy':<9}{'world s':>9}{'rounds s':>10}{'total s':>9}{'target s':>10}  {'ok':<4}load (1 min)")
    for policy in POLICIES:
        start = time.perf_counter()
        world = build_world(dataset, WorldParams(), device="cpu")
        sim = run_policy(world, PolicyParams(policy=policy, rounds=args.rounds, k=args.k))
        total = time.perf_counter() - start
        ok = "yes" if total <= TARGET_S else "NO"
        print(f"{policy:<9}{world.seconds:>9.1f}{sim.seconds:>10.1f}{total:>9.1f}{TARGET_S:>10.0f}  {ok:<4}"
              f"{os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

"""Comparing two models timed on ml-100k, with the figures the chapter's lessons are about: weight
decay 0 against 0.1 (embedding_dot_bias, the book's recipe otherwise, same seed) and the dot product
against the neural net (dot_bias against embedding_nn, the book's recipe).

    python bench/compare_bench.py [--data DIR] [--models-dir DIR] [--repeat N]

Models come from --models-dir (default: a throwaway store; each trains once, seconds to a minute on a
busy machine). The time is of compare() on two loaded models: the first call (the models' cached
tables built) and the median of --repeat further calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collab_core.compare import compare  # noqa: E402
from collab_core.config import TrainConfig  # noqa: E402
from collab_core.data import load_dataset  # noqa: E402
from collab_core.learner import get_or_train  # noqa: E402
from collab_core.settings import Settings  # noqa: E402
from collab_core.store import ModelStore  # noqa: E402

TARGET_SECONDS = 2.0  # compare() on two ml-100k models
PAIRS = {
    "embedding_dot_bias wd 0.1 vs wd 0": (TrainConfig(wd=0.1), TrainConfig(wd=0.0)),
    "dot_bias vs embedding_nn": (TrainConfig(model="dot_bias"), TrainConfig(model="embedding_nn")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="default: COLLAB_DATA_DIR, else ../shared/data/ml-100k")
    parser.add_argument("--models-dir", type=Path, help="default: a throwaway store")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = Settings.from_env()
    data = args.data or settings.data_dir or REPO.parent / "shared/data/ml-100k"
    dataset = load_dataset(Path(data))
    load = os.getloadavg()[0]
    print(f"ml-100k compare, load average {load:.1f} on {os.cpu_count()} cores; target {TARGET_SECONDS:g} s")
    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(args.models_dir or Path(tmp))
        for name, configs in PAIRS.items():
            a, b = (get_or_train(dataset, config, store, device="cpu") for config in configs)
            start = time.perf_counter()
            found = compare(a, b)
            first = time.perf_counter() - start
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                compare(a, b)
                times.append(time.perf_counter() - start)
            warm = statistics.median(times) if times else first
            verdict = "ok" if warm <= TARGET_SECONDS else "SLOW"
            print(f"{name:<36} compare {warm:5.2f} s (first {first:.2f} s; target {TARGET_SECONDS:g} s: "
                  f"{verdict})  neighbour overlap {found.stability.mean:.3f}  alignment error "
                  f"{found.alignment.error:.3f}  ({found.alignment.note})", flush=True)  # fmt: skip
            m = found.metrics.table
            print(f"{'':<36} valid RMSE {m.loc['RMSE', 'a']:.4f} vs {m.loc['RMSE', 'b']:.4f}, "
                  f"NDCG@10 {m.loc['NDCG@10', 'a']:.4f} vs {m.loc['NDCG@10', 'b']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()

"""Explanations timed on ml-100k: a prediction's breakdown (dot and NN models), a what-if re-solve, a
user on the map, and the genre readability table of the seed recipe's model.

    python bench/explain_bench.py [--data DIR] [--repeat N]

Models come from a throwaway store (trained once, a few seconds each). Each figure is the median of
--repeat warm calls; the first call of each (cached tables built) is printed beside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from collab_core.analysis import pca_items  # noqa: E402
from collab_core.config import TrainConfig  # noqa: E402
from collab_core.data import load_dataset  # noqa: E402
from collab_core.explain import because_you_rated, breakdown  # noqa: E402
from collab_core.learner import get_or_train  # noqa: E402
from collab_core.maps import axis_labels, genre_readability, user_on_map  # noqa: E402
from collab_core.settings import Settings  # noqa: E402
from collab_core.store import ModelStore  # noqa: E402
from collab_core.whatif import what_if  # noqa: E402

HORROR = ["Shining, The (1980)", "Birds, The (1963)", "Carrie (1976)", "Omen, The (1976)",
          "Nightmare on Elm Street, A (1984)", "American Werewolf in London, An (1981)"]  # fmt: skip
EDITS = dict.fromkeys(HORROR, 5.0)


def timed(label: str, call: Callable[[], object], repeat: int) -> object:
    start = time.perf_counter()
    result = call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    warm = f"{1000 * statistics.median(times):9.1f} ms   (first {1000 * first:.1f} ms)" if times else ""
    print(f"{label:<56}{warm or f'{1000 * first:9.1f} ms'}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="default: COLLAB_DATA_DIR, else ../shared/data/ml-100k")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    settings = Settings.from_env()
    data = args.data or settings.data_dir or REPO.parent / "shared/data/ml-100k"
    dataset = load_dataset(data, data_dir=None, cache_dir=settings.cache_dir)
    print(f"torch threads: {torch.get_num_threads()}; {len(dataset.ratings):,} ratings")
    with tempfile.TemporaryDirectory() as folder:
        store = ModelStore(Path(folder))
        for key in ("embedding_dot_bias", "collab_nn", "embedding_nn"):
            trained = get_or_train(dataset, TrainConfig(model=key), store, device="cpu")
            found = timed(f"{key}: breakdown (user 42, Star Wars)",
                          lambda t=trained: breakdown(t, 42, "Star Wars (1977)"), args.repeat)  # fmt: skip
            print(f"    {found.method[:60]}...; residual {found.residual:.1e}")
            timed(f"{key}: because you rated", lambda t=trained: because_you_rated(t, 42, "Star Wars (1977)"),
                  args.repeat)  # fmt: skip
            timed(f"{key}: what-if re-solve (6 edits, top 10)", lambda t=trained: what_if(t, 42, EDITS),
                  args.repeat)  # fmt: skip
            if key == "embedding_dot_bias":
                pca = timed(f"{key}: PCA map (1000 movies)", lambda t=trained: pca_items(t), 3)
                timed(f"{key}: user on the map", lambda t=trained, p=pca: user_on_map(t, 42, p), args.repeat)
                for label in axis_labels(pca):
                    print(f"    {label.label}")
                table = timed(f"{key}: genre readability", lambda t=trained: genre_readability(t), 0)
                print(table.round(3).to_string())


if __name__ == "__main__":
    main()

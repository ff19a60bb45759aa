"""What side features buy, and how the cross-entropy model compares: ml-100k u1 (u1.base -> u1.test).

Protocol (honest): for each model the number of epochs is chosen among --epochs candidates on a
validation split carved from u1.base (10%, seeded), never on u1.test; the model is then refitted on
all of u1.base with that count and scored once on u1.test. Printed per model: u1 RMSE, RMSE on the
test ratings of "cold" movies (fewer than 5 ratings in u1.base), fit seconds; for dot_bias_ce also
accuracy, log loss and its calibration per level.

    python bench/side_features.py [--data PATH] [--epochs 3,5] [--models side_nn,embedding_nn,dot_bias_ce]

Timings depend on the machine's load: the script prints `uptime`'s load averages beside them.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collab_core.config import FAMILY_DEFAULTS, TrainConfig
from collab_core.data import load_dataset
from collab_core.learner import Trained, fit, fitted_record, model_inputs, prepare
from collab_core.levels import calibration
from collab_core.train import pick_device, predict

COLD = 5  # a movie with fewer training ratings than this is "cold"
INNER_VALID = 0.1  # share of u1.base held out to choose the epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("COLLAB_DATA_DIR"), help="the ml-100k folder")
    parser.add_argument("--epochs", default="3,5", help="epoch counts to choose from on the inner validation")
    parser.add_argument("--models", default="side_nn,embedding_nn,dot_bias_ce")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: small ops, busy machines)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # a second thread spins against other processes on a shared machine
    dataset = load_dataset(args.data)
    device = pick_device(args.device)
    candidates = [int(e) for e in args.epochs.split(",")]
    load = os.getloadavg()[0]
    print(f"ml-100k u1, device {device}, load average {load:.1f} (1 min) on {os.cpu_count()} CPUs; "
          f"epochs chosen among {candidates} on {INNER_VALID:.0%} of u1.base")  # fmt: skip
    print(f"{'model':<14}{'epochs':>7}{'u1 RMSE':>10}{'cold RMSE':>11}{'cold n':>8}{'fit s':>8}  extra")
    for key in args.models.split(","):
        # the recipe every model shares (the chapter's), then the family's own defaults
        config = TrainConfig(model=key, split="u1", **FAMILY_DEFAULTS.get(key, {}))
        print(row(dataset, config, candidates, device), flush=True)


def row(dataset, config: TrainConfig, candidates: list[int], device: torch.device) -> str:
    encoded, base, test = prepare(dataset, config)
    inputs = model_inputs(config, dataset, encoded)
    rng = np.random.default_rng(config.seed)
    held = rng.random(len(base)) < INNER_VALID
    inner = {}
    for epochs in candidates if len(candidates) > 1 else []:  # choose on the inner validation only
        _, result = fit(dataclasses.replace(config, epochs=epochs), encoded, base[~held], base[held], device,
                        inputs=inputs)  # fmt: skip
        inner[epochs] = result.metrics["mse"]
    best = min(inner, key=inner.get) if inner else candidates[0]  # one candidate: nothing to choose
    final_config = dataclasses.replace(config, epochs=best)
    start = time.perf_counter()
    model, result = fit(final_config, encoded, base, test, device, inputs=inputs)
    seconds = time.perf_counter() - start
    # the test fold's cold movies: fewer than COLD ratings in u1.base
    items = encoded.item_idx.numpy()
    counts = np.bincount(items[base], minlength=encoded.n_items)
    cold = test[counts[items[test]] < COLD]
    users, movies, ratings = (t[torch.from_numpy(cold.astype(np.int64))] for t in
                              (encoded.user_idx.long(), encoded.item_idx.long(), encoded.rating))  # fmt: skip
    cold_rmse = math.sqrt(float(((predict(model, users, movies).cpu() - ratings) ** 2).mean()))
    extra = f"inner valid MSE by epochs {', '.join(f'{e}: {m:.4f}' for e, m in inner.items()) or '(fixed)'}"
    m = result.metrics
    if "accuracy" in m:
        record = fitted_record("bench", final_config, dataset, encoded, base, test, result)
        trained = Trained(final_config, model, dataset, encoded, base, test, record)
        cal = calibration(trained)
        levels = " ".join(
            f"{r.level:g}★ {r.predicted:.3f}/{r.observed:.3f}" for r in cal.per_level.itertuples()
        )
        extra += (f"\n{'':<14}accuracy {m['accuracy']:.4f}, log loss {m['log_loss']:.4f}, ECE {cal.ece:.4f}; "
                  f"per level predicted/observed: {levels}")  # fmt: skip
    return (f"{config.model:<14}{best:>7}{m['rmse']:>10.4f}{cold_rmse:>11.4f}{len(cold):>8}{seconds:>8.1f}  "
            f"{extra}")  # fmt: skip


if __name__ == "__main__":
    main()

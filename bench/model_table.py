"""Every model key on ml-100k's canonical folds: test RMSE, the mean over folds and fit seconds, as a
markdown table (README's model table), plus each autoencoder's curve of test RMSE against fit time.

    python bench/model_table.py                        # every key, u1
    python bench/model_table.py --keys autorec,glocal_k --folds u1,u2,u3,u4,u5

Each key trains with its family's default recipe (config.preset("book", model=KEY): the chapter's
fit_one_cycle(5, 5e-3, wd=0.1) for its seven, FAMILY_DEFAULTS for the others) on uN.base and is
scored on uN.test. Nothing is chosen on uN.test: the chapter's models run a fixed number of epochs;
the autoencoders choose their round on 5% of uN.base held out (autofit.py; glocal_k then refits the
chosen rounds on all of uN.base), and the test RMSE of each round is only printed (the curve). Times
are wall-clock on this machine, under its load at the time (printed beside them), with torch on 2
threads as the product runs.

Targets (issue 14): glocal_k RMSE <= 0.895 in <= 120 s of fitting on u1; autorec <= 0.905 in <= 30 s.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collab_core.autofit import PRETRAIN_SHARE
from collab_core.config import FOLDS, preset
from collab_core.data import load_dataset
from collab_core.learner import get_or_train
from collab_core.nets import MODELS, AutoEncoder
from collab_core.train import EpochEvent

WHAT = {
    "dot": "the book's first dot product, no output range",
    "dot_range": "dot product squashed into (0, 5.5)",
    "dot_bias": "dot product + user and movie biases (the chapter's DotProductBias)",
    "dot_bias_params": "the same from raw parameters (the book's create_params)",
    "embedding_dot_bias": "fastai's EmbeddingDotBias, the chapter's collab_learner (the default)",
    "collab_nn": "concatenated embeddings -> MLP (the chapter's CollabNN)",
    "embedding_nn": "fastai's EmbeddingNN, layers [100, 50] (collab_learner(use_nn=True))",
    "side_nn": "the MLP with user and movie side features (cold start)",
    "dot_bias_ce": "ratings as classes: cross-entropy over the rating levels, expected value",
    "autorec": "I-AutoRec: each movie's ratings reconstructed through 500 sigmoid units",
    "glocal_k": "GLocal-K-style: kernelized 2x500 autoencoder, global 3x3 convolution fine-tuning",
}
TARGETS = {"glocal_k": (0.895, 120.0), "autorec": (0.905, 30.0)}  # (RMSE, fit seconds) on u1


def load() -> str:
    """The machine's load averages, as `uptime` gives them."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def fit(dataset, key: str, fold: str, device: str) -> tuple[float, float, list[EpochEvent]]:
    """(test RMSE, fit seconds, the epoch/round events) of the key's default recipe on one fold."""
    events: list[EpochEvent] = []

    def note(event: object) -> None:
        events.append(event)
        if isinstance(event, EpochEvent) and event.holdout_loss is not None:  # a round, as it ends
            held, test = math.sqrt(event.holdout_loss), math.sqrt(event.valid_loss)
            print(f"  {key} {fold} round {event.epoch + 1}: {event.elapsed:.1f} s, held-out RMSE {held:.4f}, "
                  f"test {test:.4f}", flush=True)  # fmt: skip

    config = preset("book", model=key, split=fold)
    trained = get_or_train(dataset, config, None, device, callback=note)
    rounds = [e for e in events if isinstance(e, EpochEvent)]
    return trained.record.metrics.rmse, trained.record.fit_seconds, rounds


def at_time(rounds: list[EpochEvent], seconds: float) -> float | None:
    """The test RMSE of the round an honest fit stopped at `seconds` would keep: the best held-out
    loss among the rounds (of the chosen stage) finished by then; None before one has."""
    done = [e for e in rounds if e.elapsed <= seconds]
    return math.sqrt(min(done, key=lambda e: e.holdout_loss).valid_loss) if done else None


def curve(key: str, rounds: list[EpochEvent], pretrain: int) -> None:
    """Round, stage, seconds, train / held-out / test RMSE of every round (test: reported only); the
    refit's rounds (on every training rating, so no held-out loss) after the choosing ones."""
    print(f"\n{key} on u1, round by round (test RMSE reported, never used to choose):")
    print(f"{'round':>5} {'stage':<9}{'seconds':>8} {'train':>7} {'held-out':>9} {'test':>7}")
    n_choosing = sum(e.holdout_loss is not None for e in rounds)
    for n, e in enumerate(rounds):
        k = n if n < n_choosing else n - n_choosing
        stage = "pretrain" if k < pretrain else ("finetune" if pretrain else "train")
        if n >= n_choosing:
            stage = "refit"
        held = f"{math.sqrt(e.holdout_loss):>9.4f}" if n < n_choosing else f"{'-':>9}"
        print(f"{n + 1:>5} {stage:<9}{e.elapsed:>8.1f} {math.sqrt(e.train_loss):>7.4f} "
              f"{held} {math.sqrt(e.valid_loss):>7.4f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", default=",".join(MODELS), help="model keys, comma-separated")
    parser.add_argument("--folds", default="u1", help="folds, comma-separated (u1..u5)")
    parser.add_argument("--data", default=os.environ.get("COLLAB_DATA_DIR"), help="the ml-100k folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    keys = [k.strip() for k in args.keys.split(",") if k.strip()]
    folds = [f.strip() for f in args.folds.split(",") if f.strip()]
    bad = [k for k in keys if k not in MODELS] + [f for f in folds if f not in FOLDS]
    if bad or not args.data:
        sys.exit(f"error: unknown key or fold {bad[0]!r}" if bad else "error: give --data or COLLAB_DATA_DIR")
    torch.set_num_threads(args.threads)
    dataset = load_dataset(Path(args.data))
    print(f"start: {load()}, torch threads {torch.get_num_threads()}, device {args.device}", flush=True)
    rows = []
    for key in keys:
        results = {}
        for fold in folds:
            rmse, seconds, rounds = fit(dataset, key, fold, args.device)
            results[fold] = (rmse, seconds)
            print(f"{key:<20}{fold:<4} rmse {rmse:.4f}  fit {seconds:6.1f} s  ({load()})", flush=True)
            if fold == "u1" and issubclass(MODELS[key], AutoEncoder):
                epochs = preset("book", model=key).epochs
                pretrain = max(1, round(PRETRAIN_SHARE * epochs)) if key == "glocal_k" else 0
                curve(key, rounds, pretrain)
                if key in TARGETS:
                    target, budget = TARGETS[key]
                    chosen = [e for e in rounds if e.holdout_loss is not None][pretrain:]  # not the refit
                    within, at60 = at_time(chosen, budget), at_time(chosen, 60.0)
                    print(f"{key}: u1 RMSE {rmse:.4f} in {seconds:.1f} s (target <= {target} in <= "
                          f"{budget:.0f} s); chosen within {budget:.0f} s: {_fmt(within)}; "
                          f"within 60 s: {_fmt(at60)}")  # fmt: skip
        rows.append((key, results))
    print(f"\nend: {load()}\n")
    print("| key | what it is for | u1 RMSE | mean RMSE (folds) | fit s (u1) |")
    print("|---|---|---|---|---|")
    for key, results in rows:
        u1 = results.get("u1")
        mean = sum(r for r, _ in results.values()) / len(results)
        span = f"{mean:.4f} ({','.join(results)})" if len(results) > 1 else "-"
        u1_rmse, u1_s = (f"{u1[0]:.4f}", f"{u1[1]:.1f}") if u1 else ("-", "-")
        print(f"| `{key}` | {WHAT.get(key, '')} | {u1_rmse} | {span} | {u1_s} |")


def _fmt(x: float | None) -> str:
    return "no round finished" if x is None else f"{x:.4f}"


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\n(bench took {time.perf_counter() - start:.0f} s)")

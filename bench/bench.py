"""Speed and scale benchmarks: prints one table of figure, target, measured, and the ratio to a
plain PyTorch loop of the same recipe measured in the same run. Its last lines are the summary.

    python bench/bench.py                 # ml-100k figures (about 3 minutes on 2 cores)
    python bench/bench.py --scale         # + the MovieLens-25M-shaped run (about 10 more minutes)

Data: --data PATH, else COLLAB_DATA_DIR, else ../shared/data/ml-100k beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collab_core import analysis, ranking  # noqa: E402
from collab_core.config import TrainConfig, preset  # noqa: E402
from collab_core.data import Dataset, load_dataset  # noqa: E402
from collab_core.learner import fit, get_or_train, prepare, rows_to_tensors  # noqa: E402
from collab_core.nets import MODELS, EmbeddingDotBias  # noqa: E402
from collab_core.optim import HYPER, one_cycle  # noqa: E402
from collab_core.settings import Settings  # noqa: E402

SEEDS = (1, 2, 3)
ROWS: list[tuple[str, str, str, str, bool | None]] = []  # figure, target, measured, ratio, met


def row(figure: str, target: str, measured: str, ratio: str = "", met: bool | None = None) -> None:
    ROWS.append((figure, target, measured, ratio, met))
    mark = {True: "ok", False: "MISSED", None: ""}[met]
    print(f"  {figure:<46} {target:<12} {measured:<22} {ratio:<14} {mark}", flush=True)


def plain_reference(dataset: Dataset, seed: int) -> tuple[float, float]:
    """The recipe as a plain PyTorch loop: nn.Embedding model, torch.optim.AdamW, one shuffled
    batch at a time from in-memory tensors, no DataLoader. Returns (fit seconds, valid MSE)."""
    config = TrainConfig(seed=seed)
    encoded, train_rows, valid_rows = prepare(dataset, config)
    users, items, ratings = rows_to_tensors(encoded, train_rows)
    valid = rows_to_tensors(encoded, valid_rows)
    torch.manual_seed(seed)
    model = EmbeddingDotBias(encoded.n_users, encoded.n_items, 50)
    betas = (HYPER.beta1[0], HYPER.beta2)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, betas=betas, eps=HYPER.eps, weight_decay=0.1)
    n_batches, generator = len(ratings) // 64, torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for epoch in range(5):
        perm = torch.randperm(len(ratings), generator=generator)
        for b in range(n_batches):
            lr, beta1 = one_cycle((epoch * n_batches + b) / (5 * n_batches), 5e-3)
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr, (beta1, HYPER.beta2)
            idx = perm[b * 64 : (b + 1) * 64]
            loss = nn.functional.mse_loss(model(users[idx], items[idx]), ratings[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        mse = float(nn.functional.mse_loss(model(valid[0], valid[1]), valid[2]))
    return seconds, mse


def ours(dataset: Dataset, config: TrainConfig) -> tuple[float, float]:
    """(fit seconds, valid MSE) of collab_core's loop."""
    _, result = fit(config, *prepare(dataset, config), torch.device("cpu"))
    return result.fit_seconds, result.valid_loss[-1]


def timed(fn, repeat: int = 30) -> float:
    """Median milliseconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def bench_ml100k(dataset: Dataset) -> None:
    print(f"\n{'figure':<48}{'target':<13}{'measured':<23}{'vs plain loop':<15}")
    ref = [plain_reference(dataset, s) for s in SEEDS]
    ref_s, ref_mse = statistics.mean(t for t, _ in ref), statistics.mean(m for _, m in ref)
    row("plain PyTorch loop: fit, 5 epochs bs 64", "(reference)", f"{ref_s:.2f} s", "1.0x")
    row("plain PyTorch loop: valid MSE (seeds 1-3)", "(reference)", f"{ref_mse:.4f}")

    book = [ours(dataset, TrainConfig(seed=s)) for s in SEEDS]
    book_s, book_mse = statistics.mean(t for t, _ in book), statistics.mean(m for _, m in book)
    row(
        "seed recipe: fit, 5 epochs bs 64",
        "<= 1.5 s",
        f"{book_s:.2f} s",
        f"{ref_s / book_s:.1f}x faster",
        book_s <= 1.5,
    )
    row(
        "seed recipe: valid MSE (seeds 1-3)",
        "<= 0.83",
        f"{book_mse:.4f}",
        f"{book_mse - ref_mse:+.4f}",
        book_mse <= 0.83,
    )

    fast = [ours(dataset, preset("fast", seed=s)) for s in SEEDS]
    fast_s, fast_mse = statistics.mean(t for t, _ in fast), statistics.mean(m for _, m in fast)
    row("fast preset: fit", "<= 1 s", f"{fast_s:.2f} s", f"{ref_s / fast_s:.1f}x faster", fast_s <= 1.0)
    row(
        "fast preset: valid MSE (seeds 1-3)",
        "<= 0.815",
        f"{fast_mse:.4f}",
        f"{fast_mse - ref_mse:+.4f}",
        fast_mse <= 0.815,
    )

    for key in MODELS:
        wd = 0.01 if key == "collab_nn" else 0.1
        seconds, mse = ours(dataset, TrainConfig(model=key, wd=wd, seed=42))
        row(
            f"model {key} (wd {wd}): fit / valid MSE",
            "(table)",
            f"{seconds:.2f} s / {mse:.4f}",
            f"{ref_s / seconds:.1f}x",
        )

    trained = get_or_train(dataset, preset("fast"))
    user = trained.encoded.users[42]
    recommend_ms = timed(lambda: ranking.recommend(trained, user, n=10))
    row("recommend: one user over all items", "<= 20 ms", f"{recommend_ms:.1f} ms", "", recommend_ms <= 20)
    nearest_ms = timed(lambda: analysis.nearest_items(trained, "Star Wars (1977)", n=10))
    row("nearest movies to one movie", "<= 10 ms", f"{nearest_ms:.1f} ms", "", nearest_ms <= 10)
    pca_ms = timed(lambda: analysis.pca_items(trained, n_items=1000), repeat=10)
    row("PCA of the 1,000 most-rated movies", "<= 200 ms", f"{pca_ms:.1f} ms", "", pca_ms <= 200)


SCALE_SCRIPT = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
from collab_core.data import load_dataset
from collab_core.config import TrainConfig
from collab_core.learner import fit, prepare
import torch
start = time.perf_counter(); dataset = load_dataset(sys.argv[1]); load_s = time.perf_counter() - start
config = TrainConfig(sparse=True, bs=8192, epochs=1, lr=1e-2, wd=0.01)
start = time.perf_counter(); encoded, train_rows, valid_rows = prepare(dataset, config)
prepare_s = time.perf_counter() - start
model, result = fit(config, encoded, train_rows, valid_rows, torch.device("cpu"))
print(json.dumps({"ratings": len(dataset.ratings), "load_s": load_s, "prepare_s": prepare_s,
                  "epoch_s": result.fit_seconds, "valid_mse": result.valid_loss[-1],
                  "params": sum(p.numel() for p in model.parameters()),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def bench_scale(folder: Path) -> None:
    if not (folder / "ratings.csv").exists():
        print(f"writing the 25M-shaped data to {folder} ...", flush=True)
        subprocess.run([sys.executable, "-m", "collab_core", "synth", str(folder)], check=True, cwd=REPO)
    out = subprocess.run(
        [sys.executable, "-c", SCALE_SCRIPT, str(folder), str(REPO)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    row(
        f"25M-shaped: load {figures['ratings']:,} ratings",
        "<= 30 s",
        f"{figures['load_s']:.1f} s",
        "",
        figures["load_s"] <= 30,
    )
    row("25M-shaped: encode + split", "", f"{figures['prepare_s']:.1f} s")
    row(
        f"25M-shaped: 1 epoch, sparse, {figures['params'] / 1e6:.1f}M params",
        "<= 20 s",
        f"{figures['epoch_s']:.1f} s (MSE {figures['valid_mse']:.3f})",
        "",
        figures["epoch_s"] <= 20,
    )
    row(
        "25M-shaped: peak RSS", "<= 6 GB", f"{figures['peak_rss_gb']:.2f} GB", "", figures["peak_rss_gb"] <= 6
    )


def main() -> None:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="ml-100k folder (default: COLLAB_DATA_DIR or ../shared/data/ml-100k)")
    parser.add_argument("--scale", action="store_true", help="also run the MovieLens-25M-shaped benchmark")
    parser.add_argument("--scale-dir", type=Path, default=settings.cache_dir / "synth-25m")
    args = parser.parse_args()
    data = args.data or settings.data_dir or REPO.parent / "shared/data/ml-100k"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}"
    )
    bench_ml100k(load_dataset(data))
    if args.scale:
        bench_scale(args.scale_dir)
    met = [r for r in ROWS if r[4] is not None]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"\nsummary: {sum(bool(r[4]) for r in met)} of {len(met)} targets met (peak RSS here {rss:.2f} GB)")
    for figure, target, measured, ratio, ok in met:
        print(f"  {'ok    ' if ok else 'MISSED'} {figure}: {measured} (target {target}) {ratio}".rstrip())


if __name__ == "__main__":
    main()

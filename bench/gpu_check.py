"""The CUDA path, proven on a machine with a GPU: every model key trains two epochs on `cuda`, a
checkpoint saved there loads on the CPU with the same predictions, and the seed recipe's fit time
on the GPU stands beside the CPU's (same machine, same run). Prints one line per figure and, with
--out, writes them as JSON.

    python bench/gpu_check.py --data PATH_TO_ML100K [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collab_core import analysis, foldin, ranking  # noqa: E402
from collab_core.config import MODEL_KEYS, TrainConfig  # noqa: E402
from collab_core.data import load_ml100k  # noqa: E402
from collab_core.learner import find_lr, get_or_train, load_trained  # noqa: E402
from collab_core.store import ModelStore  # noqa: E402
from collab_core.train import predict  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an ml-100k folder")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu to try the script itself")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: CUDA is not available here", file=sys.stderr)
        return 2
    out: dict = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else "none",
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "models": {},
    }
    print(f"torch {out['torch']} on {out['gpu']}, {out['cpu_threads']} CPU threads", flush=True)
    dataset = load_ml100k(args.data)
    failures = 0

    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(Path(tmp))
        # every model key, two epochs of the seed recipe on cuda; saved, then opened on the CPU
        for key in MODEL_KEYS:
            config = TrainConfig(model=key, epochs=2, wd=0.01 if key == "collab_nn" else 0.1)
            try:
                trained = get_or_train(dataset, config, store, device=args.device)
                on_gpu = next(trained.model.parameters()).device.type
                users, items, _ = trained.tensors(trained.valid_rows)
                gpu_preds = predict(trained.model, users, items).cpu()
                loaded = load_trained(dataset, trained.record, store, device="cpu")
                cpu_preds = predict(loaded.model, users, items)
                gap = float((gpu_preds - cpu_preds).abs().max())
                # the analyses and the lr finder on the model where it lives
                user, movie = 42, "Star Wars (1977)"
                top = ranking.recommend(trained, user, n=5)
                near = analysis.nearest_items(trained, movie, n=5)
                pca = analysis.pca_items(trained, n_items=200)
                new_user = foldin.fold_in_user(trained, {movie: 5.0}, n=5)
                if trained.model.has_bias:
                    analysis.bias_table(trained, n=5)
                found = find_lr(dataset, config, args.device)
                row = {
                    "device": trained.record.device,
                    "params_on": on_gpu,
                    "valid_loss": trained.record.history.valid_loss,
                    "fit_seconds": trained.record.fit_seconds,
                    "cpu_reload_max_abs_diff": gap,
                    "analyses": [len(top), len(near), list(pca.coords.shape), len(new_user)],
                    "lr_suggestion": found.suggestion,
                    "ok": on_gpu == args.device and gap < 1e-4,
                }
            except Exception as e:  # noqa: BLE001 -- report every model, whatever breaks
                row = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            failures += not row["ok"]
            out["models"][key] = row
            print(f"{key:<20} {json.dumps(row)}", flush=True)

    # the seed recipe, fit time on the GPU beside the CPU's (fastai's fit_one_cycle(5, 5e-3, wd=0.1), bs 64)
    for device in dict.fromkeys((args.device, "cpu")):
        start = time.perf_counter()
        trained = get_or_train(dataset, TrainConfig(), None, device=device)
        wall = time.perf_counter() - start
        out[f"seed_recipe_{device}"] = {
            "fit_seconds": trained.record.fit_seconds,
            "wall_seconds": wall,
            "valid_mse": trained.record.metrics.mse,
        }
        print(f"seed recipe on {device}: {json.dumps(out[f'seed_recipe_{device}'])}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    print("all model keys ok" if not failures else f"{failures} model keys FAILED", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""UMAP on the movie map: import time, a fresh process's first call (numba's kernels compiled from
nothing, or loaded from its disk cache) and later calls, on 1,000 movies and on every ml-100k movie,
and on 25M-shaped samples (50-wide vectors, as many movies as the page would map); printed beside
maps.umap_seconds' estimate and the page's 10 s target for a map on request.

    python bench/umap_bench.py [--sizes 5000,10000]   (COLLAB_DATA_DIR: the ml-100k folder)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import umap  # noqa: F401
t_import = time.perf_counter() - t0
from collab_core.config import TrainConfig
from collab_core.data import load_dataset
from collab_core.learner import get_or_train
from collab_core.maps import umap_items
from collab_core.settings import current
from collab_core.store import ModelStore
import numpy as np
s = current()
dataset = load_dataset(None, data_dir=s.data_dir, cache_dir=s.cache_dir, download=False)
trained = get_or_train(dataset, TrainConfig(), ModelStore(sys.argv[1]), device="cpu")
out = {"import_s": t_import}
for n in json.loads(sys.argv[2]):
    times = []
    for _ in range(2):
        t = time.perf_counter()
        xy = umap_items(trained, n_items=n)[["x", "y"]].to_numpy()
        times.append(time.perf_counter() - t)
    out[str(n)] = {"first_s": times[0], "later_s": times[1], "finite": bool(np.isfinite(xy).all())}
print(json.dumps(out))
"""

SAMPLE = r"""
import json, sys, time
import numpy as np, umap
t = time.perf_counter()
umap.UMAP(n_neighbors=15, metric="cosine", random_state=42, n_jobs=1).fit_transform(
    np.random.default_rng(1).standard_normal((300, 50)).astype("float32"))  # the process's JIT, untimed below
out = {"jit_s": time.perf_counter() - t}
for n in json.loads(sys.argv[1]):
    x = np.random.default_rng(0).standard_normal((n, 50)).astype("float32")
    x[: n // 2] += 1.5  # two loose groups, not one ball
    t = time.perf_counter()
    umap.UMAP(n_neighbors=15, min_dist=0.1, metric="cosine", random_state=42, n_jobs=1).fit_transform(x)
    out[str(n)] = time.perf_counter() - t
print(json.dumps(out))
"""


def child(code: str, *args: str, cache: str | None = None) -> dict:
    env = dict(os.environ)
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = cache  # an empty folder: numba compiles every kernel afresh
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode:
        sys.exit(f"error: the timed process failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,10000", help="25M-shaped sample sizes")
    args = parser.parse_args()
    from collab_core.maps import umap_seconds

    print(f"load: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as models, tempfile.TemporaryDirectory() as cache:
        sizes = json.dumps([1000, 1664])
        for label, where in (("cold numba cache", cache), ("warm numba cache", None)):
            found = child(CHILD, models, sizes, cache=where)
            print(f"[{label}] import umap: {found['import_s']:.2f} s")
            for n in (1000, 1664):
                row = found[str(n)]
                print(f"  {n:>6,} movies: first call {row['first_s']:6.2f} s, later {row['later_s']:6.2f} s "
                      f"(estimate {umap_seconds(n):.1f} / {umap_seconds(n, first=False):.1f} s; target 10 s; "
                      f"finite {row['finite']})")  # fmt: skip
    if Path("/tmp/ml25m/ratings.csv").is_file():
        sizes = [int(s) for s in args.sizes.split(",") if s]
        found = child(SAMPLE, json.dumps(sizes))
        jit = found["jit_s"]
        print(f"25M-shaped samples: the process's first UMAP (300 movies, with the JIT) {jit:.1f} s")
        for n in sizes:
            print(f"25M-shaped sample of {n:>6,} movies (50 wide, after the JIT): {found[str(n)]:6.2f} s "
                  f"(estimate {umap_seconds(n, first=False):.1f} s)")  # fmt: skip


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"bench took {time.perf_counter() - start:.0f} s")

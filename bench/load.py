"""Loading benchmark: a ratings folder cold (parsed), cold with the columnar cache written, and from
that cache, each in a fresh process; its peak RSS and bytes per rating; ml-100k beside it. Each
figure is printed beside its target (issue 11: cold <= 10 s, cached <= 2 s at 25M ratings).

    python bench/load.py /tmp/ml25m [--repeat 3] [--ml100k ../shared/data/ml-100k]

A 25M-shaped folder: `python -m collab_core synth /tmp/ml25m` (about 40 s, 650 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collab_core.data import LOAD_BYTES_PER_RATING  # noqa: E402

# one load in a fresh process: seconds to a Dataset with its fingerprint (what the app needs to
# look up a model), peak RSS, and the RSS before loading (Python, pandas and pyarrow imported)
ONE_LOAD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import collab_core.data as data
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024
before = rss()
cache = Path(sys.argv[3]) if sys.argv[3] else None
start = time.perf_counter()
dataset = data.load_path(Path(sys.argv[2]), cache_dir=cache)
loaded = time.perf_counter() - start
fingerprint = dataset.fingerprint
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "load_s": loaded, "ratings": len(dataset.ratings), "rss_before": before,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "dtypes": {k: str(v) for k, v in dataset.ratings.dtypes.items()}}))
"""


def one_load(path: Path, cache: Path | None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", ONE_LOAD, str(REPO), str(path), str(cache or "")],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def line(figure: str, target: str, measured: str, met: bool | None = None) -> None:
    mark = "" if met is None else ("ok" if met else "MISSED")
    print(f"{figure:<44} {target:>10} {measured:>22}  {mark}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a ratings folder, file or zip (e.g. a 25M-shaped folder)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is shown")
    parser.add_argument("--ml100k", type=Path, default=REPO.parent / "shared/data/ml-100k")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.1f} at the start; median of {args.repeat} runs\n")
    line("figure", "target", "measured")
    cold = [one_load(args.data, None) for _ in range(args.repeat)]
    n = cold[0]["ratings"]
    seconds = median_of(cold, "seconds")
    line(f"cold: {n:,} ratings + fingerprint", "<= 10 s", f"{seconds:.1f} s", seconds <= 10)
    with tempfile.TemporaryDirectory(prefix="collab-bench-") as tmp:
        writes, warm = [], []
        for i in range(args.repeat):
            cache = Path(tmp) / str(i)
            writes.append(one_load(args.data, cache))
            warm.append(one_load(args.data, cache))
        line("cold, writing the columnar cache", "", f"{median_of(writes, 'seconds'):.1f} s")
        seconds = median_of(warm, "seconds")
        line("second open, from the cache", "<= 2 s", f"{seconds:.2f} s", seconds <= 2)
    peak = median_of(cold, "peak_rss") / 1e9
    line("cold: peak RSS", "", f"{peak:.2f} GB")
    per_rating = (median_of(cold, "peak_rss") - median_of(cold, "rss_before")) / n
    guard = LOAD_BYTES_PER_RATING  # what the memory check before loading assumes
    line("cold: peak growth per rating", f"<= {guard} B", f"{per_rating:.0f} bytes", per_rating <= guard)
    line("cache: peak RSS", "", f"{median_of(warm, 'peak_rss') / 1e9:.2f} GB")
    if args.ml100k.is_dir():
        small = [one_load(args.ml100k, None) for _ in range(args.repeat)]
        line("ml-100k: load + fingerprint", "", f"{median_of(small, 'seconds') * 1000:.0f} ms")
    print(f"\nratings dtypes: {cold[0]['dtypes']}; load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

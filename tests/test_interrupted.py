"""Interrupted work: `kill -9` while training and at every step of saving leaves no half-written
entry and the next run works; an entry written for other data is a miss; downloads cut short or
wrong, through the CLI and a local HTTP server, leave no partial dataset and a retry works."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collab_core.cli import main
from collab_core.config import TrainConfig
from collab_core.data import Dataset
from collab_core.learner import get_or_train
from collab_core.store import ModelStore, StoreWarning

REPO = Path(__file__).resolve().parents[1]
ZIP = Path(os.environ.get("COLLAB_DATA_ZIP") or REPO.parent / "shared/data/ml-100k.zip")
SMALL = ("--model", "dot_bias", "--factors", "8", "--bs", "32", "--epochs", "2")
# the CLI's main() with the store's atomic write hooked to stop (sleep) at one point of a save and
# say so in a file; a test-only wrapper: the product reads no such variable
HOOKED_CLI = """
import os, sys, time
from pathlib import Path
import collab_core.learner as learner
import collab_core.store as store
from collab_core.train import EpochEvent
point, ready = os.environ["COLLAB_TEST_KILL_POINT"], Path(os.environ["COLLAB_TEST_READY"])
real, real_fit = store._atomic_write, learner.fit_one_cycle

def stop_here():
    ready.touch()
    time.sleep(600)

def hooked(path, write):
    def write_then_stop(f):
        write(f)
        if point == "inside " + path.suffix:  # the temporary file is written, not yet renamed
            f.flush()
            stop_here()
    if point == "before " + path.suffix:
        stop_here()
    result = real(path, write_then_stop)
    if point == "after " + path.suffix:
        stop_here()
    return result

def fit(model, train, valid, config, callback=None, should_stop=None, **options):
    def stop_after_the_first_epoch(event):
        if callback is not None:
            callback(event)
        if point == "training" and isinstance(event, EpochEvent):
            stop_here()
    return real_fit(model, train, valid, config, stop_after_the_first_epoch, should_stop, **options)

store._atomic_write, learner.fit_one_cycle = hooked, fit
from collab_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def ratings_csv(folder: Path, n_users: int = 60, n_items: int = 30) -> Path:
    rng = np.random.default_rng(0)
    pairs = [(u, i) for u in range(1, n_users + 1) for i in range(1, n_items + 1) if rng.random() < 0.5]
    rows = "\n".join(f"{u},{i},{(u * i) % 5 + 1}" for u, i in pairs)
    path = folder / "ratings.csv"
    path.write_text("user,item,rating\n" + rows + "\n")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_consistent(root: Path) -> None:
    """Every JSON names a checkpoint that is there with that hash; a checkpoint without its JSON is
    refused (a miss with a warning), never listed or loaded as valid."""
    store = ModelStore(root)
    jsons = sorted(p for p in root.glob("*.json") if not p.name.startswith("."))  # not the CLI's memo
    for js in jsons:
        meta = json.loads(js.read_text())
        ckpt = js.with_suffix(".pt")
        assert ckpt.is_file() and sha256(ckpt) == meta["checkpoint_sha256"], js.name
    assert {r.key for r in store.list()} == {js.stem for js in jsons}
    for ckpt in root.glob("*.pt"):
        if not ckpt.with_suffix(".json").exists():
            with pytest.warns(StoreWarning, match="unusable and will be retrained"):
                assert store.load(ckpt.stem) is None


def next_run(data: Path, root: Path, args: tuple[str, ...], capsys) -> dict:
    """The next (uninterrupted) run, in-process: it must work."""
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--models-dir", str(root), *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def killed_run(data: Path, root: Path, point: str, args: tuple[str, ...], tmp: Path) -> dict:
    """Start a CLI training, SIGKILL it at `point`, report what it had said and the store's files."""
    ready = tmp / f"ready-{point.replace(' ', '-')}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "COLLAB_TEST_KILL_POINT": point,
        "COLLAB_TEST_READY": str(ready),
    }
    command = [
        sys.executable,
        "-c",
        HOOKED_CLI,
        "train",
        "--data",
        str(data),
        "--models-dir",
        str(root),
        *args,
    ]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{point} never reached"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return {"files": sorted(p.name for p in root.iterdir()) if root.exists() else []}


# where each kill lands, and what the store holds then (keys masked)
KILL_POINTS = {
    "training": ([".KEY.lock"], SMALL),  # after the first of two epochs
    "inside .pt": ([".KEY.lock", ".KEY.pt.TMP"], SMALL),  # checkpoint in its temp file
    "before .json": ([".KEY.lock", "KEY.pt"], SMALL),  # checkpoint in place, no JSON yet
    "inside .json": ([".KEY.json.TMP", ".KEY.lock", "KEY.pt"], SMALL),  # JSON in its temp file
    "after .json": ([".KEY.lock", "KEY.json", "KEY.pt"], SMALL),  # complete: must be reused
}


def masked(names: list[str]) -> list[str]:
    out = []
    for name in names:
        stem = name.lstrip(".").split(".")[0]
        name = name.replace(stem, "KEY") if len(stem) == 16 else name
        out.append(name if not name.endswith(".tmp") else name.rsplit(".", 2)[0] + ".TMP")
    return sorted(out)


@pytest.fixture(scope="module")
def kills(tmp_path_factory) -> dict[str, tuple[Path, Path, dict]]:
    """One killed CLI training per point, in parallel, each with its own store."""

    def one(point: str, tmp: Path):
        data, root = ratings_csv(tmp), tmp / "models"
        return data, root, killed_run(data, root, point, KILL_POINTS[point][1], tmp)

    folders = {point: tmp_path_factory.mktemp("kill") for point in KILL_POINTS}
    with ThreadPoolExecutor(len(KILL_POINTS)) as pool:
        futures = {point: pool.submit(one, point, folders[point]) for point in KILL_POINTS}
        return {point: future.result() for point, future in futures.items()}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_9_leaves_no_half_written_entry_and_the_next_run_works(point, kills, capsys):
    data, root, killed = kills[point]
    expected, args = KILL_POINTS[point]
    assert masked(killed["files"]) == expected
    assert_consistent(root)
    result = next_run(data, root, args, capsys)
    assert result["from_store"] is (point == "after .json")  # only a complete entry is reused
    assert_consistent(root)
    names = sorted(p.name for p in root.iterdir())
    assert masked([n for n in names if not n.startswith(".fingerprints")]) == [
        ".KEY.lock",
        "KEY.json",
        "KEY.pt",
    ]
    assert ModelStore(root).load(result["key"]) is not None
    print(f"\nkill -9 {point}: left {killed['files']}; next run exit 0, from_store={result['from_store']}")


def test_kill_9_while_retraining_a_damaged_entry(tmp_path, capsys):
    """An old JSON must not survive next to a new checkpoint: the save removes it first."""
    data, root = ratings_csv(tmp_path), tmp_path / "models"
    key = next_run(data, root, SMALL, capsys)["key"]
    ckpt = root / f"{key}.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # damaged: the JSON no longer matches
    killed_run(data, root, "before .json", SMALL, tmp_path)  # retrains, killed before its JSON
    assert not (root / f"{key}.json").exists() and ckpt.stat().st_size > 100
    assert_consistent(root)
    assert next_run(data, root, SMALL, capsys)["from_store"] is False
    assert_consistent(root)


# --- an entry written for other data -------------------------------------------------------------


def dataset(seed: int) -> Dataset:
    """40 users x 20 items, every pair rated: same shapes for every seed, different ratings."""
    rng = np.random.default_rng(seed)
    users, items = np.meshgrid(np.arange(1, 41), np.arange(1, 21), indexing="ij")
    ratings = pd.DataFrame(
        {
            "user": users.ravel(),
            "item": items.ravel(),
            "rating": rng.integers(1, 6, users.size).astype("float32"),
        }
    )
    titles = pd.DataFrame(
        {"title": [f"Film {i}" for i in range(1, 21)]}, index=pd.Index(range(1, 21), name="item")
    )
    return Dataset(f"seed{seed}", ratings, titles)


def test_an_entry_written_for_other_data_is_a_miss_and_retrained(tmp_path):
    store, config = ModelStore(tmp_path), TrainConfig(epochs=1, bs=32, n_factors=4)
    a, b = dataset(1), dataset(2)
    trained_a = get_or_train(a, config, store, device="cpu")
    key_b = get_or_train(b, config, None, device="cpu").key  # where b's model would live
    for suffix in (".pt", ".json"):  # a's entry copied under b's key, its JSON naming that key
        (tmp_path / f"{key_b}{suffix}").write_bytes((tmp_path / f"{trained_a.key}{suffix}").read_bytes())
    meta = json.loads((tmp_path / f"{key_b}.json").read_text())
    (tmp_path / f"{key_b}.json").write_text(json.dumps({**meta, "key": key_b}))
    assert store.load(key_b) is not None  # the files alone look fine: the same shapes, a valid hash
    with pytest.warns(StoreWarning, match=f"model {key_b} .* trained on other data \\(seed1\\)"):
        trained_b = get_or_train(b, config, store, device="cpu")
    assert not trained_b.from_store and trained_b.record.data.fingerprint == b.fingerprint
    assert get_or_train(b, config, store, device="cpu").from_store  # and now it is b's own


# --- downloads through the CLI --------------------------------------------------------------------


class Server:
    """A local HTTP server answering by path: /good, /truncated, /html, /short; counts requests."""

    def __init__(self, good: bytes, short: bytes):
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body, length, kind = {
                    "/good": (good, len(good), "application/zip"),
                    "/truncated": (good[: len(good) // 3], len(good), "application/zip"),
                    "/html": (b"<html><body>Please log in</body></html>", 39, "text/html"),
                    "/short": (short, len(short), "application/zip"),
                }[self.path]
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"


def short_zip(tmp: Path) -> bytes:
    """The real archive with 1,000 ratings cut from u.data: a zip, but not MovieLens 100k."""
    out = tmp / "short.zip"
    with zipfile.ZipFile(ZIP) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/u.data"):
                data = b"".join(data.splitlines(keepends=True)[:-1000])
            dst.writestr(info, data)
    return out.read_bytes()


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    if not ZIP.is_file():
        pytest.skip(f"real ml-100k.zip not found (set COLLAB_DATA_ZIP); looked at {ZIP}")
    srv = Server(ZIP.read_bytes(), short_zip(tmp_path))
    thread = threading.Thread(target=srv.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    thread.join(timeout=5)


def test_downloads_cut_short_or_wrong_leave_nothing_and_a_retry_works(server, tmp_path):
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "XDG_CACHE_HOME": str(cache),
        "COLLAB_MODELS_DIR": str(tmp_path / "m"),
    }
    env.pop("COLLAB_DATA_DIR", None)

    def train(path: str) -> subprocess.CompletedProcess:
        run_env = {**env, "COLLAB_ML100K_URL": server.base + path}
        command = [sys.executable, "-m", "collab_core", "train", "--epochs", "1", "--bs", "4096", "--no-save"]
        return subprocess.run(command, env=run_env, capture_output=True, text=True, timeout=300)

    size = ZIP.stat().st_size
    failures = {
        "/truncated": rf"error: download interrupted: got {size // 3:,} of {size:,} bytes; try again",
        "/html": r"error: the download from .*/html is not a zip archive \(got text/html, 39 bytes\)",
        "/short": r"error: the download from .*/short is not MovieLens 100k: .* has 99,000 ratings",
    }
    for path, message in failures.items():
        done = train(path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        errors = [line for line in done.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and re.match(message, errors[0]), done.stderr  # on a line of its own
        assert sorted(p.name for p in (cache / "collab-explorer").iterdir()) == []  # no partial dataset
    done = train("/good")
    assert done.returncode == 0, done.stderr
    kept = sorted(p.name for p in (cache / "collab-explorer").iterdir())
    assert kept == ["ml-100k", "recipes.json"]  # the dataset, and this machine's measured speed
    assert (cache / "collab-explorer" / "ml-100k" / "u.data").stat().st_size > 1_900_000
    assert server.requests == ["/truncated", "/html", "/short", "/good"]

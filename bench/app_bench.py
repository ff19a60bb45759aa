"""The app as an analyst meets it, timed in headless Chromium: prints each figure beside its target.

    python bench/app_bench.py cold                  # a cold server's first visit at ml-100k
    python bench/app_bench.py scale PATH            # Path source -> dataset -> default model -> each page
    python bench/app_bench.py scale PATH --models-dir DIR --model KEY   # every page on a stored model

`cold` starts `streamlit run` with an empty model store and times, from opening the page, the first
thing drawn and the default model being ready. `scale` points the sidebar's Path source at a
folder (e.g. `python -m collab_core synth /tmp/ml25m`), waits for the dataset and the default model
(up to --model-timeout seconds), then opens every page and times it to interactive; the server's
peak resident memory (VmHWM) is read from /proc, and, sampled every 0.2 s, the proportional set
size (PSS: shared pages split between the sharers) of the server and the processes it forks to
train (collab_ui.jobs), summed: the memory the app holds, without counting copy-on-write twice.
Data for `cold`: --data, else COLLAB_DATA_DIR, else ../shared/data/ml-100k beside the checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collab_core.settings import Settings  # noqa: E402

IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
DRAWN = '() => !document.querySelector(\'[data-testid="stSkeleton"], [data-stale="true"]\')'
FIRST_PAINT = '[data-testid="stCaptionContainer"], [data-testid="stMarkdownContainer"]'  # any text
MODEL_READY = '[data-testid="stSidebar"] :text("valid MSE")'
PAGES = ("", "train", "biases", "embeddings", "recommend")
TITLES = dict(zip(PAGES, ("Ratings", "Train", "Biases", "Embeddings", "Recommend")))
READY = {  # the last thing each page draws: the page is not ready before it is there
    "": '.st-key-ratings_table [data-testid="stDataFrame"]',
    "train": ':text("Compare stored models")',
    "biases": '.st-key-high_users [data-testid="stDataFrame"]',
    "embeddings": '.st-key-pca_high [data-testid="stDataFrame"]',
    "recommend": '.st-key-new_user_recs [data-testid="stDataFrame"]',
}
PATH_BOX = "/data/ml-100k or ratings.csv"


def row(
    figure: str, target: str, measured: float | None, unit: str = "s", limit: float | None = None
) -> None:
    shown = "not reached" if measured is None else f"{measured:.2f} {unit}"
    met = "" if limit is None else ("ok" if measured is not None and measured <= limit else "MISSED")
    print(f"  {figure:<44} {target:<10} {shown:<14} {met}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_gb(pid: int, field: str = "VmHWM") -> float:
    """The process's peak resident memory (VmHWM; VmRSS: now), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def _pss_gb(pid: int) -> float:
    """The PSS of a process and its descendants (0 for one that has ended)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total / 1024**2


class MemorySampler:
    """The peak of the server's and its children's summed PSS, sampled in a thread while in use."""

    def __init__(self, pid: int, every: float = 0.2):
        import threading

        self.pid, self.every, self.peak = pid, every, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.every):
            self.peak = max(self.peak, _pss_gb(self.pid))

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


@contextlib.contextmanager
def app_server(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    """`streamlit run` headless on a free loopback port; yields (url, process) once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "streamlit_app.py"),
               "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
               "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]  # fmt: skip
    log = Path(tempfile.mkstemp(prefix="collab-app-", suffix=".log")[1])
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"the server did not start; see {log}") from None
                time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        process.kill()


@contextlib.contextmanager
def browser_page() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium on PATH (Debian: apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            yield page
        finally:
            browser.close()


def wait_interactive(page, timeout_ms: int, ready: str | None = None) -> None:
    """The script has ended and nothing is stale; with `ready`, that element is drawn first (the
    script may not have started yet when a click or a key press returns)."""
    if ready is not None:
        page.wait_for_selector(ready, timeout=timeout_ms)
    page.wait_for_selector(IDLE, timeout=timeout_ms)
    page.wait_for_function(DRAWN, timeout=timeout_ms)


def enter_path(page, folder: Path) -> None:
    page.get_by_role("radio", name="Path").click()
    box = page.get_by_placeholder(PATH_BOX)
    box.fill(str(folder))
    box.press("Enter")


def cold(data: Path, timeout: float) -> None:
    with tempfile.TemporaryDirectory() as models:
        env = {"COLLAB_DATA_DIR": str(data), "COLLAB_MODELS_DIR": models}
        with app_server(env) as (url, process), browser_page() as page:
            start = time.perf_counter()
            page.goto(url)
            page.wait_for_selector(FIRST_PAINT, timeout=timeout * 1000)
            first = time.perf_counter() - start
            page.wait_for_selector(MODEL_READY, timeout=timeout * 1000)
            model = time.perf_counter() - start
            rss = peak_rss_gb(process.pid)
    print(f"cold first visit at ml-100k ({data}):")
    row("first thing drawn after opening", "<= 2 s", first, limit=2.0)
    row("default model ready after opening", "<= 6 s", model, limit=6.0)
    row("server peak RSS", "", rss, "GB")


def scale(folder: Path, timeout: float, model_timeout: float, models_dir: str | None) -> None:
    with contextlib.ExitStack() as stack:
        models = models_dir or stack.enter_context(tempfile.TemporaryDirectory())
        url, process = stack.enter_context(app_server({"COLLAB_MODELS_DIR": models}))
        memory = stack.enter_context(MemorySampler(process.pid))
        page = stack.enter_context(browser_page())
        page.goto(url)
        wait_interactive(page, timeout * 1000)
        page.get_by_role("radio", name="Path").click()
        box = page.get_by_placeholder(PATH_BOX)
        box.fill(str(folder))
        start = time.perf_counter()
        box.press("Enter")
        loaded = model = None
        with contextlib.suppress(Exception):
            page.wait_for_selector('[data-testid="stSidebar"] :text(" ratings · ")', timeout=timeout * 1000)
            loaded = time.perf_counter() - start
            page.wait_for_selector(MODEL_READY, timeout=model_timeout * 1000)
            model = time.perf_counter() - start
        pages = {}
        if model is not None:
            for name in PAGES:
                t = time.perf_counter()
                page.goto(f"{url}/{name}")
                with contextlib.suppress(Exception):
                    enter_path(page, folder)
                    wait_interactive(page, timeout * 1000, READY[name])
                    pages[name or "ratings"] = time.perf_counter() - t
        rss = peak_rss_gb(process.pid)
    print(f"the app over {folder}:")
    row("dataset shown after entering the path", "<= 10 s", loaded, limit=10.0)
    row("default model ready after entering the path", "", model)
    for name in ("ratings", *PAGES[1:]):
        row(f"page {name} interactive (new session)", "<= 3 s", pages.get(name), limit=3.0)
    row("server peak RSS", "<= 3 GB", rss, "GB", limit=3.0)
    row("server + training process, peak PSS", "<= 3 GB", memory.peak, "GB", limit=3.0)


def scale_model(folder: Path, timeout: float, models_dir: str, key: str) -> None:
    """The pages on a stored model, each opened by its URL (?source=path&data_path=...&model=KEY: no
    default model is trained): on a fresh server, the dataset shown and then the model opened (on
    Biases); each page in a new session; each page reached from the sidebar; the server's memory."""
    query = urllib.parse.urlencode({"source": "path", "data_path": str(folder), "model": key})
    with contextlib.ExitStack() as stack:
        url, process = stack.enter_context(app_server({"COLLAB_MODELS_DIR": models_dir}))
        page = stack.enter_context(browser_page())
        start = time.perf_counter()
        page.goto(f"{url}/biases?{query}")  # the first session reads the dataset and opens the model
        loaded = opened = None
        with contextlib.suppress(Exception):
            page.wait_for_selector('[data-testid="stSidebar"] :text(" ratings · ")', timeout=timeout * 1000)
            loaded = time.perf_counter() - start
            wait_interactive(page, timeout * 1000, READY["biases"])
            opened = time.perf_counter() - start - loaded
        fresh, switched = {}, {}
        for name in PAGES:  # a new session on each page
            t = time.perf_counter()
            page.goto(f"{url}/{name}?{query}")
            with contextlib.suppress(Exception):
                wait_interactive(page, timeout * 1000, READY[name])
                fresh[name] = time.perf_counter() - t
        for name in (*PAGES[1:], PAGES[0]):  # then each page from the sidebar, in that session
            t = time.perf_counter()
            with contextlib.suppress(Exception):
                page.locator('[data-testid="stSidebarNavLink"]', has_text=TITLES[name]).click()
                wait_interactive(page, timeout * 1000, READY[name])
                switched[name] = time.perf_counter() - t
        chosen = None
        other = _another_model(models_dir, key)
        if other is not None:  # on Biases, choose another model of the dataset in the sidebar
            page.locator('[data-testid="stSidebarNavLink"]', has_text="Biases").click()
            wait_interactive(page, timeout * 1000, READY["biases"])
            t = time.perf_counter()
            page.locator(
                '[data-testid="stSidebar"] [data-testid="stSelectbox"]', has_text="Active model"
            ).click()
            page.get_by_role("option", name=other.label).click()
            with contextlib.suppress(Exception):
                page.wait_for_selector(
                    f'[data-testid="stSidebar"] :text("({other.key[:6]})")', timeout=timeout * 1000
                )
                wait_interactive(page, timeout * 1000, READY["biases"])
                chosen = time.perf_counter() - t
        idle = peak_rss_gb(process.pid, "VmRSS")
        rss = peak_rss_gb(process.pid)
    print(f"the app over {folder} with stored model {key} (load: {os.getloadavg()[0]:.2f}):")
    row("dataset shown, its URL opened on a cold server", "<= 10 s", loaded, limit=10.0)
    row("model opened and Biases drawn after that", "<= 3 s", opened, limit=3.0)
    for name in PAGES:
        row(f"page {TITLES[name]} interactive (new session)", "<= 3 s", fresh.get(name), limit=3.0)
    for name in PAGES:
        row(f"page {TITLES[name]} interactive (page switch)", "<= 3 s", switched.get(name), limit=3.0)
    if other is not None:
        row(f"another stored model ({other.key[:6]}) chosen, Biases drawn", "<= 3 s", chosen, limit=3.0)
    row("server RSS at the end", "", idle, "GB")
    row("server peak RSS", "<= 3 GB", rss, "GB", limit=3.0)


def _another_model(models_dir: str, key: str):
    """A second stored model of the same dataset, if the store has one (its record)."""
    from collab_core.store import ModelStore

    records = ModelStore(Path(models_dir)).list()
    data = next((r.data.fingerprint for r in records if r.key == key), None)
    return next((r for r in records if r.data.fingerprint == data and r.key != key), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("cold")
    p.add_argument("--data", type=Path)
    p.add_argument("--timeout", type=float, default=120)
    p = sub.add_parser("scale")
    p.add_argument("folder", type=Path)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--model-timeout", type=float, default=600)
    p.add_argument("--models-dir", help="a model store to use (default: an empty one)")
    p.add_argument("--model", help="a stored model's key: open every page on it (needs --models-dir)")
    args = parser.parse_args()
    if args.what == "cold":
        data = args.data or Settings.from_env().data_dir or REPO.parent / "shared/data/ml-100k"
        cold(Path(data), args.timeout)
    elif args.model:
        if not args.models_dir:
            parser.error("--model needs --models-dir, the store that holds it")
        scale_model(args.folder, args.timeout, args.models_dir, args.model)
    else:
        scale(args.folder, args.timeout, args.model_timeout, args.models_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A real `streamlit run streamlit_app.py` for the browser tests: headless, on a free loopback port,
with the given model store, its output in test-artifacts/<log_name>."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(models: Path, log_name: str, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """(url, process) of a server on `models` that answers /_stcore/health; stopped on exit."""
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), "--server.headless",
               "true", "--server.port", str(port), "--server.address", "127.0.0.1",
               "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]  # fmt: skip
    environ = {**os.environ, **env, "COLLAB_MODELS_DIR": str(models)}
    with open(ARTIFACTS / log_name, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, f"streamlit exited early; see {ARTIFACTS / log_name}"
            assert time.monotonic() < deadline, "streamlit did not answer /_stcore/health in 60 s"
            time.sleep(0.25)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()

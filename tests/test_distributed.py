"""Two DDP processes on 127.0.0.1 (gloo) reach the single-process validation loss."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd

from collab_core.synth import SynthSpec, write_synth

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(data: Path, models: Path, launcher: list[str], extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLLAB_MODELS_DIR": str(models)}
    args = ["train", "--data", str(data), "--epochs", "2", "--bs", "64", "--json", "--no-save", *extra]
    out = subprocess.run([*launcher, "-m", "collab_core", *args], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_two_processes_match_one(tmp_path):
    data = write_synth(tmp_path / "synth", SynthSpec(n_users=400, n_items=300, n_ratings=20_000, seed=3))
    single = _train(data, tmp_path / "m1", [sys.executable], ["--device", "cpu"])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]  # fmt: skip
    double = _train(data, tmp_path / "m2", torchrun, ["--distributed"])
    assert double["device"] == "cpu"
    assert len(double["valid_loss"]) == 2
    assert abs(double["valid_loss"][-1] - single["valid_loss"][-1]) < 0.01
    # and it learned: its error is well below the ratings' variance (a constant guess's MSE)
    variance = pd.read_csv(data / "ratings.csv")["rating"].var()
    assert double["valid_loss"][-1] < 0.8 * variance


def test_distributed_without_torchrun_is_a_usage_error(tmp_path):
    data = write_synth(tmp_path / "synth", SynthSpec(n_users=100, n_items=100, n_ratings=2_500, seed=1))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = str(REPO)
    command = [
        sys.executable,
        "-m",
        "collab_core",
        "train",
        "--data",
        str(data),
        "--distributed",
        "--no-save",
    ]
    out = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: --distributed needs torchrun")
    assert "Traceback" not in out.stderr

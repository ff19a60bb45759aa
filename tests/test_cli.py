"""The command line as scripts see it: `python -m collab_core` in a subprocess, exit codes, JSON."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [(u, i) for u in range(1, 41) for i in range(1, 31)]


class Cli:
    """Runs `python -m collab_core` from the repo root with its own model store and cache."""

    def __init__(self, tmp_path: Path, data_dir: Path | None = None):
        self.models = tmp_path / "models"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "COLLAB_MODELS_DIR": str(self.models),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),  # never the user's cache, never a download
            "OMP_NUM_THREADS": "1",  # tiny models on a shared 2-core machine: a second thread only spins
        }
        self.env.pop("COLLAB_DATA_DIR", None)
        if data_dir is not None:
            self.env["COLLAB_DATA_DIR"] = str(data_dir)

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "collab_core", *args]
        return subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600)

    def stored(self) -> list[str]:
        return sorted(p.name for p in self.models.iterdir()) if self.models.exists() else []


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def ml100k_cli(tmp_path, ml100k_dir) -> Cli:
    return Cli(tmp_path, ml100k_dir)


@pytest.fixture
def table(tmp_path) -> Path:
    """A ratings CSV with a header: 40 users x 30 items, ratings from 1 to 5."""
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,rating\n" + "\n".join(f"{u},{i},{(u * i) % 5 + 1}" for u, i in PAIRS) + "\n")
    return path


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_train_json(ml100k_cli):
    done = ml100k_cli("train", "--epochs", "1", "--json", "--no-save")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "valid_loss", "time"]
    assert lines[1].split()[0] == "0"
    result = last_json(done.stdout)
    assert result["model"] == "embedding_dot_bias"
    assert isinstance(result["train_loss"], list) and len(result["train_loss"]) == 1
    assert isinstance(result["valid_loss"], list) and len(result["valid_loss"]) == 1
    assert 0.8 < result["valid_loss"][0] < 1.0  # one epoch of the seed recipe on ml-100k
    assert result["valid_rmse"] == pytest.approx(math.sqrt(result["valid_loss"][0]))
    assert result["fit_seconds"] > 0 and result["device"] == "cpu"
    assert ml100k_cli.stored() == []  # --no-save leaves the store empty


def test_train_a_table_with_columns_by_position(cli, tmp_path):
    path = tmp_path / "ratings.tsv"  # no header; item, timestamp, user, rating; one duplicate pair
    rows = [f"{i}\t{1000 + i}\t{u}\t{(u * i) % 5 + 1}" for u, i in PAIRS]
    path.write_text("\n".join([*rows, rows[0]]) + "\n")
    columns = ["--user-col", "2", "--item-col", "0", "--rating-col", "3", "--timestamp-col", "1"]
    done = cli(
        "train", "--data", str(path), *columns, "--model", "dot_bias", "--epochs", "2", "--bs", "32", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "warning: 1 duplicate (user, item) pairs kept, as fastai does"
    result = last_json(done.stdout)
    assert result["model"] == "dot_bias" and len(result["valid_loss"]) == 2
    assert result["config"]["n_factors"] == 50 and result["config"]["bs"] == 32
    assert len([name for name in cli.stored() if name.endswith(".pt")]) == 1  # saved without --no-save


BAD_CSV = "user,item,rating\n" + "\n".join(f"{u},{u},3" for u in range(1, 20)) + "\n4,4,x\n"
ERRORS = {
    "bad_model": (["train", "--model", "svd"], r"argument --model: invalid choice: 'svd'"),
    "bad_path": (["train", "--data", "{tmp}/nowhere"], r"no such file or folder: .*nowhere"),
    "malformed_csv": (["train", "--data", "{tmp}/bad.csv"], r"rating column 'rating' has a non-number 'x'"),
    "factors_0": (
        ["train", "--data", "{table}", "--factors", "0"],
        r"n_factors must be an integer from 1 to 1024",
    ),
    "unknown_fold": (["evaluate", "--data", "{table}", "--folds", "u1,u9"], r"unknown fold u9"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_input_exits_2_with_one_error_line(case, cli, table, tmp_path):
    (tmp_path / "bad.csv").write_text(BAD_CSV)
    args, message = ERRORS[case]
    done = cli(*[a.format(tmp=tmp_path, table=table) for a in args])
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert re.search(message, done.stderr), done.stderr
    assert cli.stored() == []


@pytest.mark.slow
def test_evaluate_folds(ml100k_cli):
    done = ml100k_cli("evaluate", "--folds", "u1,u2", "--epochs", "1", "--bs", "256", "--json")
    assert done.returncode == 0, done.stderr
    result = last_json(done.stdout)
    assert [row["fold"] for row in result["folds"]] == ["u1", "u2"]
    for row in result["folds"]:
        assert 0.85 < row["rmse"] < 1.2 and 0.65 < row["mae"] < row["rmse"]
        assert row["rmse"] == pytest.approx(math.sqrt(row["mse"]))
    assert result["mean_rmse"] == pytest.approx(sum(r["rmse"] for r in result["folds"]) / 2)
    assert result["mean_mae"] == pytest.approx(sum(r["mae"] for r in result["folds"]) / 2)
    table = done.stdout.splitlines()
    assert table[0].split() == ["fold", "rmse", "mae", "fit_s"] and table[3].split()[0] == "mean"
    assert len([name for name in ml100k_cli.stored() if name.endswith(".pt")]) == 2  # one model per fold


def test_lr_find_json(ml100k_cli):
    done = ml100k_cli("lr-find", "--json")
    assert done.returncode == 0, done.stderr
    result = last_json(done.stdout)
    assert 1e-7 < result["suggestion"] < 10
    assert result["lrs"][0] == pytest.approx(1e-7) and len(result["lrs"]) == len(result["losses"]) <= 100
    assert f"suggested lr: {result['suggestion']:.2e}" in done.stdout
    assert ml100k_cli.stored() == []

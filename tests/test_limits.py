"""Limits and numerics: divergence stops a run with one clear line and never reaches the store;
absurd configs are refused with their allowed range; the upload, size and row limits agree and
speak clearly; training estimates its memory first and refuses what the machine cannot hold."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from collab_core import cli, data, download, learner, memory, tables
from collab_core.config import TrainConfig
from collab_core.data import load_path
from collab_core.errors import ConfigError, TrainingDiverged
from collab_core.learner import build_model, get_or_train
from collab_core.nets import MODELS, create_model
from collab_core.store import ModelStore
from collab_core.train import fit_one_cycle

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def table(tmp_path) -> Path:
    """600 ratings of 40 users on 30 items, 1..5 stars."""
    rng = np.random.default_rng(0)
    pairs = [(u, i) for u in range(1, 41) for i in range(1, 31) if rng.random() < 0.5]
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,rating\n" + "\n".join(f"{u},{i},{(u + i) % 5 + 1}" for u, i in pairs) + "\n")
    return path


def stored(root: Path) -> list[str]:
    return sorted(
        p.name for p in root.glob("*") if p.suffix in (".pt", ".json") and not p.name.startswith(".")
    )


# --- divergence -------------------------------------------------------------------------------------


def test_a_nan_loss_stops_the_cli_with_one_line_and_nothing_stored(table, tmp_path):
    """lr 10 with wd 3: the decoupled decay factor 1 - lr·wd = -29 blows the weights up to NaN."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLLAB_MODELS_DIR": str(tmp_path / "models")}
    command = [sys.executable, "-m", "collab_core", "train", "--data", str(table), "--lr", "10", "--wd", "3",
               "--epochs", "2", "--bs", "16"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert re.fullmatch(
        r"error: the loss became nan at batch \d+ \(lr [\d.e-]+\): lower the learning rate\n", done.stderr
    )  # fmt: skip  (no NumPy overflow warnings before it)
    assert stored(tmp_path / "models") == []


def test_an_exploding_finite_loss_stops_the_cli_too(table, tmp_path, capsys):
    """Adam keeps the plain dot model's loss finite at lr 10; it still explodes, and is stopped."""
    args = ["train", "--data", str(table), "--model", "dot", "--lr", "10", "--wd", "0", "--epochs", "3"]
    assert cli.main([*args, "--bs", "16", "--models-dir", str(tmp_path)]) == 2
    assert re.match(r"error: the loss rose from [\d.]+ to [\d.e+]+ by batch \d+", capsys.readouterr().err)
    assert stored(tmp_path) == []


def test_weights_that_blow_up_behind_a_finite_loss_stop_the_run():
    """A saturated sigmoid keeps the loss finite whatever the weights: the weights are checked."""
    rng = np.random.default_rng(0)
    users, items = torch.from_numpy(rng.integers(1, 20, 400)), torch.from_numpy(rng.integers(1, 10, 400))
    ratings = torch.from_numpy(rng.integers(1, 6, 400).astype(np.float32))
    config = TrainConfig(model="dot_range", n_factors=4, epochs=2, wd=0.0, bs=32)
    model = build_model(config, 20, 10, torch.device("cpu"))
    with torch.no_grad():
        model.item_factors.weight[0] = math.inf  # the #na# row: in no batch, so the loss stays finite
    train, valid = (users[:320], items[:320], ratings[:320]), (users[320:], items[320:], ratings[320:])
    with pytest.raises(
        TrainingDiverged, match=r"the weights \(item_factors\.weight\) became infinite or NaN"
    ):
        fit_one_cycle(model, train, valid, config)


def test_the_store_refuses_a_non_finite_model(tmp_path):
    model = create_model("dot_bias", 5, 5, 2)
    with torch.no_grad():
        model.user_factors.weight[1, 0] = math.nan
    with pytest.raises(Exception, match=r"non-finite weights \(user_factors\.weight\); it was not saved"):
        ModelStore(tmp_path).save("k" * 16, model, {})
    assert stored(tmp_path) == []


# --- absurd configs, through the command line ----------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--factors", "1025", r"n_factors must be an integer from 1 to 1024, not 1025"),
        ("--factors", "-3", r"n_factors must be an integer from 1 to 1024, not -3"),
        ("--epochs", "0", r"epochs must be an integer from 1 to 1000, not 0"),
        ("--epochs", "1001", r"epochs must be an integer from 1 to 1000, not 1001"),
        ("--bs", "0", r"bs must be an integer from 1 to 1000000, not 0"),
        ("--bs", "-64", r"bs must be an integer from 1 to 1000000, not -64"),
        ("--lr", "-0.01", r"lr must be in \(0, 10\], not -0\.01"),
        ("--lr", "nan", r"lr must be in \(0, 10\], not nan"),
        ("--lr", "1e6", r"lr must be in \(0, 10\], not 1000000\.0"),
        ("--wd", "inf", r"wd must be in \[0, 100\], not inf"),
    ],
)
def test_absurd_configs_are_refused_with_their_range(flag, value, message, table, tmp_path, capsys):
    for command in ("train", "lr-find", "recommend"):
        extra = ["--user", "1"] if command == "recommend" else []
        code = cli.main([command, "--data", str(table), "--models-dir", str(tmp_path), flag, value, *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and re.match("error: " + message, err), (command, err)
    assert list(tmp_path.iterdir()) == [table]  # refused before any data was read or stored


# --- the size and row limits ---------------------------------------------------------------------


def test_upload_limit_is_set_and_within_the_loaders_limits():
    """What Streamlit accepts as an upload, the loaders accept by size: a zip or a table."""
    config_file = REPO / ".streamlit" / "config.toml"
    if not config_file.is_file():
        pytest.skip("no .streamlit/config.toml in this checkout")
    upload_mb = tomllib.loads(config_file.read_text())["server"]["maxUploadSize"]
    assert 1 <= upload_mb <= 1024
    assert upload_mb * 2**20 <= min(download.MAX_ZIP_BYTES, data.MAX_FILE_BYTES)


def test_the_row_limit_stops_reading_instead_of_filling_memory(tmp_path, monkeypatch):
    path = tmp_path / "many.csv"
    rows = np.arange(200_000)
    pd.DataFrame({"user": rows % 997, "item": rows // 997, "rating": rows % 5 + 1}).to_csv(path, index=False)
    monkeypatch.setattr(data, "MAX_ROWS", 1000)
    read = []
    real = tables.read_table

    def spy(*args, **kwargs):
        read.append(len(table := real(*args, **kwargs)))
        return table

    monkeypatch.setattr(tables, "read_table", spy)
    with pytest.raises(
        data.DataError, match=r"many\.csv has more than 1,000 ratings, the limit; use a sample"
    ):
        load_path(path)
    assert read == []  # refused from its size before any row was parsed (not the file's 200,000)


# --- memory --------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(MODELS))
def test_parameter_count_is_exact_without_allocating(key):
    real = sum(p.numel() for p in create_model(key, 944, 1665, 50).parameters())
    assert memory.n_parameters(key, 944, 1665, 50) == real


def test_estimate_grows_with_data_and_width():
    base = memory.training_bytes(100_000, memory.n_parameters("embedding_dot_bias", 944, 1665, 50))
    assert memory.training_bytes(200_000, memory.n_parameters("embedding_dot_bias", 944, 1665, 50)) > base
    assert memory.training_bytes(100_000, memory.n_parameters("embedding_dot_bias", 944, 1665, 400)) > base
    big = memory.training_bytes(25_000_095, memory.n_parameters("embedding_dot_bias", 162_542, 59_048, 50))
    assert 2e9 < big < 6e9  # MovieLens 25M: a few GB
    available = memory.available_bytes()
    assert available is None or available > 0


def test_training_beyond_available_memory_is_refused_before_it_starts(tmp_path, monkeypatch, table):
    monkeypatch.setattr(memory, "available_bytes", lambda: 50_000)
    fits = []
    monkeypatch.setattr(learner, "fit_one_cycle", lambda *a, **k: fits.append(1))
    with pytest.raises(ConfigError, match=r"training needs about [\d.]+ [MG]B of memory but only 0\.1 MB"):
        get_or_train(load_path(table), TrainConfig(epochs=1, bs=16), ModelStore(tmp_path / "m"), device="cpu")
    assert fits == [] and not (tmp_path / "m").exists()  # not even a lock file


def test_cli_prints_the_estimate_and_refuses_too_big(table, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "BIG_DATA", 0)  # 1M ratings and more, normally
    assert cli.main(["train", "--data", str(table), "--no-save", "--epochs", "1", "--bs", "16"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"memory: training needs up to [\d.]+ [MG]B \([\d.]+ [MG]B available\)", out[0])
    assert out[1].split() == ["epoch", "train_loss", "valid_loss", "time"]
    monkeypatch.setattr(memory, "available_bytes", lambda: 10**5)
    assert cli.main(["train", "--data", str(table), "--no-save", "--epochs", "1", "--bs", "16"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: training needs about [\d.]+ [MG]B of memory but only 0\.1 MB is available: "
                        r"use fewer factors or a sample of the ratings\n", err)  # fmt: skip


MEASURE = """
import json, sys
import numpy as np, pandas as pd
from collab_core.data import Dataset
from collab_core.learner import get_or_train
from collab_core.synth import SynthSpec, synth_ratings
from collab_core.config import TrainConfig
spec = SynthSpec(n_users=10_000, n_items=2_000, n_ratings=500_000)
ratings = synth_ratings(spec).rename(columns={"userId": "user", "movieId": "item"})
index = pd.Index(range(spec.n_items), name="item")
items = pd.DataFrame({"title": [f"m{i}" for i in range(spec.n_items)]}, index=index)
dataset = Dataset("synth", ratings, items)
dataset.fingerprint
def status(field):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(field))
open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM) to the current size
base = status("VmRSS:")
trained = get_or_train(dataset, TrainConfig(epochs=1, bs=1024, n_factors=64), device="cpu")
print(json.dumps({"peak": status("VmHWM:") - base, "n_users": trained.encoded.n_users,
                  "n_items": trained.encoded.n_items, "n_ratings": len(ratings)}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to measure peaks")
def test_the_estimate_covers_the_measured_peak():
    """500k synthetic ratings, 64 factors: measured peak growth <= estimate <= 3x measured."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout.strip().splitlines()[-1])
    n_parameters = memory.n_parameters("embedding_dot_bias", run["n_users"], run["n_items"], 64)
    estimate = memory.training_bytes(run["n_ratings"], n_parameters)
    print(f"\nmemory: measured peak {run['peak'] / 1e6:.0f} MB, estimate {estimate / 1e6:.0f} MB")
    assert run["peak"] <= estimate <= 3 * run["peak"]

"""The default recipe: the rule on data sizes, the estimate, the per-machine cache, the CLI's default."""

import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from collab_core import recipes
from collab_core.config import TrainConfig, preset
from collab_core.recipes import DataSize, default_recipe, estimate
from collab_core.speed import Speed, StepCost

ROOT = Path(__file__).resolve().parents[1]
ML100K = DataSize(100_000, 943, 1682)
LATEST_SMALL = DataSize(100_836, 610, 9_724)
ML25M = DataSize(25_000_095, 162_541, 59_047)
# speeds as calibrate.measure found them on the shared 2-core test machine (a busy moment)
SMALL_SPEED = Speed(50, StepCost(1.1e-4, 1.8e-7), StepCost(1.5e-4, 1.4e-6), 1.2e-7, 9.0e-7)
SPEED_25M = Speed(50, StepCost(2.2e-2, 2.7e-6), StepCost(0.0, 4.6e-6), 3.7e-8, 5.6e-7)


@pytest.mark.parametrize("size", [ML100K, LATEST_SMALL])
def test_small_data_gets_exactly_the_book_recipe(size):
    recipe = default_recipe(size, SMALL_SPEED)
    assert recipe.name == "book" and recipe.config == TrainConfig() and recipe.seconds < 5


def test_25m_gets_the_sparse_recipe_within_the_budget():
    book = recipes.named_recipe("book", ML25M, SPEED_25M)
    assert book.seconds > 3 * 3600  # 11.3M weights moved at each of ~390k steps: hours, and said so
    recipe = default_recipe(ML25M, SPEED_25M)
    c = recipe.config
    assert recipe.name == "sparse" and c.sparse and c.bs == 8192 and c.wd_bias == 0.0
    assert 1 <= c.epochs <= recipes.SPARSE_MAX_EPOCHS and recipe.seconds <= recipes.BUDGET_S
    assert estimate(replace(c, epochs=c.epochs + 1), ML25M, SPEED_25M) > recipes.BUDGET_S or (
        c.epochs == recipes.SPARSE_MAX_EPOCHS
    )  # as many epochs as fit
    longer = default_recipe(ML25M, SPEED_25M, budget=10 * recipes.BUDGET_S)
    assert longer.config.epochs >= c.epochs


def test_flags_override_the_chosen_recipe():
    assert default_recipe(ML100K, SMALL_SPEED, epochs=2).config == TrainConfig(epochs=2)
    big = default_recipe(ML25M, SPEED_25M, epochs=3, n_factors=20)
    assert big.config.sparse and big.config.epochs == 3 and big.config.n_factors == 20


def test_a_tight_budget_on_small_data_still_fits_a_batch():
    recipe = default_recipe(DataSize(1200, 40, 30), SMALL_SPEED, budget=1e-6)
    assert recipe.name == "sparse" and recipe.config.bs <= 1200 * 4 // 5 // 8 and recipe.config.epochs == 1


def test_the_nn_models_keep_the_book_recipe_and_have_no_estimate():
    recipe = default_recipe(ML25M, SPEED_25M, model="collab_nn")
    assert recipe.config == TrainConfig(model="collab_nn") and recipe.seconds is None


@pytest.mark.parametrize("speed", [SMALL_SPEED, SPEED_25M])
def test_the_estimate_grows_with_the_work(speed):
    for config in (TrainConfig(), preset("fast"), TrainConfig(sparse=True, bs=4096)):
        base = estimate(config, ML25M, speed)
        assert estimate(replace(config, epochs=config.epochs * 2), ML25M, speed) > base
        assert estimate(config, replace(ML25M, ratings=ML25M.ratings * 2), speed) > base
        assert estimate(replace(config, n_factors=100), ML25M, speed) > base
    dense = [estimate(TrainConfig(bs=bs), ML25M, speed) for bs in (64, 512, 4096)]
    assert dense == sorted(dense, reverse=True)  # fewer steps of dense AdamW: less time
    if speed is SPEED_25M:  # at 25M's shape a dense step moves 11.3M weights, a sparse one a batch's rows
        assert estimate(TrainConfig(sparse=True), ML25M, speed) < dense[0] / 10


def test_the_speed_is_measured_once_per_machine_and_shape(tmp_path, monkeypatch):
    from collab_core import calibrate

    calls = []
    monkeypatch.setattr(calibrate, "measure", lambda u, i: calls.append((u, i)) or SMALL_SPEED)
    monkeypatch.setattr(recipes, "_MEASURED", {})
    assert recipes.machine_speed(ML100K, tmp_path) == SMALL_SPEED
    recipes._MEASURED.clear()  # a new process: read from the disk
    assert recipes.machine_speed(ML100K, tmp_path) == SMALL_SPEED and calls == [(944, 1683)]
    cached = json.loads((tmp_path / recipes.CACHE_FILE).read_text())
    assert cached["machine"]["cpus"] == os.cpu_count() and cached["speeds"]["944x1683"] == asdict(SMALL_SPEED)
    cached["machine"]["torch"] = "0.1"  # another torch: measured again
    (tmp_path / recipes.CACHE_FILE).write_text(json.dumps(cached))
    recipes._MEASURED.clear()
    recipes.machine_speed(ML100K, tmp_path)
    (tmp_path / recipes.CACHE_FILE).write_text("{not json")  # a damaged cache: measured again
    recipes._MEASURED.clear()
    recipes.machine_speed(ML100K, tmp_path)
    assert len(calls) == 3
    tiny = DataSize(300, 30, 10)  # a small table's speed stays in the process: no file but the model
    recipes.machine_speed(tiny, tmp_path / "other")
    assert not (tmp_path / "other").exists() and recipes.cached_speed(tiny, tmp_path / "other") == SMALL_SPEED


def test_a_data_source_size_is_remembered(tmp_path):
    assert recipes.remembered_size("abc", tmp_path) is None
    recipes.remember_size("abc", ML100K, tmp_path)
    assert (
        recipes.remembered_size("abc", tmp_path) == ML100K and recipes.remembered_size(None, tmp_path) is None
    )


def test_this_machine_gives_ml100k_the_book_recipe(tmp_path):
    """Measured for real (half a second): the chapter's recipe fits the budget with a wide margin."""
    speed = recipes.machine_speed(ML100K, tmp_path)
    recipe = default_recipe(ML100K, speed)
    assert recipe.name == "book" and recipe.config == TrainConfig()
    assert 0.05 < recipe.seconds < recipes.BUDGET_S / 10
    assert recipes.named_recipe("book", ML100K, speed).seconds == recipe.seconds


def test_format_seconds():
    assert [recipes.format_seconds(s) for s in (1.25, 42.4, 420, 22000, None)] == [
        "1.2 s", "42 s", "7 min", "6.1 h", "?"
    ]  # fmt: skip


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "COLLAB_MODELS_DIR": str(tmp_path / "models"),
               "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", **env}  # fmt: skip
    command = [sys.executable, "-m", "collab_core", *args]
    return subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=600)


def test_the_cli_default_prints_the_recipe_before_training(tmp_path, ml100k_dir):
    data = {"COLLAB_DATA_DIR": str(ml100k_dir)}
    run = cli(tmp_path, "train", "--no-save", **data)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    first, header = run.stdout.splitlines()[:2]
    assert first.startswith(
        "recipe book: embedding_dot_bias, 5 epochs, bs 64, lr 0.005, wd 0.1, dense AdamW, ~"
    )
    assert header.split() == ["epoch", "train_loss", "valid_loss", "time"]
    run = cli(tmp_path, "train", "--epochs", "1", "--json", "--no-save", **data)  # --json: as before
    assert run.returncode == 0 and run.stdout.splitlines()[0].startswith("epoch"), run.stderr
    assert TrainConfig(**json.loads(run.stdout.splitlines()[-1])["config"]) == TrainConfig(epochs=1)
    # a budget the book's recipe does not fit: the sparse one, sized to fit
    run = cli(tmp_path, "train", "--no-save", **data, COLLAB_TRAIN_BUDGET="1e-3")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(
        "recipe sparse: embedding_dot_bias, 1 epochs, bs 1024, lr 0.01, wd 0.8, row-"
    )
    run = cli(tmp_path, "train", "--json", "--no-save", **data, COLLAB_TRAIN_BUDGET="1e-3")
    config = json.loads(run.stdout.splitlines()[-1])["config"]
    assert config["sparse"] and config["bs"] == 1024 and config["epochs"] == 1 and config["wd_bias"] == 0
    # --preset book forces the chapter's recipe, with its estimate; flags rename it
    run = cli(
        tmp_path,
        "train",
        "--preset",
        "book",
        "--epochs",
        "1",
        "--no-save",
        **data,
        COLLAB_TRAIN_BUDGET="1e-3",
    )
    assert run.returncode == 0 and run.stdout.startswith(
        "recipe book+flags: embedding_dot_bias, 1 epochs, bs 64"
    )


def test_the_output_range_follows_the_rating_scale(tmp_path):
    """A 1-10 table trains with the range its scale suggests, with no --y-range: the recipe carries
    it, the CLI's JSON reports it, and every prediction falls inside it."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = [
        f"{u},{i},{rng.integers(1, 11)}" for u in range(1, 41) for i in range(1, 31) if rng.random() < 0.6
    ]
    table = tmp_path / "scores.csv"
    table.write_text("user,item,score\n" + "\n".join(rows) + "\n")
    run = subprocess.run(
        [sys.executable, "-m", "collab_core", "train", "--data", str(table), "--epochs", "1", "--bs", "32",
         "--no-save", "--json"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1])["config"]["y_range"] == [0.0, 11.0]
    assert DataSize(100, 10, 10, (0.0, 11.0)) != DataSize(100, 10, 10)  # the range is part of the size
    assert default_recipe(DataSize(100_000, 943, 1682, (0.0, 11.0)), SMALL_SPEED).config.y_range == (
        0.0,
        11.0,
    )

"""Snapshots of the movie map through training: the schedule, the frames (every step kind, every model
key), the store, the CLI's count, the live frames of a job and the animation's fixed basis."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from collab_core.analysis import pca_items
from collab_core.config import TrainConfig
from collab_core.encoding import encode
from collab_core.learner import build_model, get_or_train, prepare, rows_to_tensors
from collab_core.nets import MODELS, AutoEncoder
from collab_core.snapshots import PREFIX, SnapshotPlan, live_basis, plan, project
from collab_core.stats import item_table
from collab_core.store import ModelStore, StoreWarning
from collab_core.train import SnapshotEvent, fit_one_cycle
from collab_core.trajectory import trajectory

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
TASTE = TrainConfig(epochs=3, bs=32, lr=0.05, wd=0.01)  # 3 epochs x 17 batches on the taste data


@pytest.mark.parametrize(
    ("epochs", "n_batches", "per_epoch"),
    [(5, 1250, 6), (1, 1250, 10), (6, 156, 5), (30, 100, 1), (200, 100, 1), (3, 4, 4), (2, 1, 1)],
)
def test_the_schedule(epochs, n_batches, per_epoch):
    """max(1, ceil(30 / epochs)) frames per epoch, at most 10 and at most one per batch, evenly
    spaced and the last at the epoch's end, after the initial weights."""
    keep = SnapshotPlan(items=(1,), labels=("a",))
    assert keep.per_epoch(epochs, n_batches) == per_epoch
    steps = keep.steps(epochs, n_batches)
    assert len(steps) == 1 + epochs * per_epoch
    assert steps[0] == 0 and steps == sorted(set(steps)) and steps[-1] == epochs * n_batches
    assert all(e * n_batches in steps for e in range(1, epochs + 1))  # every epoch's end
    gaps = np.diff(steps[1 : per_epoch + 1])
    assert len(gaps) == 0 or gaps.max() - gaps.min() <= 1  # evenly spaced within an epoch


def fitted(taste, key: str, config: TrainConfig = TASTE, n: int = 10, fused: bool = True, events=None):
    """(model, FitResult, plan) of a fit on the taste data with snapshots of the n most-rated items."""
    config = dataclasses.replace(config, model=key)
    encoded, train_rows, valid_rows = prepare(taste, config)
    keep = plan(encoded, n)
    model = build_model(config, encoded.n_users, encoded.n_items, CPU)
    train, valid = rows_to_tensors(encoded, train_rows), rows_to_tensors(encoded, valid_rows)
    return model, fit_one_cycle(model, train, valid, config, events, fused=fused, snapshots=keep), keep


@pytest.mark.parametrize("key", [k for k, m in MODELS.items() if not issubclass(m, AutoEncoder)])
def test_frames_follow_the_weights_for_every_model(taste, key):
    """The count is the schedule's; the first frame is the initial weights and the last the final
    ones (to float16 precision: equal to the final weights cast to float16)."""
    events = []
    model, result, keep = fitted(taste, key, events=events.append)
    snaps = result.snapshots
    n_batches = result.batch_loss.__len__() // TASTE.epochs
    assert len(snaps) == len(keep.steps(TASTE.epochs, n_batches)) == 1 + 3 * 10
    assert snaps.frames.dtype == torch.float16 and snaps.frames.shape[1] == 10
    assert snaps.items.tolist() == list(keep.items)
    final = model.factors()[1][snaps.items]
    assert torch.equal(snaps.frames[-1], final.half())
    assert snaps.epochs[0] == 0 and snaps.epochs[-1] == TASTE.epochs
    assert not torch.equal(snaps.frames[0], snaps.frames[-1])
    frames = [e for e in events if isinstance(e, SnapshotEvent)]
    assert [e.index for e in frames] == list(range(len(snaps))) and all(e.total == len(snaps) for e in frames)
    assert torch.equal(frames[-1].frame, snaps.frames[-1])


@pytest.mark.parametrize("sparse", [False, True])
def test_fused_steps_are_snapshotted_from_their_own_buffer(taste, sparse):
    """The fused step holds the weights outside the model until each epoch ends: a frame in the
    middle of the first epoch must show them moving (the model's own parameters have not yet), and
    the autograd step gives the same frames up to float rounding."""
    config = TrainConfig(**{**TASTE.to_dict(), "sparse": sparse})
    _, result, _ = fitted(taste, "dot_bias", config)
    frames = result.snapshots.frames.float()
    assert 0 < result.snapshots.epochs[1] < 1 and not torch.equal(frames[1], frames[0])
    if not sparse:
        _, autograd, _ = fitted(taste, "dot_bias", config, fused=False)
        assert torch.allclose(autograd.snapshots.frames.float(), frames, atol=2e-3)


@pytest.mark.parametrize("key", ["dot_bias", "embedding_dot_bias", "embedding_nn"])
def test_snapshots_change_no_result(taste, key):
    """Taking frames reads the weights only: the same losses and weights, bit for bit."""
    on, result_on, _ = fitted(taste, key, n=10)
    off, result_off, _ = fitted(taste, key, n=0)
    assert result_off.snapshots is None
    assert result_on.batch_loss == result_off.batch_loss and result_on.valid_loss == result_off.valid_loss
    for (name, a), (_, b) in zip(on.state_dict().items(), off.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_the_seed_recipe_keeps_its_baseline_with_snapshots(trained_edb):
    """The brief's baseline, to every digit, from a fit that kept 31 frames."""
    assert trained_edb.record.snapshots == 31 == len(trained_edb.snapshots)
    assert list(trained_edb.record.history.valid_loss) == [
        0.9238637685775757, 0.8630192279815674, 0.8237943649291992, 0.8125152587890625, 0.8133988380432129,
    ]  # fmt: skip


def test_the_store_round_trips_snapshots(taste, tmp_path):
    store = ModelStore(tmp_path)
    first = get_or_train(taste, TASTE, store, "cpu", snapshot_items=12)
    second = get_or_train(taste, TASTE, store, "cpu")
    assert second.from_store and second.record.snapshots == first.record.snapshots == 31
    for name in ("items", "frames", "epochs"):
        assert torch.equal(getattr(first.snapshots, name), getattr(second.snapshots, name)), name
    raw = torch.load(tmp_path / f"{first.key}.pt", weights_only=True)  # plain tensors only
    assert raw[PREFIX + "frames"].dtype == torch.float16 and raw[PREFIX + "frames"].shape[:2] == (31, 12)
    assert set(second.model.state_dict()) == {k for k in raw if not k.startswith(PREFIX)}
    assert torch.equal(second.snapshots.frames[-1], second.model.factors()[1][second.snapshots.items].half())


def test_an_entry_without_snapshots_still_loads(taste, tmp_path):
    """An entry written before snapshots existed (no count in its JSON, no frames in its
    checkpoint) loads with 0 snapshots; a count the checkpoint does not hold is a miss."""
    store = ModelStore(tmp_path)
    trained = get_or_train(taste, TASTE, store, "cpu", snapshot_items=0)
    js = tmp_path / f"{trained.key}.json"
    meta = json.loads(js.read_text())
    assert meta["snapshots"] == 0
    del meta["snapshots"]
    js.write_text(json.dumps(meta))
    old = get_or_train(taste, TASTE, store, "cpu")
    assert old.from_store and old.record.snapshots == 0 and old.snapshots is None
    meta["snapshots"] = 5
    js.write_text(json.dumps(meta))
    with pytest.warns(StoreWarning, match="snapshots do not match"):
        assert store.load(trained.key) is None


def test_a_job_publishes_the_live_map(taste, tmp_path, monkeypatch):
    """The training job projects the latest frame on its own PCA axes, signed like the previous
    projection's, when a page asks for it: not every frame as it comes."""
    from collab_ui import jobs
    from collab_ui.jobs import DONE, TrainingJob

    projected = []
    monkeypatch.setattr(jobs, "live_basis", lambda frame, *a: projected.append(1) or live_basis(frame, *a))
    job = TrainingJob(taste, TASTE, ModelStore(tmp_path), "cpu").start()
    job.join(120)
    assert not projected  # 31 frames came, and no page asked
    p = job.progress()
    assert len(projected) == 1 and job.progress().map_frame == 30 and len(projected) == 1
    assert p.status == DONE and p.map_frames == 31 and p.map_frame == 30 and p.map_epoch == 3
    assert p.map_xy.shape == (24, 2) and len(p.map_labels) == len(p.map_colour) == 24  # all its items
    table = item_table(taste, encode(taste, "title")).set_index("title")  # the Embeddings page's
    assert np.allclose(p.map_colour, table.loc[list(p.map_labels), "mean_rating"])
    assert np.isfinite(p.map_xy).all() and p.map_xy.std(axis=0).min() > 0


def test_the_live_basis_does_not_flip():
    rng = np.random.default_rng(0)
    frame = rng.normal(size=(200, 8)) * np.array([5, 3, 1, 1, 1, 1, 1, 1])
    first = live_basis(frame, None)
    flipped = live_basis(frame, -first)  # the previous axes pointed the other way: follow them
    assert np.allclose(flipped, -first, atol=1e-5)
    assert np.allclose(np.abs(first), np.abs(live_basis(frame + 0.001, first)), atol=1e-2)
    assert np.allclose(live_basis(frame + 0.001, first), first, atol=1e-2)


def test_the_animation_is_in_the_final_models_basis(trained_edb):
    """One frame per snapshot, all on the final PCA axes; the last frame is the page's PCA map."""
    from collab_ui.animation import animation_figure

    path = trajectory(trained_edb)
    snaps = trained_edb.snapshots
    final = pca_items(trained_edb, n_items=1000, k=2)
    assert path.xy.shape == (31, 1000, 2)
    assert np.array_equal(path.movies.index.to_numpy(), snaps.items.numpy())
    assert np.allclose(path.xy[-1], final.coords[["pc1", "pc2"]].to_numpy(), atol=2e-3)
    assert np.allclose(path.xy, project(snaps.frames.numpy(), final.components))
    spread = path.xy.std(axis=1).mean(axis=1)
    assert spread[0] < 0.1 * spread[-1]  # the initial weights (std 0.01) sit at the centre
    assert path.valid_loss[0] is None and path.valid_loss[6] == trained_edb.record.history.valid_loss[0]
    figure = animation_figure(path)
    assert len(figure.frames) == len(snaps) == len(figure.layout.sliders[0].steps)
    last = figure.frames[-1].data[0]
    assert np.allclose(np.asarray(last.x), final.coords["pc1"], atol=2e-3)
    assert np.allclose(np.asarray(figure.data[0].y), final.coords["pc2"], atol=2e-3)
    assert "valid MSE 0.8134" in figure.frames[-1].layout.title.text
    assert figure.layout.xaxis.range is not None  # fixed axes: frames line up


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "collab_core", *args],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


def test_train_json_reports_snapshots(tmp_path):
    """`snapshots`: how many frames were stored (with --no-save: taken); 0 when asked for none."""
    csv = tmp_path / "ratings.csv"
    rng = np.random.default_rng(0)
    rows = [
        f"{u},{i},{int(rng.integers(1, 6))}" for u in range(1, 41) for i in range(1, 31) if rng.random() < 0.6
    ]
    csv.write_text("user,item,rating\n" + "\n".join(rows) + "\n")
    env = {"COLLAB_MODELS_DIR": str(tmp_path / "models"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    base = ("train", "--data", str(csv), "--epochs", "2", "--bs", "16", "--json")
    saved = run_cli(*base, env=env)
    assert saved.returncode == 0, saved.stderr
    result = json.loads(saved.stdout.strip().splitlines()[-1])
    assert result["snapshots"] == 1 + 2 * 10  # ~36 batches per epoch: ceil(30 / 2) = 15, capped at 10
    again = json.loads(run_cli(*base, env=env).stdout.strip().splitlines()[-1])
    assert again["from_store"] and again["snapshots"] == 21
    none = run_cli(*base, "--no-save", "--snapshot-movies", "0", env=env)
    assert json.loads(none.stdout.strip().splitlines()[-1])["snapshots"] == 0
    bad = run_cli(*base, "--snapshot-movies", "-1", env=env)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --snapshot-movies must be 0 or more, not -1"
    ]


def test_a_family_without_item_factors_takes_no_snapshots(taste):
    """A step whose model has no item embedding table has none to give: the fit then keeps no frames."""
    from collab_core.optim import AutogradStep

    class NoFactors(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

    step = AutogradStep(NoFactors(), (torch.zeros(1),) * 3, 1, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert step.item_factors() is None

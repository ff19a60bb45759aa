"""Comparing two models (collab_core/compare.py, `compare` on the command line, the Compare page) on
the real ml-100k: a model against itself and against a rotated copy of itself, weight decay
against none, the command line's contract, and the page under AppTest."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from collab_core import compare
from collab_core.config import TrainConfig
from collab_core.errors import DataError
from collab_core.learner import Trained, get_or_train
from collab_core.store import ModelStore

ROOT = Path(__file__).resolve().parents[1]
FAST = {"bs": 512, "epochs": 4, "lr": 8e-3}  # a cheap recipe: a few seconds per model on ml-100k


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("compare-models"))


@pytest.fixture(scope="module")
def decayed(ml100k, store) -> Trained:
    """embedding_dot_bias with weight decay 0.1, trained once for this module."""
    return get_or_train(ml100k, TrainConfig(wd=0.1, **FAST), store, device="cpu")


@pytest.fixture(scope="module")
def undecayed(ml100k, store) -> Trained:
    """The same recipe and seed without weight decay."""
    return get_or_train(ml100k, TrainConfig(wd=0.0, **FAST), store, device="cpu")


def rotated(trained: Trained, seed: int = 0) -> Trained:
    """A copy whose user and movie factors are turned by one random orthogonal matrix Q: every
    prediction (u Q)·(m Q) = u·m is unchanged, so it is the same model in another basis."""
    model = copy.deepcopy(trained.model)
    width = model.factors()[0].shape[1]
    q, _ = torch.linalg.qr(torch.randn(width, width, generator=torch.Generator().manual_seed(seed)))
    with torch.no_grad():
        for weights in model.factors():
            weights.copy_(weights @ q)
    return dataclasses.replace(trained, model=model)


def test_a_model_against_itself_agrees_everywhere(decayed):
    found = compare.compare(decayed, decayed)
    assert found.stability.mean == 1.0
    assert found.alignment.error == pytest.approx(0, abs=1e-9)
    assert compare.most_changed(found.stability).empty
    assert found.disagreements["difference"].abs().max() == 0
    table = found.metrics.table
    assert (table["difference"] == 0).all()
    assert table.loc["MSE", "a"] == pytest.approx(decayed.record.metrics.mse, rel=1e-5)  # as stored
    assert 0 < table.loc["NDCG@10", "a"] < 1 and 0 < table.loc["precision@10", "a"] < 1
    assert found.to_dict()["neighbour_overlap"] == 1.0


def test_a_rotated_copy_aligns_back(decayed):
    turned = rotated(decayed)
    before = np.linalg.norm(decayed.item_vectors[0] - turned.item_vectors[0])
    assert before > 1e-2  # the copy's vectors really moved
    aligned = compare.align_maps(decayed, turned)
    assert aligned.error == pytest.approx(0, abs=1e-6)
    assert np.allclose(aligned.coords[["ax", "ay"]], aligned.coords[["bx", "by"]].to_numpy(), atol=1e-6)
    assert compare.neighbour_stability(decayed, turned).mean == 1.0  # cosine neighbours survive a rotation


def test_weight_decay_changes_some_neighbourhoods(decayed, undecayed):
    found = compare.compare(decayed, undecayed)
    assert 0 < found.stability.mean < 1
    assert 0 < found.alignment.error < 2**0.5
    assert found.stability.histogram.sum() == len(found.stability.movies) == found.stability.n_candidates
    assert (found.stability.movies["n_ratings"] >= compare.MIN_RATINGS).all()
    changed = compare.most_changed(found.stability, 10)
    assert len(changed) == 10 and changed["jaccard"].is_monotonic_increasing
    rows = found.disagreements
    assert rows["difference"].abs().is_monotonic_decreasing and rows["difference"].abs().iloc[0] > 0.2
    assert rows["actual"].isna().equals(~rows["held_out"])  # a rating exactly where one was held out
    assert found.biases is not None and len(found.biases) > 1000
    assert found.metrics.table.loc["MSE", "b"] != found.metrics.table.loc["MSE", "a"]


def test_widths_that_differ_are_aligned_on_principal_components(decayed, ml100k, store):
    nn = get_or_train(
        ml100k, TrainConfig(model="embedding_nn", epochs=1, bs=512, lr=8e-3), store, device="cpu"
    )
    aligned = compare.align_maps(decayed, nn)
    assert aligned.widths == (50, 102) and aligned.n_components == 50
    assert "widths differ" in aligned.note
    with pytest.raises(Exception, match="no bias terms"):
        compare.bias_pairs(decayed, nn)


def test_models_of_other_data_are_refused(decayed, taste):
    other = get_or_train(taste, TrainConfig(epochs=1, bs=32), device="cpu")
    with pytest.raises(DataError, match=f"model {other.key} was trained on taste"):
        compare.compare(decayed, other)


# ---- the command line ---------------------------------------------------------------------------------


def cli(store: ModelStore, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLLAB_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1",
           "COLLAB_MODELS_DIR": str(store.root)}  # fmt: skip
    command = [sys.executable, "-m", "collab_core", "compare", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_the_command_line_contract(decayed, undecayed, store, ml100k_dir):
    done = cli(store, ml100k_dir, decayed.key, undecayed.key, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < result["neighbour_overlap"] < 1 and result["alignment_error"] > 0
    assert result["most_changed"] and all("title" in m for m in result["most_changed"])
    row = result["disagreements"][0]
    assert set(row) >= {"user", "title", "a", "b", "actual"}
    assert any(r["actual"] is None for r in result["disagreements"])  # unrated pairs: null
    same = json.loads(cli(store, ml100k_dir, decayed.key, decayed.key, "--json").stdout.splitlines()[-1])
    assert same["neighbour_overlap"] == 1.0 and same["alignment_error"] < 1e-9
    readable = cli(store, ml100k_dir, decayed.key[:8], undecayed.key)  # a unique prefix will do
    assert readable.returncode == 0 and "neighbour overlap" in readable.stdout


def test_unknown_keys_and_keys_of_other_data_exit_2(decayed, store, ml100k_dir, taste):
    other = get_or_train(taste, TrainConfig(epochs=1, bs=32), store, device="cpu")
    for key, why in (("0123456789abcdef", "is not in the store"), ("nothex!", "is not a store key"),
                     (other.key, "was trained on taste")):  # fmt: skip
        done = cli(store, ml100k_dir, decayed.key, key, "--json")
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line, no traceback
        assert done.stderr.startswith("error: ") and key in done.stderr and why in done.stderr


# ---- the page -------------------------------------------------------------------------------------------


def test_the_compare_page_renders_two_stored_models(
    decayed, undecayed, store, ml100k_dir, trained_edb, session_store, monkeypatch
):
    from streamlit.testing.v1 import AppTest

    for suffix in (".pt", ".json"):  # the default model stored too, so the sidebar does not train it
        name = f"{trained_edb.key}{suffix}"
        shutil.copy(session_store.root / name, store.root / name)
    monkeypatch.setenv("COLLAB_DATA_DIR", str(ml100k_dir))
    monkeypatch.setenv("COLLAB_MODELS_DIR", str(store.root))
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.switch_page("app_pages/compare.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value.endswith("Compare")
    a, b = at.selectbox(key="compare_a").value, at.selectbox(key="compare_b").value
    assert a != b and {a, b} <= {r.key for r in store.list()}
    metrics = at.dataframe[0].value
    assert list(metrics.index[:3]) == ["MSE", "RMSE", "MAE"] and "NDCG@10" in metrics.index
    assert "Alignment error" in " ".join(m.value for m in at.markdown)
    assert any(m.label.startswith("Mean overlap") for m in at.metric)
    charts = {c.proto.id for c in at.get("plotly_chart")}
    assert any("compare_map_a" in c for c in charts) and any("compare_map_b" in c for c in charts)
    at.selectbox(key="compare_movie").select_index(0).run()  # a movie found: marked on both maps
    assert not at.exception
    assert "marked on both maps" in " ".join(c.value for c in at.caption)
    at.selectbox(key="compare_b").set_value(a).run()  # the same model twice: everything agrees
    assert not at.exception and not at.error
    assert at.metric[0].value == "1.000"

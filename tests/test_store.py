"""The model store: bit-exact round trips, damaged and hostile entries are misses (never a crash,
never code run), concurrent writers, list/delete/size, and the CLI answering from the store."""

import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from collab_core.analysis import nearest_items
from collab_core.config import TrainConfig
from collab_core.learner import get_or_train
from collab_core.ranking import recommend, user_history
from collab_core.store import MAX_BATCH_POINTS, ModelStore, StoreWarning

REPO = Path(__file__).resolve().parents[1]
SMALL = TrainConfig(epochs=2, bs=32, lr=0.05)


def train_small(dataset, store: ModelStore, config: TrainConfig = SMALL):
    return get_or_train(dataset, config, store=store, device="cpu")


def paths(store: ModelStore, key: str) -> tuple[Path, Path]:
    return store.root / f"{key}.pt", store.root / f"{key}.json"


def rewrite_meta(store: ModelStore, key: str, change) -> None:
    """Edit an entry's JSON in place with change(meta)."""
    js = paths(store, key)[1]
    meta = json.loads(js.read_text())
    change(meta)
    js.write_text(json.dumps(meta))


def replace_checkpoint(store: ModelStore, key: str, data: bytes) -> None:
    """Swap the checkpoint's bytes and make the JSON vouch for them, so torch.load is reached."""
    paths(store, key)[0].write_bytes(data)
    rewrite_meta(store, key, lambda m: m.update(checkpoint_sha256=hashlib.sha256(data).hexdigest()))


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "collab_core", *args],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_round_trip_is_bit_exact(taste, tmp_path):
    store = ModelStore(tmp_path)
    first = train_small(taste, store)
    second = train_small(taste, store)
    assert (first.from_store, second.from_store) == (False, True)
    before, after = first.model.state_dict(), second.model.state_dict()
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert second.record == first.record and not second.model.training
    u, i, _ = first.tensors(first.valid_rows)
    assert torch.equal(first.model(u, i), second.model(u, i))


def test_entry_holds_config_fingerprint_history_and_versions(taste, tmp_path):
    store = ModelStore(tmp_path)
    trained = train_small(taste, store, TrainConfig(epochs=3, bs=2))  # 3 x 224 batches
    meta = json.loads(paths(store, trained.key)[1].read_text())
    assert meta["config"] == TrainConfig(epochs=3, bs=2).to_dict() | {"y_range": [0.0, 5.5]}
    assert meta["data"]["fingerprint"] == taste.fingerprint and meta["data"]["n_ratings"] == len(
        taste.ratings
    )
    assert meta["split"] == {
        "how": "random",
        "n_train": len(trained.train_rows),
        "n_valid": len(trained.valid_rows),
    }
    history = meta["history"]
    assert len(history["train_loss"]) == len(history["valid_loss"]) == 3
    assert history["n_batches"] == 3 * (len(trained.train_rows) // 2) > MAX_BATCH_POINTS
    assert len(history["batch_loss"]) == MAX_BATCH_POINTS
    assert meta["metrics"]["mse"] == pytest.approx(history["valid_loss"][-1])
    assert set(meta["versions"]) >= {"collab_core", "torch", "python"} and meta["device"] == "cpu"
    assert meta["fit_seconds"] > 0
    data = paths(store, trained.key)[0].read_bytes()
    assert meta["checkpoint_sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("vouched", [False, True], ids=["sha-mismatch", "sha-matches"])
def test_truncated_checkpoint_is_a_miss(taste, tmp_path, vouched):
    store = ModelStore(tmp_path)
    key = train_small(taste, store).key
    ckpt = paths(store, key)[0]
    half = ckpt.read_bytes()[: ckpt.stat().st_size // 2]
    if vouched:
        replace_checkpoint(store, key, half)  # then torch.load itself meets the truncated zip
    else:
        ckpt.write_bytes(half)
    with pytest.warns(StoreWarning, match=f"model {key} .* unusable and will be retrained"):
        assert store.load(key) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["history"].update(train_loss="0.9"),
        lambda m: m["history"].update(valid_loss=[0.9, None]),
        lambda m: m["metrics"].update(rmse="0.9"),
        lambda m: m.update(metrics=[0.9]),
        lambda m: m["config"].update(n_factors="50"),
        lambda m: m["config"].update(surprise=1),
        lambda m: m.update(config=None),
        lambda m: m.update(data="ml-100k"),
        lambda m: m.update(fit_seconds="fast"),
        lambda m: m.update(key=7),
        lambda m: m.update(format=99),
        lambda m: m.pop("history"),
    ],
)
def test_wrong_typed_json_is_a_miss(taste, tmp_path, change):
    store = ModelStore(tmp_path)
    key = train_small(taste, store).key
    rewrite_meta(store, key, change)
    with pytest.warns(StoreWarning, match=f"model {key}"):
        assert store.load(key) is None
    assert store.list() == []  # listed entries are the readable ones; nothing crashes


def test_json_that_is_not_an_object_is_a_miss(taste, tmp_path):
    store = ModelStore(tmp_path)
    key = train_small(taste, store).key
    for text in ("[1, 2]", "{", "", "\xff\xfe"):
        paths(store, key)[1].write_text(text, encoding="latin-1")
        with pytest.warns(StoreWarning):
            assert store.load(key) is None


class Payload:
    """Unpickling this creates a marker folder: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle"])
def test_checkpoint_that_would_run_code_is_refused(taste, tmp_path, container):
    store = ModelStore(tmp_path / "models")
    key = train_small(taste, store).key
    marker = tmp_path / "pwned"
    payload = {"user_factors.weight": Payload(marker)}
    if container == "torch-zip":
        torch.save(payload, paths(store, key)[0])
        data = paths(store, key)[0].read_bytes()
    else:
        data = pickle.dumps(payload, protocol=2)
    control = tmp_path / "control"  # the same payload, unpickled unsafely, does run
    pickle.loads(pickle.dumps({"x": Payload(control)}))
    assert control.exists()
    replace_checkpoint(store, key, data)
    with pytest.warns(StoreWarning, match=f"model {key}"):
        assert store.load(key) is None
    assert not marker.exists()
    with pytest.warns(StoreWarning):
        retrained = train_small(taste, store)  # the hostile entry is replaced by a real one
    assert not retrained.from_store and not marker.exists()
    assert store.load(key) is not None


WRITER = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from conftest import taste_dataset
from collab_core.learner import get_or_train
from collab_core.store import ModelStore
from collab_core.config import TrainConfig
trained = get_or_train(taste_dataset(n_users=400, n_items=60), TrainConfig(epochs=3, bs=16),
                       store=ModelStore(Path(sys.argv[1])), device="cpu")
print(json.dumps({"from_store": trained.from_store, "rmse": trained.record.metrics.rmse}))
"""


def test_two_concurrent_writers_leave_one_valid_entry(tmp_path):
    root = tmp_path / "models"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", WRITER, str(root), str(REPO / "tests")]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["from_store"] for r in results) == [False, True]  # one trained, one waited and loaded
    assert results[0]["rmse"] == results[1]["rmse"]
    store = ModelStore(root)
    assert len(store.list()) == 1 and not list(root.glob("*.tmp")) and not list(root.glob(".*.tmp"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.load(store.list()[0].key) is not None


def test_list_delete_and_size(taste, tmp_path):
    store = ModelStore(tmp_path)
    assert store.list() == []
    one = train_small(taste, store, TrainConfig(epochs=1))
    time.sleep(1.1)  # saved_at has one-second resolution
    two = train_small(taste, store, TrainConfig(epochs=2, model="dot_bias"))
    listed = store.list()
    assert [r.key for r in listed] == [two.key, one.key]  # newest first
    for record in listed:
        ckpt, js = paths(store, record.key)
        assert record.size_bytes == ckpt.stat().st_size + js.stat().st_size > 0
    assert store.delete(one.key) is True
    assert [r.key for r in store.list()] == [two.key]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deleted entry is simply absent: no warning
        assert store.load(one.key) is None
    assert store.delete(one.key) is False
    paths(store, two.key)[0].unlink()  # a JSON without its checkpoint is not listed
    assert store.list() == []


def test_damaged_entry_is_retrained(taste, tmp_path):
    store = ModelStore(tmp_path)
    original = train_small(taste, store)
    paths(store, original.key)[0].write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.warns(StoreWarning, match="unusable and will be retrained"):
        again = train_small(taste, store)
    assert not again.from_store
    assert again.record.metrics.mse == pytest.approx(original.record.metrics.mse, rel=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert train_small(taste, store).from_store


def test_entry_of_another_shape_is_retrained(taste, tmp_path):
    store = ModelStore(tmp_path)
    trained = train_small(taste, store)
    wrong = train_small(taste, ModelStore(tmp_path / "other"), TrainConfig(epochs=2, bs=32, n_factors=7))
    store.save(trained.key, wrong.model, trained.record)
    with pytest.warns(StoreWarning, match="does not fit this data and will be retrained"):
        assert not train_small(taste, store).from_store


def test_models_folder_keeps_no_trained_files_in_git():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "models/abc.pt", "models/abc.json", "models/README.md"],
                             cwd=REPO, capture_output=True, text=True).stdout.split()  # fmt: skip
    assert ignored == ["models/abc.pt", "models/abc.json"]
    assert "model store" in (REPO / "models/README.md").read_text()


def test_cli_train_twice_answers_from_the_store(ml100k_dir, tmp_path):
    env = {"COLLAB_DATA_DIR": str(ml100k_dir), "COLLAB_MODELS_DIR": str(tmp_path)}
    args = ("train", "--epochs", "1", "--json")
    start = time.perf_counter()
    first = run_cli(*args, env=env)
    first_seconds = time.perf_counter() - start
    start = time.perf_counter()
    second = run_cli(*args, env=env)
    second_seconds = time.perf_counter() - start
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    one, two = (json.loads(run.stdout.strip().splitlines()[-1]) for run in (first, second))
    assert "loaded from" not in first.stdout and not one["from_store"]
    assert f"loaded from {tmp_path / one['key']}.pt" in second.stdout and two["from_store"]
    for name in ("train_loss", "valid_loss", "valid_rmse", "fit_seconds", "key"):
        assert one[name] == two[name], name
    print(f"\ncli train: first {first_seconds:.2f} s, second (store hit) {second_seconds:.2f} s")
    assert second_seconds < first_seconds


STORE_HIT = """
import sys
from collab_core.cli import main
code = main(["train", "--json"])
print(sorted(name for name in ("torch", "pandas") if name in sys.modules))
sys.exit(code)
"""


def test_cli_store_hit_imports_neither_torch_nor_pandas(trained_edb, session_store, ml100k_dir):
    env = {"COLLAB_DATA_DIR": str(ml100k_dir), "COLLAB_MODELS_DIR": str(session_store.root)}
    first = run_cli("train", "--json", env=env)  # a store hit through torch: notes the data's fingerprint
    assert first.returncode == 0 and "loaded from" in first.stdout, first.stderr
    run = subprocess.run([sys.executable, "-c", STORE_HIT], cwd=REPO, env={**os.environ, **env},
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr
    *_, answer, modules = run.stdout.strip().splitlines()
    assert json.loads(answer)["key"] == trained_edb.key and json.loads(answer)["from_store"]
    assert modules == "[]"


def test_cli_recommend_and_similar_answer_from_the_store(trained_edb, session_store, ml100k_dir):
    env = {"COLLAB_DATA_DIR": str(ml100k_dir), "COLLAB_MODELS_DIR": str(session_store.root)}
    run = run_cli("recommend", "--user", "42", "--preset", "book", "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert f"loaded from {session_store.root / trained_edb.key}.pt" in run.stderr
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    titles = [r["title"] for r in answer["recommendations"]]
    assert titles == recommend(trained_edb, 42)["title"].tolist()
    assert not set(titles) & set(user_history(trained_edb, 42)["title"])
    assert all(isinstance(r["predicted"], float) for r in answer["recommendations"])

    run = run_cli("similar", "--movie", "Star Wars (1977)", "--preset", "book", "--json", env=env)
    assert run.returncode == 0 and "loaded from" in run.stderr, run.stderr
    similar = json.loads(run.stdout.strip().splitlines()[-1])["similar"]
    assert [r["title"] for r in similar] == nearest_items(trained_edb, "Star Wars (1977)")["title"].tolist()
    assert "Star Wars (1977)" not in {r["title"] for r in similar} and len(similar) == 10

    run = run_cli("similar", "--movie", "star wars", "--preset", "book", env=env)
    assert run.returncode == 2
    assert (
        run.stderr.strip().splitlines()[-1].startswith("error: no item 'star wars' in ml-100k; did you mean")
    )

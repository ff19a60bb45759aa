"""Concurrent sessions: eight sessions asking for one untrained model start one training and all
get that model; twenty recommendation requests at once on one model all get the serial answer;
the store is consistent afterwards. Figures (time, trainings, answers) are printed with -s."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch

from collab_core import learner, ranking
from collab_core.config import TrainConfig
from collab_core.learner import get_or_train, load_trained
from collab_core.store import ModelStore
from collab_ui.jobs import DONE, FAILED, STOPPED, JobRegistry, TrainingJob

SESSIONS, REQUESTS = 8, 20


class FitLog:
    """Trainings started, counted in a file: the app's jobs fit in forked processes (collab_ui.jobs),
    whose appends to a list in this process would be lost."""

    def __init__(self, path: Path):
        self.path = path

    def __len__(self) -> int:
        return len(self.path.read_text().splitlines()) if self.path.exists() else 0


@pytest.fixture
def counted_fits(monkeypatch, tmp_path_factory) -> FitLog:
    """Every training started; each takes at least 0.3 s, so the sessions overlap."""
    log = FitLog(tmp_path_factory.mktemp("fits") / "started")
    real = learner.fit_one_cycle

    def fit(*args, **kwargs):
        with open(log.path, "a") as f:
            f.write(f"{os.getpid()} {time.perf_counter()}\n")
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(learner, "fit_one_cycle", fit)
    return log


def weights_digest(trained) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(trained.model.state_dict().items()):
        h.update(name.encode() + tensor.numpy().tobytes())
    return h.hexdigest()


def assert_store_consistent(root: Path, n_entries: int) -> None:
    entries = ModelStore(root).list()
    assert len(entries) == n_entries
    for record in entries:
        data = (root / f"{record.key}.pt").read_bytes()
        assert hashlib.sha256(data).hexdigest() == record.checkpoint_sha256
    assert not list(root.glob(".*.tmp")) and not list(root.glob("*.tmp"))
    visible = sorted(p.suffix for p in root.iterdir() if not p.name.startswith("."))
    assert visible == sorted([".json", ".pt"] * n_entries)


def test_eight_sessions_share_one_training(taste, tmp_path, counted_fits):
    """The app's path: every session asks the server's job registry for the same config."""
    registry, store = JobRegistry(), ModelStore(tmp_path)
    config = TrainConfig(epochs=3, bs=16, n_factors=8, seed=5)
    ready = threading.Barrier(SESSIONS)

    def session(_: int) -> tuple[int, str, str]:
        ready.wait()
        job = registry.start(taste, config, store, "cpu")
        job.join(60)
        progress = job.progress()
        assert progress.status == DONE, progress.message
        record = next(r for r in store.list() if r.key == progress.key)
        return id(job), progress.key, weights_digest(load_trained(taste, record, store, "cpu"))

    start = time.perf_counter()
    with ThreadPoolExecutor(SESSIONS) as pool:
        results = list(pool.map(session, range(SESSIONS)))
    seconds = time.perf_counter() - start
    assert len(counted_fits) == 1  # one training
    assert len({job for job, _, _ in results}) == 1  # every session watched the same job
    assert len({(key, digest) for _, key, digest in results}) == 1  # and got the same model
    assert_store_consistent(tmp_path, 1)
    print(f"\n{SESSIONS} sessions, one config: {seconds:.2f} s, trainings started: {len(counted_fits)}, "
          f"sessions served: {len(results)}")  # fmt: skip


def test_eight_processes_worth_of_callers_share_one_training_through_the_store_lock(
    taste, tmp_path, counted_fits
):
    """Without the registry (two servers on one models/ folder): the store's per-key lock lets one
    caller train while the others wait, then load its entry."""
    config = TrainConfig(epochs=3, bs=16, n_factors=8, seed=6)
    ready = threading.Barrier(SESSIONS)

    def caller(_: int) -> tuple[bool, str]:
        ready.wait()
        trained = get_or_train(taste, config, ModelStore(tmp_path), device="cpu")
        return trained.from_store, weights_digest(trained)

    start = time.perf_counter()
    with ThreadPoolExecutor(SESSIONS) as pool:
        results = list(pool.map(caller, range(SESSIONS)))
    seconds = time.perf_counter() - start
    assert len(counted_fits) == 1
    assert sorted(from_store for from_store, _ in results) == [False] + [True] * (SESSIONS - 1)
    assert len({digest for _, digest in results}) == 1
    assert_store_consistent(tmp_path, 1)
    print(
        f"\n{SESSIONS} callers through the store lock: {seconds:.2f} s, "
        f"trainings started: {len(counted_fits)}"
    )


@pytest.mark.parametrize("model", ["embedding_dot_bias", "embedding_nn"])
def test_twenty_recommendations_at_once_match_the_serial_answers(taste, tmp_path, model):
    store = ModelStore(tmp_path)
    config = TrainConfig(model=model, epochs=3, bs=16, n_factors=8)
    get_or_train(taste, config, store, device="cpu")
    record = store.list()[0]
    serial_model = load_trained(taste, record, store, "cpu")
    users = sorted(set(taste.ratings["user"]))[:REQUESTS]
    serial = {user: ranking.recommend(serial_model, user, n=5) for user in users}
    shared = load_trained(taste, record, store, "cpu")  # cold caches: the threads race to build them
    ready = threading.Barrier(REQUESTS)

    def request(user: int) -> pd.DataFrame:
        ready.wait()
        return ranking.recommend(shared, user, n=5)

    start = time.perf_counter()
    with ThreadPoolExecutor(REQUESTS) as pool:
        answers = dict(zip(users, pool.map(request, users)))
    seconds = time.perf_counter() - start
    for user in users:
        pd.testing.assert_frame_equal(answers[user], serial[user])
    assert len({tuple(serial[u]["title"]) for u in users}) > 1  # the answers differ between users
    assert not shared.model.training and torch.equal(
        shared.model.state_dict()[next(iter(shared.model.state_dict()))],
        serial_model.model.state_dict()[next(iter(serial_model.model.state_dict()))],
    )
    assert_store_consistent(tmp_path, 1)
    print(f"\n{REQUESTS} concurrent recommendations ({model}): {seconds:.2f} s, "
          f"answers checked: {len(answers)}/{REQUESTS} equal to the serial ones")  # fmt: skip


def test_store_json_is_what_list_reports(taste, tmp_path):
    """The consistency check itself sees a JSON whose checkpoint changed."""
    store = ModelStore(tmp_path)
    key = get_or_train(taste, TrainConfig(epochs=1, bs=16, n_factors=4), store, device="cpu").key
    assert_store_consistent(tmp_path, 1)
    meta = json.loads((tmp_path / f"{key}.json").read_text())
    (tmp_path / f"{key}.pt").write_bytes(b"changed")
    assert hashlib.sha256(b"changed").hexdigest() != meta["checkpoint_sha256"]
    with pytest.raises(AssertionError):
        assert_store_consistent(tmp_path, 1)


def test_a_job_trains_on_the_encoding_and_split_it_is_handed(taste, tmp_path):
    """The app's registry hands each job the encoding and split the pages hold (collab_ui.cache):
    the job asks for them once and trains the model get_or_train would make on its own."""
    from collab_core.encoding import encode, split

    config = TrainConfig(epochs=2, bs=16, n_factors=8, seed=5)
    asked = []

    def inputs(dataset, cfg):
        asked.append(cfg)
        return encode(dataset, cfg.item_key), split(dataset, cfg.split, cfg.valid_pct, cfg.seed)

    store = ModelStore(tmp_path)
    job = JobRegistry(inputs).start(taste, config, store, "cpu")
    job.join(60)
    assert job.progress().status == DONE, job.progress().message
    assert asked == [config]
    alone = get_or_train(taste, config, device="cpu")
    (record,) = store.list()
    assert record.key == alone.key == job.progress().key
    assert record.history.valid_loss == alone.record.history.valid_loss
    assert weights_digest(load_trained(taste, record, store, "cpu")) == weights_digest(alone)


def test_the_server_gives_blas_one_thread_per_call():
    """collab_ui limits NumPy's and SciPy's OpenBLAS to one thread, also for a library loaded after
    it: with their own spinning pools, two threads' calls on 2 cores starved each other (a training
    job's 1 ms SVD took seconds while a session drew). A fresh interpreter, so the order is real."""
    import subprocess
    import sys

    code = (
        "import numpy, collab_ui, scipy.linalg, threadpoolctl, json;"
        "print(json.dumps([i['num_threads'] for i in threadpoolctl.threadpool_info()"
        " if i['user_api'] == 'blas']))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    threads = json.loads(out.stdout)
    assert len(threads) >= 2 and set(threads) == {1}, threads  # NumPy's pool and SciPy's, loaded later


def fit_pids(log: FitLog) -> set[int]:
    return {int(line.split()[0]) for line in log.path.read_text().splitlines()}


def test_a_dot_model_trains_in_a_forked_process_to_the_same_weights(taste, tmp_path, counted_fits):
    """A one-thread CPU fit runs in a child process (its own interpreter lock), relays every event,
    and stores the weights a fit in this process gives, bit for bit; the child is gone after."""
    config = TrainConfig(epochs=3, bs=16, n_factors=8, seed=7)
    store = ModelStore(tmp_path / "app")
    job = TrainingJob(taste, config, store, "cpu").start()
    job.join(120)
    p = job.progress()
    assert p.status == DONE and not p.from_store, p.message
    assert fit_pids(counted_fits) - {os.getpid()}  # fitted elsewhere
    assert [row["epoch"] for row in p.epochs] == [0, 1, 2] and len(p.batch_losses) == p.step == p.total_steps
    assert p.map_xy is not None and p.map_frame == p.map_frames - 1  # the live map's frames came too
    assert len(p.map_labels) == len(p.map_colour) == len(p.map_xy)  # the plan, sent once, on the last frame
    assert not multiprocessing.active_children()
    here = get_or_train(taste, config, None, "cpu")
    stored = load_trained(taste, next(iter(store.list())), store, "cpu")
    assert weights_digest(stored) == weights_digest(here)
    assert p.epochs[-1]["valid_loss"] == here.record.history.valid_loss[-1]


def test_a_neural_model_trains_in_the_servers_thread(taste, tmp_path, counted_fits):
    """Two-thread fits stay in the worker thread: a forked child cannot use the parent's OpenMP pool."""
    job = TrainingJob(taste, TrainConfig(model="embedding_nn", epochs=1, bs=16), ModelStore(tmp_path), "cpu")
    job.start().join(120)
    assert job.progress().status == DONE and fit_pids(counted_fits) == {os.getpid()}


def test_stop_ends_a_forked_fit(taste, tmp_path):
    job = TrainingJob(taste, TrainConfig(epochs=200, bs=16, n_factors=8), ModelStore(tmp_path), "cpu").start()
    deadline = time.monotonic() + 60
    while job.progress().step == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    job.stop()
    job.join(60)
    p = job.progress()
    assert p.status == STOPPED and p.message.startswith("training stopped at epoch ")
    assert not multiprocessing.active_children() and ModelStore(tmp_path).list() == []


def test_a_forked_fit_that_diverges_says_why_in_one_line(taste, tmp_path):
    config = TrainConfig(model="dot", lr=10.0, wd=0.0, epochs=3, bs=16)
    job = TrainingJob(taste, config, ModelStore(tmp_path), "cpu").start()
    job.join(60)
    p = job.progress()
    assert p.status == FAILED and "lower the learning rate" in p.message and "\n" not in p.message


def test_a_training_process_killed_midway_is_reported_and_stores_nothing(taste, tmp_path, monkeypatch):
    """The child dies as the kernel's out-of-memory killer would end it: the page gets one line."""
    monkeypatch.setattr(learner, "fit_one_cycle", lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
    job = TrainingJob(taste, TrainConfig(epochs=1, bs=16), ModelStore(tmp_path), "cpu").start()
    job.join(60)
    p = job.progress()
    assert p.status == FAILED and p.message.startswith(
        "the training process ended without a result (signal 9"
    )
    assert ModelStore(tmp_path).list() == []


def test_the_server_computes_on_one_torch_thread_while_a_forked_fit_runs(taste, tmp_path):
    """The fit holds a core: the server's own ops go to one thread meanwhile, and back after."""
    before = torch.get_num_threads()
    seen: list[int] = []
    job = TrainingJob(taste, TrainConfig(epochs=200, bs=16, n_factors=8), ModelStore(tmp_path), "cpu").start()
    deadline = time.monotonic() + 60
    while job.progress().step == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    seen.append(torch.get_num_threads())
    job.stop()
    job.join(60)
    assert seen == [1] and torch.get_num_threads() == before


def test_which_fits_are_forked():
    """Dense one-thread CPU fits; not sparse ones (their large steps let the lock go), not the NN
    models (two threads), not CUDA (a forked child cannot use it)."""
    from collab_ui.jobs import FORK, forked

    assert FORK is not None  # Linux
    assert forked(TrainConfig(), "cpu") and forked(TrainConfig(model="dot_bias"), "cpu")
    assert not forked(TrainConfig(sparse=True, bs=8192), "cpu")
    assert not forked(TrainConfig(model="embedding_nn"), "cpu") and not forked(
        TrainConfig(model="autorec"), "cpu"
    )


def test_a_forked_fit_dies_with_a_killed_server(tmp_path):
    """SIGKILL the process that started a forked fit: the fit ends too, with nothing stored."""
    import subprocess
    import sys

    code = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import taste_dataset
from collab_core.config import TrainConfig
from collab_core.store import ModelStore
from collab_ui.jobs import TrainingJob
import multiprocessing
config = TrainConfig(epochs=1000, bs=16, n_factors=8)
job = TrainingJob(taste_dataset(), config, ModelStore({str(tmp_path)!r}), "cpu")
job.start()
while job.progress().step == 0:
    time.sleep(0.05)
print(multiprocessing.active_children()[0].pid, flush=True)
time.sleep(600)
"""
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(server.stdout.readline())
    os.kill(child, 0)  # training
    server.kill()
    server.wait(30)
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child) and ModelStore(tmp_path).list() == []


def alive(pid: int) -> bool:
    """Running: not gone, and not a zombie waiting for whoever adopted it to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

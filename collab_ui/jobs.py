"""Training jobs that outlive a page: one worker thread per (data, config), shared by sessions.

The worker makes no Streamlit calls. It turns the core's progress events into a `Progress`
snapshot behind a lock; the pages redraw from `job.progress()` in a fragment. Stop sets a
`threading.Event` that the training loop polls as `should_stop`.

The latest frame of the movie map is published already projected: on the PCA axes of that frame,
each axis signed to agree with the previous frame's, so the picture neither flips nor sits on the
initial weights' meaningless axes (a basis fixed at an early frame would show the final map from
an arbitrary angle). It is computed once per frame here (~1 ms, ~30 times a run), not per redraw.

A fit that runs on one thread with dense updates (the dot-product models on the CPU, the default
recipe at ml-100k: optim.FusedDotStep; `forked` says why not the sparse one) runs in a process
forked from the server, and the worker thread relays its events from a pipe. In the server's own
thread it shared the interpreter lock with every session's script and the web loop: a cold
server's first page, importing its modules while the default model trained, held the fit at 5.2 s
of wall time for 1.3 s of its own CPU time. The fork shares the data copy-on-write (no pickling),
dies with the server, and runs torch on one thread: the parent's OpenMP pool does not survive a
fork, and a child that asks for two threads hangs in it. Other fits (sparse ones, the NN and
autoencoder families on two threads, anything on CUDA, which a forked child cannot use) stay in
the worker thread.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from collab_core.config import TrainConfig, entry_key
from collab_core.data import Dataset
from collab_core.encoding import Encoded
from collab_core.errors import CollabError, TrainingCancelled
from collab_core.learner import get_or_train
from collab_core.optim import one_thread_fit
from collab_core.snapshots import live_basis
from collab_core.store import ModelStore
from collab_core.train import BatchEvent, EpochEvent, SnapshotEvent, pick_device

RUNNING, DONE, STOPPED, FAILED = "running", "done", "stopped", "failed"
# (dataset, config) -> the encoding and the (train, valid) rows the config trains on, made once and
# shared with the pages (collab_ui/cache.py), so a job neither encodes nor splits the data again
Inputs = Callable[[Dataset, TrainConfig], tuple[Encoded, tuple[np.ndarray, np.ndarray]]]


class BackgroundJob:
    """A run in a daemon thread (`_run`), observed through `progress()` under a lock and stopped
    from any session: the shape of the training and the simulation jobs."""

    _progress: object  # a frozen dataclass with a `status`; set before BackgroundJob.__init__

    def __init__(self, name: str):
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the run to stop at its next check (after the current batch)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def status(self) -> str:
        with self._lock:
            return self._progress.status

    def _run(self) -> None:
        """The work, then its outcome: done, stopped (Stop), or failed with one line for the page."""
        try:
            outcome = self._work()
        except TrainingCancelled as e:
            self._finish(STOPPED, str(e))
        except CollabError as e:
            self._finish(FAILED, " ".join(str(e).split()))
        except Exception as e:  # noqa: BLE001 -- a worker thread must hand every failure to the page
            self._finish(FAILED, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
        else:
            self._finish(DONE, **outcome)

    def _work(self) -> dict:
        """Run; return what `_finish` records beside DONE. Raise TrainingCancelled when stopped."""
        raise NotImplementedError

    def _finish(self, status: str, message: str = "", **outcome) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Progress:
    """What a page needs to draw a job: a consistent copy, safe to read without the lock."""

    status: str  # running, done, stopped or failed
    config: TrainConfig
    key: str  # the store key the model lands under
    step: int = 0  # batches done, over all epochs
    total_steps: int = 0
    epoch: int = 0  # 0-based epoch of the last event
    elapsed: float = 0.0  # seconds since the fit started
    eta: float | None = None  # seconds left, once known
    batch_losses: tuple[float, ...] = ()  # raw MSE of every batch so far
    epochs: tuple[dict, ...] = ()  # fastai's table: epoch, train_loss, valid_loss, time
    message: str = ""  # why it stopped or failed
    from_store: bool = False  # answered from the store without training
    started: float = field(default_factory=time.time)
    map_xy: np.ndarray | None = field(default=None, repr=False)  # (N, 2) the latest frame, projected
    map_labels: tuple[str, ...] = field(default=(), repr=False)  # its movies' titles
    map_colour: tuple[float, ...] = field(default=(), repr=False)  # their mean ratings
    map_epoch: float = 0.0  # epochs done when it was taken
    map_frame: int = 0  # its 0-based number
    map_frames: int = 0  # frames planned for the run


class TrainingJob(BackgroundJob):
    """One training run in a daemon thread, observable and stoppable from any session."""

    def __init__(
        self,
        dataset: Dataset,
        config: TrainConfig,
        store: ModelStore,
        device: str,
        inputs: Inputs | None = None,
    ):
        self._dataset, self._store, self._device, self._inputs = dataset, store, device, inputs
        self._losses: list[float] = []
        self._epochs: list[dict] = []
        self._basis: np.ndarray | None = None  # the live map's axes, kept from frame to frame
        self._frame: SnapshotEvent | None = None  # the latest frame, not yet projected
        self._projecting = threading.Lock()  # one projection at a time, in frame order
        self._progress = Progress(RUNNING, config, entry_key(config, dataset.fingerprint))
        self._child_stop = FORK.Event() if forked(config, device) else None
        super().__init__(f"train-{self._progress.key}")

    def stop(self) -> None:
        super().stop()
        if self._child_stop is not None:
            self._child_stop.set()

    def progress(self) -> Progress:
        self._project()
        with self._lock:
            return replace(self._progress, batch_losses=tuple(self._losses), epochs=tuple(self._epochs))

    def _on_event(self, event: BatchEvent | EpochEvent | SnapshotEvent) -> None:
        if isinstance(event, SnapshotEvent):
            self._on_snapshot(event)
            return
        with self._lock:
            p = self._progress
            if isinstance(event, BatchEvent):
                self._losses.extend(event.losses)
                self._progress = replace(
                    p,
                    step=event.step,
                    total_steps=event.total_steps,
                    epoch=event.epoch,
                    elapsed=event.elapsed,
                    eta=event.eta,
                )
            else:
                minutes, seconds = divmod(round(event.seconds), 60)
                self._epochs.append(
                    {
                        "epoch": event.epoch,
                        "train_loss": event.train_loss,
                        "valid_loss": event.valid_loss,
                        "time": f"{minutes:02d}:{seconds:02d}",
                    }
                )
                self._progress = replace(p, epoch=event.epoch, elapsed=event.elapsed, eta=event.eta)

    def _on_snapshot(self, event: SnapshotEvent) -> None:
        """Keep the new frame: it is projected when a page asks (the map redraws every 2 s, and
        projecting all 31 frames of a 1.2 s fit at ml-100k cost the server 31 SVDs while it ran)."""
        with self._lock:
            self._frame = event

    def _project(self) -> None:
        """Project the latest frame, if a new one came (outside the lock: the pages keep reading the
        last one meanwhile), on axes signed as the previous projection's."""
        with self._projecting:
            with self._lock:
                event, self._frame = self._frame, None
            if event is None:
                return
            frame = np.asarray(event.frame, dtype=np.float32)  # (N, F): a tensor, or an array from a child
            self._basis = live_basis(frame, self._basis)
            xy = (frame - frame.mean(axis=0)) @ self._basis.T  # (N, 2)
            with self._lock:
                self._progress = replace(
                    self._progress,
                    map_xy=xy,
                    map_labels=event.plan.labels,
                    map_colour=event.plan.mean_rating,
                    map_epoch=event.epoch,
                    map_frame=event.index,
                    map_frames=event.total,
                )

    def _finish(self, status: str, message: str = "", from_store: bool = False) -> None:
        with self._lock:
            self._progress = replace(self._progress, status=status, message=message, from_store=from_store)
        self._dataset = self._inputs = None  # the registry outlives the run; the data need not

    def _work(self) -> dict:
        p = self._progress
        encoded, rows = self._inputs(self._dataset, p.config) if self._inputs else (None, None)
        if self._child_stop is not None:
            return self._work_in_child(encoded, rows)
        trained = get_or_train(
            self._dataset,
            p.config,
            self._store,
            self._device,
            callback=self._on_event,
            should_stop=self._stop.is_set,
            encoded=encoded,
            rows=rows,
        )
        return {"from_store": trained.from_store}

    def _work_in_child(self, encoded: Encoded | None, rows) -> dict:
        """Fork the fit (module docstring) and relay its events until it answers or dies."""
        receive, send = FORK.Pipe(duplex=False)
        args = (os.getpid(), send, self._child_stop, self._dataset, self._progress.config, self._store,
                encoded, rows)  # fmt: skip
        child = FORK.Process(target=_train_in_child, args=args, name=self._thread.name, daemon=True)
        if self._stop.is_set():  # Stop before the fork
            self._child_stop.set()
        plan = None
        with WHILE_FORKED:
            WHILE_FORKED.fork(child)
            send.close()  # the child holds the only writer: its exit ends the reads
            try:
                while True:
                    try:
                        kind, payload = receive.recv()
                    except EOFError:
                        break
                    if kind == "event":
                        if isinstance(payload, SnapshotEvent):  # the plan comes with the first frame only
                            plan = payload.plan if payload.plan is not None else plan
                            payload = replace(payload, plan=plan)
                        self._on_event(payload)
                    elif kind == DONE:
                        return {"from_store": payload}
                    elif kind == STOPPED:
                        raise TrainingCancelled(payload)
                    else:
                        raise CollabError(payload)
            finally:
                receive.close()
                child.join(5)
                if child.is_alive():
                    child.kill()
        how = f"signal {-child.exitcode}" if (child.exitcode or 0) < 0 else f"exit code {child.exitcode}"
        raise CollabError(f"the training process ended without a result ({how}; out of memory?)")


FORK = multiprocessing.get_context("fork") if sys.platform == "linux" else None
RELAY_SECONDS = 0.1  # a forked fit sends its batch losses at most this often


class _WhileForked:
    """While forked fits run, the server's own torch ops take one thread (restored after the last
    one ends): the fit holds one of the 2 cores, and an op split over two OpenMP threads waits at its
    barrier for a descheduled one (a 25M page's 5M predictions took 6.6 s instead of 0.34 s with
    another process on a core). The fit in the server's thread did the same while it ran.

    Each fork happens with the server's objects frozen out of the garbage collector (gc.freeze), so
    the child's collections leave the pages of those objects shared. Keeping them frozen in the
    server until the fit ended measured no difference (peak PSS of the server and a forked 25M
    sparse fit 2.98 GB either way), so the server unfreezes at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running, self._threads = 0, 1

    def fork(self, child: multiprocessing.process.BaseProcess) -> None:
        with self._lock:
            gc.freeze()
            try:
                child.start()
            finally:
                gc.unfreeze()

    def __enter__(self) -> None:
        with self._lock:
            if self._running == 0:
                self._threads = torch.get_num_threads()
                torch.set_num_threads(1)
            self._running += 1

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                torch.set_num_threads(self._threads)


WHILE_FORKED = _WhileForked()


def forked(config: TrainConfig, device: str) -> bool:
    """Whether this fit runs in a forked process (module docstring): a one-thread CPU fit with dense
    updates, whose thousands of tiny steps wait on the interpreter lock in the server's thread. Not
    a sparse one (25M's default): its steps are large NumPy operations that let the lock go, it fits
    in the same time in the thread (121.6 s against 118.9-120.5 s forked, default recipe at 25M),
    and forked it cost 0.3 GB of copied pages (peak PSS of server and fit 2.98-3.11 GB, 2.70 GB in
    the thread; the ceiling is 3 GB)."""
    cpu = FORK is not None and pick_device(device).type == "cpu"
    return cpu and one_thread_fit(config) and not config.sparse


def _train_in_child(
    server: int, send, stop, dataset: Dataset, config: TrainConfig, store: ModelStore, encoded, rows
) -> None:
    """The forked fit: get_or_train on the data the server holds, events and the outcome sent back."""
    _die_with(server)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the server's handlers: they are the parent's
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    torch.set_num_threads(1)  # the fused step's own choice; two would hang in the parent's dead pool

    relay = _Relay(send)
    try:
        trained = get_or_train(dataset, config, store, "cpu", callback=relay, should_stop=stop.is_set,
                               encoded=encoded, rows=rows)  # fmt: skip
        outcome = (DONE, trained.from_store)
    except TrainingCancelled as e:
        outcome = (STOPPED, str(e))
    except CollabError as e:
        outcome = (FAILED, " ".join(str(e).split()))
    except Exception as e:  # noqa: BLE001 -- the server shows every failure as one line
        outcome = (FAILED, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
    relay.close(outcome)


class _Relay:
    """The forked fit's events, sent to the server by a thread of the child, so the fit never waits
    on the pipe: the batch events of each RELAY_SECONDS merged into one (the page redraws once a
    second), and a snapshot's plan (the mapped movies' titles and mean ratings) sent with the first
    frame only, the server putting it back on the others. Sent one by one from the fit, the 161
    events of a 1.2 s fit at ml-100k kept it 0.06-0.08 s blocked in send while the server's reader
    waited for the interpreter lock (merged, 71 events and their 100 KB frames still 0.04-0.06 s)."""

    def __init__(self, send) -> None:
        self._send = send
        self._pending: BatchEvent | None = None
        self._sent_at = 0.0
        self._plan_sent = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._run, name="relay", daemon=True)
        self._sender.start()

    def __call__(self, event: BatchEvent | EpochEvent | SnapshotEvent) -> None:
        if isinstance(event, BatchEvent):
            if self._pending is not None:
                event = replace(event, losses=[*self._pending.losses, *event.losses])
            self._pending = event
            if time.monotonic() - self._sent_at >= RELAY_SECONDS:
                self._flush()
            return
        self._flush()
        if isinstance(event, SnapshotEvent):  # an array pickles; a tensor would go by shared memory
            event = replace(event, frame=event.frame.numpy(), plan=None if self._plan_sent else event.plan)
            self._plan_sent = True
        self._post(event)

    def close(self, outcome: tuple[str, object]) -> None:
        """Send what is pending, then the outcome; wait until all of it is written, then close."""
        self._flush()
        self._queue.put(outcome)
        self._queue.put(None)
        self._sender.join()
        self._send.close()

    def _flush(self) -> None:
        if self._pending is not None:
            event, self._pending = self._pending, None
            self._post(event)

    def _post(self, event: BatchEvent | EpochEvent | SnapshotEvent) -> None:
        self._queue.put(("event", event))
        self._sent_at = time.monotonic()

    def _run(self) -> None:
        while (message := self._queue.get()) is not None:
            self._send.send(message)


def _die_with(server: int) -> None:
    """Ask Linux to kill this process when the server dies (a killed server leaves no fit behind).
    Strictly, when the forking thread ends: the job's worker, which waits for the child to end."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != server:  # it died before the request
        os._exit(1)


class JobRegistry:
    """All jobs of this server, keyed by (data fingerprint, config); a running job is shared."""

    def __init__(self, inputs: Inputs | None = None) -> None:
        self._inputs = inputs  # each job's encoding and split; by default the job makes its own
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, TrainConfig], TrainingJob] = {}

    def start(self, dataset: Dataset, config: TrainConfig, store: ModelStore, device: str) -> TrainingJob:
        """The running job for this data and config, or a new one (answered from the store if there)."""
        key = (dataset.fingerprint, config)
        with self._lock:
            job = self._jobs.get(key)
            if job is None or job.status != RUNNING:
                job = self._jobs[key] = TrainingJob(dataset, config, store, device, self._inputs).start()
            return job

    def get(self, fingerprint: str, config: TrainConfig) -> TrainingJob | None:
        with self._lock:
            return self._jobs.get((fingerprint, config))

    def running(self, fingerprint: str) -> list[TrainingJob]:
        """The jobs still training on this data."""
        with self._lock:
            jobs = [job for (fp, _), job in self._jobs.items() if fp == fingerprint]
        return [job for job in jobs if job.status == RUNNING]

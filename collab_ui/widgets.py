"""Shared widgets: the sidebar (dataset, active model, device), the live training panel, errors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st
import torch

from collab_core.config import TrainConfig, entry_key
from collab_core.data import Dataset
from collab_core.errors import CollabError
from collab_core.learner import Trained
from collab_core.record import StoredModel
from collab_core.store import ModelStore
from collab_ui import cache
from collab_ui.charts import live_curves, stored_curves
from collab_ui.jobs import DONE, FAILED, RUNNING, Progress, TrainingJob

DEFAULT = "default"  # the model selector's option for DEFAULT_CONFIG
DEFAULT_CONFIG = TrainConfig()  # the model a first visit trains: the chapter's recipe
SOURCES = {
    "ml-100k": ":material/movie: ml-100k",
    "upload": ":material/upload: Upload",
    "path": ":material/folder: Path",
}
OFFLINE_HINT = (
    "Offline? Point the app at a local copy: set COLLAB_DATA_DIR to an ml-100k folder before "
    "`streamlit run`, or choose **Path** in the sidebar and give the folder or zip, "
    "or **Upload** a ratings file."
)
COLUMNS = {  # how every table of movies or users is shown, whichever page shows it
    "title": st.column_config.TextColumn("Movie", width="medium"),
    "user": st.column_config.NumberColumn("User", format="%d"),
    "year": st.column_config.NumberColumn("Year", format="%d"),
    "genres": st.column_config.ListColumn("Genres"),
    "bias": st.column_config.NumberColumn("Bias", format="%.3f"),
    "predicted": st.column_config.ProgressColumn("Predicted", format="%.2f ★", min_value=0.0, max_value=5.5),
    "rating": st.column_config.NumberColumn("Rating", format="%.1f ★"),
    "timestamp": st.column_config.DatetimeColumn("Rated on", format="YYYY-MM-DD"),
    "error": st.column_config.NumberColumn("Error", format="%+.2f"),
    "in_valid": st.column_config.CheckboxColumn("Validation?"),
    "similarity": st.column_config.NumberColumn("Cosine similarity", format="%.3f"),
    "distance": st.column_config.NumberColumn("Distance", format="%.3f"),
    "mean_rating": st.column_config.NumberColumn("Mean rating", format="%.2f"),
    "n_ratings": st.column_config.NumberColumn("Ratings", format="%d"),
    **{f"pc{i}": st.column_config.NumberColumn(f"PC{i}", format="%.3f") for i in range(1, 11)},
}


@dataclass
class Context:
    """What the sidebar chose, for the pages."""

    dataset: Dataset | None
    store: ModelStore
    device: str
    choice: str  # DEFAULT or a store key
    records: list[StoredModel] = field(default_factory=list)  # stored models of this dataset, newest first

    @property
    def active_record(self) -> StoredModel | None:
        """The stored entry of the chosen model, or None while the default is not trained."""
        key = self.default_key if self.choice == DEFAULT else self.choice
        return next((r for r in self.records if r.key == key), None)

    @property
    def default_key(self) -> str | None:
        return entry_key(DEFAULT_CONFIG, self.dataset.fingerprint) if self.dataset is not None else None


def table(data: pd.DataFrame, key: str, container=st, columns: list[str] | None = None) -> None:
    """A movie or user table with the shared column formats, in a container keyed for tests."""
    if "genres" in data:
        data = data.assign(genres=data["genres"].str.split("|").map(lambda g: [x for x in g if x]))
    container.container(key=key).dataframe(data, hide_index=True, column_config=COLUMNS, column_order=columns)


def error(e: BaseException) -> None:
    """A user-facing failure as a one-line st.error."""
    st.error(" ".join(str(e).split()), icon=":material/error:")


def sidebar() -> Context:
    """Draw the sidebar on every page; remember the choices for `context()`."""
    notices = st.container()  # download progress and data errors show above the page
    with st.sidebar:
        st.markdown("### :material/tune: Collab Explorer")
        dataset = _dataset_picker(notices)
        device = st.selectbox("Device", devices(), key="device", help="Where training and predictions run")
        store = cache.store()
        records = [
            r for r in store.list() if dataset is not None and r.data.fingerprint == dataset.fingerprint
        ]
        ctx = Context(dataset, store, device, DEFAULT, records)
        ctx.choice = _model_picker(ctx)
        if dataset is not None and ctx.active_record is None:
            _start_default(ctx)
        elif ctx.active_record is not None:
            record = ctx.active_record
            st.caption(
                f"{record.label}  \nvalid MSE {record.metrics.mse:.4f} · "
                f"RMSE {record.metrics.rmse:.4f} · {record.fit_seconds:.1f} s on {record.device}"
            )
    st.session_state["context"] = ctx
    return ctx


def _model_picker(ctx: Context) -> str:
    """The active-model selector, kept in the URL as ?model=<key> (absent for the default)."""
    others = [r.key for r in ctx.records if r.key != ctx.default_key]
    labels = {r.key: r.label for r in ctx.records}
    wanted = st.session_state.pop("pending_model", None)  # a page asked to switch models
    if wanted is None and "model" not in st.session_state:  # the first run: restore a shared URL
        wanted = st.query_params.get("model")
    if wanted in (DEFAULT, *others):
        st.session_state["model"] = wanted
    choice = st.selectbox(
        "Active model",
        [DEFAULT, *others],
        key="model",
        format_func=lambda k: "Default model" if k == DEFAULT else labels[k],
        help="Any stored model trained on this dataset, or the default one (trained on first use)",
    )
    if choice == DEFAULT:
        st.query_params.pop("model", None)
    else:
        st.query_params["model"] = choice
    return choice


def context() -> Context:
    return st.session_state["context"]


def devices() -> list[str]:
    return ["auto", "cpu", "cuda"] if torch.cuda.is_available() else ["auto", "cpu"]


def _dataset_picker(notices) -> Dataset | None:
    sources = [name for name in SOURCES if name != "path" or cache.paths_allowed()]
    source = st.segmented_control(
        "Dataset", sources, format_func=SOURCES.get, key="source", default="ml-100k", required=True
    )
    try:
        if source == "upload":
            upload = st.file_uploader(
                "Ratings file (CSV, TSV or zip)",
                type=["csv", "tsv", "txt", "data", "zip"],
                key="upload",
                help="Columns user, item, rating (by name or position)",
            )
            columns = _column_options()
            if upload is None:
                return None
            payload = upload.getvalue()
            digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
            dataset = cache.upload_dataset(upload.name, digest, payload, columns)
        elif source == "path" and cache.paths_allowed():
            path = st.text_input(
                "Folder or file", key="data_path", placeholder="/data/ml-100k or ratings.csv"
            )
            columns = _column_options()
            if not path.strip():
                return None
            dataset = cache.path_dataset(path.strip(), columns)
        else:
            if cache.ml100k_missing():
                _download(notices)
            dataset = cache.default_dataset(cache.data_dir(), str(cache.cache_dir()))
    except CollabError as e:
        with notices:
            error(e)
            if source == "ml-100k":
                st.info(OFFLINE_HINT, icon=":material/wifi_off:")
        return None
    s = dataset.summary()
    st.caption(
        f"**{dataset.name}**: {s['ratings']:,} ratings · {s['users']:,} users · "
        f"{s['items']:,} movies · {1 - s['density']:.1%} empty"
    )
    for warning in dataset.warnings:
        st.caption(f":material/warning: {warning}")
    return dataset


def _column_options() -> tuple[tuple[str, str | None], ...]:
    with st.expander("Column names (optional)"):
        cols = {
            f"{role}_col": st.text_input(role, key=f"col_{role}", placeholder="auto").strip() or None
            for role in ("user", "item", "rating", "title")
        }
    return tuple(cols.items())


def _download(notices) -> None:
    """Download ml-100k into the cache folder with a progress bar above the page."""
    with notices:
        bar = st.progress(0.0, text="Downloading MovieLens 100k from GroupLens…")

    def progress(done: int, total: int | None) -> None:
        fraction = min(done / total, 1.0) if total else 0.0
        bar.progress(
            fraction,
            text=f"Downloading MovieLens 100k: {done / 1e6:.1f} MB"
            + (f" of {total / 1e6:.1f} MB" if total else ""),
        )

    cache.download(progress)
    bar.empty()


def _start_default(ctx: Context) -> None:
    """Train the default model on first use (shared by every session), with a compact status."""
    registry = cache.job_registry()
    job = registry.get(ctx.dataset.fingerprint, DEFAULT_CONFIG)
    if job is None or job.status == DONE:  # done but not listed: the store lost it; train again
        job = registry.start(ctx.dataset, DEFAULT_CONFIG, ctx.store, ctx.device)
    if job.status == RUNNING:
        _sidebar_status(job)
        return
    p = job.progress()
    notice = st.error if p.status == FAILED else st.warning  # a failure is an error; a stop is not
    notice(f"The default model {p.status}: {p.message}", icon=":material/warning:")
    if st.button("Train it again", key="retrain_default"):
        registry.start(ctx.dataset, DEFAULT_CONFIG, ctx.store, ctx.device)
        st.rerun()


@st.fragment(run_every=1.0)
def _sidebar_status(job: TrainingJob) -> None:
    p = job.progress()
    if p.status != RUNNING:
        st.rerun()
    st.progress(_fraction(p), text=f"Training the default model: {_progress_text(p)}")


def _fraction(p: Progress) -> float:
    return min(p.step / p.total_steps, 1.0) if p.total_steps else 0.0


def _progress_text(p: Progress) -> str:
    if not p.total_steps:
        return "preparing…"
    eta = f" · ETA {p.eta:.0f} s" if p.eta is not None else ""
    per_epoch = max(1, p.total_steps // p.config.epochs)
    batch = p.step - p.epoch * per_epoch
    return f"epoch {p.epoch + 1}/{p.config.epochs} · batch {batch:,}/{per_epoch:,}{eta}"


def require_dataset() -> Dataset:
    """The sidebar's dataset, or stop the page with a hint."""
    ctx = context()
    if ctx.dataset is None:
        st.info(
            "Choose a dataset in the sidebar: ml-100k, an upload or a path.", icon=":material/arrow_back:"
        )
        st.stop()
    return ctx.dataset


def active_model() -> Trained | None:
    """The active model if it is stored (loading it is quick), else None."""
    ctx = context()
    record = ctx.active_record
    if ctx.dataset is None or record is None:
        return None
    try:
        return cache.trained_model(ctx.dataset, record, ctx.dataset.fingerprint, record.key, ctx.device)
    except CollabError as e:
        error(e)
        st.stop()


def require_model() -> Trained:
    """The active model, or stop the page while the default trains (showing it train)."""
    require_dataset()
    trained = active_model()
    if trained is not None:
        return trained
    ctx = context()
    job = cache.job_registry().get(ctx.dataset.fingerprint, DEFAULT_CONFIG)
    st.info(
        "The default model is training; this page opens as soon as it is done.",
        icon=":material/hourglass_top:",
    )
    if job is not None and job.status == RUNNING:
        training_panel(job)
    st.stop()


@st.fragment(run_every=0.5)
def training_panel(job: TrainingJob) -> None:
    """Live progress, loss curves and epoch table of a running job, redrawn twice a second."""
    p = job.progress()
    if p.status != RUNNING:
        st.rerun()  # the whole page redraws with the finished (or stopped) job
    left, right = st.columns([5, 1], vertical_alignment="bottom")
    left.progress(_fraction(p), text=f"{p.config.model}: {_progress_text(p)} · {p.elapsed:.0f} s elapsed")
    right.button(
        "Stop",
        key=f"stop-{p.key}",
        icon=":material/stop_circle:",
        on_click=job.stop,
        width="stretch",
        type="primary",
    )
    st.plotly_chart(live_curves(p), key=f"live-{p.key}", config={"displaylogo": False})
    epoch_table(list(p.epochs))


def epoch_table(rows: list[dict]) -> None:
    """fastai's epoch table (epoch, train_loss, valid_loss[, time]), as the book prints it."""
    if not rows:
        st.caption("The epoch table fills in as each epoch ends.")
        return
    data = pd.DataFrame(rows).style.format("{:.6f}", subset=["train_loss", "valid_loss"])
    st.table(data, hide_index=True, width="content")


def finished_job(p: Progress, record: StoredModel | None) -> None:
    """The outcome of a job that is no longer running: stored curves, or why it ended."""
    if p.status == DONE and record is not None:
        how = "loaded from the store" if p.from_store else f"trained in {record.fit_seconds:.1f} s"
        st.success(
            f"{p.config.model} ({p.key}): {how}; valid MSE {record.metrics.mse:.4f}",
            icon=":material/check_circle:",
        )
        stored_model(record)
        return
    if p.status == FAILED:
        st.error(p.message, icon=":material/error:")
    else:
        st.warning(p.message or f"training {p.status}", icon=":material/stop_circle:")
    st.plotly_chart(live_curves(p), key=f"ended-{p.key}")
    epoch_table(list(p.epochs))


def stored_model(record: StoredModel) -> None:
    """A stored model's loss curves and epoch table."""
    st.plotly_chart(stored_curves(record), key=f"stored-{record.key}")
    history = record.history
    rows = [
        {"epoch": i, "train_loss": t, "valid_loss": v}
        for i, (t, v) in enumerate(zip(history.train_loss, history.valid_loss))
    ]
    epoch_table(rows)

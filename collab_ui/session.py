"""The app's controller: the sidebar (dataset, active model, device), the default model trained on
first use, and what the pages ask of it (`context()`, `require_*`, `activate_model`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st
import torch

from collab_core.config import TrainConfig, entry_key
from collab_core.data import Dataset
from collab_core.errors import CollabError
from collab_core.learner import Trained
from collab_core.recipes import Recipe, format_seconds
from collab_core.record import StoredModel
from collab_core.store import ModelStore
from collab_ui import cache
from collab_ui.draw import CURVE_SECONDS, error, fraction, progress_text, training_panel
from collab_ui.jobs import DONE, FAILED, RUNNING, TrainingJob

DEFAULT = "default"  # the model selector's option for the default model (Context.default_config)
PENDING = "pending_model"  # where activate_model leaves a key for the selector's next run
RESTORED = "model_from_url"  # the ?model= key this session has restored already
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


@dataclass
class Context:
    """What the sidebar chose, for the pages."""

    dataset: Dataset | None
    store: ModelStore
    device: str
    choice: str  # DEFAULT or a store key
    records: list[StoredModel] = field(default_factory=list)  # stored models of this dataset, newest first
    recipes: dict[str, Recipe] = field(default_factory=dict)  # auto (the default's), book, fast; estimated

    @property
    def active_record(self) -> StoredModel | None:
        """The stored entry of the chosen model, or None while the default is not trained."""
        key = self.default_key if self.choice == DEFAULT else self.choice
        return next((r for r in self.records if r.key == key), None)

    @property
    def default_recipe(self) -> Recipe | None:
        """The recipe the default model is trained with: sized to this dataset (recipes.py)."""
        return self.recipes.get("auto")

    @property
    def default_config(self) -> TrainConfig | None:
        return None if self.default_recipe is None else self.default_recipe.config

    @property
    def default_key(self) -> str | None:
        config = self.default_config
        return entry_key(config, self.dataset.fingerprint) if config is not None else None


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
        recipes = cache.train_recipes(dataset) if dataset is not None else {}
        ctx = Context(dataset, store, device, DEFAULT, records, recipes)
        ctx.choice = _model_picker(ctx)
        if dataset is not None and ctx.active_record is None:
            _start_default(ctx)
        elif ctx.active_record is not None:
            record = ctx.active_record
            st.caption(
                f"{record.label}  \nvalid MSE {record.metrics.mse:.4f} · "
                f"RMSE {record.metrics.rmse:.4f} · {record.fit_seconds:.1f} s on {record.device}"
            )
        if dataset is not None and ctx.choice == DEFAULT:
            _book_button(ctx)
    st.session_state["context"] = ctx
    return ctx


def _model_picker(ctx: Context) -> str:
    """The active-model selector, kept in the URL as ?model=<key> (absent for the default)."""
    others = [r.key for r in ctx.records if r.key != ctx.default_key]
    labels = {r.key: r.label for r in ctx.records}
    wanted = st.session_state.pop(PENDING, None)  # a page asked to switch: activate_model
    url = st.query_params.get("model")
    if wanted is None and url in others and st.session_state.get(RESTORED) != url:
        wanted = st.session_state[RESTORED] = url  # a shared URL, once its dataset is shown (a Path: later)
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
        if url in others or url == DEFAULT:  # a model of another dataset stays in the URL for when it is back
            st.query_params.pop("model", None)
    else:
        st.query_params["model"] = choice
    return choice


def activate_model(key: str) -> None:
    """Make a stored model the active one; the app reruns, as the sidebar was drawn before the page."""
    st.session_state[PENDING] = key if key != context().default_key else DEFAULT
    st.rerun()


def context() -> Context:
    return st.session_state["context"]


def devices() -> list[str]:
    return ["auto", "cpu", "cuda"] if torch.cuda.is_available() else ["auto", "cpu"]


def _dataset_picker(notices) -> Dataset | None:
    sources = [name for name in SOURCES if name != "path" or cache.paths_allowed()]
    if "source" not in st.session_state:  # ?source=path&data_path=...&model=...: a URL opens the same view
        st.session_state["source"] = (
            st.query_params.get("source") if st.query_params.get("source") in sources else "ml-100k"
        )
    source = st.segmented_control("Dataset", sources, format_func=SOURCES.get, key="source", required=True)
    if source == "ml-100k":
        st.query_params.pop("source", None)
    else:
        st.query_params["source"] = source
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
                "Folder or file",
                key="data_path",
                placeholder="/data/ml-100k or ratings.csv",
                bind="query-params",
            )
            columns = _column_options()
            if not path.strip():
                return None
            dataset = _read_path(path.strip(), columns, notices)
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
    s, scale = dataset.summary(), dataset.rating_scale
    low, high = scale.y_range
    st.caption(
        f"**{dataset.name}**: {s['ratings']:,} ratings · {s['users']:,} users · "
        f"{s['items']:,} movies · {1 - s['density']:.1%} empty  \n"
        f"ratings {scale.low:g}-{scale.high:g}{' in half stars' if scale.half_stars else ''} · "
        f"output range {low:g}-{high:g}"
    )
    for warning in dataset.warnings:
        st.caption(f":material/warning: {warning}")
    return dataset


def _read_path(path: str, columns: tuple[tuple[str, str | None], ...], notices) -> Dataset:
    """Read a server-side folder or file with a progress bar above the page (big tables take seconds)."""
    with notices:
        bar = st.empty()

    def progress(done: int, total: int) -> None:
        fraction = min(done / total, 1.0) if total else 0.0
        bar.progress(fraction, text=f"Reading {Path(path).name}: {done / 1e6:,.0f} of {total / 1e6:,.0f} MB")

    try:
        return cache.path_dataset(path, columns, progress)
    finally:
        bar.empty()


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
    """Say what the default model will be and how long it should take; train it on first use
    (shared by every session) when that fits the budget, else on a click; a compact status."""
    recipe, budget = ctx.default_recipe, cache.settings().train_budget
    st.caption(f":material/model_training: Default model: {_describe(recipe)}", help=recipe.describe())
    registry = cache.job_registry()
    job = registry.get(ctx.dataset.fingerprint, recipe.config)
    if job is None or job.status == DONE:  # done but not listed: the store lost it; train again
        if not recipe.fits(budget):  # never a long job on its own
            st.warning(
                f"Training it here is estimated at {format_seconds(recipe.seconds)}, beyond the "
                f"{format_seconds(budget)} a first visit waits for.",
                icon=":material/schedule:",
            )
            if st.button(f"Train it ({format_seconds(recipe.seconds)})", key="start_default"):
                registry.start(ctx.dataset, recipe.config, ctx.store, ctx.device)
                st.rerun()
            return
        job = registry.start(ctx.dataset, recipe.config, ctx.store, ctx.device)
    if job.status == RUNNING:
        _sidebar_status(job)
        return
    p = job.progress()
    notice = st.error if p.status == FAILED else st.warning  # a failure is an error; a stop is not
    notice(f"The default model {p.status}: {p.message}", icon=":material/warning:")
    if st.button("Train it again", key="retrain_default"):
        registry.start(ctx.dataset, recipe.config, ctx.store, ctx.device)
        st.rerun()


def _describe(recipe: Recipe) -> str:
    """`embedding_dot_bias · book recipe · 5 epochs · bs 64 · ~1.3 s`."""
    c, seconds = recipe.config, format_seconds(recipe.seconds)
    return f"{c.model} · {recipe.name} recipe · {c.epochs} epochs · bs {c.bs} · ~{seconds}"


def _book_button(ctx: Context) -> None:
    """The chapter's recipe one click away where the default is another, with its honest estimate;
    the Train page then shows it training and makes it the active model when it is done."""
    book = ctx.recipes["book"]
    if ctx.default_config == book.config or entry_key(book.config, ctx.dataset.fingerprint) in {
        r.key for r in ctx.records
    }:
        return
    if st.button(
        f"Train the book recipe instead (~{format_seconds(book.seconds)})",
        key="train_book",
        icon=":material/menu_book:",
        help=f"{book.describe()}: the chapter's fit_one_cycle(5, 5e-3, wd=0.1) at batch size 64",
    ):
        cache.job_registry().start(ctx.dataset, book.config, ctx.store, ctx.device)
        st.session_state["watched"] = (ctx.dataset.fingerprint, book.config)
        st.switch_page("app_pages/train.py")


@st.fragment(run_every=CURVE_SECONDS)  # as the training panel; cheap with no post-run GC (config.toml)
def _sidebar_status(job: TrainingJob) -> None:
    p = job.progress()
    if p.status != RUNNING:
        st.rerun()
    st.progress(fraction(p), text=f"Training the default model: {progress_text(p)}")


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
        return cache.trained_model(ctx.dataset, record, ctx.device)
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
    job = cache.job_registry().get(ctx.dataset.fingerprint, ctx.default_config)
    if job is not None and job.status in (RUNNING, DONE):  # done: the store lists it on the next run
        st.info(
            "The default model is training; this page opens as soon as it is done.",
            icon=":material/hourglass_top:",
        )
        if job.status == RUNNING:
            training_panel(job)
    else:
        st.info(
            "This page needs a model: start the default one in the sidebar, or train one on the Train page.",
            icon=":material/arrow_back:",
        )
    st.stop()

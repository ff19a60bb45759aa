"""How the pages draw things: tables of movies and users, errors, and training as it runs or ended."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from collab_core.config import AUTOENCODERS
from collab_core.record import StoredModel
from collab_ui.charts import live_curves, live_map, stored_curves
from collab_ui.jobs import DONE, FAILED, RUNNING, Progress, TrainingJob

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


def table(data: pd.DataFrame, key: str, container=st, columns: list[str] | None = None) -> None:
    """A movie or user table with the shared column formats, in a container keyed for tests."""
    if "genres" in data:
        data = data.assign(genres=data["genres"].str.split("|").map(lambda g: [x for x in g if x]))
    container.container(key=key).dataframe(data, hide_index=True, column_config=COLUMNS, column_order=columns)


def error(e: BaseException) -> None:
    """A user-facing failure as a one-line st.error."""
    st.error(" ".join(str(e).split()), icon=":material/error:")


def fraction(p: Progress) -> float:
    """How much of a job is done, 0 to 1."""
    return min(p.step / p.total_steps, 1.0) if p.total_steps else 0.0


def progress_text(p: Progress) -> str:
    """Where a job is: epoch, batch and ETA."""
    if not p.total_steps:
        return "preparing…"
    eta = f" · ETA {p.eta:.0f} s" if p.eta is not None else ""
    per_epoch = max(1, p.total_steps // p.config.epochs)
    batch = p.step - p.epoch * per_epoch
    return f"epoch {p.epoch + 1}/{p.config.epochs} · batch {batch:,}/{per_epoch:,}{eta}"


def training_panel(job: TrainingJob) -> None:
    """Live progress, loss curves and epoch table of a running job, and the movie map beside the
    curve. Two fragments: the progress side redraws every CURVE_SECONDS, the map every MAP_SECONDS.
    Their redraws take CPU from the fit (the browser's re-rendering above all, on a 2-core machine
    that also runs the browser): with the fit in its own process, the app's fit ran at 1.21x the
    CLI's with no redraws, 1.44x with the curve twice a second and the map every 2 s."""
    head = st.container()
    curve, movies = st.columns([3, 2])
    table = st.container()
    _live_progress(job, head, curve, table)
    with movies:
        _live_map(job)


CURVE_SECONDS = 1.0  # the progress bar's, loss curve's and epoch table's redraw interval
MAP_SECONDS = 2.0  # the live map's; a training run takes ~30 frames


@st.fragment(run_every=CURVE_SECONDS)
def _live_progress(job: TrainingJob, head, curve, table) -> None:
    p = job.progress()
    if p.status != RUNNING:
        st.rerun()  # the whole page redraws with the finished (or stopped) job
    left, right = head.columns([5, 1], vertical_alignment="bottom")
    left.progress(fraction(p), text=f"{p.config.model}: {progress_text(p)} · {p.elapsed:.0f} s elapsed")
    right.button(
        "Stop",
        key=f"stop-{p.key}",
        icon=":material/stop_circle:",
        on_click=job.stop,
        width="stretch",
        type="primary",
    )
    curve.plotly_chart(live_curves(p), key=f"live-{p.key}", config={"displaylogo": False})
    with table:
        epoch_table(list(p.epochs))


@st.fragment(run_every=MAP_SECONDS)
def _live_map(job: TrainingJob) -> None:
    """The map of the latest snapshot of the movie embeddings."""
    p = job.progress()
    if p.status != RUNNING:
        return  # the progress side reruns the page
    if p.map_xy is None:
        st.caption(
            f"{p.config.model} keeps no snapshots of the movie embeddings: no live map."
            if p.config.model in AUTOENCODERS
            else "The movie map appears here at the first snapshot of the embeddings."
        )
        return
    st.plotly_chart(live_map(p), key=f"live-map-{p.key}", config={"displaylogo": False})


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


def download_csv(data: pd.DataFrame, name: str, key: str, container=st) -> None:
    """A button that downloads a page's table as `name`.csv (written when clicked, no rerun)."""
    from collab_core.export import table_csv  # the writer lives in the core, beside the Projector's

    container.download_button(
        f"{name}.csv",
        lambda: table_csv(data),
        f"{name}.csv",
        "text/csv",
        key=key,
        on_click="ignore",
        icon=":material/download:",
        help="This table as CSV",
    )

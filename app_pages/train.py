"""Train: the configuration, the lr finder, live training with Stop, and stored models compared."""

import pandas as pd
import streamlit as st

from collab_core.config import FAMILY_DEFAULTS, FIELDS, TrainConfig, entry_key
from collab_core.errors import CollabError
from collab_core.recipes import estimate, format_seconds
from collab_ui import cache, charts
from collab_ui.draw import error, finished_job, training_panel
from collab_ui.jobs import DONE, RUNNING
from collab_ui.session import activate_model, context, devices, require_dataset

FORM = ("model", "n_factors", "epochs", "bs", "lr", "wd", "wd_bias", "seed", "split", "valid_pct", "sparse")
dataset = require_dataset()
ctx = context()
st.title(":material/model_training: Train")


def apply_recipe() -> None:
    """Fill the form from the chosen recipe (auto: the default model's; the chapter's; the fast one)."""
    config = ctx.recipes[st.session_state["cfg_recipe"]].config
    for name in FORM:
        st.session_state[f"cfg_{name}"] = getattr(config, name)
    st.session_state["cfg_y_low"], st.session_state["cfg_y_high"] = config.y_range


def apply_family() -> None:
    """A model picked: the fields its family sets (config.FAMILY_DEFAULTS) take the family's values,
    or the recipe's where it sets none; the other fields stay as the form has them."""
    config = ctx.recipes[st.session_state["cfg_recipe"]].config
    family = FAMILY_DEFAULTS.get(st.session_state["cfg_model"], {})
    for name in sorted({n for defaults in FAMILY_DEFAULTS.values() for n in defaults}):
        st.session_state[f"cfg_{name}"] = family.get(name, getattr(config, name))


def use_lr(lr: float) -> None:
    st.session_state["cfg_lr"] = float(f"{lr:.1e}")


def bounds(name: str, step: float | None = None) -> dict:
    """A widget's range and help from the config's field table; an open end lies one step inside."""
    f = FIELDS[name]
    low = f.low + step if f.open_low and step else None if f.open_low else f.low
    high = f.high - step if f.open_high and step else None if f.open_high else f.high
    return {"min_value": low, "max_value": high, "help": f.help}


def recipe_label(name: str) -> str:
    """`auto (book, ~1.3 s)`, `book (~6.1 h)`: each recipe with its estimated fit time here."""
    recipe = ctx.recipes[name]
    picked = f"{recipe.name}, " if name == "auto" else ""
    return f"{name} ({picked}~{format_seconds(recipe.seconds)})"


if "cfg_model" not in st.session_state:
    st.session_state.setdefault("cfg_recipe", "auto")
    apply_recipe()
keep = {"persist_state": "session"}  # the form survives a visit to another page
with st.container(border=True):
    head, recipe, where = st.columns([2, 1, 1], vertical_alignment="bottom")
    head.markdown("**Configuration**: the book's recipe is `fit_one_cycle(5, 5e-3, wd=0.1)` at batch size 64")
    recipe.selectbox(
        "Recipe",
        list(ctx.recipes),
        key="cfg_recipe",
        on_change=apply_recipe,
        format_func=recipe_label,
        **keep,
        help="Fills the form. 'auto' is the default model's: the book's recipe where it fits the time "
        "budget, else row-wise sparse AdamW sized to the data; 'book' is the chapter's; 'fast' uses 8x "
        "larger batches. Times are estimated from this machine's measured speed.",
    )
    device = where.selectbox("Device", devices(), index=devices().index(ctx.device), key="cfg_device")
    row = st.columns(4)
    model = row[0].selectbox(
        "Model", FIELDS["model"].choices, key="cfg_model", on_change=apply_family, **keep
    )
    n_factors = row[1].number_input("Factors", key="cfg_n_factors", **bounds("n_factors"), **keep)
    epochs = row[2].number_input("Epochs", key="cfg_epochs", **bounds("epochs"), **keep)
    bs = row[3].number_input("Batch size", step=32, key="cfg_bs", **bounds("bs"), **keep)
    row = st.columns(4)
    lr = row[0].number_input("Learning rate", format="%.1e", step=1e-3, key="cfg_lr", **bounds("lr"), **keep)
    wd = row[1].number_input("Weight decay", format="%.3f", step=0.01, key="cfg_wd", **bounds("wd"), **keep)
    wd_bias = row[2].number_input(
        "Bias weight decay",
        format="%.3f",
        step=0.01,
        key="cfg_wd_bias",
        placeholder="same as wd",
        **bounds("wd_bias"),
        **keep,
    )
    seed = row[3].number_input("Seed", key="cfg_seed", **bounds("seed"), **keep)
    row = st.columns(4)
    y_low = row[0].number_input("y_range low", step=0.5, key="cfg_y_low", **keep)
    y_high = row[1].number_input("y_range high", step=0.5, key="cfg_y_high", **keep)
    split = row[2].selectbox(
        "Split", FIELDS["split"].choices, key="cfg_split", help=FIELDS["split"].help, **keep
    )
    valid_pct = row[3].slider(
        "Validation share",
        step=0.05,
        key="cfg_valid_pct",
        **bounds("valid_pct", step=0.05),
        **keep,
        disabled=split not in ("random", "temporal"),
    )
    sparse = st.toggle("Row-wise sparse AdamW", key="cfg_sparse", help=FIELDS["sparse"].help, **keep)
    try:
        config = TrainConfig(
            model=model,
            n_factors=int(n_factors),
            epochs=int(epochs),
            lr=float(lr),
            wd=float(wd),
            wd_bias=wd_bias,
            bs=int(bs),
            seed=int(seed),
            y_range=(y_low, y_high),
            split=split,
            valid_pct=float(valid_pct),
            sparse=bool(sparse),
        )
    except CollabError as e:
        error(e)
        config = None
    start_col, find_col, note_col = st.columns([1, 1, 3], vertical_alignment="center")
    start = start_col.button(
        "Start training",
        type="primary",
        icon=":material/play_arrow:",
        disabled=config is None,
        key="start",
        width="stretch",
    )
    find = find_col.button(
        "Find a learning rate",
        icon=":material/search:",
        disabled=config is None,
        key="lr_find",
        width="stretch",
    )
    if config is not None and entry_key(config, dataset.fingerprint) in {r.key for r in ctx.records}:
        note_col.caption(":material/inventory_2: This configuration is in the store: it loads at once.")
    elif config is not None:
        seconds = estimate(config, *cache.data_speed(dataset))
        if seconds is not None:
            note_col.caption(f":material/schedule: Estimated fit time here: ~{format_seconds(seconds)}")

if find and config is not None:
    with st.spinner("Sweeping the learning rate from 1e-7 to 10 over 100 batches…"):
        try:
            st.session_state["lr_found"] = cache.lr_sweep(dataset, config, device)
        except CollabError as e:
            error(e)
found = st.session_state.get("lr_found")
if found is not None:
    with st.container(border=True):
        chart, advice = st.columns([3, 1], vertical_alignment="center")
        chart.plotly_chart(charts.lr_finder(found.lrs, found.losses, found.suggestion), key="lr_chart")
        advice.metric("Suggested learning rate", f"{found.suggestion:.1e}", help="fastai's 'valley' rule")
        advice.button(
            "Use it", on_click=use_lr, args=(found.suggestion,), key="use_lr", icon=":material/check:"
        )

if start and config is not None:
    try:
        cache.job_registry().start(dataset, config, ctx.store, device)
        st.session_state["watched"] = (dataset.fingerprint, config)
    except CollabError as e:
        error(e)

st.subheader("Training")
registry = cache.job_registry()
watched = st.session_state.get("watched")
job = registry.get(*watched) if watched and watched[0] == dataset.fingerprint else None
others = [j for j in registry.running(dataset.fingerprint) if j is not job]
if job is not None and job.status == RUNNING:
    training_panel(job)
elif job is not None:
    progress = job.progress()
    record = next((r for r in ctx.records if r.key == progress.key), None)
    if progress.status == DONE and record is not None and st.session_state.get("adopted") != progress.key:
        st.session_state["adopted"] = progress.key  # make the finished model the active one, once
        activate_model(progress.key)
    finished_job(progress, record)
elif not others:
    st.caption("Start a training above; its progress, loss curves and epoch table appear here.")
for other in others:
    st.caption(
        f"Also training on this data (started by another page or session): {other.progress().config.model}"
    )
    training_panel(other)

st.subheader("Compare stored models")
if not ctx.records:
    st.caption("No stored models for this dataset yet.")
    st.stop()
labels = {r.key: r.label for r in ctx.records}
picked = st.multiselect(
    "Models", list(labels), default=list(labels)[:5], format_func=labels.get
)  # no key: when a model lands in the store the default selection takes it in
chosen = [r for r in ctx.records if r.key in picked]
if chosen:
    st.plotly_chart(charts.compare_curves(chosen), key="compare_chart")
table = pd.DataFrame(
    [
        {
            "key": r.key,
            "model": r.config.model,
            "factors": r.config.n_factors,
            "epochs": r.config.epochs,
            "lr": r.config.lr,
            "wd": r.config.wd,
            "bs": r.config.bs,
            "split": r.config.split,
            "valid_mse": r.metrics.mse,
            "valid_rmse": r.metrics.rmse,
            "valid_mae": r.metrics.mae,
            "fit_seconds": r.fit_seconds,
            "device": r.device,
            "saved_at": pd.Timestamp(r.saved_at),
        }
        for r in (chosen or ctx.records)
    ]
)
selection = st.dataframe(
    table,
    hide_index=True,
    key="models_table",
    on_select="rerun",
    selection_mode="single-row",
    column_config={
        "key": st.column_config.TextColumn("key", width="small"),
        "lr": st.column_config.NumberColumn("lr", format="%.1e"),
        "wd": st.column_config.NumberColumn("wd", format="%g"),
        "valid_mse": st.column_config.NumberColumn("valid MSE", format="%.4f"),
        "valid_rmse": st.column_config.NumberColumn("valid RMSE", format="%.4f"),
        "valid_mae": st.column_config.NumberColumn("valid MAE", format="%.4f"),
        "fit_seconds": st.column_config.NumberColumn("fit (s)", format="%.1f"),
        "saved_at": st.column_config.DatetimeColumn("saved", format="YYYY-MM-DD HH:mm"),
    },
)
rows = selection.selection.rows
if rows:
    key = table.iloc[rows[0]]["key"]
    if st.button(f"Make {labels[key]} the active model", key="activate", icon=":material/swap_horiz:"):
        activate_model(key)
else:
    st.caption("Select a row to make that model the active one.")

"""Plotly figures for the pages: every one with a title, axis labels and hover text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from collab_core.record import StoredModel
from collab_ui.jobs import Progress

MAX_POINTS = 600  # a curve drawn with more points only costs bandwidth
BETA = 0.98  # fastai's smoothing of the training loss
PALETTE = px.colors.qualitative.Safe
GENRE_COLOURS = px.colors.qualitative.Dark24
EXTREMES = 2  # movies labelled at each end of each axis of a map, beside the most-rated ones


def styled(fig: go.Figure, title: str, x: str, y: str, height: int = 380) -> go.Figure:
    """Title, axis labels and the common margins."""
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left"},
        xaxis_title=x,
        yaxis_title=y,
        height=height,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
    )
    return fig


def smooth(values: np.ndarray, beta: float = BETA) -> np.ndarray:
    """fastai's debiased exponential moving average (AvgSmoothLoss)."""
    return pd.Series(values, dtype="float64").ewm(alpha=1 - beta, adjust=True).mean().to_numpy()


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    step = max(1, len(x) // MAX_POINTS)
    keep = np.r_[np.arange(0, len(x), step), len(x) - 1] if len(x) else np.arange(0)
    return x[np.unique(keep)], y[np.unique(keep)]


def live_curves(p: Progress) -> go.Figure:
    """Loss curves of a job in progress: training loss per batch (smoothed), validation per epoch."""
    losses = np.asarray(p.batch_losses, dtype="float64")
    per_epoch = max(1, p.total_steps // p.config.epochs) if p.total_steps else 1
    train_x, train_y = _thin(np.arange(1, len(losses) + 1), smooth(losses))
    valid = [row["valid_loss"] for row in p.epochs]
    valid_x = per_epoch * np.arange(1, len(valid) + 1)
    fig = _curves(train_x, train_y, valid_x, np.asarray(valid), per_epoch)
    if p.total_steps:
        fig.update_xaxes(range=[0, p.total_steps * 1.02])
    else:
        fig.update_xaxes(showticklabels=False, range=[0, 1])
        fig.update_yaxes(showticklabels=False, range=[0, 1])
        fig.add_annotation(
            text="waiting for the first batches…",
            showarrow=False,
            x=0.5,
            y=0.5,
            font={"size": 16, "color": "#888"},
        )
    return styled(fig, f"Loss while training {p.config.model} (MSE)", "batch", "loss (MSE)")


def stored_curves(record: StoredModel) -> go.Figure:
    """The same curves from a stored model's history (its batch losses are mean-pooled)."""
    history = record.history
    pooled = np.asarray(history.batch_loss, dtype="float64")
    n_batches = history.n_batches or len(pooled)
    width = n_batches / max(1, len(pooled))  # batches per pooled point
    train_x = (np.arange(len(pooled)) + 0.5) * width
    train_y = smooth(pooled, BETA**width)
    epochs = len(history.valid_loss)
    per_epoch = n_batches / max(1, epochs)
    valid_x = per_epoch * np.arange(1, epochs + 1)
    fig = _curves(train_x, train_y, valid_x, np.asarray(history.valid_loss), per_epoch)
    return styled(fig, f"Loss of {record.config.model} ({record.key}, MSE)", "batch", "loss (MSE)")


def _curves(train_x, train_y, valid_x, valid_y, per_epoch: float) -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(
        x=train_x,
        y=train_y,
        mode="lines",
        name="train (smoothed)",
        line={"color": PALETTE[0]},
        hovertemplate="batch %{x:.0f}<br>train loss %{y:.4f}<extra></extra>",
    )
    fig.add_scatter(
        x=valid_x,
        y=valid_y,
        mode="lines+markers",
        name="valid",
        line={"color": PALETTE[1]},
        customdata=np.arange(1, len(valid_y) + 1),
        hovertemplate="end of epoch %{customdata}<br>valid loss %{y:.4f}<extra></extra>",
    )
    for x in valid_x[:-1]:
        fig.add_vline(x=x, line={"color": "#cccccc", "width": 1, "dash": "dot"})
    return fig


def compare_curves(records: list[StoredModel]) -> go.Figure:
    """Stored models side by side: validation (solid) and training (dashed) loss per epoch."""
    fig = go.Figure()
    for i, record in enumerate(records):
        colour, history, name = PALETTE[i % len(PALETTE)], record.history, record.label
        epochs = np.arange(1, len(history.valid_loss) + 1)
        fig.add_scatter(
            x=epochs,
            y=history.valid_loss,
            mode="lines+markers",
            name=f"{name} valid",
            line={"color": colour},
            legendgroup=record.key,
            hovertemplate=f"{name}<br>epoch %{{x}}<br>valid %{{y:.4f}}<extra></extra>",
        )
        fig.add_scatter(
            x=epochs,
            y=history.train_loss,
            mode="lines",
            name=f"{name} train",
            line={"color": colour, "dash": "dash"},
            legendgroup=record.key,
            showlegend=False,
            hovertemplate=f"{name}<br>epoch %{{x}}<br>train %{{y:.4f}}<extra></extra>",
        )
    fig.update_xaxes(dtick=1)
    styled(fig, "Stored models: validation (solid) and training (dashed) loss per epoch", "epoch", "MSE")
    fig.update_layout(legend={"orientation": "v", "y": 1.0, "x": 1.02, "xanchor": "left", "yanchor": "top"})
    return fig


def lr_finder(lrs: list[float], losses: list[float], suggestion: float) -> go.Figure:
    """The lr finder: smoothed loss against a log-scale learning rate, the valley marked."""
    fig = go.Figure()
    fig.add_scatter(
        x=lrs,
        y=losses,
        mode="lines",
        name="smoothed loss",
        line={"color": PALETTE[0]},
        hovertemplate="lr %{x:.2e}<br>loss %{y:.4f}<extra></extra>",
    )
    at = float(np.interp(np.log(suggestion), np.log(lrs), losses))
    fig.add_scatter(
        x=[suggestion],
        y=[at],
        mode="markers",
        name=f"valley {suggestion:.1e}",
        marker={"size": 12, "color": PALETTE[1], "symbol": "circle"},
        hovertemplate="suggested lr %{x:.2e}<extra></extra>",
    )
    fig.update_xaxes(type="log", exponentformat="power")
    return styled(fig, "Learning-rate finder", "learning rate (log scale)", "loss (MSE, smoothed)")


def rating_histogram(counts: pd.Series) -> go.Figure:
    """How often each rating value occurs (counts: index rating value, ascending)."""
    fig = go.Figure(
        go.Bar(
            x=counts.index.astype(float),
            y=counts.to_numpy(),
            marker_color=PALETTE[0],
            customdata=counts.to_numpy() / counts.sum(),
            hovertemplate="rating %{x:g}<br>%{y:,} ratings (%{customdata:.1%})<extra></extra>",
        )
    )
    fig.update_xaxes(dtick=0.5 if (counts.index % 1 != 0).any() else 1)
    return styled(fig, "Rating histogram", "rating", "number of ratings", height=320)


def long_tail(counts: pd.Series, what: str) -> go.Figure:
    """Ratings per user or per movie, most active first: the long tail of collaborative data.
    Beyond MAX_POINTS ranks the curve is drawn through MAX_POINTS of them, log-spaced (the head
    and the tail both keep their shape; 162k points would only cost bandwidth)."""
    counts = counts.sort_values(ascending=False)
    rank = np.arange(1, len(counts) + 1)
    if len(counts) > MAX_POINTS:
        rank = np.unique(np.geomspace(1, len(counts), MAX_POINTS).round().astype(int))
    shown = counts.iloc[rank - 1]
    fig = go.Figure(
        go.Scatter(
            x=rank,
            y=shown.to_numpy(),
            mode="lines",
            fill="tozeroy",
            line={"color": PALETTE[2]},
            customdata=shown.index.astype(str),
            hovertemplate="#%{x:,}: %{customdata}<br>%{y:,} ratings<extra></extra>",
        )
    )
    fig.update_yaxes(type="log", dtick="D2")
    median = float(counts.median())
    return styled(
        fig,
        f"Ratings per {what} (median {median:g}, {len(counts):,} {what}s)",
        f"{what}s, most ratings first",
        "ratings (log scale)",
        height=320,
    )


def crosstab_heatmap(grid: pd.DataFrame, filled: np.ndarray | None = None) -> go.Figure:
    """Users x movies: real ratings in one colour scale, the model's fill-ins in another."""
    values = grid.to_numpy(dtype="float64")
    filled = np.zeros_like(values, dtype=bool) if filled is None else np.asarray(filled, dtype=bool)
    users, titles = [f"user {u}" for u in grid.index], [str(t) for t in grid.columns]
    fig = go.Figure()
    fig.add_heatmap(
        z=np.where(filled, np.nan, values),
        x=titles,
        y=users,
        colorscale="Blues",
        zmin=1,
        zmax=5,
        name="rating",
        colorbar={"title": "rating", "x": 1.0},
        text=np.where(filled | np.isnan(values), "", np.round(values, 1).astype(str)),
        texttemplate="%{text}",
        hovertemplate="%{y}<br>%{x}<br>rated %{z:g}<extra></extra>",
        hoverongaps=False,
    )
    if filled.any():
        fig.add_heatmap(
            z=np.where(filled, values, np.nan),
            x=titles,
            y=users,
            colorscale="Oranges",
            zmin=1,
            zmax=5,
            name="predicted",
            colorbar={"title": "predicted", "x": 1.09},
            text=np.where(filled, np.char.add(np.round(values, 1).astype(str), "*"), ""),
            texttemplate="%{text}",
            hovertemplate="%{y}<br>%{x}<br>predicted %{z:.2f}<extra></extra>",
            hoverongaps=False,
        )
    fig.update_xaxes(tickangle=-40, side="bottom")
    fig.update_yaxes(autorange="reversed")
    title = "Most active users x most-rated movies" + (
        " (* = the model's prediction)" if filled.any() else ""
    )
    return styled(fig, title, "movie", "user", height=620)


COLOURS = {  # colour-by choice -> (column, continuous?)
    "genre": ("genre", False),
    "year": ("year", True),
    "mean rating": ("mean_rating", True),
    "rating count": ("n_ratings", True),
    "validation RMSE": ("valid_rmse", True),  # the page joins certainty.movie_errors' column
    "one genre against the rest": ("in_genre", False),  # the page passes which movies are in it
}
ONE_GENRE = "one genre against the rest"
OTHERS_COLOUR = "#c4c9d0"
GENRE_COLOUR = "#d6336c"


def bias_scatter(table: pd.DataFrame, what: str) -> go.Figure:
    """Each movie's (or user's) learned bias against its mean rating, sized by its number of ratings."""
    name = "title" if "title" in table else "user"
    decades = max(1, int(np.log10(max(1, table["n_ratings"].max()))) + 1)  # colour bar ticks 1, 10, 100, ...
    fig = go.Figure(
        go.Scattergl(
            x=table["mean_rating"],
            y=table["bias"],
            mode="markers",
            marker={
                "size": 5 + 12 * np.sqrt(table["n_ratings"] / table["n_ratings"].max()),
                "color": np.log10(table["n_ratings"].clip(lower=1)),
                "colorscale": "Viridis",
                "opacity": 0.7,
                "colorbar": {
                    "title": "ratings",
                    "tickvals": list(range(decades)),
                    "ticktext": [f"{10**k:,}" for k in range(decades)],
                },
            },
            customdata=np.stack([table[name].astype(str), table["n_ratings"]], axis=1),
            hovertemplate="%{customdata[0]}<br>bias %{y:.3f}<br>mean rating %{x:.2f}<br>"
            "%{customdata[1]} ratings<extra></extra>",
        )
    )
    return styled(fig, f"{what.capitalize()} bias against mean rating", "mean rating", "learned bias", 420)


def _hover(coords: pd.DataFrame) -> tuple[np.ndarray, str]:
    data = np.stack(
        [
            coords["title"].astype(str),
            coords["year"].astype("string").fillna("?"),
            coords["genres"].str.replace("|", ", "),
            coords["mean_rating"].round(2),
            coords["n_ratings"],
            coords.index.to_numpy(),
        ],
        axis=1,
    )
    template = (
        "<b>%{customdata[0]}</b> (%{customdata[1]})<br>%{customdata[2]}<br>"
        "mean rating %{customdata[3]} · %{customdata[4]} ratings<extra></extra>"
    )
    return data, template


def embedding_map(
    coords: pd.DataFrame,
    x: str,
    y: str,
    colour: str,
    label_top: int,
    title: str,
    axis_names: tuple[str, str],
    in_genre: pd.Series | None = None,
) -> go.Figure:
    """A scatter of movie coordinates (PCA, t-SNE or UMAP): hover details, colour, the top K labelled.
    For the colour ONE_GENRE, in_genre is a bool per row of coords, named for the genre.

    customdata[5] of every point is the row's index, so a selection maps back to movies.
    """
    coords = coords.assign(genre=coords["genres"].str.split("|").str[0].replace("", "unknown"))
    column, continuous = COLOURS[colour]
    data, template = _hover(coords)
    size, opacity = (7, 0.8) if len(coords) <= 2000 else (4, 0.6)  # tens of thousands: smaller, see-through
    fig = go.Figure()
    if continuous:
        values = coords[column].astype("float64")
        scale = np.log10(values.clip(lower=1)) if column == "n_ratings" else values
        fig.add_scattergl(
            x=coords[x],
            y=coords[y],
            mode="markers",
            name="movies",
            showlegend=False,  # the colour bar says what the colour means; a legend entry would overlap it
            customdata=data,
            hovertemplate=template,
            marker={
                "color": scale,
                "colorscale": "Viridis",
                "size": size,
                "opacity": opacity,
                "showscale": True,
                "colorbar": {"title": "log10 ratings" if column == "n_ratings" else colour},
            },
        )
    elif colour == ONE_GENRE:  # every movie of the genre, whichever other genres it has, over the rest
        member = in_genre.reindex(coords.index, fill_value=False).to_numpy(dtype=bool)
        for rows, name, tint in (
            (~member, "other movies", OTHERS_COLOUR),
            (member, str(in_genre.name), GENRE_COLOUR),
        ):
            fig.add_scattergl(
                x=coords.loc[rows, x],
                y=coords.loc[rows, y],
                mode="markers",
                name=f"{name} ({rows.sum():,})",
                customdata=data[rows],
                hovertemplate=template,
                marker={"color": tint, "size": size, "opacity": opacity},
            )
    else:
        for i, (genre, rows) in enumerate(coords.groupby("genre", sort=True)):
            fig.add_scattergl(
                x=rows[x],
                y=rows[y],
                mode="markers",
                name=genre,
                customdata=data[coords.index.get_indexer(rows.index)],
                hovertemplate=template,
                marker={"color": GENRE_COLOURS[i % len(GENRE_COLOURS)], "size": size, "opacity": opacity},
            )
    if label_top:  # the most-rated movies, and (in violet) the ones at the ends of each axis
        top = coords.nlargest(label_top, "n_ratings")
        ends = pd.concat([f(EXTREMES, axis) for axis in (x, y) for f in (coords.nsmallest, coords.nlargest)])
        ends = ends[~ends.index.duplicated() & ~ends.index.isin(top.index)]
        fig.add_scatter(**_labels(top, x, y, "#1f2933"), name=f"top {label_top} labels")
        fig.add_scatter(**_labels(ends, x, y, "#7c3aed"), name="extremes")
    styled(fig, title, axis_names[0], axis_names[1], height=620)
    fig.update_layout(
        dragmode="lasso",
        legend={"orientation": "v", "x": 1.02, "y": 1.0, "xanchor": "left", "yanchor": "top"},
    )
    return fig


def mark_neighbours(fig: go.Figure, movie: pd.DataFrame, near: pd.DataFrame, x: str, y: str) -> go.Figure:
    """The searched movie (one row of map coordinates) as a star, lines to its neighbours (rows with
    a similarity column, nearest first, in the full embedding space) and their names; the other
    movies fade and lose their labels where these name them."""
    named = set(_short_titles(movie)) | set(_short_titles(near))
    for t in fig.data:
        if t.mode == "text":  # a label trace: the search's own labels replace these
            keep = [i for i, text in enumerate(t.text) if text not in named]
            t.update(x=[t.x[i] for i in keep], y=[t.y[i] for i in keep], text=[t.text[i] for i in keep])
        elif t.mode == "markers":
            t.marker.opacity = 0.35
    x0, y0 = float(movie[x].iloc[0]), float(movie[y].iloc[0])
    fig.add_scatter(
        x=np.ravel([[x0, xi, None] for xi in near[x]]),
        y=np.ravel([[y0, yi, None] for yi in near[y]]),
        mode="lines",
        name=f"{len(near)} nearest (full space)",
        line={"color": "#f08c00", "width": 2},
        hoverinfo="skip",
    )
    fig.add_scatter(
        x=near[x],
        y=near[y],
        mode="markers+text",
        name="neighbours",
        showlegend=False,
        text=[f"{i}. {t}" for i, t in enumerate(_short_titles(near), 1)],
        textposition="bottom center",
        textfont={"size": 11, "color": "#9c4f00"},
        marker={"size": 11, "color": "rgba(0,0,0,0)", "line": {"color": "#f08c00", "width": 2}},
        customdata=np.stack([near["title"].astype(str), near["similarity"]], axis=1),
        hovertemplate="<b>%{customdata[0]}</b><br>cosine similarity %{customdata[1]:.3f}<extra></extra>",
    )
    fig.add_scatter(
        x=[x0],
        y=[y0],
        mode="markers+text",
        name="searched movie",
        text=_short_titles(movie),
        textposition="top center",
        textfont={"size": 13, "color": "#000000"},
        marker={"size": 20, "symbol": "star", "color": "#f08c00", "line": {"color": "#000000", "width": 1}},
        customdata=movie[["title"]].astype(str),
        hovertemplate="<b>%{customdata[0]}</b> (searched)<extra></extra>",
    )
    return fig


def mark_selected(fig: go.Figure, rows: pd.DataFrame, x: str, y: str) -> go.Figure:
    """Ring the selected movies (a selection restored from a link shows where it is)."""
    fig.add_scattergl(
        x=rows[x],
        y=rows[y],
        mode="markers",
        name=f"selected ({len(rows):,})",
        marker={"size": 12, "color": "rgba(0,0,0,0)", "line": {"color": "#111827", "width": 1.5}},
        hoverinfo="skip",
    )
    return fig


def _short_titles(rows: pd.DataFrame) -> pd.Series:
    return rows["title"].str.replace(r"\s*\(\d{4}\)$", "", regex=True)


def _labels(rows: pd.DataFrame, x: str, y: str, colour: str) -> dict:
    """A text-only trace naming these movies at their points (titles without the year)."""
    return {
        "x": rows[x],
        "y": rows[y],
        "mode": "text",
        "text": rows["title"].str.replace(r"\s*\(\d{4}\)$", "", regex=True),
        "textposition": "top center",
        "textfont": {"size": 11, "color": colour},
        "hoverinfo": "skip",
        "showlegend": False,
    }


def explained_variance(ratios: np.ndarray) -> go.Figure:
    ratios = np.asarray(ratios)
    names = [f"PC{i + 1}" for i in range(len(ratios))]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=ratios,
            marker_color=PALETTE[3],
            text=[f"{r:.1%}" for r in ratios],
            textposition="outside",
            textangle=0,
            hovertemplate="%{x}: %{y:.1%} of the variance<extra></extra>",
        )
    )
    fig.update_yaxes(tickformat=".0%")
    return styled(fig, "Explained variance per component", "component", "share of variance", height=300)


def predicted_vs_actual(history: pd.DataFrame, user: object) -> go.Figure:
    """A user's real ratings against the model's predictions, train and validation apart."""
    rng = np.random.default_rng(0)
    fig = go.Figure()
    for valid, name, colour in ((False, "train", PALETTE[0]), (True, "valid", PALETTE[1])):
        rows = history[history["in_valid"] == valid]
        fig.add_scatter(
            x=rows["rating"] + rng.uniform(-0.15, 0.15, len(rows)),
            y=rows["predicted"],
            mode="markers",
            name=name,
            marker={"color": colour, "size": 7, "opacity": 0.75},
            customdata=rows[["title", "rating"]],
            hovertemplate="%{customdata[0]}<br>rated %{customdata[1]}, predicted %{y:.2f}<extra></extra>",
        )
    low, high = float(history["rating"].min()) - 0.5, float(history["rating"].max()) + 0.5
    fig.add_scatter(
        x=[low, high],
        y=[low, high],
        mode="lines",
        name="perfect",
        line={"dash": "dot", "color": "#999"},
        hoverinfo="skip",
    )
    return styled(
        fig, f"User {user}: predicted against actual ratings", "actual rating (jittered)", "predicted", 420
    )


def neighbours(table: pd.DataFrame, movie: str, score: str) -> go.Figure:
    """The nearest movies as horizontal bars of similarity (or distance)."""
    rows = table.iloc[::-1]
    fig = go.Figure(
        go.Bar(
            x=rows[score],
            y=rows["title"],
            orientation="h",
            marker_color=PALETTE[4],
            customdata=rows[["mean_rating", "n_ratings"]],
            hovertemplate="%{y}<br>"
            + score
            + " %{x:.3f}<br>mean %{customdata[0]:.2f} · %{customdata[1]} ratings"
            "<extra></extra>",
        )
    )
    label = "cosine similarity" if score == "similarity" else "Euclidean distance"
    return styled(fig, f"Nearest to {movie}", label, "", height=max(300, 28 * len(rows) + 80))


def live_map(p: Progress) -> go.Figure:
    """The latest frame of a running job: its own first two principal axes, signs kept from frame to
    frame (collab_ui.jobs), WebGL, coloured by mean rating. NumPy arrays, not lists: Plotly checks
    a list item by item (1000 points: 50-75 ms a redraw against 11-25 ms, at load 18)."""
    fig = go.Figure()
    if p.map_xy is not None:
        colour = np.asarray(p.map_colour, dtype="float64")
        fig.add_scattergl(
            x=p.map_xy[:, 0],
            y=p.map_xy[:, 1],
            mode="markers",
            text=np.asarray(p.map_labels, dtype=object),
            customdata=colour,
            hovertemplate="%{text}<br>mean rating %{customdata:.2f}<extra></extra>",
            marker={"size": 5, "opacity": 0.8, "color": colour, "colorscale": "Viridis",
                    "showscale": True, "colorbar": {"title": "mean<br>rating", "thickness": 12}},
        )  # fmt: skip
    where = "initial weights" if p.map_epoch == 0 else f"epoch {p.map_epoch:.3g}"
    title = f"Movie map, {where} (frame {p.map_frame + 1}/{p.map_frames})"
    return styled(fig, title, "PC1 of this frame", "PC2 of this frame")

"""The movie map through training: a model's stored snapshots as a Plotly animation (Embeddings page).

The live map of a running job is charts.live_map."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from collab_core.errors import CollabError
from collab_core.learner import Trained
from collab_core.trajectory import Trajectory, trajectory
from collab_ui.cache import BY_KEY
from collab_ui.charts import styled
from collab_ui.draw import error

LABELLED = 10  # the most-rated movies named on every frame, to follow them through training
FRAME_MS = 300  # each frame's time on screen when playing


@st.cache_data(max_entries=8, show_spinner=False, hash_funcs=BY_KEY)
def map_through_training(trained: Trained) -> Trajectory:
    return trajectory(trained, k=2)


def frame_title(path: Trajectory, i: int) -> str:
    """'epoch 2.33' or 'epoch 3 · valid MSE 0.8238' (the loss is known at the end of an epoch)."""
    loss = path.valid_loss[i]
    where = "initial weights" if path.epochs[i] == 0 else f"epoch {path.epochs[i]:.3g}"
    return where if loss is None else f"{where} · valid MSE {loss:.4f}"


def animation_figure(path: Trajectory) -> go.Figure:
    """One frame per snapshot on fixed axes (the final PCA's), a play button and an epoch slider;
    it opens on the last frame, which is the page's PCA map of the same movies."""
    movies, xy = path.movies, path.xy
    colour = movies["mean_rating"].astype("float64").to_numpy()
    hover = movies["title"].astype(str).to_numpy()
    top = np.argsort(-movies["n_ratings"].to_numpy(), kind="stable")[:LABELLED]
    names = movies["title"].iloc[top].str.replace(r"\s*\(\d{4}\)$", "", regex=True).to_numpy()

    def traces(i: int) -> list[go.Scattergl | go.Scatter]:
        return [
            go.Scattergl(x=xy[i, :, 0], y=xy[i, :, 1]),
            go.Scatter(x=xy[i, top, 0], y=xy[i, top, 1]),
        ]

    last = len(xy) - 1
    fig = go.Figure(traces(last), frames=[
        go.Frame(data=traces(i), name=str(i), layout={"title": {"text": frame_title(path, i)}})
        for i in range(len(xy))
    ])  # fmt: skip
    fig.update_traces(
        selector=0,
        mode="markers",
        name="movies",
        text=hover,
        hovertemplate="<b>%{text}</b><br>(%{x:.3f}, %{y:.3f})<extra></extra>",
        marker={"color": colour, "colorscale": "Viridis", "size": 6, "opacity": 0.8, "showscale": True,
                "colorbar": {"title": "mean rating"}},
    )  # fmt: skip
    fig.update_traces(
        selector=1,
        mode="text",
        text=names,
        textposition="top center",
        textfont={"size": 11, "color": "#1f2933"},
        hoverinfo="skip",
        showlegend=False,
    )
    low, high = xy.reshape(-1, 2).min(axis=0), xy.reshape(-1, 2).max(axis=0)
    pad = 0.05 * (high - low)
    ratio = path.explained
    styled(fig, frame_title(path, last), f"PC1 ({ratio[0]:.0%})", f"PC2 ({ratio[1]:.0%})", height=640)
    fig.update_xaxes(range=[low[0] - pad[0], high[0] + pad[0]], autorange=False)
    fig.update_yaxes(range=[low[1] - pad[1], high[1] + pad[1]], autorange=False)
    step = {"frame": {"duration": 0, "redraw": True}, "mode": "immediate", "transition": {"duration": 0}}
    play = {"frame": {"duration": FRAME_MS, "redraw": True}, "transition": {"duration": 0}}
    fig.update_layout(
        showlegend=False,
        margin={"l": 10, "r": 10, "t": 50, "b": 90},
        updatemenus=[{
            "type": "buttons", "direction": "left", "x": 0.0, "y": -0.08, "xanchor": "left", "yanchor": "top",
            "showactive": False, "pad": {"r": 10, "t": 45},
            "buttons": [
                {"label": "▶ Play", "method": "animate", "args": [None, play]},
                {"label": "❚❚ Pause", "method": "animate", "args": [[None], step]},
            ],
        }],
        sliders=[{
            "active": last, "x": 0.2, "len": 0.8, "y": -0.08, "yanchor": "top", "pad": {"t": 30},
            "currentvalue": {"prefix": "epoch ", "font": {"size": 13}, "xanchor": "right"},
            "font": {"size": 9},
            "steps": [
                {"label": f"{e:.2f}".rstrip("0").rstrip("."), "method": "animate", "args": [[str(i)], step]}
                for i, e in enumerate(path.epochs)
            ],
        }],
    )  # fmt: skip
    return fig


def through_training(trained: Trained) -> None:
    """The 'Through training' section: the animation of this model's stored snapshots, if it has them."""
    if not trained.record.snapshots:
        st.caption(
            "This model was stored without snapshots of its embeddings (trained before they were kept, "
            "or with `--snapshot-movies 0`): delete it and train it again to watch its map form."
        )
        return
    try:
        path = map_through_training(trained)
    except CollabError as e:
        error(e)
        return
    n_frames, n_movies = path.xy.shape[:2]
    st.caption(
        f"The {n_movies:,} most-rated movies' embeddings at {n_frames} moments of training, each projected "
        "on the final model's first two principal axes (centred per frame), so the axes stay put and "
        "only the movies move. Press Play, or drag the epoch slider; colour: mean rating."
    )
    st.plotly_chart(animation_figure(path), key="map_animation", config={"displaylogo": False})

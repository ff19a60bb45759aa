"""Plotly figures for the explanations (issue 12): a prediction's waterfall and a user on the movie map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from collab_core.explain import Breakdown
from collab_core.maps import UserOnMap
from collab_ui.charts import PALETTE, styled

UP, DOWN, TOTAL = "#2e7d32", "#c62828", "#455a64"  # a part that raises the score, lowers it, a total


def waterfall(found: Breakdown) -> go.Figure:
    """The parts of the raw score in turn, the raw score, then the link to the predicted rating;
    the output range's ends as dotted lines."""
    parts = list(found.parts)
    if parts and parts[-1].name == "the network's baseline":  # IG: start from f(baseline), then the shares
        parts = [parts[-1], *parts[:-1]]
    names = [p.name for p in parts] + ["raw score"]
    values = [p.value for p in parts] + [found.raw]
    measures = ["relative"] * len(parts) + ["total"]
    if found.y_range is not None:
        low, high = found.y_range
        if found.link.startswith("sigmoid"):
            name = f"link: sigmoid into {low:g}–{high:g}"
        elif found.link.startswith("clip"):
            name = f"link: clip to {low:g}–{high:g}"
        else:
            name = "link: expected level"
        names += [name, "predicted"]
        values += [found.prediction - found.raw, found.prediction]
        measures += ["relative", "total"]
    fig = go.Figure(
        go.Waterfall(
            x=names,
            y=values,
            measure=measures,
            base=0,
            text=[f"{v:+.3f}" if m == "relative" else f"{v:.3f}" for v, m in zip(values, measures)],
            textposition="outside",
            increasing={"marker": {"color": UP}},
            decreasing={"marker": {"color": DOWN}},
            totals={"marker": {"color": TOTAL}},
            connector={"line": {"color": "#b0b0b0", "width": 1, "dash": "dot"}},
            hovertemplate="%{x}<br>%{text}<extra></extra>",
        )
    )
    if found.y_range is not None:
        for end, where in zip(found.y_range, ("bottom", "top")):
            fig.add_hline(
                y=end,
                line={"color": "#888", "width": 1, "dash": "dot"},
                annotation_text=f"y_range {'low' if where == 'bottom' else 'high'} {end:g}",
                annotation_position=f"{where} left",
                annotation_font={"size": 11, "color": "#666"},
            )
    levels = [0.0, *found.y_range] if found.y_range else [0.0]
    running = 0.0
    for value, measure in zip(values, measures):  # each bar's ends: a part moves the level, a total sets it
        levels.append(running)
        running = value if measure == "total" else running + value
        levels.append(running)
    low, high = min(levels), max(levels)
    pad = 0.15 * (high - low or 1.0)
    fig.update_yaxes(range=[low - pad * (low < 0), high + pad], zeroline=True)
    fig.update_xaxes(tickangle=-30)
    who = "the new user" if found.user is None else f"user {found.user}"
    fig.update_layout(showlegend=False)
    return styled(fig, f"Why {who} gets {found.prediction:.2f} for {found.title}", "", "score", height=440)


def user_map(
    coords: pd.DataFrame,
    on_map: UserOnMap,
    x: str,
    y: str,
    axis_names: tuple[str, str],
    scale: tuple[float, float],
) -> go.Figure:
    """The mapped movies in grey, the user's rated movies coloured by their rating, their top
    recommendations as stars, and the user's direction as an arrow from the centre."""
    fig = go.Figure()
    fig.add_scattergl(
        x=coords[x],
        y=coords[y],
        mode="markers",
        name="other movies",
        marker={"color": "#c9ced6", "size": 5, "opacity": 0.6},
        text=coords["title"],
        hovertemplate="%{text}<extra></extra>",
    )
    points = on_map.points
    rated, recommended = points[points["role"] == "rated"], points[points["role"] == "recommended"]
    low, high = scale  # the data's rating scale, the same colours for every user
    fig.add_scatter(
        x=rated[x],
        y=rated[y],
        mode="markers",
        name=f"rated ({len(rated)})",
        marker={
            "color": rated["rating"],
            "colorscale": "RdYlGn",
            "cmin": low,
            "cmax": high,
            "size": 8,
            "line": {"color": "#333", "width": 0.5},
            "colorbar": {"title": "their rating", "x": 1.0},
        },
        customdata=np.stack([rated["title"], rated["rating"]], axis=1) if len(rated) else None,
        hovertemplate="<b>%{customdata[0]}</b><br>rated %{customdata[1]:g}<extra></extra>",
    )
    fig.add_scatter(
        x=recommended[x],
        y=recommended[y],
        mode="markers+text",
        name=f"top {len(recommended)} recommended",
        marker={"symbol": "star", "size": 15, "color": PALETTE[5], "line": {"color": "#222", "width": 1}},
        text=recommended["title"].str.replace(r"\s*\(\d{4}\)$", "", regex=True).map(_short),
        textposition="top center",
        textfont={"size": 10, "color": "#1f2933"},
        hovertemplate="<b>%{text}</b><br>recommended<extra></extra>",
    )
    _arrow(fig, coords, on_map, x, y)
    styled(fig, f"User {on_map.user} on the movie map", axis_names[0], axis_names[1], height=620)
    fig.update_layout(legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "left", "x": 0.0})
    return fig


def _arrow(fig: go.Figure, coords: pd.DataFrame, on_map: UserOnMap, x: str, y: str) -> None:
    """The user's direction (u·v_x, u·v_y), scaled to reach 80% of the way to the map's edge."""
    dx, dy = on_map.direction[int(x[2:]) - 1], on_map.direction[int(y[2:]) - 1]
    length = float(np.hypot(dx, dy))
    if length == 0:
        return
    reach = 0.8 * float(min(coords[x].abs().max(), coords[y].abs().max()))
    tip_x, tip_y = dx / length * reach, dy / length * reach
    fig.add_scatter(  # the shaft, so that the legend names the arrow
        x=[0, tip_x],
        y=[0, tip_y],
        mode="lines",
        name=f"user {on_map.user}'s direction",
        line={"color": "#1565c0", "width": 3},
        hoverinfo="skip",
    )
    fig.add_annotation(
        x=tip_x,
        y=tip_y,
        ax=0,
        ay=0,
        xref="x",
        yref="y",
        axref="x",
        ayref="y",
        showarrow=True,
        arrowhead=3,
        arrowsize=1.5,
        arrowwidth=3,
        arrowcolor="#1565c0",
        text="",
    )


def _short(title: str, width: int = 28) -> str:
    return title if len(title) <= width else title[: width - 1] + "…"

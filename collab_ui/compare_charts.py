"""The Compare page's figures: the two aligned movie maps with marked movies, the histogram of
neighbours shared, and the movie biases of A against B."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from collab_ui.charts import PALETTE, styled

MARK = "#d62728"  # marked movies, on both maps
LABELLED = 12  # marked movies named on the map; more are only ringed


def aligned_map(coords: pd.DataFrame, side: str, title: str, k: int, marked: list[int]) -> go.Figure:
    """One side ("a" or "b") of the aligned maps: every movie coloured by the neighbours it keeps,
    the marked ones ringed (and named, the first few); both sides on the same axis ranges.

    coords: align_maps' coords joined with the stability's `shared`; customdata[4] is each point's
    index (A's item index), so a selection maps back to movies."""
    x, y = coords[f"{side}x"], coords[f"{side}y"]
    shared = coords["shared"].astype("float64")
    data = np.stack(
        [
            coords["title"].astype(str),
            coords["n_ratings"],
            coords["shared"].astype("string").fillna("?"),
            coords["moved"].round(3),
            coords.index.to_numpy(),
        ],
        axis=1,
    )
    size, opacity = (6, 0.75) if len(coords) <= 2000 else (4, 0.6)
    fig = go.Figure()
    fig.add_scattergl(
        x=x,
        y=y,
        mode="markers",
        name="movies",
        showlegend=False,
        customdata=data,
        hovertemplate="%{customdata[0]}<br>%{customdata[1]} ratings<br>neighbours kept: %{customdata[2]}"
        f"/{k}<br>moved %{{customdata[3]}} after alignment<extra></extra>",
        marker={
            "color": shared,
            "cmin": 0,
            "cmax": k,
            "colorscale": "Viridis",
            "size": size,
            "opacity": opacity,
            "showscale": True,  # on both maps, so that both plots are as wide
            "colorbar": {"title": f"neighbours<br>kept of {k}"},
        },
    )
    rows = coords.loc[coords.index.isin(marked)]
    if len(rows):
        fig.add_scattergl(
            x=rows[f"{side}x"],
            y=rows[f"{side}y"],
            mode="markers",
            name=f"marked ({len(rows)})",
            customdata=data[coords.index.get_indexer(rows.index)],
            hovertemplate="%{customdata[0]} (marked)<extra></extra>",
            marker={"size": 13, "color": "rgba(0,0,0,0)", "line": {"color": MARK, "width": 2.5}},
        )
        named = rows.nlargest(LABELLED, "n_ratings")
        fig.add_scatter(
            x=named[f"{side}x"],
            y=named[f"{side}y"],
            mode="text",
            text=named["title"].str.replace(r"\s*\(\d{4}\)$", "", regex=True),
            textposition="top center",
            textfont={"color": MARK, "size": 12},
            hoverinfo="skip",
            showlegend=False,
        )
    styled(fig, title, "PC1 of A", "PC2 of A", height=520)
    fig.update_layout(dragmode="lasso", showlegend=bool(len(rows)))
    for axis, update in (("x", fig.update_xaxes), ("y", fig.update_yaxes)):
        both = pd.concat([coords[f"a{axis}"], coords[f"b{axis}"]])
        pad = 0.05 * float(both.max() - both.min())
        update(range=[float(both.min()) - pad, float(both.max()) + pad])
    return fig


def overlap_histogram(histogram: pd.Series, k: int) -> go.Figure:
    """Movies by how many of their k neighbours the two models share (Jaccard s / (2k - s))."""
    shared = histogram.index.to_numpy()
    jaccard = shared / (2 * k - shared)
    fig = go.Figure(
        go.Bar(
            x=shared,
            y=histogram.to_numpy(),
            marker={"color": PALETTE[0]},
            customdata=jaccard,
            hovertemplate="%{x} of " + str(k) + " neighbours shared (Jaccard %{customdata:.2f})<br>"
            "%{y} movies<extra></extra>",
        )
    )
    fig.update_xaxes(dtick=1)
    return styled(fig, f"Movies by neighbours shared (of their top {k})", "neighbours shared", "movies", 340)


def bias_against(biases: pd.DataFrame, label_a: str, label_b: str) -> go.Figure:
    """Each movie's bias in A (x) against B (y), coloured by its number of ratings, with y = x."""
    decades = max(1, int(np.log10(max(1, biases["n_ratings"].max()))) + 1)
    low = float(min(biases["bias_a"].min(), biases["bias_b"].min()))
    high = float(max(biases["bias_a"].max(), biases["bias_b"].max()))
    fig = go.Figure()
    fig.add_scatter(
        x=[low, high], y=[low, high], mode="lines", name="same bias", line={"color": "#999", "dash": "dot"}
    )
    fig.add_scattergl(
        x=biases["bias_a"],
        y=biases["bias_b"],
        mode="markers",
        name="movies",
        showlegend=False,
        customdata=np.stack([biases["title"].astype(str), biases["n_ratings"]], axis=1),
        hovertemplate="%{customdata[0]}<br>A %{x:.3f} · B %{y:.3f}<br>%{customdata[1]} ratings"
        "<extra></extra>",
        marker={
            "size": 6,
            "opacity": 0.7,
            "color": np.log10(biases["n_ratings"].clip(lower=1)),
            "colorscale": "Viridis",
            "colorbar": {
                "title": "ratings",
                "tickvals": list(range(decades)),
                "ticktext": [f"{10**d:,}" for d in range(decades)],
            },
        },
    )
    return styled(fig, "Movie biases: A against B", f"bias in A ({label_a})", f"bias in B ({label_b})", 460)

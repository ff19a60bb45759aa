"""The Feedback loops page's figure: the per-round measures, one panel each, policies overlaid."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from collab_core.simulate import Round
from collab_ui.charts import PALETTE

MEASURES = {  # Round field -> panel title, hover format
    "coverage": ("Catalogue coverage (cumulative share shown)", ".1%"),
    "gini": ("Gini of exposure (cumulative)", ".3f"),
    "gini_data": ("Gini of the system's data (ratings per movie)", ".3f"),
    "mean_popularity": ("Mean popularity of what is shown", ".1f"),
    "probe_rmse": ("Probe RMSE of the system model", ".4f"),
    "top5_share": ("New ratings from the top-5% users", ".1%"),
}
POLICY_COLOURS = {"topk": PALETTE[0], "explore": PALETTE[1], "damped": PALETTE[2]}


def round_measures(
    rounds: dict[str, tuple[Round, ...]],
    total_rounds: int,
    baseline: float | None = None,
    height: int = 620,
    data_baseline: float | None = None,
) -> go.Figure:
    """A 2 x 3 grid of the measures by round, one line per policy (baseline: the seed model's probe
    RMSE, drawn as round 0 of the probe panel; data_baseline: the seed's Gini, round 0 of its panel)."""
    fig = make_subplots(
        rows=2,
        cols=3,
        subplot_titles=[title for title, _ in MEASURES.values()],
        horizontal_spacing=0.07,
        vertical_spacing=0.16,
    )
    for p, (policy, done) in enumerate(rounds.items()):
        colour = POLICY_COLOURS.get(policy, PALETTE[p % len(PALETTE)])
        for i, (name, (title, fmt)) in enumerate(MEASURES.items()):
            x = [r.round for r in done]
            y = [getattr(r, name) for r in done]
            start = {"probe_rmse": baseline, "gini_data": data_baseline}.get(name)
            if start is not None:
                x, y = [0, *x], [start, *y]
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers",
                    name=policy,
                    legendgroup=policy,
                    showlegend=i == 0,
                    line={"color": colour},
                    marker={"size": 6},
                    hovertemplate=f"{policy}<br>round %{{x}}<br>{title.lower()}: %{{y:{fmt}}}<extra></extra>",
                ),
                row=i // 3 + 1,
                col=i % 3 + 1,
            )
    fig.update_xaxes(range=[-0.3, total_rounds + 0.3], dtick=max(1, total_rounds // 10), title_text="round")
    for i, (name, (_, fmt)) in enumerate(MEASURES.items()):
        if fmt.endswith("%"):
            fig.update_yaxes(
                tickformat=".1%" if name == "top5_share" else ".0%", row=i // 3 + 1, col=i % 3 + 1
            )
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
        legend={
            "orientation": "h",
            "yanchor": "bottom",
            "y": 1.06,
            "xanchor": "right",
            "x": 1.0,
            "title": {"text": "policy"},
        },
        title={"text": "The feedback loop, round by round", "x": 0.0, "xanchor": "left"},
    )
    fig.update_annotations(font_size=13)
    return fig

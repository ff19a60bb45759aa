"""Compare: two stored models of this dataset side by side; did they learn the same space?"""

import pandas as pd
import streamlit as st

from collab_core.compare import most_changed
from collab_core.errors import CollabError
from collab_ui import cache, charts, compare_charts
from collab_ui.draw import error
from collab_ui.session import context, require_dataset

MARKED = "compare_marked"  # A's item indices of the movies marked on both maps
CHANGED_ROWS = 50
DISAGREEMENT_ROWS = 50
NEIGHBOURS = st.column_config.ListColumn

dataset = require_dataset()
ctx = context()
st.title(":material/compare_arrows: Compare")
st.caption(
    "Two models of the same ratings: do they score the same, and did they learn the same map of the "
    "movies? Weight decay against none, the dot product against the neural net, one seed against another."
)
records = {r.key: r for r in ctx.records}
if len(records) < 2:
    st.info(
        "Comparing needs two stored models of this dataset: train another on the Train page "
        "(the same recipe with weight decay 0, say).",
        icon=":material/model_training:",
    )
    st.stop()

keys = list(records)
pick_a, pick_b = st.columns(2)
key_a = pick_a.selectbox("Model A", keys, key="compare_a", format_func=lambda k: records[k].label)
key_b = pick_b.selectbox("Model B", keys, index=1, key="compare_b", format_func=lambda k: records[k].label)
knobs = st.columns([1, 1, 3])
k = knobs[0].slider("Neighbours per movie (k)", 5, 50, 10, key="compare_k", help="Also the ranking cut-off")
min_ratings = knobs[1].slider(
    "Movies with at least this many ratings",
    1,
    200,
    20,
    key="compare_min",
    help="Rarely rated movies keep nearly their random initial vectors: they are left out of the maps, "
    "the neighbourhoods and the disagreements",
)
if key_a == key_b:
    knobs[2].caption("The same model on both sides: everything agrees (a check of the method).")
try:
    a = cache.trained_model(dataset, records[key_a], ctx.device)
    b = cache.trained_model(dataset, records[key_b], ctx.device)
    metrics = cache.compare_metrics(a, b, k)
    aligned = cache.align_maps(a, b, min_ratings)
    stability = cache.neighbour_stability(a, b, k, min_ratings)
except CollabError as e:
    error(e)
    st.stop()


def csv(data: pd.DataFrame, name: str, key: str) -> None:
    """A download button for a table (lists joined with ' | ')."""
    flat = data.apply(lambda c: c.map(" | ".join) if c.map(type).eq(list).any() else c)
    st.download_button(
        f"Download {name} (CSV)",
        flat.to_csv(index=False).encode(),
        file_name=f"{name.replace(' ', '_')}_{key_a[:6]}_vs_{key_b[:6]}.csv",
        mime="text/csv",
        key=key,
        icon=":material/download:",
    )


# ---- metrics and loss curves ---------------------------------------------------------------------
st.subheader("Scores on the same ratings")
left, right = st.columns([2, 3])
shown = metrics.table.rename(columns={"a": "A", "b": "B", "difference": "B − A"})
left.dataframe(shown.style.format("{:.4f}"), key="compare_metrics")
left.caption(f"On {metrics.note}. Lower is better for the errors, higher for precision, recall and NDCG.")
curves = charts.compare_curves([records[key_a], records[key_b]])
curves.update_layout(legend={"orientation": "h", "x": 0.0, "y": -0.2, "xanchor": "left", "yanchor": "top"})
right.plotly_chart(curves, key="compare_curves")

# ---- the aligned maps ----------------------------------------------------------------------------
st.subheader("The movie maps, aligned")
coords = aligned.coords.join(stability.movies["shared"])
st.markdown(
    f"**Alignment error {aligned.error:.3f}** (0: the same map up to a rotation; "
    f"{2**0.5:.3f}: nothing in common). B is rotated onto A by orthogonal Procrustes; both are drawn on "
    f"A's first two principal axes. {aligned.note.capitalize()}."
)
titles = coords.sort_values("title")["title"]
found = st.selectbox(
    "Find a movie",
    titles.index.tolist(),
    index=None,
    key="compare_movie",
    format_func=lambda i: titles[i],
    placeholder="Type a title: it is marked on both maps",
)


def mark_from(chart: str) -> None:
    """The movies selected on one map become the marked ones on both."""
    points = st.session_state[chart].selection.points
    st.session_state[MARKED] = sorted({int(p["customdata"][4]) for p in points if p.get("customdata")})


marked = [i for i in st.session_state.get(MARKED, []) if i in coords.index]
if found is not None and found not in marked:
    marked = [found, *marked]
map_a, map_b = st.columns(2)
for side, column, record in (("a", map_a, records[key_a]), ("b", map_b, records[key_b])):
    column.plotly_chart(
        compare_charts.aligned_map(coords, side, f"{side.upper()}: {record.label}", k, marked),
        key=f"compare_map_{side}",
        on_select=lambda chart=f"compare_map_{side}": mark_from(chart),
        selection_mode=("box", "lasso", "points"),
        config={"displaylogo": False},
    )
note, clear = st.columns([5, 1])
if marked:
    note.caption(
        f"{len(marked)} movies marked on both maps (ringed in red). Select on either map to mark others."
    )
    clear.button("Clear marks", key="compare_clear", on_click=lambda: st.session_state.pop(MARKED, None))
else:
    note.caption(
        "Drag a lasso or a box on either map (or click a point): those movies are marked on both. "
        "Colour: how many of its neighbours a movie keeps from A to B."
    )
if found is not None and found in stability.movies.index:
    row = stability.movies.loc[found]
    kept = f"keeps {row['shared']} of its {k} neighbours (Jaccard {row['jaccard']:.2f})"
    st.markdown(f"**{row['title']}** {kept}:")
    near_a, near_b = st.columns(2)
    near_a.dataframe(pd.DataFrame({"in A": row["neighbours_a"]}), hide_index=True, key="compare_near_a")
    near_b.dataframe(pd.DataFrame({"in B": row["neighbours_b"]}), hide_index=True, key="compare_near_b")

# ---- neighbourhood stability ---------------------------------------------------------------------
st.subheader("Neighbourhood stability")
left, right = st.columns([2, 3])
left.metric(f"Mean overlap of the top-{k} neighbours (Jaccard)", f"{stability.mean:.3f}")
left.caption(f"Per movie, |A ∩ B| / |A ∪ B| of its {stability.note}, in the full embedding spaces.")
left.plotly_chart(compare_charts.overlap_histogram(stability.histogram, k), key="compare_overlap")
with right:
    changed = most_changed(stability, CHANGED_ROWS)
    st.markdown(f"**Movies whose neighbours changed most** ({len(changed)})")
    columns = ["title", "n_ratings", "shared", "jaccard", "neighbours_a", "neighbours_b"]
    st.container(key="compare_changed").dataframe(
        changed[columns],
        hide_index=True,
        column_config={
            "title": st.column_config.TextColumn("Movie", width="medium"),
            "n_ratings": st.column_config.NumberColumn("Ratings", format="%d"),
            "shared": st.column_config.NumberColumn("Shared", format="%d"),
            "jaccard": st.column_config.NumberColumn("Jaccard", format="%.2f"),
            "neighbours_a": NEIGHBOURS("Neighbours in A"),
            "neighbours_b": NEIGHBOURS("Neighbours in B"),
        },
    )
    csv(changed[columns], "most changed", "compare_changed_csv")

# ---- disagreements and biases --------------------------------------------------------------------
st.subheader("Where their predictions differ most")
try:
    disagree = cache.disagreements(a, b, DISAGREEMENT_ROWS, min_ratings)
except CollabError as e:
    error(e)
    st.stop()
st.caption(
    "Over the ratings both models held out and a sample of unrated (user, movie) pairs, movies with at "
    f"least {min_ratings} ratings. Rating None: the user never rated the movie."
)
st.container(key="compare_disagreements").dataframe(
    disagree,
    hide_index=True,
    column_config={
        "user": st.column_config.NumberColumn("User", format="%d"),
        "title": st.column_config.TextColumn("Movie", width="medium"),
        "a": st.column_config.NumberColumn("A predicts", format="%.2f ★"),
        "b": st.column_config.NumberColumn("B predicts", format="%.2f ★"),
        "difference": st.column_config.NumberColumn("B − A", format="%+.2f"),
        "actual": st.column_config.NumberColumn("Rating", format="%.1f ★"),
        "held_out": st.column_config.CheckboxColumn("Held out?"),
    },
)
csv(disagree, "disagreements", "compare_disagreements_csv")

st.subheader("Movie biases, A against B")
try:
    biases = cache.bias_pairs(a, b)
except CollabError as e:
    st.info(" ".join(str(e).split()), icon=":material/info:")
else:
    st.plotly_chart(
        compare_charts.bias_against(
            biases, f"{records[key_a].config.model} {key_a[:6]}", f"{records[key_b].config.model} {key_b[:6]}"
        ),
        key="compare_biases",
    )

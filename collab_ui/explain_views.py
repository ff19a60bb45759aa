"""How the pages draw the explanations (issue 12): a prediction's breakdown beside "because you
rated", what-if ratings, a user on the movie map, what the map's axes mean, and how sure the model is."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from collab_core.errors import CollabError
from collab_core.explain import Breakdown
from collab_core.learner import Trained
from collab_ui import cache
from collab_ui.draw import COLUMNS, error, table
from collab_ui.explain_charts import user_map, waterfall

MAX_ADDABLE = 5000  # titles offered to a what-if, most rated first: enough to find any film people know


def explain_user(trained: Trained, user: object, recs: pd.DataFrame, history: pd.DataFrame) -> None:
    """Pick one of the user's recommended or rated movies: the waterfall of its prediction, and the
    movies the user rated that lie closest to it."""
    st.subheader("Why this prediction?")
    labels = {i: f"{t} · recommended #{k}" for k, (i, t) in enumerate(recs["title"].items(), start=1)}
    labels.update(
        {i: f"{t} · rated {r:g}★" for i, t, r in zip(history.index, history["title"], history["rating"])}
    )
    item = st.selectbox(
        "Explain the prediction for",
        list(labels),
        format_func=labels.__getitem__,
        key="explain_movie",
        help="One of the recommendations above or a movie this user rated; type to search",
    )
    raw_id = _plain(trained.encoded.items[item])
    try:
        found = cache.breakdown(trained, user, raw_id)
        because = cache.because_you_rated(trained, user, raw_id, 8)
    except CollabError as e:
        error(e)
        return
    _breakdown_and_because(found, because, f"Because user {user} rated…", "because")


def explain_new_user(trained: Trained, ratings: dict[str, float], picks: pd.DataFrame) -> None:
    """The same for the new user folded in from `ratings`, over their recommendations."""
    if not ratings or picks.empty:
        return
    with st.expander("Why these picks? The breakdown for the new user"):
        item = st.selectbox(
            "Explain the prediction for",
            picks.index.tolist(),
            format_func=lambda i: picks.at[i, "title"],
            key="explain_new_movie",
        )
        raw_id = _plain(trained.encoded.items[item])
        try:
            found = cache.new_user_breakdown(trained, ratings, raw_id)
            because = cache.because_new_user_rated(trained, ratings, raw_id, 8)
        except CollabError as e:
            error(e)
            return
        _breakdown_and_because(found, because, "Because you rated…", "new_because")


def _breakdown_and_because(found: Breakdown, because: pd.DataFrame, heading: str, key: str) -> None:
    chart, side = st.columns([3, 2])
    chart.plotly_chart(waterfall(found), key=f"{key}_waterfall", config={"displaylogo": False})
    where = "" if found.position is None else f"; {found.position:.0%} of the way up the output range"
    chart.caption(
        f"Predicted {found.prediction:.2f} from a raw score of {found.raw:.3f}{where}. "
        f"How the parts were found: {found.method}."
    )
    side.markdown(f"**{heading}**")
    side.caption(f"The movies rated that lie closest to *{found.title}* in the model's item space (cosine).")
    table(because, key, side, columns=["title", "rating", "similarity"])


def what_if(trained: Trained, user: object, n: int, min_ratings: int) -> None:
    """Edit the user's ratings (change stars, remove rows, add movies), re-solve their vector on a
    button, and show how their recommendations move. Nothing is written to the data or the store."""
    st.subheader(f"What if user {user} had rated differently?")
    st.caption(
        "Change stars or delete rows in the table, add movies below, then re-solve: the user's vector "
        "is solved again with every movie held fixed. Nothing is written to the data or the store."
    )
    if not trained.model.folds_in:
        st.caption("An autoencoder has no user vector to solve: the edits are written into its input and "
                   "fed through, so only the edited movies' codes (and predictions) change.")  # fmt: skip
    # per model and user: another model (or dataset) numbers its movies differently
    rows_key, editor_key = f"whatif_rows_{trained.key}_{user}", f"whatif_editor_{trained.key}_{user}"
    history = cache.user_history(trained, user)
    history = history[~history.index.duplicated()]  # a title under two ids, rated twice: one row
    if rows_key not in st.session_state:
        st.session_state[rows_key] = pd.DataFrame(
            {"title": history["title"], "stars": history["rating"], "before": history["rating"]}
        )
    low, high = trained.model.y_range or (None, None)
    add_col, stars_col, button_col = st.columns([4, 1, 1], vertical_alignment="bottom")
    rows = st.session_state[rows_key]
    titles = trained.item_table["title"]
    addable = [
        i
        for i in titles.index[np.argsort(-trained.item_table["n_ratings"].to_numpy(), kind="stable")]
        if i not in rows.index
    ][:MAX_ADDABLE]
    add_col.multiselect(
        "Rate more movies",
        addable,
        format_func=titles.__getitem__,
        key="whatif_add",
        placeholder="Search titles, e.g. horror films",
    )
    stars_col.number_input("Stars", low or 0.0, high or 10.0, min(5.0, high or 5.0), 0.5, key="whatif_stars")
    button_col.button(
        "Add",
        key="whatif_add_button",
        on_click=_add_rows,
        args=(rows_key, editor_key, titles),
        width="stretch",
    )
    edited = st.data_editor(
        rows,
        key=editor_key,
        num_rows="delete",
        hide_index=True,
        disabled=["title", "before"],
        column_config={
            "title": COLUMNS["title"],
            "stars": st.column_config.NumberColumn(
                "Stars", min_value=low, max_value=high, step=0.5, format="%.1f ★"
            ),
            "before": st.column_config.NumberColumn("Before", format="%.1f ★", help="empty: added here"),
        },
    )
    edits = _edits(trained, history["rating"], edited)
    left, right = st.columns([1, 4], vertical_alignment="center")
    if left.button("Re-solve", key="whatif_run", type="primary", icon=":material/calculate:"):
        st.session_state["whatif_for"] = (trained.key, user, edits)
    right.caption(f"{len(edits)} edit{'s' * (len(edits) != 1)} pending" if edits else "No edits yet.")
    if st.session_state.get("whatif_for", (None, None, None))[:2] != (trained.key, user):
        return
    _, _, solved = st.session_state["whatif_for"]
    try:  # the whole ranking, so that a film's move shows wherever it lands
        ranking = cache.what_if(
            trained, user, solved, trained.encoded.n_items - 1, min_ratings
        ).recommendations
    except CollabError as e:
        error(e)
        return
    plural = "s" * (len(solved) != 1)
    top, movers = st.columns(2)
    top.markdown(f"**User {user}'s top {n} after {len(solved)} edit{plural}**, each with its move")
    _moves_table(ranking.head(n), "whatif_recs", top)
    climbed = ranking[ranking["rank_change"] > 0].sort_values("rank_change", ascending=False, kind="stable")
    movers.markdown(f"**The {n} movies that climbed furthest** (of {len(ranking):,} ranked)")
    _moves_table(climbed.head(n), "whatif_movers", movers)


def _add_rows(rows_key: str, editor_key: str, titles: pd.Series) -> None:
    """The Add button: keep the table's pending edits, then append the chosen movies at the chosen stars."""
    rows = _with_edits(st.session_state[rows_key], st.session_state.get(editor_key))
    added = [i for i in st.session_state.get("whatif_add", []) if i not in rows.index]
    stars = float(st.session_state["whatif_stars"])
    new = pd.DataFrame(
        {"title": titles.loc[added], "stars": stars, "before": math.nan}, index=pd.Index(added)
    )
    st.session_state[rows_key] = pd.concat([rows, new]).rename_axis("item")
    st.session_state["whatif_add"] = []


def _with_edits(rows: pd.DataFrame, state: dict | None) -> pd.DataFrame:
    """The rows with the editor's pending changes and deletions applied (they reset when rows change)."""
    if not state:
        return rows
    rows = rows.copy()
    for position, change in state.get("edited_rows", {}).items():
        if "stars" in change:
            rows.iloc[int(position), rows.columns.get_loc("stars")] = change["stars"]
    return rows.drop(index=rows.index[list(map(int, state.get("deleted_rows", [])))])


def _edits(trained: Trained, before: pd.Series, edited: pd.DataFrame) -> dict[object, float | None]:
    """{raw item id: new stars, or None to remove}: how the table differs from the user's own ratings
    (`before`, by item index)."""
    raw = trained.encoded.items
    edits: dict[object, float | None] = {}
    for i, stars in zip(edited.index, edited["stars"]):
        if stars == stars and stars != before.get(i):  # NaN stars (a cleared cell): left as it was
            edits[_plain(raw[i])] = float(stars)
    edits.update({_plain(raw[i]): None for i in before.index.difference(edited.index)})
    return edits


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _moves_table(recs: pd.DataFrame, key: str, container) -> None:
    """The re-solved list: rank, title, predicted now and before, and the move (▲ up, ▼ down, new)."""
    change = recs["rank_change"]
    move = [
        "new" if pd.isna(before) else "—" if c == 0 else f"▲ {c}" if c > 0 else f"▼ {-c}"
        for before, c in zip(recs["rank_before"], change.fillna(0).astype(int))
    ]
    shown = pd.DataFrame(
        {
            "rank": recs["rank"],
            "move": move,
            "title": recs["title"],
            "genres": recs["genres"].str.replace("|", ", "),
            "predicted": recs["predicted"],
            "predicted_before": recs["predicted_before"],
            "rank_before": recs["rank_before"],
        }
    )

    def colour(text: str) -> str:
        return (
            "color: #2e7d32; font-weight: 600"
            if text.startswith("▲")
            else "color: #c62828; font-weight: 600"
            if text.startswith("▼")
            else "color: #1565c0"
            if text == "new"
            else ""
        )

    container.container(key=key).dataframe(
        shown.style.map(colour, subset=["move"]),
        hide_index=True,
        column_config={
            **COLUMNS,
            "rank": st.column_config.NumberColumn("Rank", format="%d"),
            "move": st.column_config.TextColumn(
                "Move", help="against the model's own list; new: was not in it"
            ),
            "predicted": st.column_config.NumberColumn("Predicted", format="%.2f ★"),
            "predicted_before": st.column_config.NumberColumn("Before", format="%.2f ★"),
            "rank_before": st.column_config.NumberColumn("Rank before", format="%d"),
            "genres": st.column_config.TextColumn("Genres"),
        },
    )


def axis_names(trained: Trained, n_items: int, k: int, x_name: str, y_name: str) -> tuple[str, str]:
    """The map's axis titles: each component labelled by its strongest genre and year correlations."""
    try:
        labels = cache.axis_labels(trained, n_items, k)
    except CollabError:
        return x_name, y_name
    return tuple(labels[int(name[2:]) - 1].label for name in (x_name, y_name))


def user_on_map(trained: Trained, n_items: int, k: int, x_name: str, y_name: str) -> None:
    """A user's direction on the movie map, the movies they rated by rating, their top recommendations."""
    st.subheader("A user on the map")
    users = trained.user_table["user"]
    integer_ids = pd.api.types.is_integer_dtype(users)
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    if integer_ids:
        user = left.number_input(
            "User id", int(users.min()), int(users.max()), int(users.iloc[0]), key="map_user"
        )
    else:  # typed, never a list (162k users at 25M) and never echoed (a message renders Markdown)
        user = left.text_input("User id", str(users.iloc[0]), key="map_user").strip()
        if not users.astype(str).eq(user).any():
            left.warning("No user has that id", icon=":material/person_off:")
            return
    n = right.slider("Recommendations to mark", 0, 30, 10, key="map_user_n")
    try:
        on_map = cache.user_on_map(trained, user, n_items, k, n)
        pca = cache.pca_items(trained, n_items, k)
    except CollabError as e:
        if "cannot place a user on the movie map" in str(e):
            st.caption(" ".join(str(e).split()).capitalize() + ".")
        else:
            error(e)
        return
    x, y = x_name.lower(), y_name.lower()
    names = axis_names(trained, n_items, k, x_name, y_name)
    scale = trained.dataset.rating_scale
    figure = user_map(pca.coords, on_map, x, y, names, (scale.low, scale.high))
    st.plotly_chart(figure, key="user_map", config={"displaylogo": False})
    st.caption(
        f"The arrow is user {user}'s direction u·v on these two axes: the further a movie lies along it, the "
        f"higher this user scores it (before the biases). The map's {k} components hold "
        f"{on_map.share:.0%} of |u|²; the position along the direction explains {on_map.fit:.0%} of the "
        "variance of u·m over the mapped movies."
    )


def genre_readability(trained: Trained) -> None:
    """How well each genre can be read from the movie embeddings, beside shuffled labels (on request)."""
    with st.expander("Genre readability: what the embeddings learned without labels"):
        st.caption(
            "A logistic regression per genre on the movie embeddings (5-fold cross-validated, the 1,000 "
            "most-rated movies), beside the same with the genre labels shuffled: what chance gives."
        )
        if not st.toggle("Compute (a few seconds, then kept)", key="readability_run"):
            return
        try:
            found = cache.genre_readability(trained)
        except CollabError as e:
            error(e)
            return
        st.container(key="readability").dataframe(
            found.reset_index(),
            hide_index=True,
            column_config={
                "genre": st.column_config.TextColumn("Genre"),
                "movies": st.column_config.NumberColumn("Movies", format="%d"),
                "majority": st.column_config.NumberColumn("Majority share", format="%.2f"),
                "accuracy": st.column_config.NumberColumn("Accuracy", format="%.3f"),
                "shuffled_accuracy": st.column_config.NumberColumn("Shuffled accuracy", format="%.3f"),
                "auc": st.column_config.ProgressColumn(
                    "ROC AUC", format="%.3f", min_value=0.5, max_value=1.0
                ),
                "shuffled_auc": st.column_config.NumberColumn("Shuffled AUC", format="%.3f"),
            },
        )


def how_sure(trained: Trained) -> None:
    """The movies the model predicts worst, and the thinly rated movies with extreme biases: made
    only while open (the worst predicted need every validation rating predicted: 5M at 25M)."""
    box = st.expander(
        "How sure is the model? The movies it predicts worst, and thin extreme biases",
        key="how_sure",
        on_change="rerun",
    )
    if not box.open:
        return
    with box:
        left, right = st.columns(2)
        min_valid = left.slider("Worst predicted: at least … validation ratings", 1, 50, 5, key="worst_min")
        max_ratings = right.slider("Thin biases: at most … ratings", 1, 50, 5, key="thin_max")
        rmse = {
            "valid_rmse": st.column_config.NumberColumn("Validation RMSE", format="%.3f"),
            "mean_error": st.column_config.NumberColumn(
                "Mean error", format="%+.3f", help="predicted - rating"
            ),
            "n_valid": st.column_config.NumberColumn("Validation ratings", format="%d"),
        }
        left.markdown("**Predicted worst** (validation RMSE)")
        try:
            worst = cache.worst_predicted(trained, 10, min_valid)
        except CollabError as e:
            error(e)
        else:
            left.container(key="worst_predicted").dataframe(
                worst,
                hide_index=True,
                column_config={**COLUMNS, **rmse},
                column_order=["title", "valid_rmse", "mean_error", "n_valid", "n_ratings"],
            )
        right.markdown("**Thinly rated, extreme bias** (furthest from the median bias)")
        try:
            thin = cache.thin_extreme_biases(trained, 10, max_ratings)
        except CollabError as e:  # a model without biases
            right.caption(" ".join(str(e).split()).capitalize() + ".")
        else:
            table(thin, "thin_biases", right)

"""Feedback loops: the recommender's loop simulated (collab_core.simulate), policies compared by round."""

from dataclasses import replace

import pandas as pd
import streamlit as st

from collab_core.errors import CollabError
from collab_core.simulate import CHOICES, EXPLORE_FROM, POLICIES, PolicyParams, WorldParams, exposure_change
from collab_ui import cache
from collab_ui.draw import error
from collab_ui.jobs import DONE, FAILED, RUNNING
from collab_ui.session import context, require_dataset
from collab_ui.sim_charts import round_measures
from collab_ui.simjobs import SimProgress, SimulationJob

POLICY_NAMES = {"topk": "top-k", "explore": "top-k + explore", "damped": "damped"}
dataset = require_dataset()
ctx = context()
st.title(":material/autorenew: Feedback loops")
st.caption(
    "A recommender feeds on the ratings it causes. Here a 'true taste' model stands in for the users: each "
    "round every user is shown k movies by the system, consumes some, rates them, and the system learns "
    "from what it caused. Watch what that does to what everyone is shown."
)

keep = {"persist_state": "session"}  # the form survives a visit to another page
defaults, world_defaults = PolicyParams(), WorldParams()
with st.container(border=True):
    row = st.columns([1.4, 0.8, 0.9, 0.9])
    policies = row[0].multiselect(
        "Policies",
        POLICIES,
        default=list(POLICIES),
        key="sim_policies",
        format_func=POLICY_NAMES.get,
        help="Run in the same simulated world and overlaid on the plots",
        **keep,
    )
    rounds = row[1].number_input("Rounds", 1, 100, 10, key="sim_rounds", **keep)
    k = row[2].number_input("k (movies shown per user)", 1, 100, defaults.k, key="sim_k", **keep)
    seed = row[3].number_input("Seed", 0, 2**32 - 1, world_defaults.seed, key="sim_seed", **keep)
    row = st.columns(4)
    explore_share = row[0].slider(
        "Exploration share",
        0.0,
        1.0,
        defaults.explore_share,
        0.05,
        key="sim_explore_share",
        help="top-k + exploration: share of the k slots given to movies the model would not pick",
        **keep,
    )
    explore_from = row[1].selectbox(
        "Explore from",
        EXPLORE_FROM,
        key="sim_explore_from",
        **keep,
        help="random: any movie the user has not rated; longtail: the less popular half (by the system's "
        "data)",
    )
    damping = row[2].number_input(
        "Damping λ",
        0.0,
        5.0,
        defaults.damping,
        0.05,
        key="sim_damping",
        **keep,
        help="popularity-damped: score = predicted rating − λ·log(1 + ratings of the movie in the "
        "system's data)",
    )
    finetune = row[3].number_input(
        "Fine-tune epochs per round",
        0,
        20,
        defaults.finetune_epochs,
        key="sim_finetune",
        **keep,
        help="The system learns from the grown data for this many epochs (fast recipe, warm start); "
        "0: it never learns (a control: only the users' consumption changes what is shown)",
    )
    row = st.columns(4)
    choice = row[0].selectbox(
        "Choice model",
        CHOICES,
        key="sim_choice",
        **keep,
        help="logistic: P(consume) = sigmoid((true rating − centre) / T); linear: rises from 0 at the "
        "scale's bottom to 1 at its top",
    )
    center = row[1].number_input(
        "Centre (P = ½ at)",
        0.0,
        10.0,
        defaults.center,
        0.25,
        key="sim_center",
        disabled=choice != "logistic",
        **keep,
    )
    temperature = row[2].number_input(
        "Temperature T",
        0.05,
        5.0,
        defaults.temperature,
        0.05,
        key="sim_temperature",
        disabled=choice != "logistic",
        **keep,
    )
    seed_share = row[3].slider(
        "Seed share",
        0.05,
        0.9,
        world_defaults.seed_share,
        0.05,
        key="sim_seed_share",
        **keep,
        help="Share of each user's real ratings the system starts from (at least "
        f"{world_defaults.seed_min} per user)",
    )
    try:
        world = WorldParams(seed=int(seed), seed_share=float(seed_share))
        if not policies:
            raise CollabError("choose at least one policy")
        params = tuple(
            PolicyParams(
                policy=policy,
                rounds=int(rounds),
                k=int(k),
                explore_share=float(explore_share),
                explore_from=explore_from,
                damping=float(damping),
                choice=choice,
                center=float(center),
                temperature=float(temperature),
                finetune_epochs=int(finetune),
            )
            for policy in policies
        )
    except CollabError as e:
        error(e)
        params = None
    start_col, note_col = st.columns([1, 4], vertical_alignment="center")
    start = start_col.button(
        "Run the simulation",
        type="primary",
        icon=":material/play_arrow:",
        disabled=params is None,
        key="sim_start",
        width="stretch",
    )
    note_col.caption(
        ":material/schedule: The world (true model + seed model, fast recipe) trains first, a few seconds at "
        "ml-100k; then each round of each policy takes about a second."
    )

if start and params is not None:
    key, _ = cache.simulation_registry().start(dataset, world, params, ctx.device)
    st.session_state["sim_watched"] = key


def world_line(p: SimProgress) -> None:
    w = p.world
    if w:
        st.caption(
            f"True model's probe RMSE {w['true_probe_rmse']:.4f} (about the best a model could do); rating "
            f"noise sd {w['noise_sd']:.3f}. The system starts from {w['seed_ratings']:,} seed ratings "
            f"(probe RMSE {w['initial_probe_rmse']:.4f}); {w['probe_ratings']:,} real ratings are the probe. "
            f"World built in {w['seconds']:.1f} s."
        )


def total_rounds(p: SimProgress) -> int:
    return max(x.rounds for x in p.policies)


@st.fragment(run_every=0.5)
def live(job: SimulationJob) -> None:
    """Progress, Stop and the plots so far, redrawn twice a second while the run goes on."""
    p = job.progress()
    if p.status != RUNNING:
        st.rerun()  # the whole page redraws with the finished (or stopped) run
    left, right = st.columns([5, 1], vertical_alignment="bottom")
    done = p.done_rounds / p.total_rounds if p.total_rounds else 0.0
    left.progress(done, text=f"{p.stage} · {p.done_rounds}/{p.total_rounds} rounds · {p.elapsed:.0f} s")
    right.button(
        "Stop",
        key="sim_stop",
        icon=":material/stop_circle:",
        on_click=job.stop,
        width="stretch",
        type="primary",
    )
    world_line(p)
    baseline = p.world.get("initial_probe_rmse")
    st.plotly_chart(
        round_measures(p.rounds, total_rounds(p), baseline, data_baseline=p.world.get("seed_gini_data")),
        key="sim_live_chart",
        config={"displaylogo": False},
    )


def results(p: SimProgress) -> None:
    """The finished run: plots beside the assumptions, the per-round tables, the exposure changes."""
    world_line(p)
    chart, notes = st.columns([2.8, 1])
    baseline = p.world.get("initial_probe_rmse")
    chart.plotly_chart(
        round_measures(p.rounds, total_rounds(p), baseline, 700, p.world.get("seed_gini_data")),
        key="sim_chart",
        config={"displaylogo": False},
    )
    chart.caption(
        "Reading it: a movie a user has rated is not shown to them again, so exposure spreads over the "
        "rounds "
        "even without learning; to see what the loop itself does, run again with 0 fine-tune epochs (the "
        "system never learns) and compare. Users rate what they chose, mostly what they like, so the new "
        "ratings say little about the rest: the probe RMSE need not fall as the data grows."
    )
    with notes.container(border=True, key="sim_assumptions"):
        st.markdown("**Assumptions** (the outcome depends on them)")
        assumptions = {}
        for sim in p.results:
            for name, text in sim.assumptions.items():
                if name == "policy":
                    assumptions[f"{name}: {POLICY_NAMES[sim.params.policy]}"] = text
                else:
                    assumptions.setdefault(name, text)
        st.caption("\n".join(f"- **{name}**: {text}" for name, text in assumptions.items()))
    st.subheader("Per round")
    tabs = st.tabs([POLICY_NAMES[s.params.policy] for s in p.results])
    for tab, sim in zip(tabs, p.results):
        table = pd.DataFrame([vars(r) for r in sim.rounds])
        tab.container(key=f"sim_rounds_{sim.params.policy}").dataframe(
            table, hide_index=True, column_config=ROUND_COLUMNS
        )
    st.subheader("Movies that gained and lost the most exposure")
    st.caption(
        "Each movie's share of all the slots shown in the last round against its share in the first: the "
        "loop's drift. A movie loses exposure when the users it was shown to consumed it (a rated movie is "
        "not shown again) or the system came to rank it lower. Real ratings = its popularity in the data."
    )
    names = [s.params.policy for s in p.results]
    picked = st.columns(3)[0].selectbox(
        "Policy", names, format_func=POLICY_NAMES.get, key="sim_exposure_policy"
    )
    sim = p.results[names.index(picked)]
    gained, lost = (_percent(pd.DataFrame(rows)) for rows in exposure_change(sim, n=10))
    left, right = st.columns(2)
    left.markdown("**Gained**")
    left.container(key="sim_gained").dataframe(gained, hide_index=True, column_config=EXPOSURE_COLUMNS)
    right.markdown("**Lost**")
    right.container(key="sim_lost").dataframe(lost, hide_index=True, column_config=EXPOSURE_COLUMNS)


def _percent(table: pd.DataFrame) -> pd.DataFrame:
    """Shares as percentages, their change in percentage points."""
    return table.assign(**{c: 100 * table[c] for c in ("first_share", "last_share", "change")})


ROUND_COLUMNS = {
    "round": st.column_config.NumberColumn("Round", format="%d"),
    "coverage": st.column_config.NumberColumn("Coverage", format="percent"),
    "gini": st.column_config.NumberColumn("Gini (cumulative)", format="%.3f"),
    "gini_round": st.column_config.NumberColumn("Gini (round)", format="%.3f"),
    "gini_data": st.column_config.NumberColumn("Gini (data)", format="%.3f"),
    "mean_popularity": st.column_config.NumberColumn("Mean popularity", format="%.1f"),
    "probe_rmse": st.column_config.NumberColumn("Probe RMSE", format="%.4f"),
    "top5_share": st.column_config.NumberColumn("Top-5% share", format="percent"),
    "shown": st.column_config.NumberColumn("Shown", format="%d"),
    "consumed": st.column_config.NumberColumn("New ratings", format="%d"),
    "mean_new_rating": st.column_config.NumberColumn("Mean new rating", format="%.2f"),
    "n_ratings": st.column_config.NumberColumn("Ratings held", format="%d"),
    "seconds": st.column_config.NumberColumn("Seconds", format="%.2f"),
}
EXPOSURE_COLUMNS = {
    "title": st.column_config.TextColumn("Movie", width="medium"),
    "first_share": st.column_config.NumberColumn("Round 1", format="%.2f%%"),
    "last_share": st.column_config.NumberColumn("Last round", format="%.2f%%"),
    "change": st.column_config.NumberColumn("Change (pp)", format="%+.2f"),
    "popularity": st.column_config.NumberColumn("Real ratings", format="%d"),
}

st.subheader("Run")
watched = st.session_state.get("sim_watched")
job = cache.simulation_registry().get(watched) if watched and watched[0] == dataset.fingerprint else None
if job is None:
    st.caption("Choose the parameters above and run the simulation; its plots appear here round by round.")
elif job.status == RUNNING:
    live(job)
else:
    progress = job.progress()
    if progress.status == DONE:
        st.success(
            f"Simulated {progress.done_rounds} rounds in {progress.elapsed:.1f} s.",
            icon=":material/check_circle:",
        )
    elif progress.status == FAILED:
        st.error(progress.message, icon=":material/error:")
    else:
        message = progress.message or "stopped"
        st.warning(f"{message}: the finished rounds are shown.", icon=":material/stop_circle:")
    progress = replace(progress, results=tuple(s for s in progress.results if s.rounds))
    if progress.results:
        results(progress)

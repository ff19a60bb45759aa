"""The feedback-loop simulation on the real ml-100k: its measures, its reproducibility, what the loop
does to exposure under each policy, the `simulate` CLI, and the Feedback loops page (AppTest and
Chromium). Runs are kept short (a few rounds, all users, the fast recipe's few epochs per round)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from appserver import streamlit_server

from collab_core.errors import ConfigError
from collab_core.simulate import (
    PolicyParams,
    WorldParams,
    build_world,
    coverage,
    exposure_change,
    gini,
    run_policy,
)

ROOT = Path(__file__).resolve().parents[1]


def numbers(sim) -> list[dict]:
    """The per-round measures without the timings (which differ from run to run)."""
    return [{k: v for k, v in dataclasses.asdict(r).items() if k != "seconds"} for r in sim.rounds]


@pytest.fixture(scope="module")
def world(ml100k):
    return build_world(ml100k, WorldParams(seed=7), device="cpu")


# the measures on hand-made exposures


def test_gini_of_equal_exposure_is_zero():
    assert gini(np.full(50, 3)) == 0.0


def test_gini_of_everything_on_one_movie_is_n_minus_1_over_n():
    counts = np.zeros(10)
    counts[4] = 7
    assert gini(counts) == pytest.approx(9 / 10)


def test_gini_matches_the_mean_absolute_difference_definition():
    counts = np.array([0, 1, 1, 3, 5, 10])  # G = Σ_i Σ_j |x_i − x_j| / (2 n² mean)
    expected = np.abs(counts[:, None] - counts[None, :]).sum() / (2 * len(counts) ** 2 * counts.mean())
    assert gini(counts) == pytest.approx(expected)
    assert gini(np.zeros(4)) == 0.0  # nothing shown: no inequality


def test_coverage_is_the_share_of_movies_shown_at_least_once():
    assert coverage(np.array([0, 2, 0, 1])) == 0.5
    assert coverage(np.zeros(3)) == 0.0


# the world and the loop


def test_world_splits_the_real_ratings_as_stated(world, ml100k):
    n = len(ml100k.ratings)
    assert 0.09 * n < len(world.probe_rows) < 0.11 * n  # probe_share 0.1
    assert not np.intersect1d(world.seed_rows, world.probe_rows).size  # the probe is held out
    seed_per_user = np.bincount(world.encoded.user_idx.numpy()[world.seed_rows])[1:]
    assert seed_per_user.min() >= 5  # seed_min (every ml-100k user has 20+ ratings)
    assert 0.18 * n < len(world.seed_rows) < 0.25 * n  # ~20% of the non-probe ratings, rounded up
    # the true model beats the seed-trained system on the probe, and its residual sd is a rating's noise
    assert world.true_probe_rmse < world.initial_probe_rmse
    assert 0.5 < world.noise_sd < 1.0


def test_seeded_runs_are_reproducible(world, ml100k):
    params = PolicyParams(policy="explore", rounds=2, k=5)
    first = run_policy(world, params)
    again = run_policy(world, params)  # the same world
    rebuilt = run_policy(build_world(ml100k, WorldParams(seed=7), device="cpu"), params)  # a new one
    assert numbers(first) == numbers(again) == numbers(rebuilt)
    assert np.array_equal(first.last_exposure, rebuilt.last_exposure)
    other = run_policy(build_world(ml100k, WorldParams(seed=8), device="cpu"), params)
    assert numbers(other) != numbers(first)


def test_the_rounds_measure_what_was_shown_and_rated(world):
    sim = run_policy(world, PolicyParams(policy="topk", rounds=2, k=4))
    n_users = world.n_users - 1
    for r in sim.rounds:
        assert r.shown == 4 * n_users
        assert 0 < r.consumed <= r.shown
        assert 1.0 <= r.mean_new_rating <= 5.0
        assert 0 < r.coverage <= 1 and 0 < r.gini < 1
    assert sim.rounds[1].n_ratings == len(world.seed_rows) + sim.rounds[0].consumed + sim.rounds[1].consumed
    assert sim.rounds[1].coverage >= sim.rounds[0].coverage  # cumulative
    assert sim.first_exposure.sum() == sim.last_exposure.sum() == 4 * n_users
    gained, lost = exposure_change(sim, n=3)
    assert gained[0]["change"] > 0 > lost[0]["change"]


def test_top_k_concentrates_exposure_and_exploration_keeps_it_lower(world):
    """The property as designed, and what the simulation shows instead of a rising cumulative Gini.

    Pure top-k starts at near-maximal concentration: the fast recipe's model trained on a 20% seed
    ranks by its movie biases, so every user gets nearly the same list (round 1: Gini ~0.96, a fifth
    of the catalogue shown). Its cumulative Gini can then only fall, because a user who consumed a
    movie is not shown it again, so later rounds reach further down everyone's list. The feedback
    loop shows up against a control in which the system never learns (finetune_epochs=0): from the
    same start, learning from the ratings it caused keeps top-k's per-round exposure more
    concentrated than consumption alone would. Exploration keeps exposure lower in every round.
    The loop is plainest in the data the system learns from: under top-k its ratings per movie grow
    more unequal round after round (Gini 0.72 -> 0.81 in 6 rounds at ml-100k), less so with exploration.
    """
    rounds = 6
    topk = run_policy(world, PolicyParams(policy="topk", rounds=rounds, k=10))
    frozen = run_policy(world, PolicyParams(policy="topk", rounds=rounds, k=10, finetune_epochs=0))
    explore = run_policy(world, PolicyParams(policy="explore", rounds=rounds, k=10, explore_share=0.3))
    assert topk.rounds[0].gini > 0.9 and topk.rounds[0].coverage < 0.35  # one list for everyone
    assert topk.rounds[-1].gini_round > frozen.rounds[-1].gini_round  # the loop concentrates
    for t, e in zip(topk.rounds, explore.rounds):
        assert e.gini < t.gini
        assert e.coverage > t.coverage
        assert e.mean_popularity < t.mean_popularity
    assert topk.rounds[-1].coverage < 0.6 < explore.rounds[-1].coverage
    # what the system learns from concentrates: its ratings per movie grow more unequal every round
    # under top-k, from the seed's level, and exploration keeps them less so
    data = [world.seed_gini_data] + [r.gini_data for r in topk.rounds]
    assert all(b > a for a, b in itertools.pairwise(data)), data
    assert all(e.gini_data < t.gini_data for t, e in zip(topk.rounds, explore.rounds))


def test_damping_shows_less_popular_movies(world):
    topk = run_policy(world, PolicyParams(policy="topk", rounds=2, k=10))
    damped = run_policy(world, PolicyParams(policy="damped", rounds=2, k=10, damping=0.3))
    assert damped.rounds[0].mean_popularity < topk.rounds[0].mean_popularity
    assert damped.rounds[-1].coverage > topk.rounds[-1].coverage


def test_stop_keeps_the_finished_rounds(world):
    seen = []
    sim = run_policy(
        world, PolicyParams(rounds=5, k=3), callback=seen.append, should_stop=lambda: len(seen) >= 2
    )
    assert sim.stopped and len(sim.rounds) == 2 and [r.round for r in seen] == [1, 2]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PolicyParams(rounds=0), "rounds must be a positive integer"),
        (lambda: PolicyParams(k=0), "k must be a positive integer"),
        (lambda: PolicyParams(explore_share=1.5), "explore share must be in [0, 1]"),
        (lambda: PolicyParams(explore_share=-0.1), "explore share must be in [0, 1]"),
        (lambda: PolicyParams(policy="best"), "unknown policy 'best'"),
        (lambda: PolicyParams(temperature=0), "temperature must be a number > 0"),
        (lambda: WorldParams(seed_share=1.0), "seed share must be in (0, 1)"),
    ],
)
def test_bad_parameters_fail_with_one_line(make, message):
    with pytest.raises(ConfigError) as caught:
        make()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_k_beyond_the_catalogue_fails(world):
    with pytest.raises(ConfigError, match="k must be below the 1,664 movies"):
        run_policy(world, PolicyParams(k=5000))


# the command line


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "collab_core", "simulate", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_cli_json_contract(ml100k_dir):
    done = cli("--data", str(ml100k_dir), "--rounds", "2", "--policy", "explore", "--k", "3",
               "--explore-share", "0.4", "--seed", "3", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[1].split()[:4] == ["round", "coverage", "gini", "gini_round"]  # the table as it goes
    result = json.loads(lines[-1])
    assert [r["round"] for r in result["rounds"]] == [1, 2]
    for r in result["rounds"]:
        assert {"coverage", "gini", "mean_popularity", "probe_rmse", "top5_share"} <= set(r)
    assert result["params"]["explore_share"] == 0.4 and result["world"]["seed"] == 3
    assert result["policy"] == "explore" and "choice" in result["assumptions"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rounds", "0", "--policy", "topk"], "error: rounds must be a positive integer, not 0"),
        (["--rounds", "2", "--policy", "best"], "error: unknown policy 'best'"),
        (["--rounds", "2", "--policy", "explore", "--explore-share", "2"], "error: explore share must be"),
        (["--rounds", "2", "--policy", "topk", "--k", "0"], "error: k must be a positive integer"),
    ],
)
def test_cli_bad_parameters_exit_2_with_one_line(args, message):
    done = cli(*args)  # checked before the data is read: no data option needed
    assert done.returncode == 2
    assert done.stderr.strip().startswith(message) and len(done.stderr.strip().splitlines()) == 1


# the page


@pytest.fixture(scope="module")
def app_env(trained_edb, session_store, ml100k_dir, tmp_path_factory):
    """The app pointed at ml-100k and a store holding the default model (so nothing trains in the
    sidebar while the page is tested)."""
    models = tmp_path_factory.mktemp("sim-app-models")
    for suffix in (".pt", ".json"):
        shutil.copy(session_store.root / f"{trained_edb.key}{suffix}", models)
    saved = {k: os.environ.get(k) for k in ("COLLAB_DATA_DIR", "COLLAB_MODELS_DIR")}
    os.environ.update(COLLAB_DATA_DIR=str(ml100k_dir), COLLAB_MODELS_DIR=str(models))
    yield models
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_page_renders_and_a_short_run_completes(app_env):
    testing = pytest.importorskip("streamlit.testing.v1")
    from collab_ui import cache

    at = testing.AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.switch_page("app_pages/feedback.py")
    at.run()
    assert not at.exception and not at.error
    assert at.title[0].value.endswith("Feedback loops")
    at.multiselect(key="sim_policies").set_value(["topk", "explore"])
    at.number_input(key="sim_rounds").set_value(2)
    at.number_input(key="sim_k").set_value(3)
    at.button(key="sim_start").click().run()
    job = cache.simulation_registry().get(at.session_state["sim_watched"])
    job.join(timeout=300)
    assert job.status == "done", job.progress().message
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Simulated 4 rounds" in at.success[0].value
    rounds = at.get_by_key("sim_rounds_topk").dataframe[0].value
    assert list(rounds["round"]) == [1, 2] and rounds["coverage"].between(0, 1).all()
    gained = at.get_by_key("sim_gained").dataframe[0].value
    assert len(gained) == 10 and (gained["change"] > 0).all()
    assumptions = " ".join(m.value for m in at.get_by_key("sim_assumptions").caption)
    assert "P(consume)" in assumptions and "probe" in assumptions


def test_page_stop_ends_a_run_and_keeps_its_rounds(app_env):
    testing = pytest.importorskip("streamlit.testing.v1")
    from collab_ui import cache

    at = testing.AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.switch_page("app_pages/feedback.py")
    at.run()
    at.multiselect(key="sim_policies").set_value(["topk"])
    at.number_input(key="sim_rounds").set_value(50)
    at.number_input(key="sim_seed").set_value(11)
    at.button(key="sim_start").click().run()
    job = cache.simulation_registry().get(at.session_state["sim_watched"])
    deadline = time.monotonic() + 120
    while job.progress().done_rounds < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    job.stop()  # what the Stop button's on_click does
    job.join(timeout=60)
    assert job.status == "stopped"
    at.run()
    assert not at.exception
    assert "finished rounds are shown" in at.warning[0].value
    assert 1 <= len(at.get_by_key("sim_rounds_topk").dataframe[0].value) < 50


@pytest.mark.browser
def test_page_in_chromium_after_a_run(app_env, tmp_path):
    """The page in a real browser after a 3-round run of all three policies; screenshot for a look."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium on PATH")
    artifacts = ROOT / "test-artifacts"
    with (
        streamlit_server(app_env, "simulate-server.log") as (url, _),
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(f"{url}/feedback")
        page.get_by_role("heading", name="Feedback loops").wait_for(timeout=120_000)
        rounds = page.get_by_label("Rounds")
        rounds.fill("3")
        rounds.press("Enter")
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Run the simulation").click()
        # live: the progress, Stop and the plots so far, while the rounds run
        page.get_by_text(re.compile(r"[2-8]/9 rounds")).wait_for(timeout=300_000)
        assert page.get_by_role("button", name="Stop").is_visible()
        page.screenshot(path=artifacts / "simulate-feedback-live.png")
        page.get_by_text("Simulated 9 rounds").wait_for(timeout=300_000)
        page.get_by_text("Movies that gained and lost the most exposure").wait_for(timeout=30_000)
        page.locator('[data-testid="stPlotlyChart"] .main-svg').first.wait_for(timeout=30_000)
        page.wait_for_timeout(2000)
        assert page.locator('[data-testid="stException"]').count() == 0
        height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
        page.set_viewport_size({"width": 1500, "height": min(max(height, 1000), 6000)})
        page.wait_for_timeout(1500)
        page.screenshot(path=artifacts / "simulate-feedback-page.png")
        browser.close()


def test_users_who_run_out_of_movies_are_shown_fewer(taste):
    """40 users x 24 movies: after a few rounds of k 5 some users have fewer than 5 movies left, and
    their empty slots are neither shown nor rated (no movie is rated twice)."""
    small = build_world(taste, WorldParams(seed=1), device="cpu")
    sim = run_policy(small, PolicyParams(policy="explore", rounds=8, k=5, explore_share=0.4, center=1.0))
    shown = [r.shown for r in sim.rounds]
    assert shown[0] == 5 * 40 and shown[-1] < 5 * 40 and shown == sorted(shown, reverse=True)
    pairs = 40 * 24 - len(small.probe_rows)  # what the system could ever hold
    assert len(small.seed_rows) + sum(r.consumed for r in sim.rounds) == sim.rounds[-1].n_ratings <= pairs
    assert sim.rounds[-1].coverage == 1.0

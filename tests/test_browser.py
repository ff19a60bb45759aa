"""The app in a real browser: `streamlit run` on a loopback port, driven by headless Chromium.

The server starts with an empty model store, so the first open trains the default model live;
then every page is visited, a user's recommendations are picked, and a 2-epoch training is
watched as it draws. Screenshots and timings go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from appserver import ARTIFACTS, streamlit_server

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("COLLAB_DATA_DIR") or ROOT.parent / "shared/data/ml-100k")
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = {
    "data": "",
    "train": "train",
    "biases": "biases",
    "embeddings": "embeddings",
    "recommend": "recommend",
}
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
EXCEPTION = '[data-testid="stException"]'
LAST_X = "g => { const x = g._fullData.length ? g._fullData[0].x : []; return x.length ? +x.at(-1) : 0 }"
LIVE_CHART = (
    '[class*="st-key-live-"]:not([data-stale="true"]) .js-plotly-plot'  # a redraw leaves a stale copy
)
DRAWN = '() => !document.querySelector(\'[data-testid="stSkeleton"], [data-stale="true"]\')'
TABLES_LAID_OUT = """() => [...document.querySelectorAll('[data-testid="stDataFrameResizable"]')]
    .every(t => t.offsetParent === null || t.offsetWidth > 100)"""  # a resize re-measures each grid
SLOW = 300_000  # ms: training on a busy 2-core machine can take minutes

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium)", allow_module_level=True)
if not (DATA / "u.data").is_file():
    pytest.skip(f"MovieLens 100k not found at {DATA} (set COLLAB_DATA_DIR)", allow_module_level=True)

TIMINGS: dict[str, float] = {}


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run streamlit_app.py` headless on a free loopback port, with an empty store."""
    models = tmp_path_factory.mktemp("models")
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    try:
        with streamlit_server(models, "server.log", COLLAB_DATA_DIR=str(DATA)) as (url, process):
            yield {"url": url, "pid": process.pid, "models": models}
    finally:
        (ARTIFACTS / "timings.json").write_text(json.dumps(TIMINGS, indent=1))


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()


def idle(page, timeout: float = 60_000) -> None:
    """Wait until the script run is over and every element has drawn (tables and charts load lazily)."""
    for _ in range(2):  # twice: a widget bound to the URL may start one more run
        page.wait_for_selector(IDLE, timeout=timeout)
        page.wait_for_function(DRAWN, timeout=timeout)
        page.wait_for_timeout(300)


def open_page(page, server, name: str) -> float:
    """Go to a page and wait until it is interactive; return the seconds it took."""
    start = time.perf_counter()
    page.goto(f"{server['url']}/{PAGES[name]}")
    page.get_by_role("heading", level=1).first.wait_for(timeout=SLOW)
    idle(page)
    return time.perf_counter() - start


def screenshot(page, name: str) -> None:
    """The whole page: grow the viewport to the main area's height for the shot."""
    size = page.viewport_size
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": min(max(height, size["height"]), 6000)})
    charts = page.locator('[data-testid="stPlotlyChart"]')
    for i in range(charts.count()):  # charts below the fold draw only once they are in view
        if charts.nth(i).is_visible():  # (those in hidden tabs never do)
            charts.nth(i).locator(".main-svg").first.wait_for(timeout=15_000)
    page.wait_for_function(TABLES_LAID_OUT, timeout=15_000)
    page.wait_for_function(DRAWN, timeout=15_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=ARTIFACTS / f"{name}.png")
    page.set_viewport_size(size)


def assert_no_exception(page) -> None:
    assert page.locator(EXCEPTION).count() == 0, page.locator(EXCEPTION).first.inner_text()


def default_stored(server) -> bool:
    return any(p.suffix == ".json" for p in Path(server["models"]).iterdir())


def test_first_open_trains_the_default_model_live(server, page):
    start = time.perf_counter()
    page.goto(f"{server['url']}/recommend")  # a page that needs the model shows it training
    # at ml-100k the default model trains in a few seconds: the live view shows while it does, unless
    # the training ends first (the live chart itself is checked by the two-epoch test below)
    with contextlib.suppress(sync_api.Error):
        page.get_by_text("The default model is training").wait_for(timeout=10_000)
        page.locator(LIVE_CHART).first.wait_for(timeout=5_000)
        screenshot(page, "01-first-open-training-live")
    page.get_by_text("Top 10 unseen movies for user 1").wait_for(timeout=SLOW)  # opens once trained
    TIMINGS["first_open_to_recommendations_s"] = time.perf_counter() - start
    idle(page)
    assert_no_exception(page)
    assert default_stored(server)
    screenshot(page, "02-first-open-trained")
    TIMINGS["server_rss_mb_after_default_training"] = rss_mb(server["pid"])


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_renders_without_exception(server, page, name):
    if not default_stored(server):
        pytest.skip("the default model was not trained")
    seconds = open_page(page, server, name)
    TIMINGS[f"interactive_{name}_s"] = seconds
    screenshot(page, f"page-{name}")
    assert_no_exception(page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    assert "Active model" in sidebar.inner_text() and "100,000 ratings" in sidebar.inner_text()


def test_pick_a_user_and_see_recommendations(server, page):
    if not default_stored(server):
        pytest.skip("the default model was not trained")
    open_page(page, server, "recommend")
    picker = page.locator(".st-key-user input")  # a user typed by id (MovieLens 25M has 162k)
    picker.fill("42")
    start = time.perf_counter()
    picker.press("Enter")
    page.get_by_text("Top 10 unseen movies for user 42").wait_for(timeout=60_000)
    idle(page)
    TIMINGS["user_to_recommendations_s"] = time.perf_counter() - start
    assert "user=42" in page.url
    assert page.locator('.st-key-recs [data-testid="stDataFrame"]').is_visible()
    assert page.get_by_text("User 42: 30 M administrator").is_visible()
    assert_no_exception(page)
    screenshot(page, "recommend-user-42")
    page.goto(page.url)  # the URL alone restores the view
    page.get_by_text("Top 10 unseen movies for user 42").wait_for(timeout=60_000)


def test_a_two_epoch_training_draws_live(server, page):
    if not default_stored(server):
        pytest.skip("the default model was not trained")
    open_page(page, server, "train")
    for label, value in (("Epochs", "2"), ("Batch size", "4")):  # tiny batches: ~40k steps (seconds) to watch
        field = page.get_by_role("spinbutton", name=label)
        field.fill(value)
        field.press("Enter")
        idle(page)
    page.get_by_role("button", name="Start training").click()
    chart = page.locator(LIVE_CHART).first
    chart.wait_for(timeout=SLOW)
    rows = page.locator('[data-testid="stTable"] tbody tr')

    def last_batch() -> int:
        """The batch number of the training curve's last point, as drawn."""
        try:
            return chart.evaluate(LAST_X, timeout=2000)
        except sync_api.Error:  # the fragment redrew the chart just then
            return -1

    finished = page.get_by_text("trained in")
    seen, row_counts, shot = [], [], False
    deadline = time.monotonic() + SLOW / 1000
    while not finished.is_visible() and time.monotonic() < deadline:
        if chart.count():
            seen.append(last_batch())
            row_counts.append(rows.count())
        if not shot and row_counts and row_counts[-1] == 1:
            screenshot(page, "train-live-epoch-1")
            shot = True
        page.wait_for_timeout(200)
    changes = len({n for n in seen if n > 0})
    TIMINGS["live_chart_redraws_seen"] = changes
    assert changes >= 3, f"the loss chart did not change while training: {seen}"
    assert 1 in row_counts, f"the epoch table did not grow one row at a time: {row_counts}"
    page.get_by_text("trained in").wait_for(timeout=SLOW)  # the success line of the finished job
    idle(page)
    assert rows.count() == 2
    assert_no_exception(page)
    screenshot(page, "train-finished")
    assert len(list(Path(server["models"]).glob("*.json"))) == 2


def test_the_crosstab_and_its_fill_in(server, page):
    if not default_stored(server):
        pytest.skip("the default model was not trained")
    open_page(page, server, "data")
    page.get_by_role("tab", name="Distributions").click()
    idle(page)
    screenshot(page, "data-distributions")
    page.get_by_role("tab", name="Crosstab").click()
    idle(page)
    page.get_by_text("Fill the gaps with the active model's predictions").click()
    page.get_by_text("Shaded cells (and * on the map) are the model's predictions").wait_for(timeout=60_000)
    idle(page)
    assert_no_exception(page)
    screenshot(page, "data-crosstab-filled")


def test_a_lasso_on_the_embedding_map_lists_movies(server, page):
    if not default_stored(server):
        pytest.skip("the default model was not trained")
    open_page(page, server, "embeddings")
    area = page.locator(".st-key-pca_map .nsewdrag").first.bounding_box()
    cx, cy, r = area["x"] + area["width"] / 2, area["y"] + area["height"] / 2, area["height"] / 4
    page.mouse.move(cx - r, cy - r)
    page.mouse.down()
    for x, y in ((cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r), (cx - r, cy - r + 2)):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    page.get_by_text("Selected:").wait_for(timeout=60_000)
    idle(page)
    assert_no_exception(page)
    assert page.locator('.st-key-pca_selected [data-testid="stDataFrame"]').is_visible()
    screenshot(page, "embeddings-lasso")


def test_why_a_prediction_and_the_user_on_the_map(server, page):
    """The explanations as a visitor sees them: the waterfall of a recommended movie's prediction,
    "because you rated", the what-if re-solve, and the user drawn on the movie map."""
    if not default_stored(server):
        pytest.skip("the default model was not trained")
    open_page(page, server, "recommend")
    page.get_by_text("Why this prediction?").wait_for(timeout=60_000)
    waterfall = page.locator('[class*="st-key-"][class*="_waterfall"] .js-plotly-plot').first
    waterfall.wait_for(timeout=60_000)
    assert page.get_by_text("Because user 1 rated").is_visible()
    start = time.perf_counter()
    page.get_by_role("button", name="Re-solve").click()
    idle(page)
    TIMINGS["what_if_resolve_round_trip_s"] = time.perf_counter() - start
    assert_no_exception(page)
    screenshot(page, "recommend-explained")
    open_page(page, server, "embeddings")
    page.locator(".st-key-user_map .js-plotly-plot").wait_for(timeout=60_000)
    assert page.get_by_text("User 1 on the movie map").count() >= 1
    assert_no_exception(page)
    screenshot(page, "embeddings-user-on-map")


def test_a_searched_movie_with_neighbour_lines_and_its_link(server, page, browser):
    """Search a movie on the map: starred, lines to its neighbours, listed; the URL then holds the
    view, and a second browser opening that URL sees the same movie and neighbours."""
    if not default_stored(server):
        pytest.skip("the default model was not trained")
    open_page(page, server, "embeddings")
    page.locator(".st-key-map_movie input").fill("Star Wars")
    page.get_by_role("option", name="Star Wars (1977)").click()
    page.get_by_text("nearest movies on this map").wait_for(timeout=60_000)
    idle(page)
    assert_no_exception(page)
    assert "map_movie=Star+Wars" in page.url or "map_movie=Star%20Wars" in page.url, page.url
    chart = page.locator(".st-key-pca_map .js-plotly-plot")
    assert chart.evaluate("g => g._fullData.some(t => t.name === 'searched movie')")
    assert chart.evaluate("g => g._fullData.some(t => t.name === '10 nearest (full space)')")
    screenshot(page, "embeddings-search-neighbours")
    shared = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    shared.goto(page.url)
    shared.get_by_text("nearest movies on this map").wait_for(timeout=SLOW)
    idle(shared)
    assert shared.locator(".st-key-map_movie input").input_value() == "Star Wars (1977)"
    assert shared.locator('.st-key-map_neighbours [data-testid="stDataFrame"]').is_visible()
    shared.context.close()

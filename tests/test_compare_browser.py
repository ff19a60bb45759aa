"""The Compare page in a real browser: two stored models, a lasso on A's map marks the same movies on
B's. Screenshots go to test-artifacts/compare-*.png (gitignored)."""

from __future__ import annotations

import shutil
import time

import pytest
from appserver import streamlit_server
from test_browser import (  # noqa: F401  (browser, page: fixtures)
    DATA,
    SLOW,
    assert_no_exception,
    browser,
    idle,
    page,
    screenshot,
)
from test_compare import FAST

from collab_core.config import TrainConfig
from collab_core.learner import get_or_train
from collab_core.store import ModelStore

pytestmark = pytest.mark.browser
MARKED_ON_B = "g => g._fullData.filter(t => (t.name || '').startsWith('marked')).map(t => t.x.length)"


@pytest.fixture(scope="module")
def server(tmp_path_factory, ml100k, trained_edb, session_store):
    """`streamlit run` on a store holding the default model and two to compare (wd 0.1 and 0)."""
    store = ModelStore(tmp_path_factory.mktemp("compare-browser-models"))
    for suffix in (".pt", ".json"):  # the default model, so the sidebar does not train it
        name = f"{trained_edb.key}{suffix}"
        shutil.copy(session_store.root / name, store.root / name)
    for wd in (0.1, 0.0):
        get_or_train(ml100k, TrainConfig(wd=wd, **FAST), store, device="cpu")
    with streamlit_server(store.root, "compare-server.log", COLLAB_DATA_DIR=str(DATA)) as (url, _):
        yield {"url": url}


def test_a_lasso_on_one_map_marks_the_movies_on_both(server, page):  # noqa: F811
    start = time.perf_counter()
    page.goto(f"{server['url']}/compare")
    page.get_by_text("Alignment error").wait_for(timeout=SLOW)
    idle(page)
    print(f"\ncompare page interactive in {time.perf_counter() - start:.1f} s")
    assert_no_exception(page)
    screenshot(page, "compare-page")
    drag = page.locator(".st-key-compare_map_a .nsewdrag").first
    drag.scroll_into_view_if_needed()  # the mouse acts only inside the viewport
    area = drag.bounding_box()
    cx, cy, r = area["x"] + area["width"] / 2, area["y"] + area["height"] / 2, area["height"] / 6
    page.mouse.move(cx - r, cy - r)
    page.mouse.down()
    for x, y in ((cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r), (cx - r, cy - r + 2)):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    page.get_by_text("movies marked on both maps").wait_for(timeout=60_000)
    idle(page)
    assert_no_exception(page)
    marked_on_b = page.locator(".st-key-compare_map_b .js-plotly-plot").evaluate(MARKED_ON_B)
    assert marked_on_b and marked_on_b[0] > 0, "nothing marked on B's map"
    screenshot(page, "compare-marked")

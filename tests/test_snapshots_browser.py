"""The map through training in a real browser: the Embeddings page's animation (played, then
dragged to a frame), and the Train page's live map beside the loss curve while a model trains.

Uses test_browser's server (an empty store: the first open trains the default model) and helpers;
screenshots go to test-artifacts/."""

from __future__ import annotations

import contextlib
import time

import pytest
from test_browser import (  # noqa: F401  (browser, page, server: the fixtures)
    SLOW,
    assert_no_exception,
    browser,
    idle,
    open_page,
    page,
    screenshot,
    server,
    sync_api,
)

pytestmark = pytest.mark.browser
ANIMATION = ".st-key-map_animation .js-plotly-plot"
LIVE_MAP = '[class*="st-key-live-map-"]:not([data-stale="true"]) .js-plotly-plot'
TITLE = "g => g._fullLayout.title.text"


def test_the_animation_plays_and_its_slider_picks_a_frame(server, page):  # noqa: F811
    page.goto(f"{server['url']}/embeddings")  # trains the default model first (the store is empty)
    page.get_by_text("Through training").wait_for(timeout=SLOW)
    idle(page)
    page.get_by_text("Through training").click()
    chart = page.locator(ANIMATION).first
    chart.wait_for(timeout=60_000)
    idle(page)
    assert "valid MSE" in chart.evaluate(TITLE)  # it opens on the last frame
    chart.scroll_into_view_if_needed()
    chart.get_by_text("▶ Play").click()
    titles = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(t.startswith("epoch 5") for t in titles - {None}):
        titles.add(chart.evaluate(TITLE))
        page.wait_for_timeout(100)
    assert len(titles) >= 5, f"the animation did not play: {titles}"
    page.wait_for_timeout(500)
    slider = chart.locator(".slider-rail-rect").first.bounding_box()
    page.mouse.click(slider["x"] + slider["width"] * 0.3, slider["y"] + slider["height"] / 2)
    page.wait_for_timeout(800)
    assert chart.evaluate(TITLE).startswith("epoch 1.")  # 30% along 5 epochs
    assert_no_exception(page)
    screenshot(page, "snap-animation-epoch-1")


def test_the_train_page_draws_the_map_live(server, page):  # noqa: F811
    open_page(page, server, "train")
    for label, value in (("Epochs", "3"), ("Batch size", "4"), ("Seed", "7")):  # ~60k steps to watch
        field = page.get_by_role("spinbutton", name=label)
        field.fill(value)
        field.press("Enter")
        idle(page)
    page.get_by_role("button", name="Start training").click()
    live = page.locator(LIVE_MAP).first
    live.wait_for(timeout=SLOW)
    titles = []
    deadline = time.monotonic() + SLOW / 1000
    shot = False
    while time.monotonic() < deadline and not page.get_by_text("trained in").is_visible():
        with contextlib.suppress(sync_api.Error):  # the fragment redrew it just then
            titles.append(live.evaluate(TITLE, timeout=2000))
        if not shot and titles and "epoch 1." in titles[-1]:
            screenshot(page, "snap-train-live-map")
            shot = True
        page.wait_for_timeout(200)
    frames = {t for t in titles if t}
    assert len(frames) >= 3, f"the live map did not move: {frames}"
    assert shot, f"no frame of the second epoch was seen: {frames}"
    assert_no_exception(page)

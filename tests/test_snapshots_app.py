"""The map through training under AppTest, on the real ml-100k: the Embeddings page's animation of
a stored model with snapshots, and the caption for an entry stored without them.

Uses test_app's fixture (the default model in a store of its own, which the app is pointed at)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from test_app import assert_clean, page, trained  # noqa: F401  (trained: the fixture)

from collab_core.config import TrainConfig
from collab_core.learner import get_or_train
from collab_core.store import ModelStore


def test_the_embeddings_page_plays_the_map_through_training(trained):  # noqa: F811
    assert trained.record.snapshots == 31
    at = page("app_pages/embeddings.py")
    assert_clean(at)
    assert not [c for c in at.get("plotly_chart") if "map_animation" in c.proto.id]  # drawn once opened
    at.session_state["map_through"] = True  # as a click on the expander sets it (and reruns)
    at.run()
    assert_clean(at)
    expander = next(e for e in at.expander if "Through training" in e.label)
    charts = [c for c in expander.get("plotly_chart") if "map_animation" in c.proto.id]
    assert len(charts) == 1
    spec = json.loads(charts[0].proto.spec)
    assert len(spec["frames"]) == 31 and len(spec["layout"]["sliders"][0]["steps"]) == 31
    assert spec["layout"]["updatemenus"][0]["buttons"][0]["label"] == "▶ Play"
    assert "valid MSE 0.8134" in spec["layout"]["title"]["text"]  # it opens on the last frame
    assert "1,000 most-rated movies' embeddings at 31 moments" in " ".join(c.value for c in expander.caption)


def test_a_model_stored_without_snapshots_says_so(trained):  # noqa: F811
    store = ModelStore(Path(os.environ["COLLAB_MODELS_DIR"]))
    config = TrainConfig(epochs=1, n_factors=8)
    key = get_or_train(trained.dataset, config, store, device="cpu", snapshot_items=0).key
    at = page("app_pages/embeddings.py", model=key)
    at.session_state["map_through"] = True
    at.run()
    assert_clean(at)
    expander = next(e for e in at.expander if "Through training" in e.label)
    assert not [c for c in expander.get("plotly_chart") if "map_animation" in c.proto.id]
    assert "stored without snapshots" in " ".join(c.value for c in expander.caption)

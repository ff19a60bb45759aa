"""The Streamlit pages under AppTest, on the real ml-100k with a model trained once per session."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from collab_core import analysis, ranking
from collab_core.config import TrainConfig
from collab_core.data import load_path
from collab_core.learner import get_or_train
from collab_core.store import ModelStore, entry_key
from collab_ui import cache
from collab_ui.jobs import DONE, RUNNING, STOPPED, JobRegistry

streamlit_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = streamlit_testing.AppTest

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"
DATA = Path(os.environ.get("COLLAB_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared/data/ml-100k")
PAGES = [
    "app_pages/data.py",
    "app_pages/train.py",
    "app_pages/biases.py",
    "app_pages/embeddings.py",
    "app_pages/recommend.py",
]
TIMEOUT = 120  # the first run imports torch and reads the data


@pytest.fixture(scope="module")
def trained(trained_edb, session_store, ml100k_dir, tmp_path_factory):
    """The default model (conftest's, trained once per session) in a store of this module's own,
    which the app is pointed at."""
    models = tmp_path_factory.mktemp("app-models")
    for suffix in (".pt", ".json"):  # an entry is <key>.pt + <key>.json (models/README.md)
        name = f"{trained_edb.key}{suffix}"
        shutil.copy(session_store.root / name, models / name)
    saved = {k: os.environ.get(k) for k in ("COLLAB_DATA_DIR", "COLLAB_MODELS_DIR")}
    os.environ.update(COLLAB_DATA_DIR=str(ml100k_dir), COLLAB_MODELS_DIR=str(models))
    yield trained_edb
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def page(path: str, **query: str) -> AppTest:
    """The app opened on one page (optionally with URL query parameters), run once."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    if path != PAGES[0]:
        at.switch_page(path)  # before the first run pages go by file name, as their URL paths do
    return at.run()


def table(at: AppTest, key: str):
    """The DataFrame shown in the container with this key."""
    return at.get_by_key(key).dataframe[0].value


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders(trained, path):
    at = page(path)
    assert_clean(at)
    assert at.title, f"{path} has no title"
    assert at.selectbox(key="model").value == "default"
    assert "valid MSE" in " ".join(c.value for c in at.sidebar.caption)  # the default is stored


def test_sidebar_shows_the_dataset(trained):
    at = page(PAGES[0])
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "100,000 ratings" in captions and "943 users" in captions


def test_a_user_gets_their_recommendations(trained):
    at = page("app_pages/recommend.py")
    for user in (1, 42):
        at.number_input(key="user").set_value(user).run()  # a number input: 162k users at 25M
        assert_clean(at)
        shown = table(at, "recs")
        expected = ranking.recommend(trained, user, n=10, min_ratings=10)
        assert shown["title"].tolist() == expected["title"].tolist()
        history = table(at, "history")
        assert len(history) == len(ranking.user_history(trained, user))


def test_a_url_restores_the_view(trained):
    at = page("app_pages/recommend.py", user="42", movie="Toy Story (1995)")
    assert_clean(at)
    assert at.number_input(key="user").value == 42
    assert at.selectbox(key="movie").value == "Toy Story (1995)"
    near = table(at, "neighbours")
    assert near["title"].tolist() == analysis.nearest_items(trained, "Toy Story (1995)")["title"].tolist()


def test_a_movie_gets_its_neighbours(trained):
    at = page("app_pages/recommend.py")
    at.selectbox(key="movie").select("Star Wars (1977)").run()
    cosine = table(at, "neighbours")
    assert "similarity" in cosine and "Star Wars (1977)" not in cosine["title"].tolist()
    assert np.all(np.diff(cosine["similarity"].to_numpy()) <= 1e-9)
    at.toggle(key="euclidean").set_value(True).run()
    assert_clean(at)
    euclidean = table(at, "neighbours")
    assert "distance" in euclidean and np.all(np.diff(euclidean["distance"].to_numpy()) >= -1e-9)


def test_a_new_user_gets_recommendations(trained):
    at = page("app_pages/recommend.py")
    average = table(at, "new_user_recs")["title"].tolist()
    at.multiselect(key="new_movies").set_value(["Star Wars (1977)", "Return of the Jedi (1983)"]).run()
    at.slider(key="new_rating_Star Wars (1977)").set_value(5.0).run()
    assert_clean(at)
    picks = table(at, "new_user_recs")["title"].tolist()
    assert len(picks) == 10 and picks != average and "Star Wars (1977)" not in picks


def test_the_bias_filter(trained):
    at = page("app_pages/biases.py")
    unfiltered = table(at, "low_items")
    at.slider(key="bias_min").set_value(100).run()
    assert_clean(at)
    filtered = table(at, "low_items")
    assert (filtered["n_ratings"] >= 100).all() and unfiltered["n_ratings"].min() < 100
    assert filtered["title"].tolist() == analysis.bias_table(trained, 10, 100)[0]["title"].tolist()
    assert (table(at, "low_users")["n_ratings"] >= 100).all()


def test_the_crosstab_toggle(trained):
    at = page(PAGES[0])
    grid = table(at, "crosstab_table")
    assert grid.shape == (15, 15) and grid.isna().any().any()
    at.toggle(key="crosstab_fill").set_value(True).run()
    assert_clean(at)
    filled = table(at, "crosstab_table")
    assert filled.shape == (15, 15) and not filled.isna().any().any()
    real = grid.notna().to_numpy()
    assert np.allclose(filled.to_numpy()[real], grid.to_numpy()[real])
    heatmap = at.get("plotly_chart")[-1]
    assert '"predicted"' in heatmap.proto.spec


def test_the_ratings_table_filters_and_pages(trained):
    at = page(PAGES[0])
    first = table(at, "ratings_table")
    assert len(first) == 50
    at.pagination(key="ratings_page").set_value(2).run()
    second = table(at, "ratings_table")
    assert len(second) == 50 and not first.equals(second)
    at.text_input(key="filter_title").input("Star Wars").run()
    assert_clean(at)
    filtered = table(at, "ratings_table")
    assert set(filtered["title"]) == {"Star Wars (1977)"}


def test_the_embedding_map(trained):
    at = page("app_pages/embeddings.py")
    assert_clean(at)
    spec = at.get("plotly_chart")[0].proto.spec
    assert "PCA of the 1,000 most-rated movies" in spec
    at.selectbox(key="pca_colour").select("mean rating").run()
    at.slider(key="pca_n").set_value(200).run()
    assert_clean(at)
    assert "PCA of the 200 most-rated movies" in at.get("plotly_chart")[0].proto.spec


def test_a_short_training_lands_in_the_store(trained):
    at = page("app_pages/train.py")
    at.number_input(key="cfg_epochs").set_value(1).run()
    at.number_input(key="cfg_n_factors").set_value(8).run()
    at.button(key="start").click().run()
    assert_clean(at)
    config = TrainConfig(epochs=1, n_factors=8)
    key = entry_key(config, trained.dataset.fingerprint)
    store = ModelStore(Path(os.environ["COLLAB_MODELS_DIR"]))
    wait_for(at, lambda: key in {r.key for r in store.list()}, "the training")
    for _ in range(3):  # the page notices the finished job and makes it the active model
        at.run()
    assert_clean(at)
    assert at.selectbox(key="model").value == key
    assert any(key in s.value for s in at.success)


def test_a_bad_upload_shows_an_error_and_the_app_keeps_working(trained):
    at = page(PAGES[0])
    at.button_group(key="source").set_value("upload").run()
    at.file_uploader(key="upload").upload("ratings.csv", b"user,item,rating\n1,2,good\n3,4,5\n").run()
    assert not at.exception
    assert len(at.error) == 1 and "\n" not in at.error[0].value and "good" in at.error[0].value
    at.button_group(key="source").set_value("ml-100k").run()
    assert_clean(at)
    assert table(at, "ratings_table") is not None


def wait_for(at: AppTest, done, what: str, seconds: float = 300) -> None:
    """Rerun the app (as its fragments would) until done() holds."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"{what} did not happen in {seconds:.0f} s"
        time.sleep(0.5)
        at.run()
        assert not at.exception, [e.value for e in at.exception]


@pytest.fixture
def fresh_machine(tmp_path, monkeypatch):
    """No COLLAB_DATA_DIR and an empty cache folder: ml-100k must be downloaded."""
    monkeypatch.setenv("COLLAB_DATA_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "collab-explorer"


def test_first_open_downloads_ml100k(trained, fresh_machine, monkeypatch):
    archive = DATA.parent / "ml-100k.zip"
    if not archive.is_file():
        pytest.skip(f"no {archive} to serve as the download")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("COLLAB_ML100K_URL", f"http://127.0.0.1:{server.server_port}/ml-100k.zip")
    try:
        at = page(PAGES[0])
    finally:
        server.shutdown()
    assert_clean(at)
    assert (fresh_machine / "ml-100k" / "u.data").is_file()
    assert "100,000 ratings" in " ".join(c.value for c in at.sidebar.caption)


def test_offline_first_open_says_how_to_point_at_a_local_copy(trained, fresh_machine, monkeypatch):
    with socket_closed() as port:
        monkeypatch.setenv("COLLAB_ML100K_URL", f"http://127.0.0.1:{port}/ml-100k.zip")
        at = page(PAGES[0])
    assert not at.exception
    assert len(at.error) == 1 and "\n" not in at.error[0].value
    assert any("COLLAB_DATA_DIR" in i.value and "Upload" in i.value for i in at.info)
    at.button_group(key="source").set_value("path").run()
    at.text_input(key="data_path").input(str(DATA)).run()
    assert_clean(at)
    assert table(at, "ratings_table") is not None


def test_the_path_source_can_be_switched_off(trained, monkeypatch):
    monkeypatch.setenv("COLLAB_ALLOW_PATHS", "0")
    at = page(PAGES[0])
    assert_clean(at)
    options = at.button_group(key="source").options
    assert len(options) == 2 and not any("Path" in option for option in options)
    assert all(box.key != "data_path" for box in at.text_input)


class socket_closed:
    """A loopback port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc) -> None:
        return None


def test_a_url_restores_the_active_model(trained):
    config = TrainConfig(epochs=1, n_factors=4, seed=1)
    store = ModelStore(Path(os.environ["COLLAB_MODELS_DIR"]))
    key = get_or_train(trained.dataset, config, store, device="cpu").key
    at = page("app_pages/biases.py", model=key)
    assert_clean(at)
    assert at.selectbox(key="model").value == key
    assert "4f · 1ep" in " ".join(c.value for c in at.sidebar.caption)
    at.selectbox(key="model").select("default").run()
    assert "model" not in at.query_params


def test_the_fast_recipe_fills_the_form(trained):
    at = page("app_pages/train.py")
    assert any("in the store" in c.value for c in at.caption)  # the form starts as the stored default
    at.selectbox(key="cfg_recipe").select("fast").run()
    assert_clean(at)
    assert at.number_input(key="cfg_bs").value == 512
    assert at.number_input(key="cfg_wd_bias").value == 0.0


def test_the_lr_finder(trained):
    at = page("app_pages/train.py")
    at.button(key="lr_find").click().run()
    assert_clean(at)
    suggested = float(at.metric[0].value)
    assert 1e-5 < suggested < 1
    assert "Learning-rate finder" in at.get_by_key("lr_chart").proto.spec
    at.button(key="use_lr").click().run()
    assert at.number_input(key="cfg_lr").value == suggested


def test_stop_from_the_page(trained):
    at = page("app_pages/train.py")
    at.number_input(key="cfg_epochs").set_value(50).run()
    at.number_input(key="cfg_seed").set_value(11).run()
    at.button(key="start").click().run()
    key = entry_key(TrainConfig(epochs=50, seed=11), trained.dataset.fingerprint)
    at.switch_page("app_pages/biases.py").run()  # a page switch does not stop it
    assert_clean(at)
    at.switch_page("app_pages/train.py").run()
    at.button(key=f"stop-{key}").click().run()
    wait_for(at, lambda: any("stopped" in w.value for w in at.warning), "the stop")
    assert key not in {r.key for r in ModelStore(Path(os.environ["COLLAB_MODELS_DIR"])).list()}


def test_tsne_on_request(trained):
    at = page("app_pages/embeddings.py")
    at.slider(key="pca_n").set_value(100).run()
    at.segmented_control(key="map_proj").set_value("t-SNE").run()
    assert not [c for c in at.get("plotly_chart") if "t-SNE of" in c.proto.spec]
    at.button(key="tsne_run").click().run()
    assert_clean(at)
    assert "t-SNE of the 100 most-rated movies" in at.get_by_key("tsne_map").proto.spec


def test_two_sessions_share_one_job_and_stop_stops_it(trained, tmp_path):
    registry, store = JobRegistry(), ModelStore(tmp_path)
    config = TrainConfig(epochs=20, n_factors=4, seed=3)
    job = registry.start(trained.dataset, config, store, "cpu")
    assert registry.start(trained.dataset, config, store, "cpu") is job
    assert registry.running(trained.dataset.fingerprint) == [job]
    assert job.status == RUNNING
    job.stop()
    job.join(60)
    assert job.status == STOPPED and store.list() == []
    assert registry.start(trained.dataset, config, store, "cpu") is not job  # a stopped job restarts
    registry.get(trained.dataset.fingerprint, config).stop()


def test_a_stored_config_is_answered_at_once(trained):
    store = ModelStore(Path(os.environ["COLLAB_MODELS_DIR"]))
    job = JobRegistry().start(trained.dataset, TrainConfig(), store, "cpu")
    job.join(30)
    progress = job.progress()
    assert progress.status == DONE and progress.from_store and progress.key == trained.key


def test_cached_analyses_are_keyed_by_the_model_key(trained, monkeypatch):
    """hash_funcs key a model by its store key: a copy of it is a hit; other options are a miss."""
    calls = []
    real = analysis.bias_table
    monkeypatch.setattr(analysis, "bias_table", lambda *args, **kw: calls.append(args) or real(*args, **kw))
    cache.bias_table.clear()
    first, _ = cache.bias_table(trained, 5, 0, "items")
    again, _ = cache.bias_table(dataclasses.replace(trained), 5, 0, "items")
    assert len(calls) == 1 and again.equals(first)
    cache.bias_table(trained, 6, 0, "items")
    assert len(calls) == 2


def test_the_train_page_offers_the_sized_recipe_with_estimates(trained):
    at = page("app_pages/train.py")
    assert_clean(at)
    picker = at.selectbox(key="cfg_recipe")
    assert picker.value == "auto" and [o.split(" ")[0] for o in picker.options] == ["auto", "book", "fast"]
    assert picker.options[0].startswith("auto (book, ~") and picker.options[1].startswith("book (~")
    assert at.toggle(key="cfg_sparse").value is False  # at ml-100k, auto is the chapter's recipe


def test_the_sidebar_says_what_the_default_will_be_before_training(trained, tmp_path, monkeypatch):
    """A budget the chapter's recipe does not fit (as at 25M): the sidebar names the sized recipe and
    its estimate, starts nothing beyond the budget on its own, and keeps the book's one click away."""
    monkeypatch.setenv("COLLAB_MODELS_DIR", str(tmp_path / "models"))  # nothing trained yet
    monkeypatch.setenv("COLLAB_TRAIN_BUDGET", "1e-6")
    at = page(PAGES[0])
    assert not at.exception
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "Default model: embedding_dot_bias · sparse recipe · 1 epochs · bs 1024 · ~" in captions
    assert any("beyond the" in w.value for w in at.sidebar.warning)
    assert at.button(key="start_default").label.startswith("Train it (")
    book = at.button(key="train_book")
    assert book.label.startswith("Train the book recipe instead (~")
    fingerprint = trained.dataset.fingerprint
    assert not cache.job_registry().running(fingerprint)  # nothing started on its own
    book.click().run()  # the chapter's recipe trains; the Train page shows it
    assert not at.exception
    job = cache.job_registry().get(fingerprint, TrainConfig())
    assert job is not None
    job.join(120)
    assert job.status == DONE


def test_counts_are_integers_and_a_url_model_waits_for_its_path_dataset(trained, tmp_path):
    """A table without demographics (as MovieLens 25M is): 'User 1: 12 ratings', never '12.0'; and
    ?model=KEY of a Path dataset is restored once that dataset is shown."""
    rows = [f"{u},{i},{(u * i) % 5 + 1}" for u in range(1, 31) for i in range(1, 21) if (u + i) % 3]
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,rating\n" + "\n".join(rows))
    store = ModelStore(Path(os.environ["COLLAB_MODELS_DIR"]))
    key = get_or_train(load_path(path), TrainConfig(epochs=1, n_factors=4), store, device="cpu").key
    at = page("app_pages/recommend.py", model=key)
    at.button_group(key="source").set_value("path").run()
    at.text_input(key="data_path").input(str(path)).run()
    assert_clean(at)
    assert at.selectbox(key="model").value == key
    described = [c.value for c in at.caption if c.value.startswith("User 1:")]
    assert described == ["User 1: 13 ratings, mean 3.15"]
    at.number_input(key="user").set_value(2).run()
    assert [c.value for c in at.caption if c.value.startswith("User 2:")] == ["User 2: 13 ratings, mean 2.92"]


def test_the_map_shows_all_movies_on_request(trained):
    at = page("app_pages/embeddings.py")
    at.toggle(key="pca_all").set_value(True).run()
    assert_clean(at)
    assert "PCA of the 1,664 most-rated movies" in at.get("plotly_chart")[0].proto.spec
    at.segmented_control(key="map_proj").set_value("t-SNE").run()
    assert "Run t-SNE on the 1,664 most-rated movies" in at.button(key="tsne_run").label


def test_a_second_session_opens_a_path_dataset_from_the_cache(trained):
    """Both sessions get the one dataset read (in Chromium the cached progress bar was replayed into
    the second session and failed; AppTest does not replay it, so `Recent` is also tested alone)."""
    sessions = []
    for _ in range(2):
        at = page(PAGES[0])
        at.button_group(key="source").set_value("path").run()
        at.text_input(key="data_path").input(str(DATA)).run()
        assert_clean(at)
        sessions.append(table(at, "ratings_table"))
    assert sessions[0].equals(sessions[1])


def test_recent_loads_each_key_once_and_keeps_the_latest():
    recent, calls = cache.Recent(size=2), []

    def load(key):
        def run():
            calls.append(key)
            time.sleep(0.05)
            return object()

        return run

    threads = [threading.Thread(target=recent.get, args=("a", load("a"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["a"]  # four sessions at once: one load
    first = recent.get("a", load("a"))
    recent.get("b", load("b"))
    recent.get("c", load("c"))  # "a" is the oldest of three: dropped
    assert recent.get("c", load("c")) is not None and calls == ["a", "b", "c"]
    assert recent.get("a", load("a")) is not first and calls == ["a", "b", "c", "a"]

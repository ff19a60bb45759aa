"""Hostile and broken input, generated here (nothing committed as data). Each case must end with
one `error: ...` line from the CLI (exit 2, no traceback) and an st.error in the app, which then
keeps working; the data cache, the model store and everything around the input stay unchanged."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from collab_core.config import TrainConfig
from collab_core.data import load_path
from collab_core.learner import get_or_train
from collab_core.store import ModelStore

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "streamlit_app.py"
HEADER = "user,item,rating\n"
GOOD = "\n".join(f"{u},{i},{(u * i) % 5 + 1}" for u in range(1, 9) for i in range(1, 9))  # 64 pairs
# runs the CLI's main() after lowering module constants named in COLLAB_TEST_PATCH (a test-only
# wrapper: the product reads no such variable)
PATCHED_CLI = """
import importlib, json, os, sys
for name, value in json.loads(os.environ["COLLAB_TEST_PATCH"]).items():
    module, attr = name.rsplit(".", 1)
    setattr(importlib.import_module(module), attr, value)
from collab_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def text(name: str, body: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / name).write_text(body, encoding="utf-8")
        return folder / name

    return make


def raw(name: str, body: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / name).write_bytes(body)
        return folder / name

    return make


def zipped(name: str, members: Callable[[Path], dict[str, bytes | str]]) -> Callable[[Path], Path]:
    """A zip whose members may depend on the folder (absolute paths pointing next to it)."""

    def make(folder: Path) -> Path:
        with zipfile.ZipFile(folder / name, "w", zipfile.ZIP_DEFLATED) as archive:
            for member, data in members(folder).items():
                archive.writestr(member, data)
        return folder / name

    return make


def truncated_zip(folder: Path) -> Path:
    whole = zipped("whole.zip", lambda _: {"ratings.tsv": (GOOD * 40).replace(",", "\t")})(folder)
    data = whole.read_bytes()
    whole.unlink()
    (folder / "cut.zip").write_bytes(data[: len(data) // 2])
    return folder / "cut.zip"


def gzip_bomb(folder: Path) -> Path:
    """30 MB of ratings in ~60 KB: pandas would inflate it by its name, unchecked."""
    (folder / "ratings.csv.gz").write_bytes(gzip.compress(b"1,1,1\n" * 5_000_000, compresslevel=9))
    return folder / "ratings.csv.gz"


def fifo(folder: Path) -> Path:
    os.mkfifo(folder / "ratings.csv")  # reading it would block forever
    return folder / "ratings.csv"


def folder_with(files: dict[str, str]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / "data").mkdir()
        for name, body in files.items():
            (folder / "data" / name).write_text(body)
        return folder / "data"

    return make


@dataclass(frozen=True)
class Case:
    make: Callable[[Path], Path]  # writes the input into a folder, returns what --data names
    message: str  # a regex the single error line must match, in the CLI and in the app
    args: tuple[str, ...] = ()  # extra CLI options
    patch: dict = field(default_factory=dict)  # module constants lowered for the run
    upload: bool = True  # also sent to the app as an upload (files only)
    app_message: str | None = None  # what the app says when its default config fails differently
    app: bool = True  # also opened in the app (False: refused only for the CLI's explicit options)


RANDOM_BYTES = random.Random(0).randbytes(4096)
HTML = "<!DOCTYPE html>\n<html><head><title>503</title></head><body>Service Unavailable</body></html>\n"
LATIN1 = "user,item,rating,title\n" + "\n".join(
    f"{u},{i},3,Caf\xe9 {i}" for u in range(1, 9) for i in range(1, 9)
)
QUOTE = "user,item,rating,title\n" + GOOD.replace("\n", ",x\n") + ',x\n9,9,3,"never closed\n'
CASES = {
    "empty_file": Case(text("empty.csv", ""), r"empty\.csv is empty"),
    "blank_lines": Case(text("blank.csv", "\n   \n\n"), r"blank\.csv is empty"),
    "header_only": Case(text("header.csv", HEADER), r"has a header but no ratings"),
    "wrong_delimiter": Case(
        text("colons.csv", (HEADER + GOOD).replace(",", ":")), r"cannot find the columns"
    ),
    "single_column": Case(
        text("one.csv", "user\n" + "\n".join(map(str, range(40)))), r"cannot find the columns"
    ),
    "missing_rating_column": Case(
        text("grades.csv", "user,movie,grade\n" + GOOD),
        r"no rating column: .*the columns are user, movie, grade",
    ),
    "two_columns": Case(
        text("pairs.csv", "user,item\n" + "\n".join(f"{u},{u}" for u in range(40))), r"no rating column"
    ),
    "text_rating": Case(
        text("words.csv", HEADER + GOOD + "\n9,9,good\n"), r"non-number 'good' on data row 65"
    ),
    "nan_rating": Case(
        text("nan.csv", HEADER + "9,9,NaN\n" + GOOD), r"rating on row 1 is nan \(NaN or infinite"
    ),
    "infinite_rating": Case(text("inf.csv", HEADER + GOOD + "\n9,9,inf\n"), r"rating on row 65 is inf"),
    "absurd_scale": Case(text("huge.csv", HEADER + GOOD + "\n9,9,1e9\n"), r"ratings reach 1e\+09"),
    # any scale trains with the range the data suggests (test_recipes); an explicit range that
    # does not cover the ratings is refused
    "negative_rating": Case(
        text("minus.csv", HEADER + GOOD + "\n9,9,-5\n"),
        r"ratings span -5\.\.5, outside y_range 0\.\.5\.5",
        args=("--y-range", "0", "5.5"),
        app=False,
    ),
    "ten_star_scale": Case(
        text("ten.csv", HEADER + GOOD.replace(",5\n", ",10\n")),
        r"ratings span 1\.\.10, outside y_range 0\.\.5\.5",
        args=("--y-range", "0", "5.5"),
        app=False,
    ),
    "fractional_id": Case(
        text("frac.csv", HEADER + GOOD + "\n1.5,2,3\n"),
        r"column 'user' has '1\.5' on data row 65; ids are integers below 2\^62 or names",
    ),
    "huge_id": Case(
        text("bigid.csv", HEADER + GOOD + "\n3,123456789012345678901234567890,3\n"),
        r"column 'item' has '123456789012345678901234567890' on data row 65",
    ),
    "duplicated_rows": Case(
        text("twice.csv", HEADER + "1,1,4\n2,2,3\n3,3,5\n4,4,1\n" * 6),
        r"20 of 24 ratings repeat an earlier \(user, item\) pair",
    ),
    "utf16_text": Case(raw("wide.csv", (HEADER + GOOD).encode("utf-16")), r"wide\.csv is UTF-16 text"),
    "binary_as_csv": Case(raw("photo.csv", RANDOM_BYTES), r"photo\.csv is a binary file"),
    "gzip_as_csv": Case(
        raw("ratings.csv", gzip.compress((HEADER + GOOD).encode())), r"ratings\.csv is a binary file"
    ),
    "gzip_bomb": Case(gzip_bomb, r"ratings\.csv\.gz is a binary file", upload=False),  # .gz: not uploadable
    "html_as_zip": Case(text("ml-100k.zip", HTML), r"ml-100k\.zip is not a valid zip archive \(an HTML page"),
    "truncated_zip": Case(truncated_zip, r"cut\.zip is not a valid zip archive \(damaged or truncated\)"),
    "zip_dotdot": Case(
        zipped("slip.zip", lambda _: {"ratings.csv": HEADER + GOOD, "../../escaped.txt": "x"}),
        r"refusing to extract '\.\./\.\./escaped\.txt': it points outside",
    ),
    "zip_absolute": Case(
        zipped("abs.zip", lambda folder: {"r.csv": HEADER + GOOD, str(folder.parent / "abs.txt"): "x"}),
        r"refusing to extract '/.*abs\.txt': absolute path in the archive",
    ),
    "zip_bomb": Case(
        zipped("bomb.zip", lambda _: {"ratings.tsv": b"1\t1\t1\n" + bytes(30 * 2**20)}),
        r"'ratings\.tsv' expands [\d,]+-fold \(limit 200\); refusing a likely zip bomb",
    ),
    "zip_without_tables": Case(
        zipped("misc.zip", lambda _: {"README.txt": "hi", "a.csv": "1", "b.csv": "2"}),
        r"misc\.zip holds no u\.data, no ratings\.csv and not exactly one CSV/TSV table",
    ),
    "empty_zip": Case(zipped("nothing.zip", lambda _: {}), r"nothing\.zip holds no u\.data"),
    "zip_damaged_ml100k": Case(
        zipped("ml.zip", lambda _: {"ml-100k/u.data": "1\t2\tthree\t4\n"}),
        r"ml-100k is not a readable ml-100k folder",
    ),
    "ragged_rows": Case(
        text("ragged.csv", HEADER + GOOD + "\n1,2,3,4,5\n"), r"Expected 3 fields in line 66, saw 5"
    ),
    "unclosed_quote": Case(text("quote.csv", QUOTE), r"EOF inside string"),
    "over_size_limit": Case(
        text("big.csv", HEADER + "\n".join(f"{u},{i},3" for u in range(1, 31) for i in range(1, 11))),
        r"big\.csv is 2\.1 KB; the limit is 1\.0 KB",
        patch={"collab_core.data.MAX_FILE_BYTES": 1000},
    ),
    "over_row_limit": Case(
        text("rows.csv", HEADER + GOOD),
        r"rows\.csv has more than 50 ratings, the limit",
        patch={"collab_core.data.MAX_ROWS": 50},
    ),
    "too_few_ratings": Case(text("three.csv", HEADER + "1,1,3\n1,2,4\n2,1,5\n"), r"has only 3 ratings"),
    "too_small_to_split": Case(
        text("twelve.csv", HEADER + "\n".join(f"{u},{u},3" for u in range(1, 13))),
        r"12 ratings are too few to split with valid_pct=0\.05",
        args=("--valid-pct", "0.05"),
        app_message=r"batch size 64 is larger than the 10 training ratings",
    ),
    "smaller_than_a_batch": Case(
        text("thirty.csv", HEADER + "\n".join(f"{u},{u},3" for u in range(1, 31))),
        r"batch size 64 is larger than the 24 training ratings",
    ),
    "fifo": Case(fifo, r"ratings\.csv is not a regular file or folder", upload=False),
    "missing_path": Case(
        lambda folder: folder / "nowhere.csv", r"no such file or folder: .*nowhere\.csv", upload=False
    ),
    "empty_folder": Case(
        folder_with({}), r"data holds neither u\.data \(ml-100k\) nor ratings\.csv", upload=False
    ),
    "damaged_ml100k_folder": Case(
        folder_with({"u.data": "1\t2\t3\n", "u.item": "", "u.user": ""}),
        r"data is not a readable ml-100k folder",
        upload=False,
    ),
    "movielens_folder_wrong_columns": Case(
        folder_with({"ratings.csv": "a,b,c\n1,2,3\n"}),
        r"ratings\.csv: no user column: name it with --user-col; the columns are a, b, c",
        upload=False,
    ),
}


# --- what must not change ----------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root with its content hash (or its kind, for what is not a regular file)."""
    out = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode):
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[str(path.relative_to(root))] = stat.filemode(mode)
    return out


def make_home(root: Path, case: Case) -> tuple[Path, Path]:
    """A run's own world: inputs, an existing model store and data cache, a temp dir, a cwd."""
    for name in ("inputs", "models", "cache/collab-explorer", "tmp", "cwd"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "models" / "README.md").write_text("an existing store\n")
    (root / "cache" / "collab-explorer" / "keep.txt").write_text("an existing cache\n")
    return root, case.make(root / "inputs")


# --- the command line --------------------------------------------------------------------------


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    before: dict[str, str]
    after: dict[str, str]
    seconds: float


def run_cli(home: Path, data: Path, case: Case) -> CliRun:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "COLLAB_MODELS_DIR": str(home / "models"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "TMPDIR": str(home / "tmp"),  # zips are extracted under it: it must be empty afterwards
        "COLLAB_TEST_PATCH": json.dumps(case.patch),
    }
    for name in ("COLLAB_DATA_DIR", "COLLAB_ML100K_URL"):
        env.pop(name, None)
    program = ["-c", PATCHED_CLI] if case.patch else ["-m", "collab_core"]
    # saving on: the store must stay untouched because the input is refused, not because of --no-save
    command = [sys.executable, *program, "train", "--data", str(data), "--epochs", "1", *case.args]
    before, start = snapshot(home), time.perf_counter()
    done = subprocess.run(command, cwd=home / "cwd", env=env, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    return CliRun(done.returncode, done.stdout, done.stderr, before, snapshot(home), seconds)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, CliRun]:
    """Every case through `python -m collab_core train`, four processes at a time."""
    homes = {name: make_home(tmp_path_factory.mktemp(f"cli-{name}"), case) for name, case in CASES.items()}
    with ThreadPoolExecutor(4) as pool:
        futures = {name: pool.submit(run_cli, *homes[name], CASES[name]) for name in CASES}
        return {name: future.result() for name, future in futures.items()}


def test_there_are_enough_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", CASES)
def test_cli_refuses_with_one_error_line(name, cli_runs):
    run, case = cli_runs[name], CASES[name]
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert re.search(case.message, lines[0]), lines[0]
    assert run.after == run.before  # store, cache, temp dir, cwd and the inputs' neighbours
    print(f"\n{name}: exit 2 in {run.seconds:.1f} s: {lines[0]}")


def test_a_good_table_trains_through_the_same_harness(tmp_path):
    """The control: the same harness with a sound table exits 0 and saves one model."""
    case = Case(text("good.csv", HEADER + GOOD + "\n"), "", args=("--bs", "16"))
    home, data = make_home(tmp_path, case)
    run = run_cli(home, data, case)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    added = sorted(set(run.after) - set(run.before))
    assert [Path(p).suffix for p in added if re.fullmatch(r"models/[0-9a-f]{16}\.\w+", p)] == [".json", ".pt"]
    assert all(p.startswith(("models/", "tmp/torchinductor")) for p in added), added  # torch's own cache


# --- the app -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_home(tmp_path_factory) -> tuple[Path, Path]:
    """The app's store, cache and temp dir, and a sound table whose default model is already stored,
    so the follow-up interaction renders a full page without training anything."""
    home = tmp_path_factory.mktemp("app")
    for name in ("models", "cache/collab-explorer", "tmp"):
        (home / name).mkdir(parents=True)
    rows = "\n".join(f"{u},{i},{(u + 2 * i) % 5 + 1}" for u in range(1, 31) for i in range(1, 11))
    valid = home / "valid.csv"
    valid.write_text(HEADER + rows + "\n")
    get_or_train(load_path(valid), TrainConfig(), ModelStore(home / "models"), device="cpu")
    return home, valid


@pytest.fixture
def app_env(app_home, monkeypatch):
    home, _ = app_home
    monkeypatch.setenv("COLLAB_MODELS_DIR", str(home / "models"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.delenv("COLLAB_DATA_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(home / "tmp"))  # uploads and zips are unpacked here
    return app_home


def shown_error(at, timeout: float = 30.0) -> list[str]:
    """The page's st.error texts; the default model's training fails in a thread, so rerun a while."""
    deadline = time.monotonic() + timeout
    while not at.error and not at.exception and time.monotonic() < deadline:
        time.sleep(0.1)
        at.run()
    return [e.value for e in at.error]


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.app])
def test_app_shows_an_error_and_keeps_working(name, app_env, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    home, valid = app_env
    case = CASES[name]
    for constant, value in case.patch.items():
        monkeypatch.setattr(constant, value)
    (tmp_path / "inputs").mkdir()
    data = case.make(tmp_path / "inputs")
    message = case.app_message or case.message
    before = snapshot(home), snapshot(tmp_path)

    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["source"] = "path"
    at.session_state["data_path"] = str(data)
    at.run()
    errors = shown_error(at)
    assert not at.exception, [e.value for e in at.exception]
    assert len(errors) == 1 and re.search(message, errors[0]), errors

    if case.upload:  # the same bytes as an upload: written to a temp file, never unpickled
        at.button_group(key="source").set_value("upload").run()
        at.file_uploader(key="upload").upload(data.name, data.read_bytes()).run()
        errors = shown_error(at)
        assert not at.exception, [e.value for e in at.exception]
        assert len(errors) == 1 and re.search(message, errors[0]), errors
        at.button_group(key="source").set_value("path").run()

    at.text_input(key="data_path").input(str(valid)).run()  # the app keeps working
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any("**valid.csv**: 300 ratings" in c.value for c in at.sidebar.caption)
    assert at.title and at.title[0].value.endswith("Ratings")
    assert (snapshot(home), snapshot(tmp_path)) == before


def test_upload_names_cannot_escape(app_env, tmp_path):
    """An upload's name is only a label: '../../x.csv' and absolute names stay in the temp folder."""
    from streamlit.testing.v1 import AppTest

    home, _ = app_env
    before = snapshot(home)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["source"] = "upload"
    at.run()
    for name in ("../../escaped.csv", str(tmp_path / "absolute.csv")):
        at.file_uploader(key="upload").upload(name, RANDOM_BYTES).run()
        assert not at.exception
        assert [e.value for e in at.error] == [f"{Path(name).name} is a binary file, not a CSV/TSV table"]
    assert snapshot(home) == before and not (tmp_path / "absolute.csv").exists()


def test_tolerated_input_loads_with_a_warning(tmp_path):
    """Not everything odd is an error: a few re-rated pairs are kept (as fastai does) and said so,
    a UTF-8 BOM is skipped, ids may be names; the dataset then trains."""
    body = "\ufeff" + HEADER + GOOD + "\n1,1,2\n" + "alice,bob,4\n"
    path = tmp_path / "odd.csv"
    path.write_text(body, encoding="utf-8")
    dataset = load_path(path)
    assert dataset.warnings == ("1 duplicate (user, item) pairs kept, as fastai does",)
    assert list(dataset.ratings.columns[:3]) == ["user", "item", "rating"] and len(dataset.ratings) == 66
    assert "alice" in set(dataset.ratings["user"])
    trained = get_or_train(dataset, TrainConfig(epochs=1, bs=8, n_factors=4), device="cpu")
    assert trained.record.metrics.rmse > 0


def test_latin1_table_loads_with_a_warning(tmp_path):
    """Latin-1 text (Book-Crossing, MovieLens 1M's titles) is read as such, and said so."""
    path = tmp_path / "latin1.csv"
    path.write_bytes(LATIN1.encode("latin-1"))
    dataset = load_path(path)
    assert dataset.warnings == ("latin1.csv is not UTF-8: read as Latin-1",)
    assert dataset.items.loc[3, "title"] == "Caf\xe9 3"


def test_snapshot_sees_what_an_escape_would_write(tmp_path):
    """The harness itself: a file appearing next to the inputs, or changed in the store, is seen."""
    home, _ = make_home(tmp_path, Case(text("x.csv", "x"), ""))
    before = snapshot(home)
    (home / "escaped.txt").write_text("x")
    assert snapshot(home) != before
    (home / "escaped.txt").unlink()
    (home / "models" / "README.md").write_text("changed")
    assert snapshot(home) != before


@pytest.fixture(scope="module")
def latest_small(tmp_path_factory) -> tuple[Path, Path, object]:
    """A MovieLens-CSV folder (30 users, 10 films) with its default model already in a store."""
    root = tmp_path_factory.mktemp("query")
    folder, models = root / "latest-small", root / "models"
    folder.mkdir()
    rows = [(u, i, (u * i) % 5 + 1) for u in range(1, 31) for i in range(1, 11)]
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "\n".join(f"{u},{i},{r},{8e8 + u * i:.0f}" for u, i, r in rows)
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n" + "\n".join(f"{i},Film {i} ({1990 + i}),Drama" for i in range(1, 11))
    )
    return folder, models, get_or_train(load_path(folder), TrainConfig(), ModelStore(models), device="cpu")


@pytest.mark.parametrize(
    "query",
    [
        {"model": "../../etc/passwd", "user": "<script>alert(1)</script>", "movie": "x" * 5000},
        {"model": "0" * 16, "user": "99999999999999999999", "movie": "![x](http://127.0.0.1:9/p.png)"},
        {"model": "", "user": "", "movie": "%00%2e%2e%2f"},
    ],
    ids=["traversal-script-long", "unknown-key-huge-id-markdown", "empty-and-encoded"],
)
def test_hostile_query_parameters_are_ignored(query, latest_small, tmp_path, monkeypatch):
    """A shared URL only selects among what exists: unknown or hostile values fall back to defaults,
    are never used as paths, and the page renders."""
    from streamlit.testing.v1 import AppTest

    folder, models, trained = latest_small
    monkeypatch.setenv("COLLAB_DATA_DIR", str(folder))
    monkeypatch.setenv("COLLAB_MODELS_DIR", str(models))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    before = snapshot(folder.parent), snapshot(tmp_path)
    at = AppTest.from_file(str(APP), default_timeout=60)
    for name, value in query.items():
        at.query_params[name] = value
    at.switch_page("app_pages/recommend.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="model").value == "default"  # the stored default, not the URL's key
    assert at.number_input(key="user").value in set(trained.dataset.ratings["user"])  # a number input now
    assert at.selectbox(key="movie").value in {f"Film {i} ({1990 + i})" for i in range(1, 11)}
    assert (snapshot(folder.parent), snapshot(tmp_path)) == before


def test_a_hostile_user_name_in_the_url_is_not_echoed(tmp_path, monkeypatch):
    """Datasets with named users take the user as text: a URL's text is never put in a message."""
    from streamlit.testing.v1 import AppTest

    path = tmp_path / "named.csv"
    rows = [f"u{u},m{i},{(u + i) % 5 + 1}" for u in range(1, 21) for i in range(1, 11) if (u * i) % 4]
    path.write_text("user,item,rating\n" + "\n".join(rows))
    models = tmp_path / "models"
    config = TrainConfig(epochs=1, n_factors=4)
    key = get_or_train(load_path(path), config, ModelStore(models), device="cpu").key
    monkeypatch.setenv("COLLAB_MODELS_DIR", str(models))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    at = AppTest.from_file(str(APP), default_timeout=60)
    hostile = "![x](http://127.0.0.1:9/p.png)"
    for name, value in {"source": "path", "data_path": str(path), "model": key, "user": hostile}.items():
        at.query_params[name] = value
    at.switch_page("app_pages/recommend.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [m.value for kind in (at.error, at.warning, at.caption, at.markdown) for m in kind]
    assert not any("127.0.0.1:9" in text for text in shown)
    assert any("No user has that id" in text for text in shown) and table_of(at, "recs") is not None


def table_of(at, key: str):
    return at.get_by_key(key).dataframe[0].value

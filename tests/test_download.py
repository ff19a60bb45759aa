"""Downloading ml-100k from a real local HTTP server, and extracting hostile zips safely."""

import json
import os
import socket
import stat
import threading
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from collab_core import cli, download
from collab_core.download import download_ml100k, safe_extract, verify_ml100k
from collab_core.errors import DataError

ZIP = Path(
    os.environ.get("COLLAB_DATA_ZIP") or Path(__file__).resolve().parents[2] / "shared/data/ml-100k.zip"
)
needs_zip = pytest.mark.skipif(
    not ZIP.is_file(), reason=f"real ml-100k.zip not found (set COLLAB_DATA_ZIP); looked at {ZIP}"
)

Reply = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """A local HTTP server whose replies the test scripts, one per request; it counts requests."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    server.requests += 1
                    reply = server.replies.pop(0) if len(server.replies) > 1 else server.replies[0]
                reply(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ml-100k.zip"


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    thread.join(timeout=5)


def send(body: bytes, content_type: str = "application/zip", length: int | None = None) -> Reply:
    """A reply sending `body` with a Content-Length of `length` (default: the true size)."""

    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body) if length is None else length))
        handler.end_headers()
        handler.wfile.write(body)  # HTTP/1.0: the connection closes when the handler returns

    return reply


def not_found(handler: BaseHTTPRequestHandler) -> None:
    handler.send_error(404, "Not Found")


def zip_bytes() -> bytes:
    return ZIP.read_bytes()


def truncated() -> Reply:
    """Announce the full size, send half, hang up."""
    body = zip_bytes()
    return send(body[: len(body) // 2], length=len(body))


def assert_empty(cache: Path) -> None:
    """Nothing that looks like a dataset, and no temporary leftovers."""
    assert not (cache / "ml-100k").exists()
    assert sorted(p.name for p in cache.iterdir()) == []


# --- download_ml100k ---------------------------------------------------------------------


@needs_zip
def test_good_download_verifies_and_reports_progress(server: Server, tmp_path: Path) -> None:
    server.replies = [send(zip_bytes())]
    calls: list[tuple[int, int | None]] = []
    folder = download_ml100k(tmp_path / "cache", server.url, progress=lambda *c: calls.append(c))
    assert folder == tmp_path / "cache" / "ml-100k"
    verify_ml100k(folder)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["ml-100k"]
    size = ZIP.stat().st_size
    counts = [got for got, _ in calls]
    assert len(calls) > 1
    assert counts == sorted(set(counts))  # strictly increasing
    assert counts[-1] == size
    assert {total for _, total in calls} == {size}


@needs_zip
def test_cli_download_fills_the_cache_folder(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m collab_core download`, as .ci/run uses it on a fresh clone: the verified folder
    lands in the user cache and its path is printed; a second call reuses it without a request."""
    server.replies = [send(zip_bytes())]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("COLLAB_ML100K_URL", server.url)
    assert cli.main(["download", "--json"]) == 0
    folder = tmp_path / "collab-explorer" / "ml-100k"
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(folder) and json.loads(out[-1]) == {"folder": str(folder)}
    verify_ml100k(folder)
    assert cli.main(["download"]) == 0 and server.requests == 1
    server.replies = [not_found]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "elsewhere"))
    assert cli.main(["download"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")


@needs_zip
def test_truncated_download_leaves_nothing_and_a_retry_works(server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    size = ZIP.stat().st_size
    server.replies = [truncated(), send(zip_bytes())]
    with pytest.raises(DataError, match=rf"download interrupted: got {size // 2:,} of {size:,}"):
        download_ml100k(cache, server.url)
    assert_empty(cache)
    verify_ml100k(download_ml100k(cache, server.url))
    assert server.requests == 2


@needs_zip
def test_html_page_served_as_zip(server: Server, tmp_path: Path) -> None:
    server.replies = [send(b"<html><body>Service unavailable</body></html>", "text/html")]
    with pytest.raises(DataError, match=r"not a zip archive \(got text/html"):
        download_ml100k(tmp_path / "cache", server.url)
    assert_empty(tmp_path / "cache")


def test_zip_that_is_not_ml100k(server: Server, tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "other.zip", {"ratings.csv": b"user,item,rating\n1,2,3\n"})
    server.replies = [send(archive.read_bytes())]
    with pytest.raises(DataError, match=r"is not MovieLens 100k: .*missing u.data, u.item, u.user"):
        download_ml100k(tmp_path / "cache", server.url)
    assert_empty(tmp_path / "cache")


def test_http_404(server: Server, tmp_path: Path) -> None:
    server.replies = [not_found]
    with pytest.raises(DataError, match=r"HTTP 404 .*COLLAB_DATA_DIR"):
        download_ml100k(tmp_path / "cache", server.url)
    assert_empty(tmp_path / "cache")


def test_unreachable_port(tmp_path: Path) -> None:
    with socket.socket() as closed:  # bound but not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/ml-100k.zip"
        with pytest.raises(DataError, match=r"download of .* failed .*--data PATH"):
            download_ml100k(tmp_path / "cache", url, timeout=5)
    assert_empty(tmp_path / "cache")


def test_server_that_never_answers_times_out(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/ml-100k.zip"
        with pytest.raises(DataError, match=r"download of .* failed \(.*timed out"):
            download_ml100k(tmp_path / "cache", url, timeout=0.5)
    assert_empty(tmp_path / "cache")


@needs_zip
def test_verified_folder_is_reused_without_a_request(server: Server, tmp_path: Path) -> None:
    server.replies = [send(zip_bytes())]
    first = download_ml100k(tmp_path, server.url)
    assert server.requests == 1
    assert download_ml100k(tmp_path, server.url) == first
    assert server.requests == 1


def test_broken_existing_folder_is_reported_not_overwritten(server: Server, tmp_path: Path) -> None:
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text("1\t2\t3\t4\n")
    server.replies = [not_found]
    with pytest.raises(DataError, match=r"missing u.item, u.user; remove .* and try again"):
        download_ml100k(tmp_path, server.url)
    assert server.requests == 0
    assert (tmp_path / "ml-100k" / "u.data").read_text() == "1\t2\t3\t4\n"


@needs_zip
def test_two_downloads_at_once(server: Server, tmp_path: Path) -> None:
    server.replies = [send(zip_bytes())]
    both_started = threading.Barrier(2, timeout=10)
    waited = threading.local()

    def progress(got: int, total: int | None) -> None:
        if not getattr(waited, "done", False):  # first chunk: wait until the other one is under way
            waited.done = True
            both_started.wait()

    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(download_ml100k, tmp_path, server.url, progress=progress) for _ in "ab"]
        results = [run.result(timeout=60) for run in runs]
    assert results == [tmp_path / "ml-100k"] * 2
    assert server.requests == 2
    verify_ml100k(tmp_path / "ml-100k")
    assert [p.name for p in tmp_path.iterdir()] == ["ml-100k"]


# --- verify_ml100k -----------------------------------------------------------------------


@needs_zip
def test_verify_rejects_a_short_u_data(tmp_path: Path) -> None:
    safe_extract(ZIP, tmp_path)
    folder = tmp_path / "ml-100k"
    verify_ml100k(folder)
    lines = (folder / "u.data").read_bytes().splitlines(keepends=True)
    (folder / "u.data").write_bytes(b"".join(lines[:-1]))
    with pytest.raises(DataError, match=r"has 99,999 ratings"):
        verify_ml100k(folder)


# --- safe_extract ------------------------------------------------------------------------


def make_zip(path: Path, members: dict[str | zipfile.ZipInfo, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def written(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_safe_extract_writes_a_normal_zip(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "ok.zip", {"data/a.csv": b"1,2,3\n", "b.txt": b"hello"})
    safe_extract(archive, tmp_path / "out")
    assert written(tmp_path / "out") == ["b.txt", "data", "data/a.csv"]
    assert (tmp_path / "out" / "data" / "a.csv").read_bytes() == b"1,2,3\n"


def symlink_member() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("../evil", "points outside"),
        ("ok/../../evil", "points outside"),
        ("ABSOLUTE", "absolute path"),
        ("C:/evil", "absolute path"),
        ("..\\evil", "points outside"),
        (symlink_member(), "symbolic links"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "drive", "backslash", "symlink"],
)
def test_safe_extract_refuses_escaping_members(
    tmp_path: Path, member: str | zipfile.ZipInfo, message: str
) -> None:
    outside = tmp_path / "abs" / "x"
    member = str(outside) if member == "ABSOLUTE" else member
    archive = make_zip(tmp_path / "bad.zip", {"fine.txt": b"ok", member: b"/etc/passwd"})
    with pytest.raises(DataError, match=message):
        safe_extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]  # not even fine.txt


def test_safe_extract_refuses_a_zip_bomb(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bomb.zip", {"zeros": bytes(50 * 2**20)})
    assert archive.stat().st_size < 200_000
    with pytest.raises(DataError, match=r"expands .*-fold .*zip bomb"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_safe_extract_caps_the_total_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "MAX_EXTRACT_BYTES", 10_000)
    archive = make_zip(tmp_path / "big.zip", {"a": os.urandom(6_000), "b": os.urandom(6_000)})
    with pytest.raises(DataError, match=r"expands to 12,000 bytes; the limit is 10,000"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_safe_extract_rejects_a_truncated_zip(tmp_path: Path) -> None:
    whole = make_zip(tmp_path / "whole.zip", {"a.bin": os.urandom(50_000)}).read_bytes()
    (tmp_path / "cut.zip").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"not a valid zip archive"):
        safe_extract(tmp_path / "cut.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_safe_extract_rejects_corrupted_member_data(tmp_path: Path) -> None:
    whole = bytearray(make_zip(tmp_path / "z.zip", {"a.txt": b"abc" * 10_000}).read_bytes())
    whole[60] ^= 0xFF  # inside the compressed data of the only member
    (tmp_path / "z.zip").write_bytes(bytes(whole))
    with pytest.raises(DataError, match=r"damaged|not a valid zip"):
        safe_extract(tmp_path / "z.zip", tmp_path / "out")


def test_safe_extract_rejects_a_non_zip(tmp_path: Path) -> None:
    (tmp_path / "ratings.zip").write_text("user,item,rating\n1,2,3\n")
    with pytest.raises(DataError, match=r"not a valid zip archive"):
        safe_extract(tmp_path / "ratings.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_safe_extract_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot extract .*nope.zip"):
        safe_extract(tmp_path / "nope.zip", tmp_path / "out")


def test_safe_extract_does_not_follow_a_symlink_in_dest(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "sub").symlink_to(tmp_path / "elsewhere")
    archive = make_zip(tmp_path / "z.zip", {"sub/x.txt": b"x"})
    with pytest.raises(DataError, match=r"points outside"):
        safe_extract(archive, tmp_path / "out")
    assert list((tmp_path / "elsewhere").iterdir()) == []

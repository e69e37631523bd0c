"""HTTP hardening of `elmsearch serve`: ids, Host/Origin checks, no server paths in errors,
query texts in memory only, paged reports, streamed and bounded uploads.

Most tests go through FastAPI's test client; keep-alive and the upload slots use a real uvicorn
server in a thread, the upload memory test ``elmsearch serve`` in its own process (its RSS is
measured from /proc).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.app import app as cli_app
from cli.web.app import create_app, public_message
from cli.web.guard import allowed_hosts, host_name
from elmsearch.models.textcache import MEMORY_ENTRIES, MemoryCache
from indexer.filters import FilterError, normalise_sex, parse_filters
from indexer.pipeline import index_archive
from indexer.search import NotFoundError
from indexer.service import MAX_ID, REPORT_PAGE_CHARS, SearchService, check_id, page_report

REPO = Path(__file__).resolve().parents[1]
BOUNDARY = "elmsearch-test-boundary-7f3a"

pytestmark = pytest.mark.usefixtures("restore_logging")


# ---- fixtures and helpers ------------------------------------------------------------------
@pytest.fixture(scope="module")
def archive_root(demo_archive, tmp_path_factory) -> Path:
    """A private copy of the demo archive (one test hides one of its files for a while)."""
    dest = tmp_path_factory.mktemp("secarchive") / "archive"
    shutil.copytree(demo_archive.root, dest)
    return dest


@pytest.fixture(scope="module")
def index_dir(archive_root, demo_model_dir, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("secserve") / "idx"
    index_archive(archive_root, db, demo_model_dir)
    return db


@pytest.fixture(scope="module")
def svc(index_dir) -> SearchService:
    """The service as ``elmsearch serve`` opens it: query-text features in memory."""
    return SearchService.open(index_dir, text_cache="memory").warm()


@pytest.fixture(scope="module")
def app(svc):
    return create_app(svc, threads=8)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url="http://127.0.0.1") as c:  # a loopback Host
        yield c


def _one_line(r, status: int) -> str:
    assert r.status_code == status, (r.request.url, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail, detail
    return detail


@contextlib.contextmanager
def _live(app_):
    """``app_`` under a real uvicorn server in a thread on a free loopback port; yields the port."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app_, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def _framing(filename: str = "big.edf") -> tuple[bytes, bytes]:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head, f"\r\n--{BOUNDARY}--\r\n".encode()


def _multipart(data: bytes, filename: str = "x.edf") -> bytes:
    head, tail = _framing(filename)
    return head + data + tail


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


# ---- 1. ids outside the 64-bit range ----------------------------------------------------------
BAD_IDS = ["99999999999999999999999", str(MAX_ID + 1), str(2**64), "-1", "0", "-99999999999999999999999"]


def test_check_id_bounds():
    assert check_id(1) == 1 and check_id("42") == 42 and check_id(MAX_ID) == MAX_ID
    for bad in (0, -1, MAX_ID + 1, 10**30, "abc", None, "1.5"):
        with pytest.raises(NotFoundError, match="no such id"):
            check_id(bad)


def test_ids_outside_64_bits_are_404_never_500(client):
    for rid in BAD_IDS:
        for route in ("", "/similar", "/reports", "/window.png", "/spectrogram.png"):
            detail = _one_line(client.get(f"/api/recordings/{rid}{route}"), 404)
            assert "no such id" in detail, (rid, route, detail)
    assert "no such id" in _one_line(client.get(f"/api/recordings/{MAX_ID}"), 404)  # in range, absent
    for rid in ("abc", "1.5", "1e5", "0x10", "%20"):
        detail = _one_line(client.get(f"/api/recordings/{rid}"), 422)
        assert "recording_id" in detail, (rid, detail)
    r = client.post("/api/classify", json={"recording_id": 10**30, "prompts": ["normal", "abnormal"]})
    assert "no such id" in _one_line(r, 404)
    assert client.get("/api/recordings/1").json()["recording_id"] == 1  # the client still works


def test_keep_alive_connection_survives_bad_ids(app):
    with _live(app) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for rid in [*BAD_IDS, "abc"]:
                conn.request("GET", f"/api/recordings/{rid}")
                r = conn.getresponse()
                body = json.loads(r.read())
                assert r.status == (422 if rid == "abc" else 404), (rid, r.status, body)
                assert "\n" not in body["detail"]
                assert r.getheader("connection", "").lower() != "close"
            sock = conn.sock
            conn.request("GET", "/api/recordings/1")
            r = conn.getresponse()
            assert r.status == 200 and json.loads(r.read())["recording_id"] == 1
            assert conn.sock is sock  # the same TCP connection answered after the errors
        finally:
            conn.close()


# ---- 2. Host allowlist ------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "expected"), [
    ("[::1]:80", "::1"), ("[::1]", "::1"), ("::1", "::1"), ("a.b.:80", "a.b"), ("x:notaport", None), ("", None),
    (None, None), ("   ", None), ("LocalHost:8000", "localhost"), ("localhost.", "localhost"), (".", None),
    ("[::1]x", None), ("[::1]:8o", None), ("[]:80", None), ("[::1", None), ("127.0.0.1:8000", "127.0.0.1"),
    ("eeg.example.org:-1", None),
])
def test_host_name(value, expected):
    assert host_name(value) == expected


def test_allowed_hosts():
    assert allowed_hosts() == {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts("0.0.0.0") == allowed_hosts("::") == allowed_hosts()
    assert "10.1.2.3" in allowed_hosts("10.1.2.3")
    assert "fe80::1" in allowed_hosts("[fe80::1]")
    assert allowed_hosts(None, ["EEG.example.org:443", "other.example.org."]) >= {"eeg.example.org",
                                                                                 "other.example.org"}


def test_foreign_host_is_refused(client):
    for host in ("evil.example.com", "evil.example.com:8000", "127.0.0.1.evil.example.com", "localhost:x", ""):
        detail = _one_line(client.get("/api/stats", headers={"Host": host}), 400)
        assert "not served here" in detail and "--allow-host" in detail
    assert _one_line(client.get("/", headers={"Host": "evil.example.com"}), 400)  # the page, too
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"):
        r = client.get("/api/stats", headers={"Host": host})
        assert r.status_code == 200, (host, r.text)
    assert client.get("/api/stats", headers={"Host": "eeg.example.org"}).status_code == 400


def test_allow_hosts_adds_a_name(svc):
    with TestClient(create_app(svc, allow_hosts=["eeg.example.org"]), base_url="http://127.0.0.1") as c:
        assert c.get("/api/stats", headers={"Host": "eeg.example.org"}).status_code == 200
        assert c.get("/api/stats", headers={"Host": "EEG.example.org:443"}).status_code == 200
        assert c.get("/api/stats", headers={"Host": "localhost"}).status_code == 200
        _one_line(c.get("/api/stats", headers={"Host": "evil.example.com"}), 400)
        r = c.post("/api/upload", headers={"Host": "eeg.example.org", "Origin": "https://eeg.example.org"})
        assert r.status_code == 400 and "multipart" in r.json()["detail"]  # past the guard, refused by the route
    with TestClient(create_app(svc, host="10.1.2.3"), base_url="http://10.1.2.3") as c:
        assert c.get("/api/stats").status_code == 200  # the --host it listens on


# ---- 3. Origin on unsafe methods -------------------------------------------------------------
def test_foreign_origin_on_post_is_403(client):
    body = _multipart(b"\0" * 5000)
    for origin in ("http://evil.example.com", "http://evil.example.com:8000", "null", "file://", "ftp://127.0.0.1",
                   "http://127.0.0.1.evil.example.com"):
        detail = _one_line(client.post("/api/upload", content=body, headers={**MULTIPART, "Origin": origin}), 403)
        assert "cross-origin" in detail, (origin, detail)
    r = client.post("/api/classify", json={"recording_id": 1, "prompts": ["normal", "abnormal"]},
                    headers={"Origin": "http://evil.example.com"})
    _one_line(r, 403)
    for origin in ("http://127.0.0.1:8000", "http://localhost:8000", "https://localhost", "http://[::1]:8000"):
        r = client.post("/api/upload", content=body, headers={**MULTIPART, "Origin": origin})
        assert r.status_code == 400 and "not an EDF" in r.json()["detail"], (origin, r.text)  # not refused
    r = client.post("/api/classify", json={"recording_id": 1, "prompts": ["normal", "abnormal"]},
                    headers={"Origin": "http://127.0.0.1:8000"})
    assert r.status_code == 200, r.text
    r = client.post("/api/classify", json={"recording_id": 1, "prompts": ["normal", "abnormal"]})  # no Origin: curl
    assert r.status_code == 200, r.text


def test_foreign_origin_on_get_is_not_refused(client):
    for url in ("/api/stats", "/api/search?q=spike&k=2", "/api/recordings/1", "/"):
        r = client.get(url, headers={"Origin": "http://evil.example.com"})
        assert r.status_code == 200, (url, r.text[:200])
    assert client.head("/healthz", headers={"Origin": "http://evil.example.com"}).status_code != 403


# ---- 4. no server path in errors -------------------------------------------------------------
def _private_paths(svc, app_, archive_root) -> list[str]:
    paths = {str(svc.folder), str(svc.folder.resolve()), str(archive_root), str(archive_root.resolve()),
             str(Path(tempfile.gettempdir()).resolve()) + "/", tempfile.gettempdir() + "/"}
    if app_.state.upload_dir is not None:
        paths |= {str(app_.state.upload_dir), str(Path(app_.state.upload_dir).resolve())}
    return sorted(paths)


def _no_path(r, paths):
    for p in paths:
        assert p not in r.text, (r.request.url, p, r.text[:400])
    assert not re.search(r"(?<![\w.:/])/(tmp|home|work|root|var|etc|usr)/", r.text), r.text[:400]


def test_errors_show_no_server_path(client, app, svc, archive_root):
    edf = sorted(archive_root.rglob("*.edf"))[0].read_bytes()
    header_only = bytearray(edf[:256])
    header_only[236:244] = b"xx      "  # the number of data records: not a number
    responses = [
        client.get("/api/recordings/999999"), client.get("/api/recordings/999999/similar"),
        client.get(f"/api/recordings/{MAX_ID}/window.png"),
        client.post("/api/classify", json={"recording_id": 999999, "prompts": ["a", "b"]}),
    ]
    uploads = [(b"\0" * 5000, "big.edf"), (edf[:3000], "truncated.edf"), (bytes(header_only), "header.edf"),
               (edf[: len(edf) // 2], "/home/someone/secret/half.edf"), (edf[:300], "C:\\Users\\x\\a.bdf")]
    for data, name in uploads:
        r = client.post("/api/upload", files={"file": (name, data, "application/octet-stream")})
        detail = _one_line(r, 400)
        assert Path(name.replace("\\", "/")).name in detail, detail  # the client's name, without its folders
        responses.append(r)
    assert app.state.upload_dir is not None  # the private upload folder exists now: it must not show either
    limit, svc.max_upload_bytes = svc.max_upload_bytes, 1000
    try:
        responses.append(client.post("/api/upload", files={"file": ("x.edf", edf, "application/octet-stream")}))
        assert responses[-1].status_code == 413
    finally:
        svc.max_upload_bytes = limit
    # An archive file that went away: the reason names the file, never its folder.
    rid = 1
    path = Path(svc.show(rid)["path"])
    hidden = path.with_name(path.name + ".hidden")
    path.rename(hidden)
    try:
        r = client.get(f"/api/recordings/{rid}/window.png?start=1&end=3")
        detail = _one_line(r, 400)
        assert path.name in detail and "cannot be read" in detail, detail
        responses.append(r)
    finally:
        hidden.rename(path)
    paths = _private_paths(svc, app, archive_root)
    for r in responses:
        assert r.status_code < 500, r.text
        _no_path(r, paths)


def test_unexpected_errors_are_generic(svc, archive_root, monkeypatch):
    app_ = create_app(svc)

    def boom():
        raise RuntimeError(f"cannot open {svc.folder}/elmsearch.sqlite under {archive_root}")

    monkeypatch.setattr(svc, "stats", boom)
    with TestClient(app_, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        r = c.get("/api/stats")
        assert "internal error" in _one_line(r, 500)
        _no_path(r, _private_paths(svc, app_, archive_root))


def test_public_message():
    assert public_message("x /srv/eeg/archive/a/b.edf: bad") == "x b.edf: bad"
    assert public_message("recording 7: no such id in /data/idx", [("/data/idx", "the index")]) == \
        "recording 7: no such id in the index"
    for keep in ("sex: expected F/M", "ratio 1/2", "see http://example.org/x", "a-b/c"):
        assert public_message(keep) == keep


# ---- 5. query texts in memory only -------------------------------------------------------------
def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def _memory_cache(svc) -> MemoryCache:
    qm = svc.index.query_model
    for owner in (qm, getattr(qm, "text_encoder", None)):
        cache = getattr(owner, "_db", None)
        if cache is not None:
            return cache
    raise AssertionError("no text feature cache on the query model")


def test_query_texts_stay_in_memory(client, svc, index_dir):
    cache = _memory_cache(svc)
    assert isinstance(cache, MemoryCache) and cache.maxsize == MEMORY_ENTRIES
    before = _tree(index_dir)
    texts = [f"secret clinical query {i} about focal slowing" for i in range(12)]
    bound, cache.maxsize = cache.maxsize, 5
    try:
        misses = cache.misses
        for t in texts:
            assert client.get("/api/search", params={"q": t, "k": 2}).status_code == 200
            assert len(cache) <= 5
        assert len(cache) == 5 and cache.misses - misses >= len(texts)
        key = {t: hashlib.sha256(t.encode()).hexdigest() for t in texts}
        assert key[texts[-1]] in cache._d and key[texts[0]] not in cache._d  # least recently used went first
        hits, misses = cache.hits, cache.misses
        client.get("/api/search", params={"q": texts[-1], "k": 2})
        assert cache.hits > hits and cache.misses == misses  # answered from memory
    finally:
        cache.maxsize = bound
    assert _tree(index_dir) == before  # nothing written under the index folder (DIR/cache included)
    assert not _stored_hashes(index_dir) & set(key.values())
    # The control: the disk cache (``--disk-cache``) does keep a query's features under DIR/cache.
    text = "a query for the disk cache only"
    SearchService.open(index_dir, text_cache="disk").search(text, k=1)
    assert hashlib.sha256(text.encode()).hexdigest() in _stored_hashes(index_dir)


def _stored_hashes(folder: Path) -> set[str]:
    """The text hashes in every text feature cache file under ``folder``."""
    found = set()
    for f in folder.rglob("*.sqlite"):
        with contextlib.closing(sqlite3.connect(f"file:{f}?mode=ro", uri=True)) as con:
            if con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='emb'").fetchone():
                found |= {r[0] for r in con.execute("SELECT h FROM emb")}
    return found


def test_memory_cache_is_a_bounded_lru():
    import numpy as np

    c = MemoryCache(maxsize=3)
    c.put_many([(f"h{i}", np.full(4, i, np.float32)) for i in range(10)])
    assert len(c) == 3 and set(c.get_many([f"h{i}" for i in range(10)])) == {"h7", "h8", "h9"}
    c.get_many(["h7"])  # now the most recent
    c.put_many([("h10", np.zeros(4))])
    assert set(c.get_many(["h7", "h8", "h9", "h10"])) == {"h7", "h9", "h10"}


# ---- 6. large reports are paged ------------------------------------------------------------------
def _report(sizes: list[int]) -> dict:
    return {"report_id": 1, "source": "r.txt", "impression": "I" * 500,
            "sections": [{"heading": f"S{i}", "text": chr(ord("a") + i) * n} for i, n in enumerate(sizes)]}


def test_page_report_unit():
    rep = _report([30, 0, 45, 25])
    full = "".join(s["text"] for s in rep["sections"])
    assert page_report(None) is None
    p = page_report(rep, 0, 40)
    assert p["text_chars"] == 100 and p["offset"] == 0 and p["limit"] == 40 and p["next"] == 40
    assert [(s["heading"], s["start"], len(s["text"])) for s in p["sections"]] == [("S0", 0, 30), ("S1", 30, 0),
                                                                                  ("S2", 30, 10)]
    assert len(p["impression"]) == 40
    pages, offset = [], 0
    while offset is not None:
        p = page_report(rep, offset, 40)
        assert sum(len(s["text"]) for s in p["sections"]) <= 40
        pages.append(p)
        offset = p["next"]
    assert [p["offset"] for p in pages] == [0, 40, 80] and pages[-1]["next"] is None
    assert "".join(s["text"] for p in pages for s in p["sections"]) == full
    assert page_report(rep, 0, 100)["next"] is None and page_report(rep, 0, 99)["next"] == 99
    past = page_report(rep, 500, 10)
    assert past["sections"] == [] and past["next"] is None and past["text_chars"] == 100
    assert rep["sections"][0]["text"] == "a" * 30  # the input is not changed
    for offset, limit in ((-1, 10), (0, 0)):
        with pytest.raises(FilterError):
            page_report(rep, offset, limit)


@pytest.fixture(scope="module")
def long_report(index_dir, tmp_path_factory):
    """A copy of the index whose recording 1 has a report of ~3.7 pages; (client, rid, full text)."""
    db = tmp_path_factory.mktemp("longreport") / "idx"
    shutil.copytree(index_dir, db)
    text = ("CLINICAL HISTORY: " + "Headaches for years. " * 2000 + "\n\nDESCRIPTION OF THE RECORD: "
            + "The background is 9 Hz and reactive. " * 8000 + "\n\nIMPRESSION: " + "Normal EEG. " * 3000)
    with sqlite3.connect(db / "elmsearch.sqlite") as con:
        (report_id,) = con.execute("SELECT report_id FROM recordings WHERE id = 1").fetchone()
        con.execute("UPDATE reports SET text = ?, impression = ? WHERE id = ?", (text, "Normal EEG. " * 30000,
                                                                                  report_id))
    svc_ = SearchService.open(db, text_cache="memory")
    full = "".join(s["text"] for s in svc_.index.show(1)["report"]["sections"])
    assert len(full) > 3 * REPORT_PAGE_CHARS
    with TestClient(create_app(svc_), base_url="http://127.0.0.1") as c:
        yield c, full


def test_large_report_is_paged(long_report):
    client, full = long_report
    r = client.get("/api/recordings/1")
    assert r.status_code == 200
    rep = r.json()["report"]
    assert rep["offset"] == 0 and rep["limit"] == REPORT_PAGE_CHARS and rep["text_chars"] == len(full)
    assert sum(len(s["text"]) for s in rep["sections"]) == REPORT_PAGE_CHARS and rep["next"] == REPORT_PAGE_CHARS
    assert len(rep["impression"]) <= REPORT_PAGE_CHARS
    assert len(r.content) < 2 * REPORT_PAGE_CHARS + 20_000  # not the ~1.4 MB of report and impression
    texts, offset, n = [], 0, 0
    while offset is not None:
        rep = client.get("/api/recordings/1", params={"offset": offset}).json()["report"]
        assert rep["offset"] == offset and rep["text_chars"] == len(full)
        assert sum(len(s["text"]) for s in rep["sections"]) <= REPORT_PAGE_CHARS
        texts += [s["text"] for s in rep["sections"]]
        offset, n = rep["next"], n + 1
    assert "".join(texts) == full and n == -(-len(full) // REPORT_PAGE_CHARS)
    small = client.get("/api/recordings/1", params={"offset": 10, "limit": 50}).json()["report"]
    assert "".join(s["text"] for s in small["sections"]) == full[10:60] and small["next"] == 60
    end = client.get("/api/recordings/1", params={"offset": len(full) + 5}).json()["report"]
    assert end["sections"] == [] and end["next"] is None
    assert "limit" in _one_line(client.get("/api/recordings/1", params={"limit": 10 * REPORT_PAGE_CHARS + 1}), 422)
    assert "limit" in _one_line(client.get("/api/recordings/1", params={"limit": 0}), 422)
    assert "offset" in _one_line(client.get("/api/recordings/1", params={"offset": -1}), 422)


# ---- 7. upload streaming memory (a real server process) ------------------------------------------
def _rss(pid: int) -> int:
    """Resident bytes of a process and its children (from /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


def _hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


UPLOAD_MB = 500


@pytest.fixture(scope="module")
def serve_process(index_dir, tmp_path_factory):
    """``elmsearch serve --max-upload-mb 600`` in its own process, its TMPDIR a private folder."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to measure the server's memory")
    tmp = tmp_path_factory.mktemp("servetmp")
    if shutil.disk_usage(tmp).free < 3 * UPLOAD_MB * 2**20:
        pytest.skip(f"needs {3 * UPLOAD_MB} MB free in {tmp}")
    log = tmp / "serve.log"
    env = {**os.environ, "TMPDIR": str(tmp / "t"), "PYTHONUNBUFFERED": "1"}
    (tmp / "t").mkdir()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--db", str(index_dir), "--port", "0",
                                 "--max-upload-mb", "600"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while not (m := re.search(r"http://127\.0\.0\.1:(\d+)/", log.read_text())):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"elmsearch serve did not start: {log.read_text()}")
        time.sleep(0.1)
    try:
        yield proc, int(m.group(1)), tmp / "t"
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def _big_upload(port: int, size: int, out: list, filename: str = "big.edf") -> None:
    head, tail = _framing(filename)
    chunk = bytes(1 << 20)

    def body():
        yield head
        for _ in range(size >> 20):
            yield chunk
        yield tail

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", "/api/upload", body=body(),
                     headers={**MULTIPART, "Content-Length": str(len(head) + size + len(tail))})
        r = conn.getresponse()
        out.append((r.status, json.loads(r.read())["detail"]))
    except OSError as err:
        out.append((None, repr(err)))
    finally:
        conn.close()


@pytest.mark.slow
def test_parallel_big_uploads_are_streamed(serve_process):
    proc, port, tmp = serve_process
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/api/search?q=focal%20slowing&k=3")  # everything a request loads is loaded
    assert conn.getresponse().status == 200
    conn.close()
    base = max(_rss(proc.pid), _hwm(proc.pid))
    peak, largest, stop = [base], [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss(proc.pid))
            for f in tmp.rglob("upload-*"):
                with contextlib.suppress(OSError):
                    largest[0] = max(largest[0], f.stat().st_size)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    results: list = []
    t0 = time.monotonic()
    uploads = [threading.Thread(target=_big_upload, args=(port, UPLOAD_MB << 20, results)) for _ in range(4)]
    for t in uploads:
        t.start()
    for t in uploads:
        t.join(300)
    took = time.monotonic() - t0
    stop.set()
    sampler.join()
    peak_mb, base_mb = max(peak[0], _hwm(proc.pid)) / 2**20, base / 2**20
    print(f"4 x {UPLOAD_MB} MB uploads: {took:.1f} s; server RSS {base_mb:.0f} MB before, peak {peak_mb:.0f} MB; "
          f"largest upload file seen {largest[0] / 2**20:.0f} MB")
    assert len(results) == 4
    for status, detail in results:  # the whole body arrived (on disk), then it was refused as no EDF
        assert status == 400 and "big.edf" in detail and "EDF" in detail, (status, detail)
    assert largest[0] > 50 * 2**20  # streamed to a file
    assert peak_mb - base_mb < 100, (base_mb, peak_mb)  # 4 x 500 MB never in memory
    assert peak_mb < 300 + max(0.0, base_mb - 200)  # the 300 MB budget over a model-free baseline of 200 MB
    assert not list(tmp.rglob("upload-*")) and sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) < 2**20
    assert proc.poll() is None
    proc.terminate()
    proc.wait(30)
    assert not list(tmp.glob("elmsearch-serve-*"))  # the private upload folder goes with the server


# ---- 8. bounded uploads in flight -------------------------------------------------------------
def test_upload_slots_bound_uploads_in_flight(svc, archive_root):
    app_ = create_app(svc, upload_slots=1, upload_wait_s=0.2)
    head, tail = _framing("slow.edf")
    with _live(app_) as port:
        slow = socket.create_connection(("127.0.0.1", port), timeout=30)
        try:
            size = 4 << 20
            slow.sendall((f"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {MULTIPART['Content-Type']}"
                          f"\r\nContent-Length: {len(head) + size + len(tail)}\r\n\r\n").encode() + head + bytes(1000))
            deadline = time.monotonic() + 10  # the slow upload holds the only slot once its file exists
            while not (app_.state.upload_dir and list(Path(app_.state.upload_dir).glob("upload-*"))):
                assert time.monotonic() < deadline, "the first upload never started"
                time.sleep(0.02)
            t0 = time.monotonic()
            with _conn(port) as conn:
                conn.request("POST", "/api/upload", body=_multipart(b"\0" * 5000), headers=MULTIPART)
                r = conn.getresponse()
                detail = json.loads(r.read())["detail"]
            assert r.status == 503 and r.getheader("Retry-After") == "10", (r.status, detail)
            assert "busy" in detail and "\n" not in detail
            assert time.monotonic() - t0 < 5  # waited about upload_wait_s, not for the slot
            slow.sendall(bytes(size - 1000) + tail)
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                data = slow.recv(65536)
                if not data:
                    break
                reply += data
            assert reply.startswith(b"HTTP/1.1 400") and b"slow.edf" in reply, reply[:300]
        finally:
            slow.close()
        with _conn(port) as conn:  # the slot is free again
            conn.request("POST", "/api/upload", body=_multipart(b"\0" * 5000), headers=MULTIPART)
            r = conn.getresponse()
            assert r.status == 400 and "not an EDF" in json.loads(r.read())["detail"]
        assert not list(Path(app_.state.upload_dir).glob("*"))
    assert app_.state.upload_dir is None  # removed at shutdown


@contextlib.contextmanager
def _conn(port: int):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


# ---- 9. sex and age filters ---------------------------------------------------------------------
def test_normalise_sex():
    for v in ("F", "f", "female", "FEMALE", " Female "):
        assert normalise_sex(v) == "F"
    for v in ("M", "m", "male", "Male"):
        assert normalise_sex(v) == "M"
    assert normalise_sex(None) is None and normalise_sex("  ") is None
    for v in ("X", "fem", "w", "0"):
        with pytest.raises(FilterError, match="sex"):
            normalise_sex(v)
    with pytest.raises(FilterError, match="age_min 50 is above age_max 20"):
        parse_filters(age_min=50, age_max=20)


def _cli(*args):
    return CliRunner().invoke(cli_app, ["-q", *args])


def test_sex_spellings_and_age_order_like_the_cli(client, index_dir):
    ref = client.get("/api/search", params={"q": "normal EEG", "k": 10, "sex": "F"}).json()
    assert ref["hits"] and all(h["sex"] == "F" for h in ref["hits"])
    for spelling in ("female", "f", "FEMALE", " Female "):
        doc = client.get("/api/search", params={"q": "normal EEG", "k": 10, "sex": spelling}).json()
        assert doc == ref, spelling
    sim = client.get("/api/recordings/3/similar", params={"sex": "male", "include_same_patient": True}).json()
    assert sim["hits"] and all(h["sex"] == "M" for h in sim["hits"])
    cli = _cli("search", "normal EEG", "--db", str(index_dir), "-k", "10", "--sex", "female", "--json")
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout) == ref
    assert "sex" in _one_line(client.get("/api/search", params={"q": "x", "sex": "X"}), 422)
    detail = _one_line(client.get("/api/search", params={"q": "x", "age_min": 50, "age_max": 20}), 422)
    assert detail == "age_min 50 is above age_max 20: no recording can match"
    _one_line(client.get("/api/recordings/1/similar", params={"age_min": 50, "age_max": 20}), 422)
    assert client.get("/api/search", params={"q": "x", "age_min": 20, "age_max": 20}).status_code == 200
    bad = _cli("search", "x", "--db", str(index_dir), "--age-min", "50", "--age-max", "20")
    assert bad.exit_code == 1 and "age_min 50 is above age_max 20" in bad.output
    assert len(bad.output.strip().splitlines()) == 1, bad.output

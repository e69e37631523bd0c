"""The search page in a real headless browser (Debian's chromium driven by Playwright), and a live server.

Skipped with a reason where chromium or Playwright is not installed (`.ci/run` installs both).
The screenshot is kept as a test artifact in ``$ELMSEARCH_ARTIFACTS`` (default ``tests/artifacts``).
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from indexer.pipeline import index_archive

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("ELMSEARCH_ARTIFACTS") or REPO / "tests" / "artifacts")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def server(demo_archive, demo_model_dir, tmp_path_factory):
    """``elmsearch serve`` in its own process on a free loopback port."""
    db = tmp_path_factory.mktemp("browser") / "idx"
    index_archive(demo_archive.root, db, demo_model_dir)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--db", str(db), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"elmsearch serve exited: {proc.stdout.read()}")
        try:
            if _get(base + "/healthz", 2)[0] == 200:
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("elmsearch serve did not answer within 120 s")
    yield base, db
    proc.terminate()
    proc.wait(30)


def test_server_answers_while_the_index_is_written(server, demo_archive, demo_model_dir):
    """Readers keep getting answers (never an error) while `elmsearch index` writes the same index."""
    base, db = server
    errors, answered = [], [0]
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            status, body = _get(base + "/api/search?q=focal%20slowing&k=5")
            if status != 200 or b'"hits"' not in body:
                errors.append((status, body[:200]))
            answered[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for f in sorted(demo_archive.root.rglob("*.edf"))[:3]:  # change three files: the run re-embeds them
            os.utime(f, (time.time(), time.time()))
        writer = subprocess.run([sys.executable, "-m", "cli", "-q", "index", str(demo_archive.root), "--db", str(db),
                                 "--model", str(demo_model_dir)], cwd=REPO, capture_output=True, text=True,
                                timeout=600)
        assert writer.returncode == 0, writer.stderr
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:3]
    assert answered[0] >= 4


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_page_search_open_and_similar_in_chromium(server):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
    base, db = server
    with sqlite3.connect(db / "elmsearch.sqlite") as con:  # a visit recorded in two montage folders is one hit
        n_visits = con.execute("SELECT count(DISTINCT session_id) FROM recordings "
                               "WHERE status = 'indexed'").fetchone()[0]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        failed = []
        # images of a view left before they load are cancelled (ERR_ABORTED): not a failure
        page.on("requestfailed", lambda r: "ERR_ABORTED" not in (r.failure or "") and failed.append(r.url))
        page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
        page.on("pageerror", lambda e: failed.append(str(e)))
        page.goto(base + "/")
        page.fill("#q", "focal slowing")
        page.click("#search button[type=submit]")
        page.wait_for_selector("article.hit")
        assert "q=focal+slowing" in page.url or "q=focal%20slowing" in page.url  # the state is in the URL
        hits = page.locator("article.hit")
        assert hits.count() == min(10, n_visits)
        assert hits.first.locator(".why .sources").inner_text().startswith("report ")  # each hit says why
        page.wait_for_function("[...document.querySelectorAll('article.hit img')].slice(0, 2)"
                               ".every(i => i.naturalWidth > 0)")
        page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=False)
        first_id = hits.first.get_attribute("data-id")
        hits.first.locator("a.open").first.click()
        page.wait_for_url(f"**/recordings/{first_id}?**")
        page.wait_for_selector(".report")
        page.wait_for_function("document.querySelector('.recording img.waveform').naturalWidth > 1000")
        assert page.locator(".recording dl.kv").inner_text()
        page.screenshot(path=str(ARTIFACTS / "recording.png"), full_page=True)
        with sqlite3.connect(db / "elmsearch.sqlite") as con:  # the demo archive marks its events (generator v2)
            n_events = con.execute("SELECT count(*) FROM events WHERE recording_id = ?", (first_id,)).fetchone()[0]
        assert page.locator("table.events tbody tr").count() == min(n_events, 200)
        if n_events:  # a click on an event's time shows its minutes, the event on the strip above the traces
            link = page.locator("table.events a.event-time").first
            onset = float(link.inner_text())
            link.click()
            page.wait_for_function(f"new URLSearchParams(location.search).get('start') !== null && "
                                   f"Math.abs(parseFloat(new URLSearchParams(location.search).get('start')) - "
                                   f"{max(onset - 5, 0)}) < 5.1")
            assert page.locator(".recording > .events-strip .event-mark").count() >= 1
            page.go_back()
            page.wait_for_selector(".recording")
        page.click(".recording a.similar")
        page.wait_for_url(f"**/recordings/{first_id}/similar")
        page.wait_for_selector("article.hit")
        similar_ids = page.locator("article.hit").evaluate_all("els => els.map(e => e.dataset.id)")
        assert similar_ids and first_id not in similar_ids
        page.go_back()
        page.wait_for_selector(".recording")
        with sqlite3.connect(db / "elmsearch.sqlite") as con:
            spindles = con.execute("SELECT count(*) FROM events WHERE label = 'sleep spindle'").fetchone()[0]
        if spindles:  # windows inside marked events rank first, each with the event as its reason
            page.goto(base + "/?q=sleep%20spindle&level=window")
            page.wait_for_selector("article.hit")
            assert "sleep spindle" in page.locator("article.hit").first.locator(".why").inner_text()
        page.goto(base + "/?q=normal%20EEG&sex=F")  # a bookmarked search runs when opened
        page.wait_for_selector("article.hit")
        assert page.locator("#q").input_value() == "normal EEG"
        assert all("F" in m for m in page.locator("article.hit .meta").all_inner_texts())
        browser.close()
    assert not failed, failed
    assert (ARTIFACTS / "search.png").stat().st_size > 10_000

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

import numpy as np
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


def _serve(db: Path):
    """``elmsearch serve`` of ``db`` in its own process on a free loopback port: (process, base URL)."""
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
                return proc, base
        except OSError:
            time.sleep(0.3)
    proc.kill()
    pytest.fail("elmsearch serve did not answer within 120 s")


@pytest.fixture(scope="module")
def server(demo_archive, demo_model_dir, tmp_path_factory):
    """``elmsearch serve`` in its own process on a free loopback port."""
    db = tmp_path_factory.mktemp("browser") / "idx"
    index_archive(demo_archive.root, db, demo_model_dir)
    proc, base = _serve(db)
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
        page.wait_for_function("[...document.querySelectorAll('article.hit .viewer')].slice(0, 2)"
                               ".every(v => v.dataset.loaded !== undefined && v.dataset.loaded !== 'error')")
        page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=False)
        first_id = hits.first.get_attribute("data-id")
        hits.first.locator("a.open").first.click()
        page.wait_for_url(f"**/recordings/{first_id}?**")
        page.wait_for_selector(".report")
        page.wait_for_function("document.querySelector('.recording .viewer').dataset.loaded !== undefined")
        assert page.locator(".recording .viewer").get_attribute("data-loaded") != "error"
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
            assert page.locator(".recording .strips > .events-strip .event-mark").count() >= 1
            # the event on the traces
            page.wait_for_function("document.querySelector('.recording canvas.eeg').dataset.events > 0")
            page.go_back()
            page.wait_for_selector(".recording")
        page.click(".recording a.similar")
        page.wait_for_url(f"**/recordings/{first_id}/similar")
        page.wait_for_selector("article.hit")
        similar_ids = page.locator("article.hit").evaluate_all("els => els.map(e => e.dataset.id)")
        assert similar_ids and first_id not in similar_ids
        # the query's EEG above the prior cases, drawn the same way
        page.wait_for_function("document.querySelector('.query-eeg .viewer') && "
                               "document.querySelector('.query-eeg .viewer').dataset.loaded === '0'")
        assert page.locator(".query-eeg .viewer").get_attribute("data-id") == first_id
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
        external = []
        page.on("request", lambda r: not r.url.startswith(base) and external.append(r.url))
        page.goto(base + "/docs")  # the API docs render from files shipped in a package: offline
        page.wait_for_selector(".swagger-ui .info .title")
        assert "elmsearch" in page.locator(".swagger-ui .info .title").inner_text() and not external, external
        browser.close()
    assert not failed, failed
    assert (ARTIFACTS / "search.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def sine_server(tmp_path_factory, demo_model_dir):
    """A server over an index of one 30 s recording: C3 a 100 µV p-p 10 Hz sine + 40 µV p-p at 50 Hz, the rest flat.

    Mostly flat, the recording is refused for indexing: the viewer still draws it.
    """
    from conftest import TUH_LABELS, write_edf_file

    root = tmp_path_factory.mktemp("sine") / "archive"
    t = np.arange(30 * 250) / 250
    x = np.zeros((len(TUH_LABELS), len(t)))
    x[TUH_LABELS.index("EEG C3-REF")] = 50 * np.sin(2 * np.pi * 10 * t) + 20 * np.sin(2 * np.pi * 50 * t)
    write_edf_file(root / "sine.edf", TUH_LABELS, 250, x)
    db = tmp_path_factory.mktemp("sine-idx") / "idx"
    index_archive(root, db, demo_model_dir)
    proc, base = _serve(db)
    yield base
    proc.terminate()
    proc.wait(30)


_TRACE_ROWS = """(name) => {
  // the rows of dark pixels in a channel's band, per column: a pixel check of what was drawn
  const c = document.querySelector('.recording canvas.eeg');
  const drawn = JSON.parse(c.dataset.drawn);
  const dpr = window.devicePixelRatio || 1;
  const base = drawn[name][2] * dpr, half = 60 * dpr;
  const img = c.getContext('2d').getImageData(0, Math.max(0, base - half), c.width, 2 * half).data;
  const w = c.width, rows = 2 * half;
  const others = Object.entries(drawn).filter(([k]) => k !== name).map(([, v]) => v[2] * dpr);
  let top = Infinity, bottom = -Infinity, right = -1;
  const firstX = Math.round((parseFloat(c.dataset.labelW) + 2) * dpr);
  for (let y = 0; y < rows; y++) {
    const yy = Math.max(0, base - half) + y;
    if (others.some((b) => Math.abs(b - yy) <= 1.5 * dpr)) continue;  // the flat neighbours' lines
    for (let x = firstX; x < w - 30 * dpr; x++) {
      const i = 4 * (y * w + x);
      if (img[i] < 120 && img[i + 1] < 120 && img[i + 2] < 140) {
        top = Math.min(top, yy); bottom = Math.max(bottom, yy); right = Math.max(right, x);
      }
    }
  }
  return {top: top / dpr, bottom: bottom / dpr, base: base / dpr, right: right / dpr,
          pxPerS: parseFloat(c.dataset.pxPerS), labelW: parseFloat(c.dataset.labelW), width: c.clientWidth};
}"""


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_viewer_draws_at_clinical_sensitivity_in_chromium(sine_server):
    """Pixel checks: 100 µV p-p at 7 µV/mm is 14.3 mm; negative up; the notch; a page per arrow; no stretching."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    px_per_mm = 4.0
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(sine_server + "/")
        page.evaluate(f"localStorage.setItem('elmsearch.pxPerMm', '{px_per_mm}')")  # the calibration

        def view(query):
            page.goto(sine_server + "/recordings/1?" + query)
            page.wait_for_function("document.querySelector('.recording .viewer') && "
                                   "document.querySelector('.recording .viewer').dataset.loaded !== undefined")
            assert page.locator(".recording .viewer").get_attribute("data-loaded") != "error"
            return page.evaluate(_TRACE_ROWS, "EEG C3-REF")

        # the refused recording is drawn, with the reason it is not in the index
        plain = view("montage=recorded&lff=off&hff=off&notch=off&sens=7&start=10")
        assert "Not in the index" in page.locator(".viewer-banner").inner_text()
        page.screenshot(path=str(ARTIFACTS / "viewer.png"), full_page=True)
        notched = view("montage=recorded&lff=off&hff=off&notch=50&sens=7&start=10")
        span_mm = (notched["bottom"] - notched["top"] + 1) / px_per_mm

        assert span_mm == pytest.approx(100 / 7, rel=0.05)  # 14.3 mm for 100 µV at 7 µV/mm
        assert (plain["bottom"] - plain["top"] + 1) / px_per_mm == pytest.approx(140 / 7, rel=0.05)  # 50 Hz kept
        # negative up: +50 µV (a quarter period in) is drawn below the baseline, -50 µV above
        x_pos = notched["labelW"] + 0.025 * notched["pxPerS"]
        column = page.evaluate("""([x, base]) => {
          const c = document.querySelector('.recording canvas.eeg'), dpr = window.devicePixelRatio || 1;
          const img = c.getContext('2d').getImageData(Math.round(x * dpr), 0, 1, c.height).data;
          const ys = [];
          for (let y = 0; y < c.height; y++) if (img[4 * y] < 120 && Math.abs(y / dpr - base) < 60) ys.push(y / dpr);
          return ys;
        }""", [x_pos, notched["base"]])
        assert column and max(column) > notched["base"] + 20  # the positive peak hangs below the line
        # a page per arrow, 1 s with shift
        page.locator(".recording .viewer").focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_function("document.querySelector('.recording .viewer').dataset.loaded === '20'")
        assert "start=20.00" in page.url
        page.keyboard.press("Shift+ArrowLeft")
        page.wait_for_function("document.querySelector('.recording .viewer').dataset.loaded === '19'")
        # a click on the overview of the whole recording shows the page around that time
        bar = page.locator(".overview").bounding_box()
        page.locator(".overview").click(position={"x": bar["width"] * 0.5, "y": bar["height"] / 2})
        page.wait_for_function("document.querySelector('.recording .viewer').dataset.loaded === '10'")
        # a page past the end of the 30 s recording keeps the timebase: 5 s drawn over half the page
        tail = view("montage=recorded&lff=off&hff=off&notch=off&sens=7&start=25&page=10")
        drawn_s = (tail["right"] - tail["labelW"]) / tail["pxPerS"]
        assert drawn_s == pytest.approx(5, abs=0.2)
        browser.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def real_server(shared_data, demo_model_dir, tmp_path_factory):
    """A server over an index of two real EEGMAT recordings and MNE's six odd EDF/BDF files (some refused)."""
    root = tmp_path_factory.mktemp("real") / "archive"
    root.mkdir()
    for f in ["Subject00_2.edf", "Subject01_2.edf"]:
        shutil.copy(shared_data / "eegmat" / f, root / f)
    for f in sorted((shared_data / "mne_edf_cases").iterdir()):
        shutil.copy(f, root / f.name)
    db = tmp_path_factory.mktemp("real-idx") / "idx"
    index_archive(root, db, demo_model_dir)
    proc, base = _serve(db)
    yield base, db
    proc.terminate()
    proc.wait(30)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_viewer_on_real_files_and_a_kept_upload_in_chromium(real_server, shared_data):
    """Every real file the index knows is drawn (refused ones with their reason); an upload has its own URL."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
    base, db = real_server
    with sqlite3.connect(db / "elmsearch.sqlite") as con:
        rows = con.execute("SELECT id, path, status FROM recordings ORDER BY id").fetchall()
    assert len(rows) == 8 and any(s == "failed" for _, _, s in rows) and any(s == "indexed" for _, _, s in rows)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        drawn = {}
        for rid, path, status in rows:
            # a file refused for the bipolar montage is still looked at as recorded
            page.goto(f"{base}/recordings/{rid}" + ("" if status == "indexed" else "?montage=recorded"))
            page.wait_for_function("document.querySelector('.recording .viewer') && "
                                   "document.querySelector('.recording .viewer').dataset.loaded !== undefined")
            loaded = page.locator(".recording .viewer").get_attribute("data-loaded")
            banner = page.locator(".recording .viewer-banner").inner_text()
            drawn[Path(path).name] = (status, loaded, banner)
            if status == "failed":
                assert "Not in the index" in banner, (path, banner)
        page.screenshot(path=str(ARTIFACTS / "viewer-real.png"), full_page=True)
        unreadable = {n: v for n, v in drawn.items() if v[1] == "error"}
        assert len(unreadable) <= 1, unreadable  # only a file with no EEG channel to show may say why instead
        assert all(v[1] == "0" for n, v in drawn.items() if n.startswith("Subject"))

        # an upload: drawn, answered, and its page has an address that a reload keeps
        page.goto(base + "/")
        page.set_input_files("#file", str(shared_data / "eegmat" / "Subject02_2.edf"))
        page.wait_for_url("**/uploads/**")
        page.wait_for_function("document.querySelector('.upload .viewer') && "
                               "document.querySelector('.upload .viewer').dataset.loaded === '0'")
        assert "Subject02_2.edf" in page.locator(".upload h2").inner_text()
        page.wait_for_selector("article.hit")
        page.wait_for_function("document.querySelector('.query-eeg .viewer') && "
                               "document.querySelector('.query-eeg .viewer').dataset.loaded === '0'")
        url = page.url
        page.locator(".upload .viewer").focus()
        page.keyboard.press("ArrowRight")  # the upload pages like a recording, and the URL follows
        page.wait_for_function("document.querySelector('.upload .viewer').dataset.loaded === '10'")
        page.reload()
        page.wait_for_function("document.querySelector('.upload .viewer') && "
                               "document.querySelector('.upload .viewer').dataset.loaded === '10'")
        assert page.url.split("?")[0] == url.split("?")[0]
        assert page.locator("article.hit .percentile").count() >= 1  # scores with their percentile
        page.screenshot(path=str(ARTIFACTS / "upload.png"), full_page=True)
        token = url.split("/uploads/")[1].split("?")[0]
        status, body = _get(f"{base}/api/uploads/{token}")
        assert status == 200 and b'"upload_id"' in body
        assert _get(f"{base}/api/uploads/{'x' * 22}")[0] == 404
        browser.close()
    assert not errors, errors

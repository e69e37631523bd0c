"""Benchmark: the viewer's signal on a 24 h recording, and a 10-hit result page drawn in a real browser.

Run: ``python bench/bench_viewer.py [--hours 24] [--sfreq 256] [--runs 20] [--out FILE.json]``.

1. A 24 h EDF (``bench_long.write_long_edf``: 21 channels at 256 Hz, 0.9 GB, deleted afterwards):
   the first 10 s page through ``SearchService.signal`` in a fresh process warmed as ``elmsearch
   serve`` warms it (the file itself cold: MNE opens it), then page turns (warm: the opened file
   is kept), p50/p95 over ``--runs`` pages spread over the day; default montage and filters
   (double banana, LFF 1 Hz, HFF 70 Hz).
2. A demo index (16 short recordings) served by ``elmsearch serve``;
   Chromium (Playwright) opens a 10-hit search and waits until every hit's EEG is drawn:
   the time from the search to the last drawn canvas, p50 over 5 loads.

Writes ``bench/results/viewer.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_long import write_long_edf
from run_all import machine, machine_line

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _page_times(db: Path, runs: int, duration_s: float) -> dict:
    """In a fresh process: the first page (cold) and page turns (warm) of recording 1."""
    code = f"""
import json, time, numpy as np
t0 = time.perf_counter()
from indexer.service import SearchService
svc = SearchService.open({str(db)!r}).warm()  # as `elmsearch serve` does before its first request
t1 = time.perf_counter()
header, data = svc.signal(1, 0.0, 10.0)
first = time.perf_counter() - t1
turns = []
for start in np.linspace(10, {duration_s - 20:.1f}, {runs}):
    t = time.perf_counter()
    svc.signal(1, float(start), float(start) + 10.0)
    turns.append((time.perf_counter() - t) * 1e3)
next_page = []
for k in range(1, {runs} + 1):  # the next page, as the arrow key asks
    t = time.perf_counter()
    svc.signal(1, {duration_s / 2:.1f} + 10 * k, {duration_s / 2 + 10:.1f} + 10 * k)
    next_page.append((time.perf_counter() - t) * 1e3)
print(json.dumps({{"open_s": round(t1 - t0, 3), "first_page_ms": round(first * 1e3, 1),
                  "shape": list(data.shape), "sfreq": header["sfreq"],
                  "random_page_p50_ms": round(float(np.median(turns)), 1),
                  "random_page_p95_ms": round(float(np.percentile(turns, 95)), 1),
                  "next_page_p50_ms": round(float(np.median(next_page)), 1),
                  "next_page_p95_ms": round(float(np.percentile(next_page, 95)), 1)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def long_recording(work: Path, hours: float, sfreq: int, runs: int) -> dict:
    from indexer.pipeline import make_indexer

    archive = work / "long"
    archive.mkdir()
    fname = archive / "day.edf"
    t0 = time.perf_counter()
    write_long_edf(fname, hours, sfreq)
    written = time.perf_counter() - t0
    # an index that knows the file (the viewer draws any recording the index has a row for)
    from sqlalchemy import insert

    from db import Recording
    from elmsearch.models import create_model
    from elmsearch.models.factory import save_model

    model_dir = save_model(create_model("elm-5s", text_dim=384), work / "model")
    ix = make_indexer(work / "idx", model_dir)
    with ix.store.session() as s, s.begin():
        s.execute(insert(Recording), [{"path": str(fname), "key": "day", "layout": "flat", "size":
                                       fname.stat().st_size, "mtime": fname.stat().st_mtime, "status": "failed",
                                       "error": "not indexed (viewer benchmark)", "n_windows": 0}])
    ix.store.rebuild(ix.model_hash, str(model_dir), ix.model.config, force=True)
    res = _page_times(work / "idx", runs, hours * 3600)
    fname.unlink()
    return {"hours": hours, "sfreq": sfreq, "file_gb": round(hours * 3600 * sfreq * 21 * 2 / 1e9, 2),
            "write_s": round(written, 1), **res}


def result_page(work: Path, loads: int) -> dict:
    """A 10-hit search page drawn in Chromium: seconds from the search to the last hit's EEG drawn."""
    from playwright.sync_api import sync_playwright

    from elmsearch.datasets.demo import generate_archive
    from elmsearch.train.trainer import TrainConfig, build_model, load_items, train
    from indexer.pipeline import index_archive

    made = generate_archive(work / "demo", n_recordings=16, seed=7, min_minutes=0.25, max_minutes=0.4)
    cfg = TrainConfig(epochs=2, batch_size=4, max_eeg=4, max_text=4, val_fraction=0.25, seed=0, freeze_eeg=True,
                      val_max_windows=4, device="cpu")
    train(build_model("elm-5s"), load_items(made.root, 5.0, "sentence"), work / "m", cfg, resume=False)
    index_archive(made.root, work / "didx", work / "m")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--db", str(work / "didx"), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(8)
        times = []
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1366, "height": 4000})  # every hit on screen
            for i in range(loads + 1):
                t0 = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/?q=focal+slowing+{i}&k=10")
                page.wait_for_function("document.querySelectorAll('article.hit').length > 0 && "
                                       "document.querySelectorAll('article.hit .viewer').length === "
                                       "document.querySelectorAll('article.hit').length && "
                                       "[...document.querySelectorAll('article.hit .viewer')]"
                                       ".every(v => v.dataset.loaded !== undefined)", timeout=60_000)
                n_hits = page.locator("article.hit").count()
                if i:  # the first load warms the server (model, query cache)
                    times.append(time.perf_counter() - t0)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
    return {"hits": n_hits, "loads": loads, "p50_s": round(statistics.median(times), 3), "max_s": round(max(times), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--sfreq", type=int, default=256)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "viewer.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="elmsearch-bench-viewer-") as tmp:
        work = Path(tmp)
        long = long_recording(work, args.hours, args.sfreq, args.runs)
        print(json.dumps(long), flush=True)
        page = result_page(work, args.loads)
        print(json.dumps(page), flush=True)
    doc = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "long_recording": long, "result_page": page}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=float))
    print(machine_line(doc["machine"]), file=sys.stderr)


if __name__ == "__main__":
    main()

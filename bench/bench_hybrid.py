"""Benchmark: warm text-search latency by source (hybrid, reports, eeg) against the number of reports.

Run from the repository: ``python bench/bench_hybrid.py [--sizes 10000,100000] [--sentences 8] [--runs 30]``.

Each index folder is ``bench_query.build_folder``'s (real metadata rows, clustered synthetic
embeddings, FAISS files and manifest as ``elmsearch index`` writes them) with every recording
given its own report of ``--sentences`` report-style sentences (``bench_fulltext.sentences``;
assertion scopes computed as the indexer does; sentence embeddings near the recording's), the
full-text index kept by its triggers, and the FAISS files rebuilt. Queries run through
``SearchService.search`` after one warm-up per text: the median and 95th percentile over
``--runs`` runs of each finding phrase.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_fulltext import sentences
from bench_query import build_folder, train_quick_model
from run_all import machine, machine_line

HERE = Path(__file__).resolve().parent
QUERIES = ["focal sharp waves", "generalized spike and wave", "no epileptiform discharges", "hypsarrhythmia"]


def add_reports(folder: Path, n_sentences: int, seed: int = 0) -> dict:
    """Give every recording of an index folder its own report; rebuild the FAISS files."""
    from sqlalchemy import insert, select, update

    from db import IndexRun, Recording, Report, Segment, from_blob, to_blob
    from elmsearch.text.assertion import assertion_scopes, scopes_to_json, sentence_status
    from indexer.store import IndexStore

    rng = np.random.default_rng(seed)
    store = IndexStore.create(folder)
    t0 = time.perf_counter()
    with store.session() as s:
        recs = s.execute(select(Recording.id, Recording.emb).order_by(Recording.id)).all()
        start = (s.execute(select(Report.id).order_by(Report.id.desc()).limit(1)).scalar() or 0) + 1
        run = s.execute(select(IndexRun).order_by(IndexRun.id.desc()).limit(1)).scalar_one()
        model_hash, model_path = run.model_hash, run.model_path
    gen = sentences(len(recs) * n_sentences, seed)
    n_seg = 0
    for a in range(0, len(recs), 2000):
        chunk = recs[a : a + 2000]
        texts = [next(gen) for _ in range(len(chunk) * n_sentences)]
        unique = list(dict.fromkeys(texts))  # template sentences repeat: NegEx once per distinct text
        by_text = dict(zip(unique, assertion_scopes(unique), strict=True))
        scopes = [by_text[t] for t in texts]
        reps, segs, links = [], [], []
        for j, (rid, emb) in enumerate(chunk):
            rep_id = start + a + j
            e = from_blob(emb)
            body = texts[j * n_sentences:(j + 1) * n_sentences]
            reps.append({"id": rep_id, "source": f"/archive/reports/{rep_id}.txt", "text_hash": f"{rep_id:064x}",
                         "text": " ".join(body), "impression": body[-1], "emb": to_blob(e), "model_hash": model_hash})
            for k, t in enumerate(body):
                v = e + rng.standard_normal(256).astype(np.float32) / 8
                sc = scopes[j * n_sentences + k]
                segs.append({"report_id": rep_id, "ordinal": k, "section": "DESCRIPTION OF THE RECORD",
                             "start": 0, "end": len(t), "text": t, "finding": True,
                             "assertion": sentence_status(t, sc), "scopes": scopes_to_json(sc),
                             "emb": to_blob(v / np.linalg.norm(v))})
            links.append({"rid": rid, "rep": rep_id})
        with store.session() as s, s.begin():
            s.execute(insert(Report), reps)
            s.execute(insert(Segment), segs)
            for link in links:
                s.execute(update(Recording).where(Recording.id == link["rid"]).values(report_id=link["rep"]))
        n_seg += len(segs)
    t_insert = time.perf_counter() - t0
    from elmsearch.models.factory import load_model

    model = load_model(model_path)
    t1 = time.perf_counter()
    store.rebuild(model_hash, model_path, model.config, force=True, run_id=run.id)
    store.engine.dispose()
    return {"segments": n_seg, "insert_s": round(t_insert, 1), "rebuild_s": round(time.perf_counter() - t1, 1)}


def time_search(folder: Path, runs: int) -> dict:
    """Warm latency of each source over the finding phrases."""
    from indexer.service import SearchService

    svc = SearchService.open(folder)
    out = {}
    for source in ("hybrid", "reports", "eeg"):
        times = []
        for text in QUERIES:
            svc.search(text, 10, "recording", None, source)  # warm: text embedding, term counts
            for _ in range(runs):
                t0 = time.perf_counter()
                svc.search(text, 10, "recording", None, source)
                times.append((time.perf_counter() - t0) * 1e3)
        out[source] = {"p50_ms": round(statistics.median(times), 2),
                       "p95_ms": round(float(np.percentile(times, 95)), 2)}
        print(f"  {source:8s} p50 {out[source]['p50_ms']:8.2f} ms  p95 {out[source]['p95_ms']:8.2f} ms", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000", help="recordings (= reports) per index")
    ap.add_argument("--sentences", type=int, default=8, help="sentences per report")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "hybrid.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="elmsearch-bench-hybrid-"))
    model_dir = train_quick_model(work / "model", 0)
    from elmsearch.models.factory import load_model
    from elmsearch.models.identity import config_hash

    model = load_model(model_dir)
    rows = []
    for n in (int(float(x)) for x in args.sizes.split(",")):
        folder = work / f"idx-{n}"
        print(f"{n} reports:", flush=True)
        built = build_folder(folder, n, model, model_dir, config_hash(model), seed=0, windows_per_recording=4)
        built.update(add_reports(folder, args.sentences))
        rows.append({"n_reports": n, **built, **time_search(folder, args.runs)})
    doc = {"date": dt.date.today().isoformat(), "machine": machine(), "queries": QUERIES, "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(machine_line(doc["machine"]), file=sys.stderr)


if __name__ == "__main__":
    main()

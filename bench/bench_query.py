"""Benchmark: warm text → EEG query latency at 1e4, 1e5, 1e6 indexed recordings, and cold CLI time.

Run: ``python bench/bench_query.py [--sizes 10000,100000,1000000] [--model MODEL_DIR] [--out FILE.json]``.

For each size an index folder is written the way ``elmsearch index`` leaves one, minus the EEG:
real metadata rows in SQLite (patients, sessions, 50 reports with an impression and a text
embedding, recordings with every field filled and a clustered random unit embedding), inserted
with SQLAlchemy Core in chunks, then ``IndexStore.rebuild`` builds the FAISS files (exact below
50k vectors, IVF-SQ8 with tuned nprobe above) and the manifest. There are no window rows, so the
best-window lookup of a hit costs nothing there; it is measured on its own on a small index with
windows (``--window-index``).

Measured (the model, a quick one trained on a small demo archive unless ``--model``):

- warm: ``Index.open`` once, 5 warm-up queries, then ``search_text(q, k=10)`` on 200 distinct
  generated query strings (text-embedding cache misses), the same 200 again (cache hits), with the
  split text encoding (``Index.query_model.encode_text``, timed inside the same calls; the
  compiled ONNX Runtime query model the indexer leaves) / the rest (FAISS, SQL), and each part
  also timed on its own; a filtered query (``Filters(sex="F", age_min=40)``); the language model
  alone with torch's default threads and 1;
- cold: ``elmsearch -q search TEXT --db FOLDER --json -k 10`` as a subprocess on the largest index,
  median wall time of 5 runs after one warm-up run (OS page cache warm), with the same query (text
  cache hit: the language model is never loaded) and with new queries (cache miss); plus the stages
  of a cold start timed inside a fresh interpreter (``--cold-probe``).

Latencies depend on other load on the 2 cores: the JSON records the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ELMSEARCH = REPO / ".venv" / "bin" / "elmsearch"
N_REPORTS = 50
CHUNK = 20_000
MONTAGES = ("01_tcp_ar", "02_tcp_le", "03_tcp_ar_a")
FILTER = {"sex": "F", "age_min": 40.0}  # keeps ~28 %: answered by checking the unfiltered top hits
SELECTIVE = {"sex": "F", "age_min": 85.0, "before": "2004-01-01"}  # keeps ~0.3 %: SQL lists the survivors

FINDINGS = ("spike and wave", "sharp waves", "polyspikes", "spikes", "slowing", "polymorphic delta activity",
            "rhythmic delta activity", "periodic discharges", "triphasic waves", "burst suppression",
            "attenuation", "sharp and slow wave complexes", "electrographic seizure", "theta activity")
PLACES = ("generalized", "left temporal", "right temporal", "bifrontal", "left frontal", "right central",
          "occipital", "left hemisphere", "right parietal", "multifocal", "bitemporal", "midline")
RATES = ("", "3 Hz", "1 Hz", "2.5 Hz", "4-7 Hz", "intermittent", "continuous", "frequent")
STATES = ("", "during sleep", "during hyperventilation", "with photic stimulation", "while awake",
          "in drowsiness", "in a comatose patient", "after a seizure")


def query_texts(n: int, seed: int) -> list[str]:
    """``n`` distinct EEG-finding descriptions (seeded)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    while len(seen) < n:
        rate, place, finding, state = (x[rng.integers(len(x))] for x in (RATES, PLACES, FINDINGS, STATES))
        seen[" ".join(w for w in (place, rate, finding, state) if w)] = None
    return list(seen)


def report_texts(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (full text, impression) pairs of plausible reports."""
    out = []
    for i, finding in enumerate(query_texts(n, seed + 1000)):
        impression = f"Abnormal EEG due to {finding}." if i % 5 else "Normal awake and asleep EEG."
        text = (f"CLINICAL HISTORY: {30 + i % 50} year old with episodes of unresponsiveness.\n"
                "MEDICATIONS: Keppra.\n"
                "DESCRIPTION OF THE RECORD: The background shows a 9 Hz posterior dominant rhythm. "
                f"There is {finding}.\n"
                f"IMPRESSION: {impression}\n"
                "CLINICAL CORRELATION: Clinical correlation is suggested.\n")
        out.append((text, impression))
    return out


def _unit(x):
    import numpy as np

    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def build_folder(folder: Path, n: int, model, model_dir: Path, model_hash: str, seed: int,
                 windows_per_recording: int = 0) -> dict:
    """Write an index folder of ``n`` recordings (SQL rows + FAISS files); returns timings and sizes."""
    import numpy as np
    from sqlalchemy import insert

    from db import IndexRun, Patient, Recording, Report, Visit, Window, to_blob
    from indexer.store import IndexStore

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    store = IndexStore.create(folder)
    reports = report_texts(N_REPORTS, seed)
    report_emb = model.encode_text([imp for _, imp in reports])
    # 1000 sub-clusters around the report embeddings: recordings of report r lie near it.
    n_clusters = 1000
    centres = _unit(report_emb[np.arange(n_clusters) % N_REPORTS] + rng.standard_normal((n_clusters, 256)) / 16)
    n_patients = (n + 2) // 3
    p_sex = rng.choice(np.array(["F", "M"]), n_patients)
    p_age = rng.uniform(1, 90, n_patients)
    p_year = rng.integers(2002, 2022, n_patients)
    base = dt.datetime(2000, 1, 1)
    with store.session() as s, s.begin():
        run = IndexRun(archive="/archive/tuh_eeg", model_hash=model_hash, model_path=str(model_dir),
                       preprocessing=model.config.preprocessing or {}, versions={"bench": "bench_query"})
        s.add(run)
        s.flush()
        run_id = run.id
        s.execute(insert(Report), [
            {"id": i + 1, "source": f"/archive/reports/report_{i:03d}.txt", "text_hash": f"{i:064x}",
             "text": text, "impression": imp, "emb": to_blob(report_emb[i]), "model_hash": model_hash}
            for i, (text, imp) in enumerate(reports)])
        for a in range(0, n_patients, CHUNK):
            s.execute(insert(Patient), [{"id": p + 1, "key": f"aaa{p:05d}", "sex": str(p_sex[p])}
                                        for p in range(a, min(n_patients, a + CHUNK))])
    # recording i: patient i // 3, session 0 for the first two recordings of a patient and 1 for
    # the third; session id = 2 * patient + session number.
    patient = np.arange(n) // 3
    sess_no = np.where(np.arange(n) % 3 == 2, 1, 0)
    used_sessions = np.unique(2 * patient + sess_no)
    with store.session() as s, s.begin():
        for a in range(0, len(used_sessions), CHUNK):
            s.execute(insert(Visit), [
                {"id": int(sid) + 1, "patient_id": int(sid // 2) + 1, "key": f"s{sid % 2 + 1:03d}_{p_year[sid // 2]}",
                 "date": dt.date(int(p_year[sid // 2]) + int(sid % 2), 1 + int(sid % 12), 1 + int(sid % 28))}
                for sid in used_sessions[a : a + CHUNK].tolist()])
    t_meta = time.perf_counter() - t0
    n_windows = 0
    for a in range(0, n, CHUNK):
        b = min(n, a + CHUNK)
        m = b - a
        cl = rng.integers(n_clusters, size=m)
        emb = _unit(centres[cl] + rng.standard_normal((m, 256)).astype(np.float32) / 16)
        hashes = rng.bytes(32 * m)
        size = rng.integers(1_000_000, 60_000_000, m)
        duration = rng.uniform(600, 3600, m)
        sfreq = rng.choice(np.array([250.0, 256.0, 400.0, 512.0]), m)
        rows = []
        for j in range(m):
            i = a + j
            p = int(patient[i])
            sess = int(sess_no[i])
            pk = f"aaa{p:05d}"
            year = int(p_year[p]) + sess
            sk = f"s{sess + 1:03d}_{p_year[p]}"
            montage = MONTAGES[i % 3]
            token = f"{pk}_{sk[:4]}_t{i % 3:03d}"
            date = base.replace(year=year) + dt.timedelta(days=i % 365, seconds=int(duration[j]) * 7 % 86400)
            rows.append({
                "id": i + 1, "path": f"/archive/tuh_eeg/v2.0.1/edf/{montage}/{pk[:3]}/{pk}/{sk}/{token}.edf",
                "key": f"{pk}/{sk}/{montage}/{token}", "patient_id": p + 1, "visit_id": 2 * p + sess + 1,
                "report_id": int(cl[j] % N_REPORTS) + 1, "layout": "tuh", "montage": montage,
                "size": int(size[j]), "mtime": 1.6e9 + i, "content_hash": hashes[32 * j : 32 * j + 32].hex(),
                "duration": float(duration[j]), "native_sfreq": float(sfreq[j]),
                "age": round(float(p_age[p]) + sess, 1), "sex": str(p_sex[p]), "date": date,
                "date_suspect": False, "status": "indexed", "error": None, "model_hash": model_hash,
                "n_windows": windows_per_recording, "emb": emb[j].tobytes(),
                "indexed_at": dt.datetime.now(dt.UTC)})
        with store.session() as s, s.begin():
            s.execute(insert(Recording), rows)
            if windows_per_recording:
                w = windows_per_recording
                wemb = _unit(np.repeat(emb, w, axis=0) + rng.standard_normal((m * w, 256)).astype(np.float32) / 8)
                s.execute(insert(Window), [
                    {"id": n_windows + q + 1, "recording_id": a + q // w + 1, "ordinal": q % w,
                     "start_s": 5.0 * (q % w), "end_s": 5.0 * (q % w + 1), "emb": wemb[q].tobytes()}
                    for q in range(m * w)])
                n_windows += m * w
    t_insert = time.perf_counter() - t0
    t1 = time.perf_counter()
    counts = store.rebuild(model_hash, str(model_dir), model.config, force=True, run_id=run_id)
    t_build = time.perf_counter() - t1
    from elmsearch.models.compiled import write_query_model
    from elmsearch.models.factory import load_model

    trained = load_model(model_dir)  # as the indexer does at the end of a run (once per machine)
    write_query_model(trained, model_dir)
    with store.engine.connect() as con:  # fold the WAL into the database file before measuring it
        con.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.engine.dispose()
    info = store.manifest["indices"]["eeg_recording"]
    db_bytes = sum(f.stat().st_size for f in folder.glob("elmsearch.sqlite*"))
    faiss_bytes = sum(f.stat().st_size for f in (folder / "faiss").glob("*.faiss"))
    return {"n": n, "n_patients": n_patients, "n_sessions": int(len(used_sessions)), "n_reports": N_REPORTS,
            "n_windows": n_windows, "counts": counts,
            "kind": info["kind"], "nlist": info["nlist"], "nprobe": info["nprobe"],
            "tune_recall_at_10": round(info["recall_at_10"], 4),
            "metadata_s": round(t_meta, 2), "insert_s": round(t_insert, 2), "build_s": round(t_build, 2),
            "faiss_build_s": round(info["build_seconds"], 2), "db_mb": round(db_bytes / 2**20, 1),
            "faiss_mb": round(faiss_bytes / 2**20, 1)}


def _ms(times: list[float]) -> dict:
    import numpy as np

    p50, p95 = np.percentile(np.array(times) * 1000, [50, 95])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2)}


def warm_latency(folder: Path, n_queries: int, n_filtered: int, seed: int) -> dict:
    """Warm ``search_text`` latencies on an index folder, with the split of the time."""
    from indexer import search as search_mod
    from indexer.search import Filters, Index
    from indexer.vectors import ops

    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    index = Index.open(folder)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.search_text("normal awake EEG", k=10)
    t_first = time.perf_counter() - t0
    model = index.query_model  # the compiled query model when the indexer left one, else the torch model
    enc_times: list[float] = []
    encode = model.encode_text

    def timed_encode(texts, *a, **kw):
        t = time.perf_counter()
        try:
            return encode(texts, *a, **kw)
        finally:
            enc_times.append(time.perf_counter() - t)

    model.encode_text = timed_encode  # instance attribute: times the encoder inside search_text
    for q in ("focal slowing", "burst suppression pattern", "triphasic waves", "normal sleep", "alpha coma"):
        index.search_text(q, k=10)
    texts = query_texts(n_queries + 2 * n_filtered, seed)
    miss_texts, filt_texts, sel_texts = texts[:n_queries], texts[n_queries:-n_filtered], texts[-n_filtered:]

    def run(qs: list[str], **kw) -> tuple[list[float], list[float]]:
        enc_times.clear()
        total = []
        for q in qs:
            t = time.perf_counter()
            hits = index.search_text(q, k=10, **kw)
            total.append(time.perf_counter() - t)
            assert hits, q
        return total, list(enc_times)

    miss_total, miss_enc = run(miss_texts)
    hit_total, hit_enc = run(miss_texts)
    filters = Filters(**FILTER)
    filt_total, filt_enc = run(filt_texts, filters=filters)
    selective = Filters(**{**SELECTIVE, "before": dt.date.fromisoformat(SELECTIVE["before"])})
    sel_total, _ = run(sel_texts, filters=selective)
    del model.encode_text

    # the parts on their own, with the (cached) query vectors of the miss run
    qvecs = model.encode_text(miss_texts)
    t_model, t_faiss, t_sql = [], [], []
    faiss_index = index.faiss("eeg_recording")
    with index.store.session() as s:
        for q in qvecs:
            t = time.perf_counter()
            _ = index.query_model  # the property (it re-hashed every weight on each access before a fix)
            t_model.append(time.perf_counter() - t)
            t = time.perf_counter()
            scores, ids = ops.search(faiss_index, q, 10)
            t_faiss.append(time.perf_counter() - t)
            t = time.perf_counter()
            keep = ids[0] >= 0
            index._hits(s, ids[0][keep].tolist(), scores[0][keep].tolist(), q)
            t_sql.append(time.perf_counter() - t)
        paths = {}
        for name, f in (("filtered", filters), ("selective", selective)):
            t = time.perf_counter()
            n_allowed = len(index._filtered_ids(s, "eeg_recording", f))
            t_allowed = time.perf_counter() - t
            _, ids = ops.search(faiss_index, qvecs[0], search_mod.POSTFILTER_FETCH)
            post = len(index._filtered_ids(s, "eeg_recording", f, ids[0][ids[0] >= 0])) >= 10
            paths[name] = {"n_allowed": n_allowed, "list_survivors_sql_s": round(t_allowed, 3),
                           "path": f"post-filter (top {search_mod.POSTFILTER_FETCH} checked in SQL)" if post
                           else "exact from SQL" if n_allowed <= search_mod.EXACT_BELOW
                           else "FAISS + IDSelectorBatch"}
    index.store.engine.dispose()
    rest = [a - b for a, b in zip(miss_total, miss_enc, strict=True)]
    return {
        "loadavg_1min_before": round(load, 2), "open_s": round(t_open, 3), "first_query_s": round(t_first, 3),
        "miss": {**_ms(miss_total), "n": len(miss_total)},
        "hit": {**_ms(hit_total), "n": len(hit_total)},
        "miss_encode": _ms(miss_enc), "hit_encode": _ms(hit_enc), "miss_rest": _ms(rest),
        "parts": {"model_property": _ms(t_model), "faiss": _ms(t_faiss), "sql_hits": _ms(t_sql)},
        "filtered": {**_ms(filt_total), "n": len(filt_total), "filters": FILTER, **paths["filtered"],
                     "encode": _ms(filt_enc)},
        "selective": {**_ms(sel_total), "n": len(sel_total), "filters": SELECTIVE, **paths["selective"]},
    }


def best_window_cost(folder: Path, n_queries: int, seed: int) -> dict:
    """The best-window lookup of the 10 hits (``Index._best_windows``) on an index with windows."""
    from indexer.search import Index

    index = Index.open(folder)
    texts = query_texts(n_queries, seed + 7)
    for q in texts[:5]:
        index.search_text(q, k=10)
    total, bw = [], []
    with index.store.session() as s:
        for q in texts:
            t = time.perf_counter()
            hits = index.search_text(q, k=10)
            total.append(time.perf_counter() - t)
            qv = index.model.encode_text([q])[0]
            ids = [h.recording_id for h in hits]
            t = time.perf_counter()
            index._best_windows(s, ids, qv)
            bw.append(time.perf_counter() - t)
    index.store.engine.dispose()
    return {"search_text": _ms(total), "best_windows": _ms(bw), "n": len(total)}


def encoder_threads(model, n_queries: int, seed: int) -> dict:
    """The language model alone (no cache), torch's default intra-op threads vs 1, on novel queries."""
    import torch

    enc = model.text_encoder
    texts = query_texts(2 * n_queries + 5, seed + 555)
    default = torch.get_num_threads()
    out = {}
    try:
        for i, threads in enumerate((default, 1)):
            torch.set_num_threads(threads)
            for q in texts[:5]:
                enc._encode([q])
            times = []
            for q in texts[5 + i * n_queries : 5 + (i + 1) * n_queries]:
                t = time.perf_counter()
                enc._encode([q])
                times.append(time.perf_counter() - t)
            out["default_threads_encode" if i == 0 else "one_thread_encode"] = _ms(times)
    finally:
        torch.set_num_threads(default)
    # the same through encode_text with an empty on-disk cache: + projection + cache look-up and write
    cache = Path(tempfile.mkdtemp(prefix="elmsearch-bench-cache-"))
    saved, model.cache_dir, model._text_encoder = model.cache_dir, cache, None
    try:
        for q in texts[:5]:
            model.encode_text([q])
        times = []
        for q in texts[5 + n_queries : 5 + 2 * n_queries]:  # new to this cache
            t = time.perf_counter()
            model.encode_text([q])
            times.append(time.perf_counter() - t)
        out["encode_text_cache_miss"] = _ms(times)
    finally:
        model.cache_dir, model._text_encoder = saved, None
        shutil.rmtree(cache, ignore_errors=True)
    out["loadavg_1min"] = round(os.getloadavg()[0], 2)
    return {"default_threads": default, **out}


def cold_probe(folder: str, query: str) -> dict:
    """Stages of a cold start, timed in this (fresh) interpreter; printed as JSON by ``--cold-probe``."""
    st: dict[str, float] = {}
    t = time.perf_counter()
    import cli.app  # noqa: F401  typer, rich

    st["import_cli"] = time.perf_counter() - t
    t = time.perf_counter()
    import indexer.search  # numpy, sqlalchemy, faiss, torch, elmsearch

    st["import_indexer_search"] = time.perf_counter() - t
    t = time.perf_counter()
    index = indexer.search.Index.open(folder, verify=False)
    st["open_without_verify"] = time.perf_counter() - t
    t = time.perf_counter()
    index.store.verify(full=False)
    st["verify_quick"] = time.perf_counter() - t
    t = time.perf_counter()
    index.faiss("eeg_recording")
    st["read_faiss"] = time.perf_counter() - t
    t = time.perf_counter()
    model = index.query_model
    st["load_query_model"] = time.perf_counter() - t
    t = time.perf_counter()
    model.encode_text([query])
    st["encode_text"] = time.perf_counter() - t
    t = time.perf_counter()
    hits = index.search_text(query, k=10)
    st["search_text_after"] = time.perf_counter() - t
    assert hits
    t = time.perf_counter()
    index.store.verify(full=True)  # not on the query path: what `elmsearch stats` pays
    st["verify_full_not_on_query_path"] = time.perf_counter() - t
    return {k: round(v, 3) for k, v in st.items()}


def _cli(folder: Path, query: str, *extra: str) -> float:
    t = time.perf_counter()
    r = subprocess.run([str(ELMSEARCH), "-q", "search", query, "--db", str(folder), "--json", "-k", "10", *extra],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"elmsearch search failed ({r.returncode}): {r.stderr.strip()}")
    if len(json.loads(r.stdout)["hits"]) != 10:
        raise RuntimeError(f"elmsearch search: expected 10 hits, got {r.stdout[:200]}")
    return wall


def cold_cli(folder: Path, runs: int, seed: int) -> dict:
    """Median wall time of the ``elmsearch search`` command (after one warm-up run)."""
    query = "generalized spike and wave"
    _cli(folder, query)  # warm-up: OS page cache, text-embedding cache
    same = [_cli(folder, query) for _ in range(runs)]
    new = [_cli(folder, q) for q in query_texts(runs, seed + 99)]  # never seen: cache misses
    # baseline, same run: torch, whose language model loads through transformers
    eager = [_cli(folder, q, "--backend", "torch") for q in query_texts(runs, seed + 199)]
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    t_python = time.perf_counter() - t
    probe = {}
    for name, q in (("hit", query), ("miss", "left temporal sharp waves in a cold probe")):
        r = subprocess.run([sys.executable, __file__, "--cold-probe", str(folder), "--cold-query", q],
                           capture_output=True, text=True, check=True, cwd=REPO)
        probe[name] = json.loads(r.stdout.strip().splitlines()[-1])
    return {"query": query, "runs": runs, "page_cache": "warm (one warm-up run first)",
            "same_query_median_s": round(statistics.median(same), 3), "same_query_s": [round(x, 3) for x in same],
            "new_query_median_s": round(statistics.median(new), 3), "new_query_s": [round(x, 3) for x in new],
            "eager_text_encoder_new_query_median_s": round(statistics.median(eager), 3),
            "python_startup_s": round(t_python, 3), "stages_text_cache_hit": probe["hit"],
            "stages_text_cache_miss": probe["miss"]}


def train_quick_model(out: Path, seed: int) -> Path:
    """A model with a trained text side: one epoch on a 16-recording demo archive (seconds)."""
    from elmsearch.datasets.demo import generate_archive
    from elmsearch.train.trainer import build_model, demo_config, load_items, train

    made = generate_archive(out / "archive", n_recordings=16, seed=seed, min_minutes=0.25, max_minutes=0.5)
    train(build_model("elm-5s"), load_items(made.root, 5.0, "sentence"), out / "model",
          dataclasses.replace(demo_config(seed=seed, device="cpu"), epochs=1), resume=False)
    return out / "model"


def _table(res: dict) -> str:
    cols = ("n", "kind", "nprobe", "insert_s", "build_s", "db_mb", "faiss_mb", "open_s",
            "miss p50/p95", "hit p50/p95", "enc miss", "enc hit", "model", "faiss", "sql", "filt p50", "selective p50")
    lines = [" | ".join(cols)]
    for r in res["results"]:
        w = r["warm"]
        lines.append(" | ".join(str(x) for x in (
            r["n"], r["kind"], r["nprobe"], r["insert_s"], r["build_s"], r["db_mb"], r["faiss_mb"], w["open_s"],
            f"{w['miss']['p50_ms']}/{w['miss']['p95_ms']}", f"{w['hit']['p50_ms']}/{w['hit']['p95_ms']}",
            w["miss_encode"]["p50_ms"], w["hit_encode"]["p50_ms"], w["parts"]["model_property"]["p50_ms"],
            w["parts"]["faiss"]["p50_ms"], w["parts"]["sql_hits"]["p50_ms"], w["filtered"]["p50_ms"],
            w["selective"]["p50_ms"])))
    c = res.get("cold_cli")
    if c:
        lines.append(f"cold CLI (n={c['n']}): same query {c['same_query_median_s']} s, "
                     f"new query {c['new_query_median_s']} s, new query with the eager text encoder "
                     f"{c['eager_text_encoder_new_query_median_s']} s (median of {c['runs']})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated numbers of recordings")
    ap.add_argument("--model", type=Path, default=None, help="MODEL_DIR with a text side (default: train one)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--filtered-queries", type=int, default=50)
    ap.add_argument("--cli-runs", type=int, default=5)
    ap.add_argument("--window-index", default="200x240",
                    help="RECORDINGSxWINDOWS of the small index with windows ('' to skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", type=Path, default=None, help="parent folder of the temporary indices")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "query.json")
    ap.add_argument("--cold-probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cold-query", default="generalized spike and wave", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cold_probe:
        print(json.dumps(cold_probe(args.cold_probe, args.cold_query)))
        return

    import faiss
    import torch

    from elmsearch.models.factory import load_model
    from elmsearch.models.identity import config_hash

    sizes = [int(x) for x in args.sizes.split(",") if x]
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="elmsearch-bench-query-", dir=args.tmp))
    res: dict = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                 "torch_threads": torch.get_num_threads(), "faiss_omp_threads": faiss.omp_get_max_threads(),
                 "faiss": faiss.__version__, "params": {k: str(v) if isinstance(v, Path) else v
                                                        for k, v in vars(args).items() if not k.startswith("cold")}}
    try:
        t0 = time.perf_counter()
        model_dir = args.model.resolve() if args.model else train_quick_model(tmp / "train", args.seed)
        res["model"] = {"path": str(model_dir) if args.model else "quick (1 epoch, 16 demo recordings)",
                        "train_s": None if args.model else round(time.perf_counter() - t0, 1)}
        model = load_model(model_dir)
        model_hash = config_hash(model)
        res["model"]["hash"] = model_hash
        res["text_encoder_threads"] = encoder_threads(model, 50, args.seed)
        res["results"] = []
        for n in sizes:
            folder = tmp / f"index-{n}"
            print(f"n={n}: building ...", file=sys.stderr, flush=True)
            row = build_folder(folder, n, model, model_dir, model_hash, args.seed)
            print(f"n={n}: insert {row['insert_s']} s, build {row['build_s']} s; querying ...",
                  file=sys.stderr, flush=True)
            row["warm"] = warm_latency(folder, args.queries, args.filtered_queries, args.seed)
            res["results"].append(row)
            if n != max(sizes):
                shutil.rmtree(folder)
        if args.window_index:
            nr, nw = (int(x) for x in args.window_index.lower().split("x"))
            folder = tmp / "index-windows"
            print(f"windows: {nr} recordings x {nw} windows ...", file=sys.stderr, flush=True)
            row = build_folder(folder, nr, model, model_dir, model_hash, args.seed, windows_per_recording=nw)
            row["warm"] = best_window_cost(folder, 50, args.seed)
            res["best_window"] = row
            shutil.rmtree(folder)
        if args.cli_runs and sizes:
            print(f"cold CLI on n={max(sizes)} ...", file=sys.stderr, flush=True)
            res["cold_cli"] = {"n": max(sizes), **cold_cli(tmp / f"index-{max(sizes)}", args.cli_runs, args.seed)}
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    res["loadavg_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    biggest = max(res["results"], key=lambda r: r["n"]) if res["results"] else None
    res["targets"] = {
        "warm_p50_ms_at_largest": biggest and biggest["warm"]["miss"]["p50_ms"],
        "warm_p50_target_ms": 10, "warm_met": bool(biggest and biggest["warm"]["miss"]["p50_ms"] <= 10),
        "cold_cli_s": res.get("cold_cli", {}).get("new_query_median_s"), "cold_target_s": 1,
        "cold_met": bool(res.get("cold_cli") and res["cold_cli"]["new_query_median_s"] <= 1),
        "note": "warm: text-cache misses (novel queries) at the largest size; cold: new query (text-cache miss), "
                "the worse case; the same-query numbers are in cold_cli",
    }
    res["notes"] = [
        "the size indices have no window rows: the best-window lookup of the hits costs nothing there; "
        "best_window measures it on an index whose recordings have windows (add its best_windows p50)",
        "recording embeddings are random, clustered around the 50 reports' text embeddings; SQLite in WAL mode",
        "warm latencies collapse when other processes keep both cores busy (torch's 2 intra-op threads then "
        "wait ~0.5 s per text encoding): compare loadavg_1min_before",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    print(_table(res))


if __name__ == "__main__":
    main()

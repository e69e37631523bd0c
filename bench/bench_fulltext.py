"""Full-text index of report sentences: query latency, insert rate and size, with and without it.

Writes ``bench/results/fulltext.json``. Sentences are generated from templates in the style of
clinical EEG reports (a vocabulary of findings, locations, negations, states), so that common
words ("focal", "sharp", "waves", "normal") are as common as in real reports and rare ones
("hypsarrhythmia") rare. Each size is a fresh SQLite file with the index's own schema.

```bash
python bench/bench_fulltext.py                       # 1e5 and 1e6 sentences
python bench/bench_fulltext.py --sizes 100000 --repeat 50
```
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db.engine import make_engine, make_sessionmaker  # noqa: E402
from indexer.fulltext import FTS_TABLE, _df_cache, ensure_fulltext, match_segments, term_weights  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

SIDES = ["left", "right", "bilateral", "bifrontal", "bitemporal"]
REGIONS = ["temporal", "frontal", "central", "parietal", "occipital", "frontotemporal", "centrotemporal"]
FINDINGS = ["sharp waves", "spikes", "spike and wave discharges", "slowing", "polymorphic delta activity",
            "theta slowing", "epileptiform discharges", "sharp transients", "rhythmic delta activity",
            "periodic lateralized discharges"]
RARE = ["hypsarrhythmia", "burst suppression", "triphasic waves", "electrographic seizure",
        "photoparoxysmal response", "breach rhythm"]
TEMPLATES = [
    "The background consists of a {hz} Hz posterior dominant rhythm that is reactive to eye opening.",
    "{Kind} {finding} are seen over the {side} {region} region.",
    "Occasional {kind} {finding} are noted in the {side} {region} leads during drowsiness.",
    "There is no evidence of {kind} {finding}.",
    "No epileptiform activity is present.",
    "Stage II sleep is recorded with symmetric spindles and vertex waves.",
    "Hyperventilation produces diffuse slowing.",
    "Photic stimulation produces a symmetric driving response.",
    "This is a normal EEG in the awake and drowsy states.",
    "This is an abnormal EEG due to {kind} {finding} in the {side} {region} region.",
    "Clinical correlation is recommended.",
    "The patient is a {age} year old {sex} with a history of {history}.",
    "Medications include {med}.",
    "Muscle and movement artifact obscure portions of the recording.",
    "Possible {kind} {finding} over the {side} {region} area cannot be excluded.",
]
HISTORY = ["seizures", "syncope", "headache", "altered mental status", "head trauma", "stroke", "dementia"]
MEDS = ["levetiracetam", "phenytoin", "lamotrigine", "valproic acid", "lacosamide", "none"]


def sentences(n: int, seed: int = 0):
    """``n`` report-style sentences (about 1 in 500 names a rare finding)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        tpl = TEMPLATES[rng.integers(len(TEMPLATES))]
        finding = RARE[rng.integers(len(RARE))] if rng.random() < 0.002 else FINDINGS[rng.integers(len(FINDINGS))]
        kind = ["focal", "generalized", "intermittent", "frequent", "rare"][rng.integers(5)]
        yield tpl.format(hz=rng.integers(6, 12), Kind=kind.capitalize(), kind=kind, finding=finding,
                         side=SIDES[rng.integers(len(SIDES))], region=REGIONS[rng.integers(len(REGIONS))],
                         age=rng.integers(1, 90), sex=["man", "woman", "boy", "girl"][rng.integers(4)],
                         history=HISTORY[rng.integers(len(HISTORY))], med=MEDS[rng.integers(len(MEDS))])


def fill(fname: Path, n: int, fulltext: bool, per_report: int = 10) -> dict:
    """A database of ``n`` sentences in reports of ``per_report``; the insert time and file size."""
    engine = make_engine(f"sqlite:///{fname}")
    if fulltext:
        ensure_fulltext(engine)
    t0 = time.perf_counter()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        batch: list = []
        gen = sentences(n)
        for rid in range(1, n // per_report + 1):
            cur.execute("INSERT INTO reports (id, source, text_hash, text) VALUES (?, ?, '', '')", (rid, f"r{rid}"))
            for k in range(per_report):
                s = next(gen)
                batch.append((rid, k, "findings", 0, len(s), s, False))
            if len(batch) >= 20_000:
                cur.executemany('INSERT INTO segments (report_id, ordinal, section, start, "end", text, finding) '
                                "VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
                batch.clear()
        if batch:
            cur.executemany('INSERT INTO segments (report_id, ordinal, section, start, "end", text, finding) '
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
        raw.commit()
        seconds = time.perf_counter() - t0
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()
    engine.dispose()
    return {"seconds": seconds, "rows_per_s": n / seconds, "bytes": fname.stat().st_size}


QUERIES = {"common": ["focal", "sharp", "waves"], "common_phrase": ["focal sharp waves"],
           "rare": ["hypsarrhythmia"], "rare_and_common": ["triphasic", "waves"]}


def time_queries(fname: Path, repeat: int, limit: int) -> dict:
    engine = make_engine(f"sqlite:///{fname}", create=False)
    sessions = make_sessionmaker(engine)
    out = {}
    with sessions() as s:
        for name, terms in QUERIES.items():
            hits = match_segments(s, terms, limit=limit)  # warm
            n_match = s.execute(__import__("sqlalchemy").text(
                f"SELECT count(*) FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q"),
                {"q": " OR ".join(f'"{t}"' for t in terms)}).scalar()
            timed = {}
            for ranked in (True, False):
                match_segments(s, terms, limit=limit, ranked=ranked)
                times = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    match_segments(s, terms, limit=limit, ranked=ranked)
                    times.append((time.perf_counter() - t0) * 1e3)
                timed[ranked] = times
            _df_cache.clear()
            t0 = time.perf_counter()
            term_weights(s, terms)  # cold: counts each term's sentences
            cold = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            term_weights(s, terms)
            warm = (time.perf_counter() - t0) * 1e3
            out[name] = {"terms": terms, "matching_sentences": n_match, "returned": len(hits),
                         "p50_ms": statistics.median(timed[True]), "p90_ms": float(np.percentile(timed[True], 90)),
                         "unranked_p50_ms": statistics.median(timed[False]),
                         "unranked_p90_ms": float(np.percentile(timed[False], 90)),
                         "term_weights_cold_ms": cold, "term_weights_warm_ms": warm,
                         "all_terms": sum(h.matched == len(terms) for h in hits)}
            print(f"  {name:16s} {n_match:>8d} match  p50 {out[name]['p50_ms']:8.2f} ms  "
                  f"unranked p50 {out[name]['unranked_p50_ms']:8.2f} ms  "
                  f"weights cold {cold:7.2f} / warm {warm:5.2f} ms", flush=True)
    engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--cost-size", type=int, default=100_000, help="sentences for the with/without comparison")
    args = ap.parse_args()
    doc: dict = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                 "python": platform.python_version(), "sqlite": __import__("sqlite3").sqlite_version,
                 "limit": args.limit, "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        cost = {}
        for fulltext in (False, True):
            cost["with" if fulltext else "without"] = fill(Path(tmp) / f"cost{fulltext}.sqlite", args.cost_size,
                                                           fulltext)
        doc["cost"] = {"sentences": args.cost_size, **cost,
                       "insert_slowdown": cost["with"]["seconds"] / cost["without"]["seconds"],
                       "size_ratio": cost["with"]["bytes"] / cost["without"]["bytes"]}
        print(json.dumps(doc["cost"], indent=1), flush=True)
        for n in args.sizes:
            fname = Path(tmp) / f"n{n}.sqlite"
            filled = fill(fname, n, True)
            print(f"{n} sentences: filled in {filled['seconds']:.1f} s, {filled['bytes'] / 1e6:.0f} MB", flush=True)
            doc["sizes"][str(n)] = {"fill": filled, "queries": time_queries(fname, args.repeat, args.limit)}
            fname.unlink()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fulltext.json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()

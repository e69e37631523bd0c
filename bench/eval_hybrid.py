"""Cohort retrieval by finding on the held-out demo archive: EEG, reports and hybrid ranking.

Run: ``python bench/eval_hybrid.py [--train-seeds 0,1,2] [--n-recordings 60] [--work DIR] [--out FILE.json]``.

A demo model is trained on the demo archive (seed 0 archive, one model per training seed), the
held-out archive (seed 1, 60 recordings) is indexed with it, and for each finding column its
phrase (``indexer.evaluate.COHORT_QUERIES``) ranks every recording from each source, with 0 %,
50 % and 100 % of the patients' reports withheld (seeded by patient). Reported: MAP and P@10 per
source, mean and standard deviation over the training seeds, and the fusion rules compared:

- ``hybrid``: the calibrated fusion elmsearch uses (``indexer.hybrid``);
- ``rrf``: reciprocal-rank fusion of the ``reports`` and ``eeg`` rankings (k = 60), the naive rule.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from eval_demo import heldout_runs, write_results
from sklearn.metrics import average_precision_score

from indexer.evaluate import COHORT_QUERIES, cohort_retrieval, read_label_table, withheld_reports
from indexer.hybrid import rank
from indexer.search import Filters, Index

HERE = Path(__file__).resolve().parent
FRACTIONS = (0.0, 0.5, 1.0)


def rrf_map(index: Index, labels_csv: Path, root: Path, fraction: float, seed: int = 0, k0: int = 60) -> float:
    """MAP of reciprocal-rank fusion of the ``reports`` and ``eeg`` rankings."""
    table, _ = read_label_table(labels_csv, root)
    with index.store.session() as s:
        from sqlalchemy import select

        from db import Recording, Status

        rows = [(r.id, table.get(r.path) or table.get(r.key)) for r in s.scalars(
            select(Recording).where(Recording.status == Status.INDEXED).order_by(Recording.id))]
    labelled = {rid: row for rid, row in rows if row is not None}
    ids = sorted(labelled)
    held = withheld_reports(index, fraction, seed)
    aps = []
    for column, text in COHORT_QUERIES.items():
        y = np.array([int(labelled[i].get(column, "0") or 0) for i in ids])
        if y.min() == y.max():
            continue
        q = index._text_query(text)
        fused = dict.fromkeys(ids, 0.0)
        for source in ("reports", "eeg"):
            with index.store.session() as s:
                ranked = rank(index, s, text, q, len(ids) + 64, Filters(), source, held)
            # in the reports ranking only recordings with report evidence count
            for n, c in enumerate(x for x in ranked if source == "eeg" or (x.p_report or 0) > 0):
                if c.recording_id in fused:
                    fused[c.recording_id] += 1 / (k0 + n + 1)
        aps.append(average_precision_score(y, np.array([fused[i] for i in ids])))
    return float(np.mean(aps))


def main() -> None:
    t0 = time.perf_counter()
    args, heldout = heldout_runs(__doc__, "eval_hybrid.json", "0,1,2")
    runs = {}
    for seed, index, held in heldout:
        res = cohort_retrieval(index, held.labels_path, held.root, withheld=FRACTIONS)
        for f in FRACTIONS:
            res[f"rrf@{f:g}"] = {"MAP": rrf_map(index, held.labels_path, held.root, f)}
        runs[seed] = res
        print(f"seed {seed}: " + ", ".join(f"{k} {v['MAP']:.3f}" for k, v in res.items()
                                          if isinstance(v, dict) and "MAP" in v and v["MAP"] is not None))
    keys = [k for k in runs[next(iter(runs))] if "@" in k]
    summary = {}
    for k in keys:
        vals = [runs[s][k]["MAP"] for s in runs]
        summary[k] = {"MAP_mean": float(np.mean(vals)), "MAP_sd": float(np.std(vals)),
                      **({"P@10_mean": float(np.mean([runs[s][k]["P@10"] for s in runs]))}
                         if "P@10" in runs[next(iter(runs))][k] else {})}
    per_finding = {k: {c: float(np.mean([runs[s][k]["AP"][c] for s in runs])) for c in runs[next(iter(runs))][k]["AP"]}
                   for k in keys if "AP" in runs[next(iter(runs))][k]}
    write_results(args.out, {"n_recordings": args.n_recordings, "train_seeds": list(runs),
                             "train_version": args.train_version, "summary": summary,
                             "AP_by_finding": per_finding, "runs": runs}, t0)

if __name__ == "__main__":
    main()

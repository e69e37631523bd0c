"""Benchmark: FAISS index build time, size, recall and single-query latency by index size.

Run: ``python bench/bench_faiss.py [--sizes 10000,100000,1000000] [--out bench/results/faiss.json]``.

Data: synthetic clustered unit vectors (a mixture of ``--clusters`` Gaussian clusters around
random unit centres in 256-d, normalised), generated in chunks. Queries are "text-like": fresh
draws around random cluster centres with wider noise, never data points. For each size it
measures, with :mod:`indexer.vectors` as the application uses it:

- build time (``build_index``: training, adding, nprobe tuning) and the chosen kind, nlist,
  nprobe and tuning recall@10;
- index file size after ``write_index``;
- recall@10 against exact search on the queries;
- warm single-query latency p50/p95 (one query per call, FAISS's default OpenMP threads);
- the exact flat index's p50 latency at the same size (first ``--flat-queries`` queries),
  and the ratio.

Latencies are sensitive to other load on the machine: with OpenMP threads spinning on a busy
core, a single query can take tens of ms more. The JSON records the load average; ``--threads 1``
gives steadier numbers on a shared machine.

1e6 is slow: generating the data takes seconds, building about a minute on 2 cores (IVF
training is bounded by ``--max-train`` sampled vectors), and the exact baseline needs another
1 GB of memory (peak RSS about 2.5 GB); the whole run at 1e4, 1e5, 1e6 took 109 s on 2 shared cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from indexer import vectors as V

HERE = Path(__file__).resolve().parent
D = V.DIM


def centres_for(n_clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((n_clusters, D)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def around(centres: np.ndarray, n: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)]
    x += rng.standard_normal((n, D), dtype=np.float32) * np.float32(spread / np.sqrt(D))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(n: int, centres: np.ndarray, spread: float, seed: int, chunk: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, D), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        out[start:stop] = around(centres, stop - start, spread, rng)
    return out


def latencies_ms(index: faiss.Index, queries: np.ndarray, k: int = 10, warmup: int = 10) -> np.ndarray:
    for q in queries[:warmup]:
        V.search(index, q, k)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        V.search(index, q, k)
        times.append(time.perf_counter() - t0)
    return np.array(times) * 1e3


def run_size(n: int, args: argparse.Namespace, centres: np.ndarray, queries: np.ndarray, tmp: Path) -> dict:
    t0 = time.perf_counter()
    x = make_data(n, centres, args.spread, seed=args.seed + n)
    ids = (10**12 + 7 + 3 * np.arange(n)).astype(np.int64)
    gen_s = time.perf_counter() - t0
    index, info = V.build_index(
        x, ids, exact_below=args.exact_below, target_recall=args.target_recall, seed=args.seed,
        max_train=args.max_train,
    )  # fmt: skip
    fname = tmp / f"index_{n}.faiss"
    V.write_index(index, fname)
    size_mb = fname.stat().st_size / 1e6
    fname.unlink()
    lat = latencies_ms(index, queries)
    flat, _ = V.build_index(x, ids, exact_below=n + 1)
    del x
    truth = V.search(flat, queries, 10)[1]
    recall = V.recall_at_k(V.search(index, queries, 10)[1], truth)
    lat_flat = latencies_ms(flat, queries[: args.flat_queries])
    del flat, index
    p50, p95, p50_flat = (float(np.percentile(a, p)) for a, p in ((lat, 50), (lat, 95), (lat_flat, 50)))
    return {
        "n": n, "kind": info.kind, "nlist": info.nlist, "nprobe": info.nprobe, "n_train": info.n_train,
        "tune_recall_at_10": round(info.recall_at_10, 4), "recall_at_10": round(recall, 4),
        "build_s": round(info.build_seconds, 2), "data_gen_s": round(gen_s, 2), "file_mb": round(size_mb, 1),
        "p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "flat_p50_ms": round(p50_flat, 3),
        "flat_over_index_p50": round(p50_flat / p50, 1),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated index sizes")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "faiss.json")
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--spread", type=float, default=1.0, help="noise norm around a unit cluster centre")
    ap.add_argument("--query-spread", type=float, default=1.5, help="noise norm of the text-like queries")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--exact-below", type=int, default=50_000)
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--max-train", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flat-queries", type=int, default=50, help="queries timed on the exact baseline (slow at 1e6)")
    ap.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads (default: FAISS's own)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("indexer.vectors").setLevel(logging.INFO)
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    load_before = os.getloadavg()

    centres = centres_for(args.clusters, args.seed)
    queries = around(centres, args.queries, args.query_spread, np.random.default_rng(args.seed + 1))
    rows = []
    with tempfile.TemporaryDirectory(prefix="elmsearch-bench-faiss-") as tmp:
        for n in sizes:
            t0 = time.perf_counter()
            rows.append(run_size(n, args, centres, queries, Path(tmp)))
            print(f"n={n}: done in {time.perf_counter() - t0:.1f} s", flush=True)

    cols = ["n", "kind", "nlist", "nprobe", "tune_recall_at_10", "recall_at_10", "build_s", "file_mb",
            "p50_ms", "p95_ms", "flat_p50_ms", "flat_over_index_p50"]  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")

    res = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "faiss": faiss.__version__,
        "omp_threads": faiss.omp_get_max_threads(),
        "loadavg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "params": {k: v for k, v in vars(args).items() if k != "out"},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

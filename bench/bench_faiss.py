"""Benchmark: FAISS indices from 1e4 to 1e7 vectors: build, disk, memory, latency, recall, updates.

Run: ``python bench/bench_faiss.py [--sizes 1e4,1e5,1e6] [--out bench/results/faiss_scale.json]``;
the scale run is ``--sizes 1e6,1e7`` (about 25 minutes on 2 cores, 5 GB of free disk); the
measurement behind the choice of codes is ``--compare 1e6`` (IVF-SQ8 against IVF-PQ with and
without SQ8 refinement, in memory).

Data: synthetic clustered unit vectors (``--clusters`` Gaussian clusters around random unit
centres in 256-d, noise norm ``--spread``, normalised), float32, generated chunk by chunk
(chunk ``c`` from seed ``(seed, c)``), so that no more than a chunk is in memory unless the kind
is built in memory; ids are int64 row ids as a database leaves them (increasing, with gaps),
never positions. Each size is indexed as :class:`indexer.vectors.policy.FaissPolicy` would (``flat_ip``
below ``--exact-below``, ``ivf_sq8`` in memory below ``--large-from``, ``ivf_sq8_ondisk`` built
in shards of ``--shard-size`` from there), and measured:

- build time: total and its parts (train, add, merge, tune) from ``IndexInfo``, and the time
  spent generating the data (inside the build's passes for the on-disk kind, reported apart);
- size on disk (index file plus data file);
- a fresh process (``--probe``) that loads the index memory-mapped as ``IndexStore.load_index``
  does and runs the queries one at a time: its load time, resident memory afterwards (RSS,
  split into anonymous memory and mapped file pages), and p50/p95 latency of single queries
  (after 10 warm-up queries);
- recall@10 against exact search (computed chunk by chunk) on 200 held-out queries (fresh draws
  around the same centres: not indexed vectors) and on 200 "text-like" queries (around random
  centres with wider noise, as a text query is far from every EEG vector);
- the exact flat index's single-query latency where the vectors fit (``--flat-max``);
- the incremental path (sizes up to ``--incremental-max``, IVF kinds): adding 1 % new vectors
  with :meth:`indexer.vectors.kinds.IVFIndex.update` against a full build of the same 101 %, with the
  recall of both.

Latencies are sensitive to other load on the machine (OpenMP threads spin on a busy core): the
JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from indexer.vectors import arrays, files, index_info, kinds, ondisk, ops, tuning
from indexer.vectors.policy import FaissPolicy

HERE = Path(__file__).resolve().parent

D = index_info.DIM
logger = logging.getLogger("bench_faiss")


# ---- data ----------------------------------------------------------------------------------
def centres_for(n_clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((n_clusters, D)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def around(centres: np.ndarray, n: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)]
    x += rng.standard_normal((n, D), dtype=np.float32) * np.float32(spread / np.sqrt(D))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class Synthetic:
    """A re-iterable chunked source (``indexer.vectors.arrays.Chunks``) of ``n`` vectors and row ids.

    ``seconds`` accumulates the time spent generating, over every pass.
    """

    def __init__(self, n: int, centres: np.ndarray, spread: float, seed: int, first_id: int = 1_000_003,
                 chunk: int = 100_000):  # fmt: skip
        self.n, self.centres, self.spread, self.seed = n, centres, spread, seed
        self.first_id, self.chunk = first_id, chunk
        self.seconds = 0.0
        self.last_id = None  # known after a first pass

    def __call__(self):
        next_id = self.first_id
        for c, start in enumerate(range(0, self.n, self.chunk)):
            t0 = time.perf_counter()
            m = min(self.chunk, self.n - start)
            rng = np.random.default_rng([self.seed, c])
            x = around(self.centres, m, self.spread, rng)
            ids = next_id + np.cumsum(rng.integers(1, 4, m))  # increasing, gaps: rows deleted in between
            next_id = int(ids[-1])
            self.seconds += time.perf_counter() - t0
            yield ids.astype(np.int64), x
        self.last_id = next_id

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        x = np.empty((self.n, D), np.float32)
        ids = np.empty(self.n, np.int64)
        pos = 0
        for i, v in self():
            x[pos : pos + len(i)], ids[pos : pos + len(i)] = v, i
            pos += len(i)
        return x, ids


class Chain:
    """Sources one after the other (a ``indexer.vectors.arrays.Chunks``), with their generation time."""

    def __init__(self, *sources: Synthetic):
        self.sources = sources

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.sources)

    def __call__(self):
        for src in self.sources:
            yield from src()


# ---- measuring -----------------------------------------------------------------------------
def rss() -> dict:
    status = Path("/proc/self/status").read_text().splitlines()
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status if line.split(":")[0] in (
        "VmRSS", "RssAnon", "RssFile", "VmHWM")}  # fmt: skip
    return {k: round(v / 1024, 1) for k, v in kb.items()}


def probe(index_file: Path, queries_file: Path, truth_file: Path, warmup: int = 10) -> dict:
    """In a fresh process: load memory-mapped, time single queries, recall, resident memory."""
    before = rss()
    t0 = time.perf_counter()
    index = files.read_index(index_file, mmap=True)
    load_ms = (time.perf_counter() - t0) * 1e3
    q = np.load(queries_file)
    truth = np.load(truth_file)
    for row in q[:warmup]:
        ops.search(index, row, 10)
    times, found = [], []
    for row in q:
        t = time.perf_counter()
        found.append(ops.search(index, row, 10)[1][0])
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    found = np.array(found)
    half = len(q) // 2
    return {
        "load_ms": round(load_ms, 2), "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "recall_at_10": round(tuning.recall_at_k(found[:half], truth[:half]), 4),
        "recall_at_10_text": round(tuning.recall_at_k(found[half:], truth[half:]), 4),
        "rss_before_mb": before, "rss_mb": rss(),
    }  # fmt: skip


def run_probe(index_file: Path, q: np.ndarray, truth: np.ndarray, tmp: Path, threads: int | None) -> dict:
    np.save(tmp / "q.npy", q)
    np.save(tmp / "truth.npy", truth)
    cmd = [sys.executable, __file__, "--probe", str(index_file), str(tmp / "q.npy"), str(tmp / "truth.npy")]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def flat_latency_ms(x: np.ndarray, ids: np.ndarray, q: np.ndarray) -> float:
    flat, _ = kinds.build_index(x, ids, exact_below=len(x) + 1)
    for row in q[:3]:
        ops.search(flat, row, 10)
    times = []
    for row in q:
        t = time.perf_counter()
        ops.search(flat, row, 10)
        times.append(time.perf_counter() - t)
    return float(np.percentile(np.array(times) * 1e3, 50))


def build(src, n: int, kind: str, args: argparse.Namespace, fname: Path) -> tuple[index_info.IndexInfo, float]:
    """Build the kind for ``n`` vectors into ``fname``; returns its info and the data generation time."""
    gen0 = src.seconds
    if kind == index_info.KIND_ONDISK:
        policy = FaissPolicy(shard_size=args.shard_size, target_recall=args.target_recall, seed=args.seed)
        staged = kinds.OnDiskIndex(policy, max_train=args.max_train_large).build(src, n, fname)
        staged.commit()
        files.collect_garbage(fname.parent)
        return staged.info, src.seconds - gen0
    ids, xs = zip(*src(), strict=True)
    x, ids = np.vstack(xs), np.concatenate(ids)
    del xs
    index, info = kinds.build_index(x, ids, exact_below=args.exact_below, target_recall=args.target_recall,
                                seed=args.seed, max_train=args.max_train)  # fmt: skip
    files.write_index(index, fname)
    return info, src.seconds - gen0


def disk_mb(fname: Path, info: index_info.IndexInfo) -> float:
    size = fname.stat().st_size + ((fname.parent / info.ivfdata).stat().st_size if info.ivfdata else 0)
    return round(size / 1e6, 1)


def run_size(n: int, args: argparse.Namespace, centres: np.ndarray, queries: np.ndarray, tmp: Path) -> dict:
    policy = FaissPolicy(exact_below=args.exact_below, large_from=args.large_from, shard_size=args.shard_size)
    kind = policy.kind(n)
    src = Synthetic(n, centres, args.spread, args.seed)
    folder = tmp / f"n{n}"
    folder.mkdir()
    fname = folder / "index.faiss"
    logger.info("n=%d: building %s", n, kind)
    t0 = time.perf_counter()
    info, gen_s = build(src, n, kind, args, fname)
    wall = time.perf_counter() - t0
    logger.info("n=%d: built in %.1f s (data generation %.1f s); exact neighbours of the queries", n, wall, gen_s)
    g0 = src.seconds
    t1 = time.perf_counter()
    truth = tuning.exact_topk(queries, src, 10)[1]
    truth_s = time.perf_counter() - t1 - (src.seconds - g0)
    p = run_probe(fname, queries, truth, tmp, args.threads)
    row = {
        "n": n, "kind": info.kind, "nlist": info.nlist, "nprobe": info.nprobe, "n_train": info.n_train,
        "n_shards": info.n_shards, "tune_recall_at_10": round(info.recall_at_10, 4),
        "recall_at_10": p["recall_at_10"], "recall_at_10_text": p["recall_at_10_text"],
        "build_s": round(info.build_seconds - (gen_s if kind == index_info.KIND_ONDISK else 0.0), 2),
        "train_s": round(info.train_seconds, 2), "add_s": round(info.add_seconds, 2),
        "merge_s": round(info.merge_seconds, 2), "tune_s": round(info.tune_seconds, 2),
        "data_gen_s": round(gen_s, 2), "build_wall_s": round(wall, 2), "exact_truth_s": round(truth_s, 2),
        "file_mb": disk_mb(fname, info), "load_ms": p["load_ms"], "rss_mb": p["rss_mb"]["VmRSS"],
        "rss_anon_mb": p["rss_mb"]["RssAnon"], "rss_file_mb": p["rss_mb"]["RssFile"], "rss_detail": p,
        "p50_ms": p["p50_ms"], "p95_ms": p["p95_ms"], "flat_p50_ms": None, "flat_over_index_p50": None,
    }  # fmt: skip
    if n <= args.flat_max:
        x, ids = src.arrays()
        row["flat_p50_ms"] = round(flat_latency_ms(x, ids, queries[: args.flat_queries]), 3)
        row["flat_over_index_p50"] = round(row["flat_p50_ms"] / row["p50_ms"], 1)
        del x, ids
    if n <= args.incremental_max and info.kind != index_info.KIND_EXACT:
        row["incremental"] = incremental(n, src, info, fname, kind, args, centres, queries, tmp)
    shutil.rmtree(folder, ignore_errors=True)
    return row


def incremental(n: int, src: Synthetic, info: index_info.IndexInfo, fname: Path, kind: str, args: argparse.Namespace,
                centres: np.ndarray, queries: np.ndarray, tmp: Path) -> dict:  # fmt: skip
    """Add 1 % new vectors: update the index in place of a rebuild, then rebuild for comparison."""
    m = max(1, n // 100)
    new = Synthetic(m, centres, args.spread, args.seed + 7, first_id=src.last_id + 10)
    new_ids, new_x = next(iter(new()))
    logger.info("n=%d: incremental update with %d new vectors", n, m)
    t0 = time.perf_counter()
    staged = kinds.vector_index(info.kind).update(fname, info, new_x, new_ids, np.empty(0, np.int64))
    update_s = time.perf_counter() - t0
    if staged is None:
        return {"added": m, "retrained": True}
    staged.commit()
    files.collect_garbage(fname.parent)
    both = Chain(src, new)
    truth = tuning.exact_topk(queries, both, 10)[1]
    after = run_probe(fname, queries, truth, tmp, args.threads)
    logger.info("n=%d: full build of the same %d vectors", n, n + m)
    folder = fname.parent / "full"
    folder.mkdir()
    t1 = time.perf_counter()
    full_info, gen_s = build(both, n + m, kind, args, folder / "index.faiss")
    full_s = time.perf_counter() - t1 - (gen_s if kind == index_info.KIND_ONDISK else 0.0)
    full = run_probe(folder / "index.faiss", queries, truth, tmp, args.threads)
    return {
        "added": m, "update_s": round(update_s, 2), "full_build_s": round(full_s, 2),
        "full_over_update": round(full_s / update_s, 1), "retrained": False,
        "recall_at_10_after_update": after["recall_at_10"], "recall_at_10_full_build": full["recall_at_10"],
        "recall_at_10_text_after_update": after["recall_at_10_text"],
        "recall_at_10_text_full_build": full["recall_at_10_text"],
        "p50_ms_after_update": after["p50_ms"], "nprobe_full_build": full_info.nprobe,
    }  # fmt: skip


# ---- the choice of codes ---------------------------------------------------------------------
def compare(n: int, args: argparse.Namespace, centres: np.ndarray, queries: np.ndarray) -> dict:
    """IVF-SQ8 against IVF-PQ32/PQ64 with and without SQ8 refinement, same centroids, in memory."""
    x, _ = Synthetic(n, centres, args.spread, args.seed).arrays()
    # ids are positions: IndexRefine adds by position
    truth = tuning.exact_topk(queries, arrays.array_chunks(x, np.arange(n)), 10)[1]
    nlist = tuning.choose_nlist(n)
    rng = np.random.default_rng(args.seed)
    sample = x[np.sort(rng.choice(n, size=min(n, ondisk.TRAIN_PER_LIST * nlist), replace=False))]
    centroids = ondisk.two_level_kmeans(sample, nlist, seed=args.seed)

    def quantizer() -> faiss.Index:
        h = faiss.IndexHNSWFlat(D, ondisk.HNSW_M, faiss.METRIC_INNER_PRODUCT)
        h.add(centroids)
        return h

    variants = {
        "ivf_sq8": lambda q: faiss.IndexIVFScalarQuantizer(q, D, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                           faiss.METRIC_INNER_PRODUCT),
        "ivf_pq32": lambda q: faiss.IndexIVFPQ(q, D, nlist, 32, 8, faiss.METRIC_INNER_PRODUCT),
        "ivf_pq32+sq8_refine": lambda q: faiss.IndexIVFPQ(q, D, nlist, 32, 8, faiss.METRIC_INNER_PRODUCT),
        "ivf_pq64+sq8_refine": lambda q: faiss.IndexIVFPQ(q, D, nlist, 64, 8, faiss.METRIC_INNER_PRODUCT),
    }  # fmt: skip
    out = {"n": n, "nlist": nlist, "target_recall": args.target_recall, "variants": {}}
    half = len(queries) // 2
    for name, make in variants.items():
        q = quantizer()
        ivf = make(q)
        refine = name.endswith("refine")
        index = ivf
        t0 = time.perf_counter()
        with ops.hnsw_ef(ivf, ondisk.EF_ADD):
            ivf.train(sample)
            if refine:
                sq = faiss.IndexScalarQuantizer(D, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
                sq.train(sample)
                index = faiss.IndexRefine(ivf, sq)
            train_s = time.perf_counter() - t0
            index.add(x)
        add_s = time.perf_counter() - t0 - train_s
        q.hnsw.efSearch = ondisk.EF_SEARCH
        best = None
        for k_factor in [1, 2, 4, 8, 16] if refine else [1]:
            for nprobe in (1, 2, 4, 8, 16, 32, 64):
                params = faiss.SearchParametersIVF(nprobe=nprobe)
                if refine:
                    params = faiss.IndexRefineSearchParameters(k_factor=k_factor, base_index_params=params)
                found = index.search(queries, 10, params=params)[1]
                r = tuning.recall_at_k(found[:half], truth[:half]), tuning.recall_at_k(found[half:], truth[half:])
                if min(r) >= args.target_recall or nprobe == 64:
                    break
            cand = {"k_factor": k_factor if refine else 0, "nprobe": nprobe, "recall_at_10": round(r[0], 4),
                    "recall_at_10_text": round(r[1], 4), "meets_target": min(r) >= args.target_recall}  # fmt: skip
            if best is None or min(r) > min(best["recall_at_10"], best["recall_at_10_text"]) or cand["meets_target"]:
                best = cand
                best["params"] = params
            if cand["meets_target"]:
                break
        params = best.pop("params")
        times = []
        for row in queries:
            t = time.perf_counter()
            index.search(row[None, :], 10, params=params)
            times.append(time.perf_counter() - t)
        ms = np.array(times[10:]) * 1e3
        bytes_per_vector = ivf.code_size + 8 + (D if refine else 0)
        out["variants"][name] = {
            **best, "bytes_per_vector": bytes_per_vector, "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p95_ms": round(float(np.percentile(ms, 95)), 3), "train_s": round(train_s, 2), "add_s": round(add_s, 2),
        }  # fmt: skip
        logger.info("compare %s: %s", name, out["variants"][name])
        del index, ivf, q
    return out


# ---- reporting -----------------------------------------------------------------------------
def _n(n: int) -> str:
    e = len(str(n)) - 1
    return f"1e{e}" if n == 10**e else str(n)


def table(rows: list[dict]) -> str:
    out = ["| vectors | kind | nlist / nprobe | recall@10 held-out / text | build s (train / add / merge / tune) "
           "| disk MB | fresh-process RSS MB (anon + file) | p50 / p95 ms | exact p50 ms |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        probe_ = f"{r['nlist']} / {r['nprobe']}" if r["nlist"] else "–"
        parts = f"{r['train_s']} / {r['add_s']} / {r['merge_s']} / {r['tune_s']}"
        out.append(f"| {_n(r['n'])} | {r['kind']} | {probe_} | {r['recall_at_10']:.3f} / {r['recall_at_10_text']:.3f} "
                   f"| {r['build_s']} ({parts}) | {r['file_mb']} | {r['rss_mb']} ({r['rss_anon_mb']} + "
                   f"{r['rss_file_mb']}) | {r['p50_ms']} / {r['p95_ms']} | {r['flat_p50_ms'] or '–'} |")  # fmt: skip
    inc = [r for r in rows if r.get("incremental") and not r["incremental"]["retrained"]]
    if inc:
        out += ["", "| vectors | +1 % update s | full build s | full / update | recall@10 after update / "
                "full build |", "|---|---|---|---|---|"]  # fmt: skip
        for r in inc:
            i = r["incremental"]
            out.append(f"| {_n(r['n'])} ({r['kind']}) | {i['update_s']} | {i['full_build_s']} | "
                       f"{i['full_over_update']}× | {i['recall_at_10_after_update']:.3f} / "
                       f"{i['recall_at_10_full_build']:.3f} |")  # fmt: skip
    return "\n".join(out)


def compare_table(c: dict) -> str:
    out = [f"n = {_n(c['n'])}, nlist {c['nlist']}, target recall@10 {c['target_recall']}:", "",
           "| codes | bytes/vector | nprobe | k_factor | recall@10 held-out / text | p50 / p95 ms | add s |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, v in c["variants"].items():
        out.append(f"| {name} | {v['bytes_per_vector']} | {v['nprobe']} | {v['k_factor'] or '–'} | "
                   f"{v['recall_at_10']:.3f} / {v['recall_at_10_text']:.3f} | {v['p50_ms']} / {v['p95_ms']} | "
                   f"{v['add_s']} |")  # fmt: skip
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e4,1e5,1e6", help="comma-separated index sizes (1e6 or 1000000)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "faiss_scale.json")
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--spread", type=float, default=1.0, help="noise norm around a unit cluster centre")
    ap.add_argument("--query-spread", type=float, default=1.5, help="noise norm of the text-like queries")
    ap.add_argument("--queries", type=int, default=200, help="held-out queries (and as many text-like ones)")
    ap.add_argument("--exact-below", type=float, default=50_000)
    ap.add_argument("--large-from", type=float, default=2e6, help="on-disk kind from this size")
    ap.add_argument("--shard-size", type=float, default=1e6)
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--max-train", type=int, default=100_000, help="training sample cap of the in-memory IVF")
    ap.add_argument("--max-train-large", type=int, default=ondisk.MAX_TRAIN, help="training sample cap, on-disk kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flat-max", type=float, default=1e6, help="time the exact flat index up to this size")
    ap.add_argument("--flat-queries", type=int, default=50, help="queries timed on the exact baseline")
    ap.add_argument("--incremental-max", type=float, default=1e6, help="time the +1 %% update up to this size")
    ap.add_argument("--compare", type=float, default=None, help="only compare SQ8 and PQ codes at this size")
    ap.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads (default: FAISS's own)")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the index files (default: system temp)")
    ap.add_argument("--probe", nargs=3, metavar=("INDEX", "QUERIES", "TRUTH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(probe(*map(Path, args.probe))))
        return
    for k in ("exact_below", "large_from", "shard_size", "flat_max", "incremental_max"):
        setattr(args, k, int(getattr(args, k)))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for name in ("indexer.vectors", "bench_faiss"):
        logging.getLogger(name).setLevel(logging.INFO)
    load_before = os.getloadavg()
    centres = centres_for(args.clusters, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    queries = np.vstack([around(centres, args.queries, args.spread, rng),  # held-out: like data, not data
                         around(centres, args.queries, args.query_spread, rng)])  # text-like: far from data
    res = {
        "date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "faiss": faiss.__version__, "omp_threads": faiss.omp_get_max_threads(),
        "params": {k: v for k, v in vars(args).items() if k not in ("out", "probe", "tmp")},
    }  # fmt: skip
    if args.compare:
        res["compare"] = compare(int(args.compare), args, centres, queries)
        print(compare_table(res["compare"]))
    else:
        rows = []
        with tempfile.TemporaryDirectory(prefix="elmsearch-bench-faiss-", dir=args.tmp) as tmp:
            for n in [int(float(s)) for s in args.sizes.split(",") if s.strip()]:
                t0 = time.perf_counter()
                rows.append(run_size(n, args, centres, queries, Path(tmp)))
                print(f"n={n}: done in {time.perf_counter() - t0:.1f} s", flush=True)
        res["results"] = rows
        res["table"] = table(rows)
        print(res["table"])
    res["loadavg_1min_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

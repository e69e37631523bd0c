"""Benchmark: `elmsearch serve` over HTTP on loopback — warm text-search latency and a 50-client load test.

Run from the repository: ``python bench/bench_serve.py [--n 100000] [--clients 50] [--seconds 5]
[--model MODEL_DIR] [--out FILE.json]``.

The index folder is ``bench_query.build_folder``'s (real metadata rows, synthetic clustered
embeddings, FAISS files and manifest as ``elmsearch index`` writes them, and the compiled
query model). ``elmsearch serve`` runs in its own process (``--threads 16``); the clients are
threads of this process with one keep-alive connection each (``http.client``):

- warm: one client, ``GET /api/search?q=...&k=10`` with ``--queries`` distinct new texts
  (text-cache misses), then the same texts again (cache hits); p50/p95 wall time per request;
- load: ``--clients`` clients for ``--seconds`` seconds, each cycling through search (new texts),
  ``/api/recordings/{id}``, ``.../similar`` and a filtered search; every non-200 answer is an
  error; p50/p95 per request and requests per second.

The client threads share the 2 cores with the server: the latencies include that.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from bench_query import build_folder, query_texts, train_quick_model
from run_all import machine, machine_line

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _ms(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"p50_ms": round(1000 * statistics.median(xs), 2), "p95_ms": round(1000 * xs[int(0.95 * (len(xs) - 1))], 2),
            "n": len(xs)}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> tuple[int, float]:
        t = time.perf_counter()
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        r.read()
        return r.status, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="recordings in the index")
    ap.add_argument("--model", type=Path, default=None, help="MODEL_DIR with a text side (default: train one)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "serve.json")
    args = ap.parse_args()

    from elmsearch.models.factory import load_model
    from elmsearch.models.identity import config_hash

    tmp = Path(tempfile.mkdtemp(prefix="elmsearch-bench-serve-", dir=args.tmp))
    proc = None
    res: dict = {"date": dt.date.today().isoformat(), "machine": machine(), "n": args.n, "clients": args.clients,
                 "seconds": args.seconds}
    try:
        model_dir = args.model.resolve() if args.model else train_quick_model(tmp / "train", args.seed)
        model = load_model(model_dir)
        folder = tmp / "index"
        print(f"building an index of {args.n} recordings ...", file=sys.stderr, flush=True)
        build_folder(folder, args.n, model, model_dir, config_hash(model), args.seed)
        port = _port()
        proc = subprocess.Popen([sys.executable, "-m", "cli", "-q", "serve", "--db", str(folder), "--port", str(port),
                                 "--threads", "16"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t0 = time.perf_counter()
        while True:
            try:
                if Client(port).get("/healthz")[0] == 200:
                    break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t0 > 120:
                    raise RuntimeError(f"serve did not start: {proc.stderr.read().decode()[-500:]}") from None
                time.sleep(0.2)
        res["start_s"] = round(time.perf_counter() - t0, 2)
        res["loadavg_1min_before"] = round(os.getloadavg()[0], 2)

        one = Client(port)
        texts = query_texts(args.queries + 4000, args.seed + 7)
        warm_texts, load_texts = texts[: args.queries], texts[args.queries:]
        for q in ("normal EEG", "focal slowing", "spike and wave"):
            one.get("/api/search?" + urllib.parse.urlencode({"q": q, "k": 10}))
        miss = [one.get("/api/search?" + urllib.parse.urlencode({"q": q, "k": 10})) for q in warm_texts]
        hit = [one.get("/api/search?" + urllib.parse.urlencode({"q": q, "k": 10})) for q in warm_texts]
        assert all(s == 200 for s, _ in miss + hit)
        res["warm_search_new_text"] = _ms([t for _, t in miss])
        res["warm_search_same_text"] = _ms([t for _, t in hit])

        ids = json.loads(subprocess.run([sys.executable, "-m", "cli", "-q", "search", "normal EEG", "--db", str(folder),
                                         "--json", "-k", "50"], cwd=REPO, capture_output=True, text=True,
                                        check=True).stdout)["hits"]
        rec_ids = [h["recording_id"] for h in ids]
        lock = threading.Lock()
        lat: dict[str, list[float]] = {"search": [], "show": [], "similar": [], "filtered": []}
        errors: list[str] = []
        pool = iter(load_texts)
        stop = time.perf_counter() + args.seconds
        start = threading.Barrier(args.clients + 1)

        def client(seed: int) -> None:
            rng = random.Random(seed)
            c = Client(port)
            start.wait()
            while time.perf_counter() < stop:
                kind = rng.choice(list(lat))
                with lock:
                    q = next(pool, "normal EEG")
                rid = rng.choice(rec_ids)
                path = {"search": "/api/search?" + urllib.parse.urlencode({"q": q, "k": 10}),
                        "show": f"/api/recordings/{rid}",
                        "similar": f"/api/recordings/{rid}/similar?k=10",
                        "filtered": "/api/search?" + urllib.parse.urlencode({"q": q, "k": 10, "sex": "F",
                                                                              "age_min": 40})}[kind]
                try:
                    status, t = c.get(path)
                except OSError as err:
                    status, t = -1, 0.0
                    c = Client(port)
                    with lock:
                        errors.append(f"{kind}: {err}")
                with lock:
                    if status == 200:
                        lat[kind].append(t)
                    elif status != -1:
                        errors.append(f"{kind}: HTTP {status}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        n_ok = sum(len(v) for v in lat.values())
        res["load"] = {"requests": n_ok, "errors": len(errors), "error_samples": errors[:5],
                       "requests_per_s": round(n_ok / wall, 1), "wall_s": round(wall, 2),
                       "all": _ms([x for v in lat.values() for x in v]),
                       **{k: _ms(v) for k, v in lat.items() if v}}
        res["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    w, s, ld = res["warm_search_new_text"], res["warm_search_same_text"], res["load"]
    print(f"`elmsearch serve` on loopback, {args.n:,} recordings ({machine_line(res['machine'])}; "
          f"load {res['loadavg_1min_before']} before):\n")
    print("| measure | p50 (ms) | p95 (ms) | n |\n|---|---|---|---|")
    print(f"| warm `GET /api/search`, new text, 1 client | {w['p50_ms']} | {w['p95_ms']} | {w['n']} |")
    print(f"| warm `GET /api/search`, same text, 1 client | {s['p50_ms']} | {s['p95_ms']} | {s['n']} |")
    for k in ("all", "search", "filtered", "show", "similar"):
        if k in ld:
            print(f"| {args.clients} clients, {k} | {ld[k]['p50_ms']} | {ld[k]['p95_ms']} | {ld[k]['n']} |")
    print(f"\n{args.clients} clients for {ld['wall_s']} s: {ld['requests']} requests, {ld['requests_per_s']} per s, "
          f"{ld['errors']} errors.")


if __name__ == "__main__":
    main()

"""Benchmark: peak memory and speed of `elmsearch train` with windows in memory and from a window store.

Run: ``python bench/bench_train_store.py [--sizes 40,400] [--out FILE.json]``.

For each size, a demo archive of that many recordings (seeded generator: ~3.4 h of EEG at 40,
~33 h at 400) and three runs of ``elmsearch train --recipe heads --epochs 1``, each in its own
process (peak RSS from ``wait4``): windows in memory (before), ``--window-store`` on an empty
store (it preprocesses and writes), and again on the filled store (it reads). Issue 27's target:
the store's peak RSS at 400 within 1.2x of its peak at 40 (in memory: 1.49x on 2026-12-01).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from elmsearch.datasets.demo import generate_archive

HERE = Path(__file__).resolve().parent


def run(args: list[str]) -> dict:
    """One ``elmsearch`` process: wall seconds and peak RSS (MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cli", "-q", *args], cwd=HERE.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()
    if status != 0:
        raise SystemExit(f"elmsearch {' '.join(args)} failed: {err[-2000:]}")
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def epoch_rate(model_dir: Path) -> float | None:
    log = model_dir / "train_log.jsonl"
    lines = log.read_text().splitlines() if log.is_file() else []
    rates = [json.loads(x).get("windows_per_s") for x in lines if '"windows_per_s"' in x]
    return rates[-1] if rates else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="40,400")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "train_store.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="elmsearch-train-store-"))
    result = {"date": dt.date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores", "sizes": {}}
    for n in [int(x) for x in args.sizes.split(",")]:
        archive = generate_archive(work / f"archive{n}", n_recordings=n, seed=0)
        common = ["train", str(archive.root), "--recipe", "heads", "--epochs", "1"]
        row = {"recordings": n, "hours": round(archive.hours, 1)}
        row["in_memory"] = run([*common, "--out", str(work / f"m{n}a")])
        row["in_memory"]["windows_per_s"] = epoch_rate(work / f"m{n}a")
        store = work / f"store{n}"
        row["store_first"] = run([*common, "--out", str(work / f"m{n}b"), "--window-store", str(store)])
        row["store_again"] = run([*common, "--out", str(work / f"m{n}c"), "--window-store", str(store)])
        row["store_again"]["windows_per_s"] = epoch_rate(work / f"m{n}c")
        row["store_gib"] = round(sum(f.stat().st_size for f in store.glob("*.npy")) / 2**30, 3)
        result["sizes"][str(n)] = row
        print(json.dumps(row), flush=True)
        shutil.rmtree(archive.root, ignore_errors=True)
    sizes = sorted(result["sizes"], key=int)
    if len(sizes) >= 2:
        a, b = result["sizes"][sizes[0]], result["sizes"][sizes[-1]]
        result["rss_ratio"] = {k: round(b[k]["peak_rss_mib"] / a[k]["peak_rss_mib"], 3)
                               for k in ("in_memory", "store_first", "store_again")}
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

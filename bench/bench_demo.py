"""Benchmark: demo archive generation rate (hours of EEG per minute) and size on disk.

Run: ``python bench/bench_demo.py [--n-recordings 100] [--out FILE.json]``. Writes the
archive to a temporary folder (removed afterwards) with the demo's default parameters.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from elmsearch.datasets.demo import generate_archive

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-recordings", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "demo.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="elmsearch-bench-"))
    try:
        t0 = time.perf_counter()
        made = generate_archive(tmp / "archive", n_recordings=args.n_recordings, seed=args.seed)
        seconds = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (tmp / "archive").rglob("*") if p.is_file())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "n_recordings": made.n_recordings, "hours": round(made.hours, 3), "seconds": round(seconds, 2),
           "hours_per_minute": round(made.hours / seconds * 60, 1), "size_mb": round(size / 1e6, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res))


if __name__ == "__main__":
    main()

"""Benchmark: re-running `elmsearch index` on an unchanged archive costs little more than the scan.

Run: ``python bench/bench_rerun.py [--n-recordings 100] [--seed 0] [--model DIR] [--out FILE.json]``.

1. A demo archive (``generate_archive(n, seed)``, 2-10 min recordings at 250 Hz) is indexed
   once with the model (default: the ELM authors' 5 s release in ``../shared``, as a hospital
   with the released weights would run it nightly).
2. Baseline, same run: the scan a re-run cannot avoid, ``discover`` (walk the tree, find the
   reports) plus one ``stat`` per recording.
3. ``index_archive`` again on the unchanged archive, in this process (model load included),
   three times; and the ``elmsearch index`` command as a user runs it (process start-up and
   imports included). Checks that nothing was embedded (``embed_eeg_s == 0``, all skipped).

Writes ``bench/results/rerun.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RELEASE = HERE.parents[1] / "shared" / "data" / "elm_pretrained" / "5s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-recordings", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=RELEASE)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "rerun.json")
    args = ap.parse_args()

    from elmsearch.archive.discovery import discover
    from elmsearch.datasets.demo import generate_archive
    from indexer.pipeline import index_archive

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        made = generate_archive(tmp / "archive", n_recordings=args.n_recordings, seed=args.seed)
        gen_s = time.perf_counter() - t
        db = tmp / "index"
        t = time.perf_counter()
        first = index_archive(made.root, db, args.model, precision="auto")
        first_s = time.perf_counter() - t

        scans = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            entries = discover(made.root)
            for e in entries:
                os.stat(e.path)
            scans.append(time.perf_counter() - t)
        reruns, summaries = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            summaries.append(index_archive(made.root, db, args.model, precision="auto"))
            reruns.append(time.perf_counter() - t)
        cli = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "cli", "-q", "index", str(made.root), "--db", str(db),
                            "--model", str(args.model)], check=True, cwd=HERE.parent, capture_output=True)
            cli.append(time.perf_counter() - t)

    last = summaries[-1]
    assert last.added == last.updated == last.failed == 0 and last.skipped == len(entries)
    assert last.timings["embed_eeg_s"] == 0
    res = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
        "n_recordings": len(entries), "hours": round(first.hours, 2), "generate_s": round(gen_s, 1),
        "first_index_s": round(first_s, 2),
        "scan_s": round(statistics.median(scans), 4),
        "rerun_s": round(statistics.median(reruns), 3),
        "rerun_run_only_s": last.timings["wall_s"],
        "rerun_cli_s": round(statistics.median(cli), 3),
        "rerun_embedded_windows": 0, "rerun_skipped": last.skipped,
    }
    res["rerun_over_first"] = round(res["rerun_s"] / first_s, 4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"| {res['n_recordings']} recordings, {res['hours']} h | seconds |\n|---|---|")
    for k in ("first_index_s", "scan_s", "rerun_run_only_s", "rerun_s", "rerun_cli_s"):
        print(f"| {k} | {res[k]} |")
    print(f"re-run / first index: {res['rerun_over_first']:.3f}; nothing embedded ({last.skipped} skipped)")


if __name__ == "__main__":
    main()

"""Benchmark: `elmsearch index --reembed` after a model change, reading the EDF files vs the window store.

Run: ``python bench/bench_reembed_store.py [--n 100 | --archive DIR] [--backend torch] [--out FILE.json]``.

A demo archive (seeded generator) or ``--archive`` (e.g. ``../shared/data/eegmat``), indexed
twice with model A, once plainly and once with ``--window-store``; then each index is
re-embedded with model B (another seed of the same architecture and preprocessing, so the stored
windows apply). Reported per re-embedding: wall seconds of the process and the run's own
``read_preprocess_s`` (reading, filtering, resampling, windowing in the reader workers) and
``embed_eeg_s``. Same machine, same run, the same files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from elmsearch.datasets.demo import generate_archive

HERE = Path(__file__).resolve().parent


def elmsearch(*args: str) -> dict:
    """One ``elmsearch index ... --json`` process: its summary and wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cli", "-q", "index", *args, "--json"], cwd=HERE.parent,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"elmsearch index {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return {**json.loads(proc.stdout), "process_s": round(time.perf_counter() - t0, 1)}


def save(seed: int, folder: Path) -> Path:
    """An EEG-only elm-5s MODEL_DIR of this seed."""
    import torch

    from elmsearch.models import create_model
    from elmsearch.models.factory import save_model

    torch.manual_seed(seed)
    model = create_model("elm-5s", text_dim=384)
    model.has_text = False
    return save_model(model, folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--archive", type=Path, default=None)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "reembed_store.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="elmsearch-reembed-"))
    root = args.archive or generate_archive(work / "archive", n_recordings=args.n, seed=0).root
    a, b = save(0, work / "model_a"), save(1, work / "model_b")
    result = {"date": dt.date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores", "archive": str(args.archive or f"demo, {args.n} recordings"),
              "backend": args.backend}
    common = ["--backend", args.backend]
    for name, extra in (("files", []), ("window_store", ["--window-store", str(work / "windows")])):
        db = str(work / f"index_{name}")
        first = elmsearch(str(root), "--db", db, "--model", str(a), *common, *extra)
        again = elmsearch(str(root), "--db", db, "--model", str(b), "--reembed", *common)
        result[name] = {"index": {k: first["timings"].get(k) for k in ("wall_s", "read_preprocess_s", "embed_eeg_s")}
                        | {"process_s": first["process_s"]},
                        "reembed": {k: again["timings"].get(k) for k in ("wall_s", "read_preprocess_s", "embed_eeg_s")}
                        | {"process_s": again["process_s"], "window_store": again.get("window_store")},
                        "hours": round(first["hours"], 2)}
        print(name, json.dumps(result[name]), flush=True)
    f, s = result["files"]["reembed"], result["window_store"]["reembed"]
    result["reembed_speedup"] = round(f["wall_s"] / s["wall_s"], 2)
    result["read_preprocess_ratio"] = round(f["read_preprocess_s"] / max(s["read_preprocess_s"], 1e-9), 1)
    print(json.dumps({k: result[k] for k in ("reembed_speedup", "read_preprocess_ratio")}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Benchmark: cold wall time of the commands that need no model, and of a text query (issue 12).

Run from the repository: ``python bench/bench_cold.py [--sizes 1000,100000] [--model MODEL_DIR]
[--runs 5] [--baseline DIR] [--out FILE.json]``.

The index folders are ``bench_query.build_folder``'s (real metadata rows, synthetic clustered
embeddings, FAISS files and manifest as ``elmsearch index`` writes them; no window rows). Each
command runs as ``python -m cli ...`` in a fresh interpreter: one warm-up run (OS page cache),
then the median and minimum of ``--runs`` runs. Commands:

- ``show ID``, ``stats``: no model, no torch, no FAISS;
- ``similar --recording ID``: stored embedding, FAISS, no torch;
- ``search TEXT``: the same query each time (text-embedding cache hit) and new queries (cache
  miss: the language model runs); both through the compiled query model the indexer leaves
  (``elmsearch.models.compiled``: ONNX Runtime, no torch);
- ``similar FILE.edf``: a file not in the index (``--edf``, default a real EEGMAT recording
  when ``../shared`` is there): read, preprocess, embed, search.

Each command is also run once under a probe that lists the heavy modules it imported.
``--baseline DIR [--baseline-python PY]`` runs every command a second time, its runs alternating
with the current checkout's, from another checkout (e.g. the commit
before the imports were made lazy: ``git worktree add DIR COMMIT``) on the same index folders.

Targets: ``show`` ≤ 0.5 s, ``search`` ≤ 1.0 s, ``similar FILE.edf`` ≤ 1.5 s at 1e5 recordings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_query import build_folder, query_texts, train_quick_model
from run_all import machine, machine_line

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HEAVY = ("torch", "transformers", "mne", "scipy", "faiss", "pyarrow", "sqlalchemy")
TARGETS_S = {"show": 0.5, "search (same text)": 1.0, "search (new text)": 1.0, "similar FILE.edf": 1.5}
SHARED_EDF = REPO.parent / "shared" / "data" / "eegmat" / "Subject00_1.edf"
PROBE = f"""
import atexit, json, sys
atexit.register(lambda: print("cold-imports: " + json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)),
                              file=sys.stderr))
sys.argv = ["elmsearch", *json.loads(sys.argv[1])]
from cli.app import main
main()
"""


# A cold start of an installed program finds its modules compiled: never time the compiler
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _wall(args: list[str], repo: Path, python: str) -> float:
    t = time.perf_counter()
    r = subprocess.run([python, "-m", "cli", *args], cwd=repo, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"elmsearch {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return wall


def _imports(args: list[str], repo: Path, python: str) -> list[str]:
    r = subprocess.run([python, "-c", PROBE, json.dumps(args)], cwd=repo, capture_output=True, text=True, env=ENV)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("cold-imports: ")]
    return json.loads(lines[-1].split(": ", 1)[1]) if lines else ["? " + r.stderr.strip()[-200:]]


def commands(folder: Path, rec_id: int, edf: Path) -> dict[str, list[str]]:
    """Name → arguments of each measured command (``search (new text)`` gets a new text per run)."""
    db = ["--db", str(folder)]
    return {"show": ["show", str(rec_id), *db], "stats": ["stats", *db],
            "similar --recording": ["-q", "similar", "--recording", str(rec_id), *db, "--json"],
            "search (same text)": ["-q", "search", "generalized spike and wave", *db, "--json"],
            "search (new text)": ["-q", "search", "{new}", *db, "--json"],
            "similar FILE.edf": ["-q", "similar", str(edf), *db, "--json"]}


def measure(folder: Path, rec_id: int, arms: dict[str, tuple[Path, str]], runs: int, seed: int,
            edf: Path) -> dict:
    """Median and minimum wall time and the heavy imports of every command, for each arm.

    ``arms`` maps a name to (checkout, Python interpreter). The arms' runs alternate, so a
    change in the machine's load falls on all of them alike. ``seed`` picks the new query texts.
    """
    out: dict = {arm: {} for arm in arms}
    new_texts = iter(query_texts((runs + 2) * len(arms), seed))
    for name, args in commands(folder, rec_id, edf).items():
        def argv(args=args):
            return [next(new_texts) if a == "{new}" else a for a in args]

        times: dict = {arm: [] for arm in arms}
        for repo, python in arms.values():  # warm-up: page cache (and, for the same text, the text cache)
            _wall(argv(), repo, python)
        for _ in range(runs):
            for arm, (repo, python) in arms.items():
                times[arm].append(_wall(argv(), repo, python))
        for arm, (repo, python) in arms.items():
            t = times[arm]
            out[arm][name] = {"median_s": round(statistics.median(t), 3), "min_s": round(min(t), 3),
                              "runs_s": [round(x, 3) for x in t], "imports": _imports(argv(), repo, python)}
    return out


def _markdown(res: dict) -> str:
    lines = [f"Cold commands (`python -m cli ...`, median of {res['runs']} after a warm-up run; "
             f"{machine_line(res['machine'])}; load {res['loadavg_1min_before_after']})", ""]
    has_base = any("baseline" in r for r in res["results"])
    head = "| n recordings | command | median s | min s | heavy imports |"
    head += " baseline median s | baseline imports |" if has_base else ""
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in res["results"]:
        for name, m in r["current"].items():
            row = (f"| {r['n']:,} | `{name}` | {m['median_s']:.3f} | {m['min_s']:.3f} | "
                   f"{', '.join(m['imports']) or '–'} |")
            if has_base:
                b = r.get("baseline", {}).get(name)
                row += f" {b['median_s']:.3f} | {', '.join(b['imports'])} |" if b else " | |"
            lines.append(row)
    lines.append("")
    lines.append("Targets at the largest size: " + ", ".join(
        f"`{k}` ≤ {v} s: {'met' if ok else 'not met'}" for k, (v, ok) in res["targets"].items()))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,100000", help="comma-separated numbers of recordings")
    ap.add_argument("--model", type=Path, default=None, help="MODEL_DIR with a text side (default: train one)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to time the same commands from")
    ap.add_argument("--baseline-python", default=sys.executable,
                    help="the baseline's interpreter, e.g. a venv with the earlier dependencies")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--edf", type=Path, default=None,
                    help="a recording not in the index for `similar FILE` (default: EEGMAT Subject00_1 or a demo EDF)")
    ap.add_argument("--tmp", type=Path, default=None, help="parent folder of the temporary indices")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "cold.json")
    args = ap.parse_args()

    from sqlalchemy import select

    from db import Recording
    from elmsearch.models.factory import load_model
    from elmsearch.models.identity import config_hash
    from indexer.store import IndexStore

    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="elmsearch-bench-cold-", dir=args.tmp))
    res: dict = {"date": dt.date.today().isoformat(), "machine": machine(), "runs": args.runs,
                 "baseline": str(args.baseline) if args.baseline else None,
                 "baseline_python": args.baseline_python if args.baseline else None, "results": []}
    try:
        model_dir = args.model.resolve() if args.model else train_quick_model(tmp / "train", args.seed)
        edf = args.edf or (SHARED_EDF if SHARED_EDF.is_file() else None)
        if edf is None:
            from elmsearch.datasets.demo import generate_archive

            edf = sorted(generate_archive(tmp / "edf", n_recordings=1, seed=args.seed + 99).root.rglob("*.edf"))[0]
        res["edf"] = str(edf)
        res["model"] = str(model_dir) if args.model else "quick (1 epoch, 16 demo recordings)"
        model = load_model(model_dir)
        model_hash = config_hash(model)
        for n in (int(x) for x in args.sizes.split(",") if x):
            folder = tmp / f"index-{n}"
            print(f"n={n}: building ...", file=sys.stderr, flush=True)
            build = build_folder(folder, n, model, model_dir, model_hash, args.seed)
            with IndexStore.open(folder).session() as s:
                rec_id = s.scalar(select(Recording.id).order_by(Recording.id).offset(n // 2).limit(1))
            arms = {"current": (REPO, sys.executable)}
            if args.baseline:
                arms["baseline"] = (args.baseline.resolve(), args.baseline_python)
            row = {"n": n, "build": {k: v for k, v in build.items() if k.endswith("_s")},
                   **measure(folder, rec_id, arms, args.runs, args.seed + 1000 + n, edf)}
            res["results"].append(row)
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["loadavg_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    largest = max(res["results"], key=lambda r: r["n"])["current"]
    res["targets"] = {k: (v, largest[k]["median_s"] <= v) for k, v in TARGETS_S.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(_markdown(res))


if __name__ == "__main__":
    main()

"""Benchmark: end-to-end indexing throughput (hours of EEG per second), elmsearch vs ELM's own path.

Run: ``python bench/bench_index.py [--n-recordings 100] [--seed 0] [--model DIR] [--out FILE.json]``.

All in one run and one process, on the demo archive (generated into a temporary folder):

0. Setup: ``generate_archive(n_recordings, seed)`` (default durations, 2-10 min at 250 Hz);
   a model trained for 2 epochs with ``demo_config`` (or ``--model DIR``; the weights do
   not matter for speed, only the architecture). A tiny warm-up index (a separate
   2-recording archive) loads the text encoder once so that its files are in the page cache.
1. elmsearch, end to end: ``index_archive(archive, fresh_db, model, n_jobs=J, precision=P)``
   for (J, P) in (1, fp32), (2, auto) and (1, auto) (``--runs``), each into its own fresh
   database folder: discovery,
   hashing, reading + preprocessing (worker processes when J > 1), EEG embedding, report
   parsing + sentence embedding (MiniLM through the text projection, which includes loading
   the text model), SQL writes and the FAISS build. Wall time is measured around the whole
   call (model load included) and as reported by the indexer (``wall_s``, the run only);
   stage times come from ``IndexSummary.timings`` (with J > 1, ``read_preprocess_s`` is
   summed over the workers and overlaps the embedding, so stages do not add up to wall).
2. ELM's path, EEG only (no database, no text): per EDF ``mne.io.read_raw_edf(preload=True)``,
   ``elm_reference`` (MNE FIR filter 0.1-49 Hz at the native rate, bipolar montage, scale,
   clip, ``Raw.resample`` to 100 Hz), ``make_windows(x, 5.0)``, then
   ``encode_eeg(all windows in one batch, fp32)`` — the naive way. Timed per stage.
3. elmsearch, EEG only, in this process, no database: ``read_recording`` (header check,
   17 electrodes, fast preprocessing) + ``make_windows`` + ``encode_eeg(batch 32,
   precision="auto")``. Timed per stage. Steps 2 and 3 run interleaved per recording
   (alternating which goes first), so that load from other processes on a shared machine
   hits both alike; their wall time is the sum of their per-recording times. Also checks
   how close the two paths' window embeddings are (cosine; fp32 MNE vs bf16 fast path).

The load average before/after each phase and the CPU cores this process (and its workers)
used per phase are recorded: with 2 torch threads, ~2 cores used means the run had the
machine to itself; on a shared machine compare numbers only from such quiet runs.

Ratios: end-to-end index (with DB and text) vs the ELM EEG-only path, and EEG-only vs
EEG-only. Targets (from the issue): >= 0.3 h EEG/s end to end and >= 5x the ELM path.
Prints a Markdown table; writes all numbers as JSON (default ``bench/results/index.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import mne
import numpy as np
import torch

from elmsearch.archive.discovery import discover
from elmsearch.datasets.demo import generate_archive
from elmsearch.io.recording import make_windows
from elmsearch.io.windowed import read_recording
from elmsearch.models.factory import load_model
from elmsearch.models.identity import cpu_has_bf16
from elmsearch.signal.preprocessing import PreprocessingParams, elm_reference
from elmsearch.train.trainer import build_model, demo_config, load_items, train
from indexer.pipeline import index_archive

HERE = Path(__file__).resolve().parent
TARGET_HPS = 0.3
TARGET_RATIO = 5.0
DEFAULT_RUNS = "1:fp32,2:auto,1:auto"


def _cpu_s() -> float:
    """CPU seconds of this process and its reaped children (worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _index(archive: Path, db_dir: Path, model_dir: Path, n_jobs: int, precision: str) -> dict:
    c0, t0 = _cpu_s(), time.perf_counter()
    s = index_archive(archive, db_dir, model_dir, n_jobs=n_jobs, precision=precision)
    wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    if s.failed:
        raise SystemExit(f"indexing failed for {s.failed} recordings: {s.failures[:3]}")
    return {"n_jobs": n_jobs, "precision": precision, "n_recordings": s.added, "hours": s.hours,
            "wall_s": wall, "run_wall_s": s.timings["wall_s"], "h_per_s": s.hours / wall,
            "cpu_s": cpu, "cores_used": cpu / wall, "stages": dict(s.timings)}


def _elm_one(f: Path, model) -> tuple[dict, float, np.ndarray]:
    """ELM's way, one EDF: MNE read (all channels), MNE preprocessing, one fp32 batch."""
    t0 = time.perf_counter()
    raw = mne.io.read_raw_edf(f, preload=True, verbose="error")
    t1 = time.perf_counter()
    x = elm_reference(raw)
    t2 = time.perf_counter()
    w = make_windows(x, 5.0)
    t3 = time.perf_counter()
    e = model.encode_eeg(w, batch_size=len(w) or 1, precision="fp32")
    t4 = time.perf_counter()
    return ({"read_s": t1 - t0, "preprocess_s": t2 - t1, "window_s": t3 - t2, "embed_eeg_s": t4 - t3},
            raw.n_times / raw.info["sfreq"], e)


def _ours_one(f: Path, model, params: PreprocessingParams) -> tuple[dict, float, np.ndarray]:
    """elmsearch's EEG side, one EDF: read_recording + make_windows + encode_eeg(auto, batch 32)."""
    t0 = time.perf_counter()
    rec = read_recording(f, params, min_duration=model.window_seconds)
    t1 = time.perf_counter()
    w = make_windows(rec, model.window_seconds)
    t2 = time.perf_counter()
    e = model.encode_eeg(w, precision="auto", backend="auto")
    t3 = time.perf_counter()
    return ({"read_preprocess_s": t1 - t0, "window_s": t2 - t1, "embed_eeg_s": t3 - t2},
            rec.meta.duration, e)


def _eeg_only(files: list[Path], model, params: PreprocessingParams) -> tuple[dict, dict, np.ndarray]:
    """Both EEG-only paths, interleaved per recording (alternating which goes first) so that
    load from other processes on a shared machine hits both alike. Wall = sum of the per-file times."""
    acc = {"elm": ({}, [0.0], [0]), "ours": ({}, [0.0], [0])}
    cos = []
    for i, f in enumerate(files):
        order = ("elm", "ours") if i % 2 == 0 else ("ours", "elm")
        embs = {}
        for name in order:
            st, seconds, e = _elm_one(f, model) if name == "elm" else _ours_one(f, model, params)
            stages, secs, nwin = acc[name]
            for k, v in st.items():
                stages[k] = stages.get(k, 0.0) + v
            secs[0] += seconds
            nwin[0] += len(e)
            embs[name] = e
        cos.append(np.sum(embs["elm"] * embs["ours"], axis=1))
    out = {}
    for name, (stages, secs, nwin) in acc.items():
        wall = sum(stages.values())
        out[name] = {"wall_s": wall, "hours": secs[0] / 3600, "h_per_s": secs[0] / 3600 / wall,
                     "n_windows": nwin[0], "stages": stages}
    return out["elm"], out["ours"], np.concatenate(cos)


def _r(d: dict, nd: int = 3) -> dict:
    return {k: (round(v, nd) if isinstance(v, float) else _r(v, nd) if isinstance(v, dict) else v)
            for k, v in d.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-recordings", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=None, help="MODEL_DIR to use instead of training one")
    ap.add_argument("--runs", default=DEFAULT_RUNS,
                    help=f"index runs as n_jobs:precision,... (default {DEFAULT_RUNS})")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "index.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="elmsearch-bench-index-"))
    try:
        t0 = time.perf_counter()
        made = generate_archive(tmp / "archive", n_recordings=args.n_recordings, seed=args.seed)
        warm = generate_archive(tmp / "warm", n_recordings=2, seed=args.seed + 1, min_minutes=2, max_minutes=2)
        t_gen = time.perf_counter() - t0
        print(f"archive: {made.n_recordings} recordings, {made.hours:.2f} h, generated in {t_gen:.0f} s",
              flush=True)
        t0 = time.perf_counter()
        if args.model is not None:
            model_dir = args.model
        else:
            model_dir = tmp / "model"
            torch.manual_seed(args.seed)
            train(build_model("elm-5s"), load_items(made.root, 5.0, "sentence"), model_dir,
                  dataclasses.replace(demo_config(seed=args.seed, device="cpu"), epochs=2), resume=False)
        t_model = time.perf_counter() - t0
        print(f"model: {model_dir} ({t_model:.0f} s)", flush=True)

        # warm-up: text model files into the page cache, imports, worker start-up code paths
        warm_res = _index(warm.root, tmp / "idx-warm", model_dir, 1, "fp32")
        print(f"warm-up index: {warm_res['wall_s']:.1f} s "
              f"(embed_text_s {warm_res['stages']['embed_text_s']:.1f})", flush=True)

        runs, load = {}, {}
        for spec in args.runs.split(","):
            n_jobs, precision = int(spec.split(":")[0]), spec.split(":")[1]
            name = f"index_j{n_jobs}_{precision}"
            load[f"{name}_before"] = os.getloadavg()
            runs[name] = _index(made.root, tmp / f"idx-{name}", model_dir, n_jobs, precision)
            load[f"{name}_after"] = os.getloadavg()
            r = runs[name]
            print(f"{name}: {r['wall_s']:.1f} s, {r['hours']:.2f} h, {r['h_per_s']:.3f} h/s, {r['stages']}",
                  flush=True)

        model = load_model(model_dir)
        params = PreprocessingParams.from_dict(model.config.preprocessing or {})
        files = [e.path for e in discover(made.root)]
        # warm up both encode paths (first-call allocations, oneDNN kernels)
        _eeg_only(files[:2], model, params)
        load["eeg_only_before"] = os.getloadavg()
        c0, t0 = _cpu_s(), time.perf_counter()
        elm, ours, cos = _eeg_only(files, model, params)
        eeg_only_cores = (_cpu_s() - c0) / (time.perf_counter() - t0)
        load["eeg_only_after"] = os.getloadavg()
        print(f"ELM path: {elm['wall_s']:.1f} s, {elm['h_per_s']:.3f} h/s, {_r(elm['stages'])}", flush=True)
        print(f"elmsearch EEG only: {ours['wall_s']:.1f} s, {ours['h_per_s']:.3f} h/s, {_r(ours['stages'])}",
              flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    best = max(runs.values(), key=lambda r: r["h_per_s"])
    ratios = {f"{name}_over_elm": r["h_per_s"] / elm["h_per_s"] for name, r in runs.items()}
    ratios["eeg_only_over_elm"] = ours["h_per_s"] / elm["h_per_s"]
    ratios["elm_preprocess_over_ours_read_preprocess"] = (
        (elm["stages"]["read_s"] + elm["stages"]["preprocess_s"]) / ours["stages"]["read_preprocess_s"])
    ratios["elm_embed_over_ours_embed"] = elm["stages"]["embed_eeg_s"] / ours["stages"]["embed_eeg_s"]
    res = {"date": dt.date.today().isoformat(),
           "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}, "
                      f"{os.cpu_count()} cores, bf16 units: {cpu_has_bf16()}",
           "python": platform.python_version(), "torch": torch.__version__, "mne": mne.__version__,
           "torch_threads": torch.get_num_threads(), "n_recordings": made.n_recordings,
           "hours": made.hours, "n_windows": ours["n_windows"], "generate_s": t_gen,
           "model": "given" if args.model is not None else "trained 2 epochs (demo_config)",
           "model_s": t_model, "warmup_index": warm_res, "index": runs, "elm_eeg_only": elm,
           "elmsearch_eeg_only": ours, "ratios": ratios,
           "eeg_only_cores_used": eeg_only_cores,
           "loadavg_1_5_15min": {k: [round(x, 2) for x in v] for k, v in load.items()},
           "targets": {"h_per_s": TARGET_HPS, "ratio": TARGET_RATIO,
                       "h_per_s_met": bool(best["h_per_s"] >= TARGET_HPS),
                       "ratio_met": bool(best["h_per_s"] / elm["h_per_s"] >= TARGET_RATIO)}}
    res = _r(res)
    res["window_cosine_elm_vs_elmsearch"] = {"min": round(float(cos.min()), 5),
                                             "median": round(float(np.median(cos)), 5)}

    def row(name: str, r: dict, read: float | None, pre: float, emb: float, text: float | None,
            db: float | None, cores: float) -> str:
        def f(v):
            return "-" if v is None else f"{v:.1f}"
        return (f"| {name} | {r['wall_s']:.1f} | {r['h_per_s']:.3f} | {r['h_per_s'] / elm['h_per_s']:.1f}x | "
                f"{f(read)} | {f(pre)} | {f(emb)} | {f(text)} | {f(db)} | {cores:.2f} |")

    lines = ["| path | wall (s) | h EEG/s | vs ELM | read (s) | (read +) preprocess (s) | embed EEG (s) "
             "| embed text (s) | DB + FAISS (s) | CPU cores used |", "|" + "---|" * 10]
    for r in runs.values():
        s = r["stages"]
        lines.append(row(f"elmsearch index, n_jobs={r['n_jobs']}, {r['precision']}", r, None,
                         s["read_preprocess_s"], s["embed_eeg_s"], s["embed_text_s"], s["db_s"] + s["faiss_s"],
                         r["cores_used"]))
    s = ours["stages"]
    lines.append(row("elmsearch EEG only (no DB/text), auto, batch 32", ours, None,
                     s["read_preprocess_s"] + s["window_s"], s["embed_eeg_s"], None, None, eeg_only_cores))
    s = elm["stages"]
    lines.append(row("ELM path EEG only (MNE, fp32, 1 batch/recording)", elm, s["read_s"],
                     s["preprocess_s"] + s["window_s"], s["embed_eeg_s"], None, None, eeg_only_cores))
    table = "\n".join(lines)
    res["table"] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    t = res["targets"]
    print(f"\n{res['date']}, {res['machine']}, torch {torch.__version__} ({res['torch_threads']} threads); "
          f"{res['n_recordings']} recordings, {res['hours']:.2f} h of EEG, {res['n_windows']} windows\n\n{table}\n\n"
          f"targets: >= {TARGET_HPS} h/s end to end: {'met' if t['h_per_s_met'] else 'NOT met'} "
          f"(best {best['h_per_s']:.3f}); >= {TARGET_RATIO:g}x the ELM path: "
          f"{'met' if t['ratio_met'] else 'NOT met'} (best {best['h_per_s'] / elm['h_per_s']:.1f}x); "
          f"EEG only vs EEG only {ratios['eeg_only_over_elm']:.1f}x\n"
          f"window embeddings, ELM path vs elmsearch: cosine min {cos.min():.4f}, median {np.median(cos):.4f}")


if __name__ == "__main__":
    main()

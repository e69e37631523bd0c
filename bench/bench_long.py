"""Benchmark: long recordings in bounded memory (chunked path) vs reading the whole file.

Run: ``python bench/bench_long.py [--quick] [--hours 24] [--sfreq 256] [--embed] [--out FILE.json]``.

Writes synthetic TUH-style EDF files (21 electrodes + nothing else, ``--sfreq`` Hz, EEG-like
noise, an alpha rhythm, slow drift, DC offsets) into a temporary folder, chunk by chunk with
a minimal EDF writer (a 24 h file at 256 Hz is 0.9 GB; it is deleted afterwards). Then, each
case in its own fresh child process (so peak RSS is that case's alone: the child's
``VmHWM``, which unlike ``ru_maxrss`` does not inherit the parent's RSS at the fork):

- chunked: ``WindowedRecording(fname, window_s=5, chunk_s=...).iter_windows()``, every
  chunk's windows consumed (and with ``--embed`` embedded by the ELM 5 s encoder,
  ``encode_eeg(windows, precision="auto")``, chunk by chunk), on the long file and on the
  short ones;
- whole file (the baseline): ``read_recording`` + ``make_windows`` (+ the same embedding) on
  the short files (1 h and 2 h by default), to show how its memory grows with duration.

Reports peak RSS (MB; also the RSS right after the imports, i.e. the interpreter, numpy,
MNE and with ``--embed`` torch + the model), wall time and throughput (hours of EEG per
second), the cores the case used and the load average around it (on a shared machine
compare timings only from quiet runs), and for the 2 h file the minimum per-channel correlation between the chunked
and the whole-file windows. Prints a Markdown table; writes JSON (default
``bench/results/long.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = HERE.parents[1] / "shared" / "data" / "elm_pretrained" / "5s"
PHYS_UV = 3000.0
DIG = 32767


# ---- a synthetic long EDF, written record by record ------------------------------------------


def _edf_header(labels: list[str], sfreq: int, n_records: int) -> bytes:
    ns = len(labels)

    def f(value, width: int) -> bytes:
        text = str(value).encode("ascii")[:width]
        return text.ljust(width, b" ")

    fixed = (f("0", 8) + f("X F 01-JAN-1961 synth Age:53", 80)
             + f("Startdate 04-MAR-2015 X X X", 80) + f("04.03.15", 8) + f("10.20.30", 8)
             + f(256 * (ns + 1), 8) + f("", 44) + f(n_records, 8) + f(1, 8) + f(ns, 4))
    cols = [
        [f(lab, 16) for lab in labels],
        [f("AgAgCl electrode", 80)] * ns,
        [f("uV", 8)] * ns,
        [f(-PHYS_UV, 8)] * ns,
        [f(PHYS_UV, 8)] * ns,
        [f(-DIG, 8)] * ns,
        [f(DIG, 8)] * ns,
        [f("HP:0.1Hz LP:75Hz", 80)] * ns,
        [f(sfreq, 8)] * ns,
        [f("", 32)] * ns,
    ]
    return fixed + b"".join(b"".join(col) for col in cols)


def write_long_edf(path: Path, hours: float, sfreq: int = 256, seed: int = 0,
                   block_s: int = 600) -> Path:
    """Write a synthetic EEG EDF of ``hours`` (21 TUH-labelled 10-20 electrodes) in blocks."""
    import scipy.signal as ss

    from elmsearch.signal.channels import STANDARD_1020, tuh_channel_name

    labels = [tuh_channel_name(e) for e in STANDARD_1020]
    n_chans = len(labels)
    n_records = int(round(hours * 3600))
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(-300, 300, (n_chans, 1)).astype(np.float32)
    alpha_f = rng.uniform(8, 12, (n_chans, 1))
    alpha_phase = rng.uniform(0, 2 * np.pi, (n_chans, 1))
    drift_period = rng.uniform(120, 900, (n_chans, 1))
    a = np.exp(-2 * np.pi * 1.0 / sfreq)  # a leaky integrator for a 1/f-ish low end
    zi = np.zeros((n_chans, 1))
    scale = DIG / PHYS_UV
    with open(path, "wb") as fh:
        fh.write(_edf_header(labels, sfreq, n_records))
        for r0 in range(0, n_records, block_s):
            nr = min(block_s, n_records - r0)
            t = (r0 + np.arange(nr * sfreq) / sfreq)[None, :]
            white = rng.standard_normal((n_chans, nr * sfreq), dtype=np.float32)
            low, zi = ss.lfilter([1 - a], [1, -a], white, axis=1, zi=zi)
            x = 8 * white + 150 * low.astype(np.float32) + offsets
            x += (20 * np.sin(2 * np.pi * alpha_f * t + alpha_phase)).astype(np.float32)
            x += (50 * np.sin(2 * np.pi * t / drift_period)).astype(np.float32)
            d = np.clip(np.round(x * scale), -DIG, DIG).astype("<i2")
            fh.write(d.reshape(n_chans, nr, sfreq).transpose(1, 0, 2).tobytes())
    return path


# ---- one case, in a child process -------------------------------------------------------------


def _rss_mb() -> float:
    """Peak RSS of this process so far, MB.

    ``VmHWM`` from ``/proc/self/status``: ``getrusage(RUSAGE_SELF).ru_maxrss`` would do, but on
    Linux it survives ``fork`` + ``exec``, so a child started by a big parent reports at least
    the parent's RSS at the fork. ``ru_maxrss`` where there is no ``/proc``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args) -> None:
    """Run one case and print its numbers as one JSON line (peak RSS of this process only)."""
    import logging

    import mne

    from elmsearch.io.recording import make_windows
    from elmsearch.io.windowed import WindowedRecording, read_recording

    logging.getLogger("elmsearch").setLevel(logging.ERROR)
    mne.set_log_level("ERROR")
    model = None
    if args.embed:
        from elmsearch.models import load_model

        model = load_model(args.model)
    if args.child == "index":
        index_child(args)
        return
    rss_ready = _rss_mb()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = ru.ru_utime + ru.ru_stime
    t_pre = t_emb = 0.0
    n_windows, embs, saved = 0, [], []
    t0 = time.perf_counter()
    if args.child == "chunked":
        it = WindowedRecording(args.file, window_s=args.window_s, chunk_s=args.chunk_s,
                               overlap_s=args.overlap_s).iter_windows()
        t = time.perf_counter()
        for _, windows, _ in it:
            t_pre += time.perf_counter() - t
            n_windows += len(windows)
            if args.save:
                saved.append(windows)
            if model is not None:
                t = time.perf_counter()
                embs.append(model.encode_eeg(windows, precision="auto"))
                t_emb += time.perf_counter() - t
            t = time.perf_counter()
        t_pre += time.perf_counter() - t
    else:
        rec = read_recording(args.file)
        windows = np.ascontiguousarray(make_windows(rec, args.window_s))
        del rec
        t_pre = time.perf_counter() - t0
        n_windows = len(windows)
        if args.save:
            saved.append(windows)
        if model is not None:
            t = time.perf_counter()
            embs.append(model.encode_eeg(windows, precision="auto"))
            t_emb = time.perf_counter() - t
    wall = time.perf_counter() - t0
    peak = _rss_mb()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru.ru_utime + ru.ru_stime - cpu0
    if args.save:
        np.save(args.save, np.concatenate(saved))
    print(json.dumps({"rss_ready_mb": round(rss_ready, 1), "peak_rss_mb": round(peak, 1),
                      "wall_s": round(wall, 2), "preprocess_s": round(t_pre, 2),
                      "embed_s": round(t_emb, 2), "cores_used": round(cpu / wall, 2),
                      "n_windows": n_windows,
                      "n_emb": int(sum(len(e) for e in embs))}))


def index_child(args) -> None:
    """``elmsearch index`` of an archive holding just this file (-j 1: one reader worker), EEG-only model.

    Peak RSS of the indexing process (``VmHWM``) and of its reader worker (``RUSAGE_CHILDREN``,
    which counts the pages the worker shares with its parent since the fork: an upper bound).
    """
    import tempfile as tf

    from indexer.pipeline import index_archive

    with tf.TemporaryDirectory(dir=args.file.parent) as tmp:
        archive = Path(tmp) / "archive"
        archive.mkdir()
        os.symlink(args.file, archive / args.file.name)
        t0 = time.perf_counter()
        summary = index_archive(archive, Path(tmp) / "index", args.model, n_jobs=1, precision="auto")
        wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"rss_ready_mb": 0.0, "peak_rss_mb": round(_rss_mb(), 1), "worker_peak_rss_mb": round(worker, 1),
                      "wall_s": round(wall, 2), "preprocess_s": summary.timings["read_preprocess_s"],
                      "embed_s": summary.timings["embed_eeg_s"], "cores_used": round((ru.ru_utime + ru.ru_stime)
                                                                                     / wall, 2),
                      "n_windows": summary.counts.get("eeg_window", 0), "n_emb": summary.counts.get("eeg_window", 0),
                      "failed": summary.failed}))


def run_case(mode: str, fname: Path, hours: float, args, save: Path | None = None,
             embed: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--file", str(fname),
           "--chunk-s", str(args.chunk_s), "--overlap-s", str(args.overlap_s),
           "--window-s", str(args.window_s), "--model", str(args.model)]
    if embed:
        cmd.append("--embed")
    if save is not None:
        cmd += ["--save", str(save)]
    label = f"{mode} {hours:g} h{' + embed' if embed else ''}"
    print(f"[{dt.datetime.now():%H:%M:%S}] {label} ...", flush=True)
    load_before = os.getloadavg()[0]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{label} failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row.update(case=label, mode=mode, hours=hours, embed=embed,
               load_before=round(load_before, 2), load_after=round(os.getloadavg()[0], 2),
               hours_per_s=round(hours / row["wall_s"], 3),
               mb_per_h=round(row["peak_rss_mb"] / hours, 1))
    if "worker_peak_rss_mb" in row:
        print(f"  reader worker peak RSS {row['worker_peak_rss_mb']:.0f} MB", flush=True)
    print(f"  peak RSS {row['peak_rss_mb']:.0f} MB, {row['wall_s']:.1f} s, "
          f"{row['hours_per_s']:.3f} h EEG/s, load {row['load_before']:.1f} -> {row['load_after']:.1f}",
          flush=True)
    return row


def _min_corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.transpose(1, 0, 2).reshape(a.shape[1], -1).astype(np.float64)
    b = b.transpose(1, 0, 2).reshape(b.shape[1], -1).astype(np.float64)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    return float(((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))).min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 3 h long file and 0.5/1 h baselines")
    ap.add_argument("--hours", type=float, default=24.0, help="length of the long recording")
    ap.add_argument("--baseline-hours", default="1,2", help="comma-separated short file lengths")
    ap.add_argument("--sfreq", type=int, default=256)
    ap.add_argument("--chunk-s", type=float, default=1800.0)
    ap.add_argument("--overlap-s", type=float, default=60.0)
    ap.add_argument("--window-s", type=float, default=5.0)
    ap.add_argument("--embed", action="store_true",
                    help="also embed with the ELM 5 s encoder (short files; with --embed-long the long one too)")
    ap.add_argument("--embed-long", action="store_true", help="embed the long file too (~25 s per hour on 2 cores)")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--tmp", type=Path, default=None, help="parent folder of the temporary EDF files")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "long.json")
    ap.add_argument("--index", action="store_true",
                    help="also `elmsearch index` the long file end to end (reader worker + embedding, SQL, FAISS)")
    ap.add_argument("--child", choices=("chunked", "whole", "index"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--file", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--save", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.hours, args.baseline_hours = 3.0, "0.5,1"
    base_hours = [float(h) for h in args.baseline_hours.split(",") if h]
    if (args.embed or args.embed_long or args.index) and not args.model.is_dir():
        raise SystemExit(f"--embed: no model at {args.model}")
    from run_all import machine

    tmp = Path(tempfile.mkdtemp(prefix="bench-long-", dir=args.tmp))
    rows, files = [], {}
    try:
        for hours in sorted({*base_hours, args.hours}):
            t = time.perf_counter()
            files[hours] = write_long_edf(tmp / f"synth_{hours:g}h.edf", hours, args.sfreq)
            print(f"wrote {files[hours].name}: {files[hours].stat().st_size / 2**30:.2f} GiB in "
                  f"{time.perf_counter() - t:.0f} s", flush=True)
        check_h = max(base_hours)
        for hours in base_hours:
            save = tmp / "whole.npy" if hours == check_h else None
            rows.append(run_case("whole", files[hours], hours, args, save=save))
        rows.append(run_case("chunked", files[check_h], check_h, args, save=tmp / "chunked.npy"))
        whole_w, chunked_w = np.load(tmp / "whole.npy"), np.load(tmp / "chunked.npy")
        same_shape = whole_w.shape == chunked_w.shape
        corr = _min_corr(whole_w, chunked_w) if same_shape else float("nan")
        del whole_w, chunked_w
        rows.append(run_case("chunked", files[args.hours], args.hours, args))
        if args.embed:
            rows.append(run_case("whole", files[check_h], check_h, args, embed=True))
            rows.append(run_case("chunked", files[check_h], check_h, args, embed=True))
        if args.embed_long:
            rows.append(run_case("chunked", files[args.hours], args.hours, args, embed=True))
        if args.index:
            rows.append(run_case("index", files[args.hours], args.hours, args))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    m = machine()
    lines = ["| case | peak RSS (MB) | RSS after imports (MB) | wall (s) | h EEG/s | windows "
             "| cores used | load before/after |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['peak_rss_mb']:.0f} | {r['rss_ready_mb']:.0f} | "
                     f"{r['wall_s']:.1f} | {r['hours_per_s']:.3f} | {r['n_windows']} | "
                     f"{r['cores_used']:.2f} | {r['load_before']:.1f}/{r['load_after']:.1f} |")
    table = "\n".join(lines)
    summary = {"date": dt.date.today().isoformat(), "machine": m, "quick": args.quick,
               "sfreq": args.sfreq, "n_chans_file": 21, "chunk_s": args.chunk_s,
               "overlap_s": args.overlap_s, "window_s": args.window_s,
               "chunked_vs_whole": {"hours": check_h, "same_n_windows": same_shape,
                                    "min_channel_corr": corr},
               "rows": rows, "table": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"\n{summary['date']}, {m['cpu']}, {m['cores']} cores, {m.get('memory_gb')} GB; "
          f"{args.sfreq} Hz, 21 electrodes, chunks of {args.chunk_s:g} s + {args.overlap_s:g} s overlap\n")
    print(table)
    print(f"\nchunked vs whole on {check_h:g} h: same windows {same_shape}, min channel corr {corr:.7f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""EDF reading: the memory-mapped reader (elmsearch/io/edf_mmap.py) vs MNE, on every EEGMAT file.

Two comparisons, both sides timed in the same run, file by file, interleaved:

- read: the 17 montage electrodes, from the file name to a float64 array in volts.
  Fast: ``inspect_edf`` (header) + ``edf_mmap.EdfSignalReader(...).read()``.
  MNE: ``mne.io.read_raw_edf(preload=True)`` + ``get_data(picks)``. Values compared bit for bit.
- recording: read + preprocess. Fast: ``windowed.read_recording`` (the fast reader, then
  numpy preprocessing). ELM's path: ``mne.io.read_raw_edf(preload=True)`` +
  ``preprocessing.elm_reference(raw)``.

Per file: the best of ``--repeat`` runs (read) and of ``--repeat-recording`` runs (read +
preprocess), each side the same, so that a busy shared machine's pauses count less; reported:
the median over files in ms and the ratio of medians. Writes ``bench/results/edfread.json`` and prints a
Markdown table. Run from ``bench/``: ``python bench_edfread.py [--quick]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
EEGMAT = REPO.parent / "shared" / "data" / "eegmat"


def _best_ms(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per file for the read comparison")
    ap.add_argument("--repeat-recording", type=int, default=2, help="runs per file for read + preprocess")
    ap.add_argument("--quick", action="store_true", help="first 12 files only")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "edfread.json")
    args = ap.parse_args()

    import mne
    from run_all import machine

    from elmsearch.io.edf_mmap import EdfSignalReader
    from elmsearch.io.meta import inspect_edf
    from elmsearch.io.source import electrode_picks
    from elmsearch.io.windowed import read_recording
    from elmsearch.signal.channels import TCP_ELECTRODES
    from elmsearch.signal.preprocessing import elm_reference

    files = sorted(EEGMAT.glob("*.edf"))[: 12 if args.quick else None]
    if not files:
        raise SystemExit(f"no EEGMAT files in {EEGMAT}")
    mne.set_log_level("error")
    warnings.simplefilter("ignore")

    def fast_read(f):
        header, _, el = inspect_edf(f)
        return EdfSignalReader(f, header, [el[e] for e in TCP_ELECTRODES]).read()

    def mne_read(f):
        header, _, el = inspect_edf(f)
        raw = mne.io.read_raw_edf(f, preload=True, verbose="error")
        return raw.get_data(picks=electrode_picks(raw, header, list(el.values())))

    def elm_path(f):
        return elm_reference(mne.io.read_raw_edf(f, preload=True, verbose="error"))

    fast_read(files[0]), mne_read(files[0]), read_recording(files[0]), elm_path(files[0])  # warm up
    rows = []
    for f in files:
        t_fast, a = _best_ms(lambda f=f: fast_read(f), args.repeat)
        t_mne, b = _best_ms(lambda f=f: mne_read(f), args.repeat)
        t_rec, _ = _best_ms(lambda f=f: read_recording(f), args.repeat_recording)
        t_elm, _ = _best_ms(lambda f=f: elm_path(f), args.repeat_recording)
        rows.append({"file": f.name, "n_times": int(a.shape[1]), "identical": bool(np.array_equal(a, b)),
                     "read_fast_ms": round(t_fast, 2), "read_mne_ms": round(t_mne, 2),
                     "recording_fast_ms": round(t_rec, 2), "recording_elm_ms": round(t_elm, 2)})
        print(f"{f.name}: read {t_fast:.1f} vs {t_mne:.1f} ms, recording {t_rec:.1f} vs {t_elm:.1f} ms",
              file=sys.stderr, flush=True)

    def med(key):
        return float(np.median([r[key] for r in rows]))

    summary = {
        "date": dt.date.today().isoformat(), "machine": machine(), "n_files": len(rows),
        "all_identical": all(r["identical"] for r in rows), "repeat": args.repeat,
        "repeat_recording": args.repeat_recording, "load_average": list(os.getloadavg()),
        "read_fast_ms": med("read_fast_ms"), "read_mne_ms": med("read_mne_ms"),
        "read_ratio": round(med("read_mne_ms") / med("read_fast_ms"), 2),
        "recording_fast_ms": med("recording_fast_ms"), "recording_elm_ms": med("recording_elm_ms"),
        "recording_ratio": round(med("recording_elm_ms") / med("recording_fast_ms"), 2),
        "files": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    m = summary["machine"]
    print(f"{summary['date']}, {m['cpu']}, {m['cores']} cores, {m.get('memory_gb')} GB; "
          f"mne {m['versions'].get('mne')}, numpy {m['versions'].get('numpy')}; "
          f"load average {summary['load_average'][0]:.1f}; {len(rows)} EEGMAT files (median per file)\n")
    print("| step | fast (ms) | MNE / ELM (ms) | ratio | target |")
    print("|---|---:|---:|---:|---:|")
    print(f"| read 17 electrodes | {summary['read_fast_ms']:.1f} | {summary['read_mne_ms']:.1f} | "
          f"{summary['read_ratio']:.1f}x | >= 3x |")
    print(f"| read + preprocess | {summary['recording_fast_ms']:.1f} | {summary['recording_elm_ms']:.1f} | "
          f"{summary['recording_ratio']:.1f}x | >= 10x |")
    print(f"\nvalues identical to MNE on all {len(rows)} files: {summary['all_identical']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

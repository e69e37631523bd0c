"""Benchmark: EDF reading and ELM preprocessing, elmsearch vs ELM's own MNE path.

Run: ``python bench/bench_preprocess.py [--data DIR] [--repeat N] [--out FILE.json]``.
Default data: the 72 real EEGMAT recordings in ../shared/data/eegmat (500 Hz,
182 s and 62 s). For every file it times, in the same run and process:

- read, ELM path: ``mne.io.read_raw_edf(preload=True)`` (all channels);
- read, elmsearch: header validation + MNE lazy open + the 17 montage electrodes;
- preprocess, ELM path: ``elm_reference`` (Raw.filter 0.1-49 Hz at the native rate,
  set_bipolar_reference, scale, clip, Raw.resample to 100 Hz);
- preprocess, elmsearch: ``preprocess`` (the fast path);

and the minimum per-channel correlation between the two outputs. Prints medians
and ratios as a Markdown table; writes all numbers as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import time
from pathlib import Path

import mne
import numpy as np

from elmsearch.io.meta import inspect_edf
from elmsearch.io.windowed import WindowedRecording
from elmsearch.signal.preprocessing import elm_reference, preprocess

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "eegmat"


def best_of(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "preprocess.json")
    args = ap.parse_args()
    files = sorted(args.data.glob("*.edf"))
    if not files:
        raise SystemExit(f"no EDF files in {args.data}")
    rows = []
    for f in files:
        _, _, electrodes = inspect_edf(f)  # warm the header cache and page cache
        t_read_elm, raw = best_of(lambda: mne.io.read_raw_edf(f, preload=True, verbose="error"),
                                  args.repeat)

        def ours_read():
            rec = WindowedRecording(f)
            return rec.read_span(0, rec.n_times), rec.sfreq

        t_read_ours, (x, sfreq) = best_of(ours_read, args.repeat)
        t_pre_elm, ref = best_of(lambda: elm_reference(raw), args.repeat)
        t_pre_ours, fast = best_of(lambda: preprocess(x, sfreq), args.repeat)
        corr = min(float(np.corrcoef(ref[i], fast[i])[0, 1]) for i in range(ref.shape[0]))
        rows.append(dict(file=f.name, seconds=raw.n_times / raw.info["sfreq"],
                         read_elm=t_read_elm, read_ours=t_read_ours,
                         pre_elm=t_pre_elm, pre_ours=t_pre_ours, min_corr=corr))
        print(f"{f.name}: read {t_read_elm*1e3:.1f}/{t_read_ours*1e3:.1f} ms, "
              f"preprocess {t_pre_elm*1e3:.1f}/{t_pre_ours*1e3:.1f} ms, corr {corr:.5f}", flush=True)

    def med(key, subset=rows):
        return statistics.median(r[key] for r in subset)

    summary = {"date": dt.date.today().isoformat(), "machine": f"{platform.node()} "
               f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
               "python": platform.python_version(), "mne": mne.__version__,
               "numpy": np.__version__, "n_files": len(rows), "groups": {}}
    groups = {"all": rows}
    for length in sorted({round(r["seconds"]) for r in rows}):
        groups[f"{length} s"] = [r for r in rows if round(r["seconds"]) == length]
    lines = ["| files | n | read ELM (ms) | read elmsearch (ms) | ratio | preprocess ELM (ms) "
             "| preprocess elmsearch (ms) | ratio | min corr |", "|" + "---|" * 9]
    for name, sub in groups.items():
        g = {k: med(k, sub) for k in ("read_elm", "read_ours", "pre_elm", "pre_ours")}
        g["min_corr"] = min(r["min_corr"] for r in sub)
        g["n"] = len(sub)
        summary["groups"][name] = g
        lines.append(f"| {name} | {len(sub)} | {g['read_elm']*1e3:.1f} | {g['read_ours']*1e3:.1f} | "
                     f"{g['read_elm']/g['read_ours']:.1f}x | {g['pre_elm']*1e3:.1f} | "
                     f"{g['pre_ours']*1e3:.1f} | {g['pre_elm']/g['pre_ours']:.1f}x | "
                     f"{g['min_corr']:.5f} |")
    summary["rows"] = rows
    table = "\n".join(lines)
    summary["table"] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"\n{summary['date']}, {summary['machine']}, MNE {mne.__version__}; medians, best of "
          f"{args.repeat}\n\n{table}")


if __name__ == "__main__":
    main()

"""Run every performance benchmark, print one summary table, regenerate the generated section of docs/benchmarks.md.

Run: ``python bench/run_all.py [--quick] [--only NAMES] [--skip NAMES] [--no-run] [--no-docs]``.

Each benchmark runs as its own process, one after the other (timings are meaningless when two
share the cores), and writes its JSON to ``bench/results/``. Every figure is paired with the
baseline measured in the same run of the same script (ELM's MNE path, the exact FAISS index,
training every layer, the eager text encoder, ...), so the ratios do not depend on the day.

- ``--quick``: smaller sizes (about 3 minutes instead of about 15 on 2 cores); the generated section says so.
- ``--only``/``--skip``: comma-separated names from ``preprocess, demo, train, faiss, index, query``.
- ``--no-run``: only summarise the JSON files already in ``bench/results/``.

The section of docs/benchmarks.md between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` is replaced by
the generated tables, headed by the date and the machine. Benchmarks that did not run this time
keep their earlier JSON, whose own date is shown in the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
BENCHMARKS_DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

# name -> (script, arguments of the quick profile); the full profile is each script's defaults
BENCHES = {
    "preprocess": ("bench_preprocess.py", ["--repeat", "1"]),
    "demo": ("bench_demo.py", ["--n-recordings", "20"]),
    "train": ("bench_train.py", ["--n-recordings", "30"]),
    "faiss": ("bench_faiss.py", ["--sizes", "10000,100000", "--queries", "100"]),
    "index": ("bench_index.py", ["--n-recordings", "20"]),
    "query": ("bench_query.py", ["--sizes", "10000,100000", "--queries", "50", "--filtered-queries", "20",
                                 "--cli-runs", "3", "--window-index", "50x120"]),
}


# ---- the machine -------------------------------------------------------------------------
def machine() -> dict:
    """CPU model, cores, memory, OS and library versions of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    versions = {}
    for mod in ("torch", "faiss", "mne", "numpy", "sqlalchemy", "transformers"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing library is just not listed
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": None if mem_gb is None else round(mem_gb, 1),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "versions": versions}


def machine_line(m: dict) -> str:
    """One line: CPU, cores, memory, OS, versions."""
    v = ", ".join(f"{k} {x.split('+')[0]}" for k, x in m["versions"].items())
    mem = f", {m['memory_gb']:.0f} GB" if m.get("memory_gb") else ""
    return f"{m['cpu']}, {m['cores']} cores{mem}, no GPU used; {m['os']}; Python {m['python']}, {v}"


# ---- running -----------------------------------------------------------------------------
def run_bench(name: str, quick: bool, log_dir: Path) -> dict:
    """Run one benchmark script; returns its status, wall time and log file."""
    script, quick_args = BENCHES[name]
    cmd = [sys.executable, str(HERE / script), "--out", str(RESULTS / f"{name}.json")]
    if quick:
        cmd += quick_args
    log = log_dir / f"{name}.log"
    print(f"[{dt.datetime.now():%H:%M:%S}] {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO).returncode
    wall = time.perf_counter() - t
    print(f"  {name}: exit {rc} after {wall:.0f} s (log {log})", file=sys.stderr, flush=True)
    return {"exit": rc, "wall_s": round(wall, 1), "log": str(log), "quick": quick}


# ---- summarising -------------------------------------------------------------------------
def _load(name: str) -> dict | None:
    f = RESULTS / f"{name}.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _n(n: int) -> str:
    """1e6 for powers of ten, else the number with thin spaces."""
    e = len(str(n)) - 1
    return f"1e{e}" if n == 10**e else f"{n:,}".replace(",", " ")


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if abs(x) >= 100:
        return f"{x:,.0f}".replace(",", " ")
    return f"{x:.{digits}g}"


def _row(bench: dict, what: str, ours, baseline=None, base_name: str = "", ratio=None, target: str = "",
         met: bool | None = None, unit: str = "") -> dict:
    return {"bench": bench["_name"], "date": bench.get("date"), "what": what, "ours": ours, "unit": unit,
            "baseline": baseline, "baseline_name": base_name, "ratio": ratio, "target": target, "met": met}


def summary_rows(results: dict[str, dict]) -> list[dict]:
    """The headline figures of each benchmark, each with its same-run baseline and target."""
    rows = []
    if p := results.get("preprocess"):
        g = p["groups"]["all"]
        rows.append(_row(p, f"read one EDF (median of {g['n']} EEGMAT files)", g["read_ours"] * 1e3,
                         g["read_elm"] * 1e3, "MNE read_raw_edf(preload)", g["read_elm"] / g["read_ours"], unit="ms"))
        rows.append(_row(p, "ELM preprocessing of one recording", g["pre_ours"] * 1e3, g["pre_elm"] * 1e3,
                         "ELM's MNE filter + resample", g["pre_elm"] / g["pre_ours"], unit="ms"))
        rows.append(_row(p, "agreement with ELM's output (lowest channel correlation)", f"{g['min_corr']:.5f}"))
    if d := results.get("demo"):
        rows.append(_row(d, f"demo archive generation ({d['n_recordings']} recordings)", d["hours_per_minute"],
                         "0.0167 h/min", "real time", d["hours_per_minute"] * 60, unit="h EEG/min"))
    if t := results.get("train"):
        rows.append(_row(t, "training with the trunk frozen and cached", t["windows_per_s_frozen"],
                         t["windows_per_s_full"], "every layer trains", t["frozen_over_full"], unit="windows/s"))
        rows.append(_row(t, "training the demo model end to end", t["demo_train_s"], unit="s",
                         target="a few minutes", met=t["demo_train_s"] <= 300))
        rows.append(_row(t, f"demo model, validation text→EEG R@10 ({t['n_val']} recordings)", t["demo_val_R@10"],
                         t["demo_untrained_val_R@10"], "untrained", t["demo_val_R@10"] / t["demo_untrained_val_R@10"]))
    if f := results.get("faiss"):
        for r in f["results"]:
            rows.append(_row(f, f"FAISS query at {_n(r['n'])} vectors ({r['kind']}, recall@10 {r['recall_at_10']:.3f})",
                             r["p50_ms"], r["flat_p50_ms"], "exact flat index", r["flat_over_index_p50"], unit="ms"))
    if i := results.get("index"):
        best = max(i["index"].values(), key=lambda r: r["h_per_s"])
        elm = i["elm_eeg_only"]["h_per_s"]
        ratio = best["h_per_s"] / elm
        rows.append(_row(i, f"indexing end to end ({i['n_recordings']} recordings, {i['hours']:.1f} h; "
                         f"-j {best['n_jobs']}, {best['precision']})", best["h_per_s"], elm, "ELM's path, EEG only",
                         ratio, target="≥ 0.3 h/s and 5× ELM", unit="h EEG/s",
                         met=best["h_per_s"] >= i["targets"]["h_per_s"] and ratio >= i["targets"]["ratio"]))
        if cos := i.get("window_cosine_elm_vs_elmsearch"):
            rows.append(_row(i, "window embeddings vs ELM's path (lowest cosine)", f"{cos['min']:.5f}"))
    if q := results.get("query"):
        largest = max(q["results"], key=lambda r: r["n"])
        for r in q["results"]:
            w = r["warm"]
            big = r is largest
            rows.append(_row(q, f"text→EEG query, warm, new text, {_n(r['n'])} recordings ({r['kind']})",
                             w["miss"]["p50_ms"], unit="ms (p50)", target="≤ 10 ms at 1e6" if big else "",
                             met=(w["miss"]["p50_ms"] <= 10) if big else None))
            rows.append(_row(q, f"  filtered (keeps {w['filtered']['n_allowed'] / r['n']:.0%}), {_n(r['n'])}",
                             w["filtered"]["p50_ms"], w["miss"]["p50_ms"], "unfiltered",
                             w["miss"]["p50_ms"] / w["filtered"]["p50_ms"], unit="ms (p50)"))
            if "selective" in w:
                rows.append(_row(q, f"  filtered (keeps {w['selective']['n_allowed'] / r['n']:.2%}), {_n(r['n'])}",
                                 w["selective"]["p50_ms"], w["miss"]["p50_ms"], "unfiltered",
                                 w["miss"]["p50_ms"] / w["selective"]["p50_ms"], unit="ms (p50)"))
        if c := q.get("cold_cli"):
            base = c.get("torch_traced_new_query_median_s") or c.get("eager_text_encoder_new_query_median_s")
            what = "torch + traced LM" if c.get("torch_traced_new_query_median_s") else "transformers text encoder"
            rows.append(_row(q, f"cold `elmsearch search`, new text, {_n(c['n'])} recordings", c["new_query_median_s"],
                             base, what, base / c["new_query_median_s"] if base else None,
                             target="≤ 1 s", met=c["new_query_median_s"] <= 1, unit="s"))
    return rows


def markdown(rows: list[dict], results: dict[str, dict], runs: dict, m: dict, quick: bool) -> str:
    """The generated performance section (without the markers)."""
    today = dt.date.today().isoformat()
    ran = [n for n, r in runs.items() if r.get("exit") == 0]
    lines = [
        f"Generated by `python bench/run_all.py{' --quick' if quick else ''}` on {today}"
        + (f" (this run: {', '.join(ran)})" if ran and len(ran) < len(BENCHES) else "") + ".",
        f"Machine: {machine_line(m)}.",
        "",
        "Every baseline is measured in the same run of the same script; `×` is how many times faster "
        "(times, rates) or higher (recall) elmsearch is than that baseline, so below 1 means slower. "
        "The `date` column is when that benchmark ran. Raw numbers: `bench/results/*.json`.",
        "",
        "| benchmark | date | measurement | elmsearch | baseline (same run) | × | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = f"{_fmt(r['baseline'])} ({r['baseline_name']})" if r["baseline"] is not None else "–"
        ratio = f"{r['ratio']:.1f}×" if r["ratio"] is not None else "–"
        target = r["target"] + (" — **met**" if r["met"] else " — **not met**" if r["met"] is False else "") \
            if r["target"] else "–"
        lines.append(f"| {r['bench']} | {r['date'] or '–'} | {r['what']} | {_fmt(r['ours'])} {r['unit']} | "
                     f"{base} | {ratio} | {target} |")
    details = []
    if p := results.get("preprocess"):
        details += ["", "**Reading and preprocessing per file, medians** (`bench/bench_preprocess.py`, real EEGMAT "
                    "EDFs, 500 Hz; ELM path = `read_raw_edf(preload=True)`, `Raw.filter(0.1, 49)`, "
                    "`set_bipolar_reference`, scale, clip, `Raw.resample(100)`):", "", p["table"]]
    if i := results.get("index"):
        details += ["", "**Indexing** (`bench/bench_index.py`, demo archive; EEG-only paths interleaved per "
                    "recording):", "", i["table"]]
    if q := results.get("query"):
        details += ["", "**Queries** (`bench/bench_query.py`; real metadata rows in SQLite, synthetic "
                    "embeddings; k = 10; times in ms unless marked):", "", _query_table(q)]
    if f := results.get("faiss"):
        details += ["", "**FAISS** (`bench/bench_faiss.py`, synthetic clustered unit vectors, 256-d, one query "
                    "per call):", "", _faiss_table(f)]
    return "\n".join(lines + details)


def _query_table(q: dict) -> str:
    out = ["| recordings | index | new text p50 / p95 | repeated text p50 | filtered p50 (path) | "
           "selective filter p50 (path) |", "|---|---|---|---|---|---|"]
    for r in q["results"]:
        w = r["warm"]
        sel = w.get("selective")
        kind = r["kind"] + (f", nprobe {r['nprobe']}" if r.get("nprobe") else "")
        out.append(f"| {_n(r['n'])} | {kind} | {w['miss']['p50_ms']} / {w['miss']['p95_ms']} | "
                   f"{w['hit']['p50_ms']} | {w['filtered']['p50_ms']} ({w['filtered']['path']}) | "
                   + (f"{sel['p50_ms']} ({sel['path']}) |" if sel else "– |"))
    if c := q.get("cold_cli"):
        st = c["stages_text_cache_miss"]
        out += ["", f"Cold `elmsearch search` (new process, {_n(c['n'])} recordings, median of {c['runs']}): "
                f"new text {c['new_query_median_s']} s, repeated text {c['same_query_median_s']} s; "
                f"new text with `--backend torch` (TorchScript trace of the LM) "
                f"{c.get('torch_traced_new_query_median_s', '–')} s, and with torch + transformers "
                f"{c.get('eager_text_encoder_new_query_median_s', '–')} s. Stages of a cold new query (s): "
                + ", ".join(f"{k} {v}" for k, v in st.items()) + "."]
    if bw := q.get("best_window"):
        w = bw["warm"]
        out += ["", f"Best-window lookup of 10 hits with {bw['n_windows'] // max(bw['n'], 1)} windows each: "
                f"{w['best_windows']['p50_ms']} ms p50 (search_text with it: {w['search_text']['p50_ms']} ms)."]
    return "\n".join(out)


def _faiss_table(f: dict) -> str:
    out = ["| vectors | kind | nlist / nprobe | recall@10 | build (s) | file (MB) | p50 / p95 (ms) | exact p50 (ms) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in f["results"]:
        probe = f"{r['nlist']} / {r['nprobe']}" if r["nlist"] else "–"
        out.append(f"| {_n(r['n'])} | {r['kind']} | {probe} | {r['recall_at_10']:.3f} | {r['build_s']} | "
                   f"{r['file_mb']} | {r['p50_ms']} / {r['p95_ms']} | {r['flat_p50_ms']} |")
    return "\n".join(out)


def write_section(section: str, doc: Path = BENCHMARKS_DOC) -> bool:
    """Replace the text between the markers of ``doc``; returns whether it changed."""
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{section}\n{END}{tail}"
    if new != text:
        doc.write_text(new)
    return new != text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes: about 3 min instead of about 15")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHES)}")
    ap.add_argument("--skip", default="", help="comma-separated benchmarks not to run")
    ap.add_argument("--no-run", action="store_true", help="only summarise the JSON files in bench/results")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite the section of docs/benchmarks.md")
    args = ap.parse_args()
    names = [n for n in (args.only.split(",") if args.only else BENCHES) if n]
    unknown = set(names) - set(BENCHES) | {n for n in args.skip.split(",") if n} - set(BENCHES)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(BENCHES)}")
    names = [n for n in names if n not in args.skip.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict] = {}
    if not args.no_run:
        log_dir = RESULTS / "logs"
        log_dir.mkdir(exist_ok=True)
        for name in names:
            runs[name] = run_bench(name, args.quick, log_dir)
    results = {}
    for name in BENCHES:
        if (doc := _load(name)) is not None:
            results[name] = {**doc, "_name": name}
    rows = summary_rows(results)
    m = machine()
    section = markdown(rows, results, runs, m, args.quick)
    (RESULTS / "summary.json").write_text(json.dumps(
        {"date": dt.date.today().isoformat(), "machine": m, "quick": args.quick, "runs": runs, "rows": rows}, indent=1))
    print(section)
    if not args.no_docs and write_section(section):
        print(f"\n{BENCHMARKS_DOC}: generated section rewritten", file=sys.stderr)
    failed = [n for n, r in runs.items() if r["exit"] != 0]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)} (see bench/results/logs/)")


if __name__ == "__main__":
    main()

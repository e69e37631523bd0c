"""Benchmark: EEG encoder inference backends (torch, ONNX Runtime, OpenVINO) on the CPU.

Run from ``bench/``: ``python bench_backends.py [--windows 2048] [--threads 1,2] [--out FILE.json]``.

The ELM 5 s release encoder on ``--windows`` random windows clipped to +-80 (like
preprocessed input), batch 32, with 1 and 2 intra-op threads: windows per second for
torch eager fp32, torch bf16 autocast (CPUs with native bfloat16 only), ONNX Runtime fp32
and OpenVINO at each precision that passes the backends' check (per-row cosine >= 0.9999
to torch fp32), best of ``--repeats`` passes after a warm-up batch; and the minimum
per-row cosine of each to torch fp32 over all the windows. The artefacts are built in a
temporary cache folder. Prints a Markdown table; writes JSON (default
``bench/results/backends.json``). On a shared machine compare numbers from quiet runs only:
the load average is reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = HERE.parents[1] / "shared" / "data" / "elm_pretrained" / "5s"


def main() -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--windows", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "backends.json")
    args = ap.parse_args()
    os.environ["ELMSEARCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="elmsearch-bench-backends-")

    import torch
    from run_all import machine, machine_line

    from elmsearch.models import backends as B
    from elmsearch.models import load_model
    from elmsearch.models.identity import cpu_has_bf16

    model = load_model(args.model)
    x = np.clip(np.random.default_rng(0).standard_normal((args.windows, 20, model.n_times)) * 3.0,
                -80, 80).astype(np.float32)
    ref = B.torch_fp32(model, x)
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        cases = [B.TorchEncoder(model, "fp32", threads)]
        if cpu_has_bf16():
            cases.append(B.TorchEncoder(model, "bf16", threads))
        for name, precision in (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")):
            if name not in B.installed():
                continue
            enc = B.build(model, name, precision, threads)
            if enc is None:
                rows.append({"backend": name, "precision": precision, "threads": threads, "verified": False})
                continue
            cases.append(enc)
        for enc in cases:
            with torch.no_grad():
                z = np.concatenate([enc(x[i : i + args.batch]) for i in range(0, len(x), args.batch)])
                load = os.getloadavg()[0]
                speed = max(B.throughput(enc, x, args.batch) for _ in range(args.repeats))
            rows.append({"backend": enc.name, "precision": enc.precision, "threads": threads, "verified": True,
                         "windows_per_s": round(speed, 1), "min_cosine": float(B.row_cosine(ref, z).min()),
                         "load_avg_1min": round(load, 2)})
            print(f"{enc.name:12s} {enc.precision} {threads}t {speed:7.1f} windows/s, min cos "
                  f"{rows[-1]['min_cosine']:.8f} (load {load:.1f})", file=sys.stderr, flush=True)
    m = machine()
    for mod in ("onnxruntime", "openvino"):
        if mod in B.installed():
            m["versions"][mod] = B.backend_version(mod)
    m["cpu_bf16"] = cpu_has_bf16()
    lines = ["| backend | precision | threads | windows/s | vs torch fp32 | min cosine to torch fp32 | load |",
             "|---|---|---|---|---|---|---|"]
    base = {r["threads"]: r["windows_per_s"] for r in rows if r["backend"] == "torch" and r["precision"] == "fp32"}
    for r in rows:
        if not r["verified"]:
            lines.append(f"| {r['backend']} | {r['precision']} | {r['threads']} | not verified | | | |")
            continue
        lines.append(f"| {r['backend']} | {r['precision']} | {r['threads']} | {r['windows_per_s']:.0f} | "
                     f"{r['windows_per_s'] / base[r['threads']]:.2f}x | {r['min_cosine']:.8f} | "
                     f"{r['load_avg_1min']:.1f} |")
    table = "\n".join(lines)
    print(f"EEG encoder backends, ELM 5 s release weights, {args.windows} random clipped windows, batch "
          f"{args.batch}; {machine_line(m)}; native bf16: {m['cpu_bf16']}\n\n{table}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": dt.date.today().isoformat(), "machine": m, "windows": args.windows,
                                    "batch": args.batch, "rows": rows, "table": table,
                                    "time": time.strftime("%H:%M:%S")}, indent=2))


if __name__ == "__main__":
    main()

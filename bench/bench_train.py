"""Benchmark: training throughput (EEG windows per second) and the time to train the demo.

Run: ``python bench/bench_train.py [--n-recordings 100] [--out FILE.json]``.

Three measurements in one run, on the demo archive (generated into a temporary folder):

- full: every layer of the 5 s EEG ResNet trains (ELM's setting), a few steps;
- frozen: the EEG trunk is run once and cached, the heads train (the demo's CPU setting);
- demo: reading the archive + ``train`` with ``demo_config`` end to end, as ``elmsearch demo`` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from elmsearch.datasets.demo import generate_archive
from elmsearch.train.trainer import TrainConfig, build_model, demo_config, load_items, train

HERE = Path(__file__).resolve().parent


class _Stop(Exception):
    pass


def _throughput(items, out: Path, cfg: TrainConfig, max_steps: int) -> float:
    """Median windows/s over the steps of one run, stopped after ``max_steps``."""
    rates = []

    def on_step(s: dict) -> None:
        rates.append(s["windows_per_s"])
        if len(rates) >= max_steps:
            raise _Stop

    torch.manual_seed(0)
    try:
        train(build_model("elm-5s"), items, out, cfg, resume=False, on_step=on_step)
    except _Stop:
        pass
    return float(np.median(rates[1:] or rates))  # the first step warms up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-recordings", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "train.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="elmsearch-bench-"))
    try:
        made = generate_archive(tmp / "archive", n_recordings=args.n_recordings, seed=args.seed)
        t0 = time.perf_counter()
        items = load_items(made.root, 5.0, "sentence")
        t_read = time.perf_counter() - t0
        n_windows = sum(len(i.windows) for i in items)
        base = demo_config(seed=args.seed, device="cpu")
        full = _throughput(items, tmp / "full", dataclasses.replace(base, freeze_eeg=False), max_steps=6)
        frozen = _throughput(items, tmp / "frozen", base, max_steps=40)
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        metrics = train(build_model("elm-5s"), items, tmp / "demo", base, resume=False)
        t_train = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    val, before = metrics["val"]["text_to_eeg"], metrics["untrained_val"]["text_to_eeg"]
    res = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "torch_threads": torch.get_num_threads(), "n_recordings": len(items), "n_windows": n_windows,
           "windows_per_s_full": round(full, 1), "windows_per_s_frozen": round(frozen, 1),
           "frozen_over_full": round(frozen / full, 1),
           "demo_read_s": round(t_read, 1), "demo_train_s": round(t_train, 1),
           "demo_best_epoch": metrics["best_epoch"],
           "demo_val_R@10": round(val["R@10"], 3), "demo_untrained_val_R@10": round(before["R@10"], 3),
           "n_val": metrics["n_val"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

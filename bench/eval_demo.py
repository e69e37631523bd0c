"""Demo archive: train on seed 0, evaluate on a held-out archive (seed 1) with its ground truth.

Run: ``python bench/eval_demo.py [--n-recordings 60] [--work DIR] [--out FILE.json]``.

Text→EEG and EEG→report Recall@10, zero-shot AUROC for normal/abnormal and each finding,
probe label-efficiency against band power and (when ../shared has them) the ELM weights.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from elmsearch.datasets.demo import generate_archive
from indexer.demo import demo_archive, demo_model
from indexer.evaluate import evaluate_index
from indexer.pipeline import index_archive
from indexer.search import Index

HERE = Path(__file__).resolve().parent
ELM = HERE.parents[1] / "shared" / "data" / "elm_pretrained" / "5s"


def headline(result: dict) -> dict:
    """The numbers the README quotes from one evaluation."""
    r = result["retrieval"]
    out = {"text_to_eeg_R@10": r["text_to_eeg"]["R@10"], "eeg_to_report_R@10": r["eeg_to_report"]["R@10"]}
    out.update({f"zero_shot_{c}": m["auroc"] for c, m in result.get("zero_shot", {}).items()})
    out.update({f"zero_shot_windows_{c}": m["auroc"] for c, m in result.get("zero_shot_windows", {}).items()})
    if "finding_precision" in result:
        out["finding_P@5"] = result["finding_precision"]["ours"]["P@5"]
    out["same_patient_R@5"] = result["same_patient"]["ours"]["R@5"]
    return out


def write_results(out: Path, doc: dict, t0: float) -> None:
    """Write a held-out evaluation's ``doc`` to ``out`` with the date, machine and seconds; print its summary."""
    from run_all import machine

    doc = {"date": dt.date.today().isoformat(), "machine": machine(), **doc,
           "seconds": round(time.perf_counter() - t0, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=float))
    print(json.dumps(doc.get("summary"), indent=1))


def heldout_runs(doc: str, out_name: str, default_seeds: str, version: int = 1, train_version: int | None = None):
    """Parse the options every held-out demo evaluation takes; yield ``(seed, Index, held-out archive)``.

    ``--n-recordings``, ``--train-seeds``, ``--work`` (default: a new temporary folder) and
    ``--out`` (default ``bench/results/OUT_NAME``). Returns the parsed arguments and the runs.
    ``version``: the demo generator's (1: the archives the earlier numbers were measured on,
    without events; 2: with events). ``--train-version`` (default ``train_version`` or
    ``version``): the generator version of the training archive only (2: the models learn from
    its events, while the held-out archive stays ``version``).
    """
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--n-recordings", type=int, default=60)
    ap.add_argument("--train-seeds", default=default_seeds, help="train one demo model per seed (e.g. 0,1,2)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / out_name)
    ap.add_argument("--train-version", type=int, default=train_version or version,
                    help="demo generator version of the training archive (2: with events)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="elmsearch-heldout-"))
    return args, heldout_indexes(work, args.n_recordings, [int(x) for x in args.train_seeds.split(",")], version,
                                 args.train_version)


def heldout_indexes(work: Path, n_recordings: int, train_seeds, version: int = 1, train_version: int | None = None):
    """Train a demo model per seed on the demo archive and index the held-out archive (seed 1) with it.

    Yields ``(seed, Index, held-out DemoArchive)``; models and indexes already in ``work`` are reused.
    """
    made = demo_archive(work, 100, seed=0, version=train_version or version)
    held = generate_archive(work / "heldout", n_recordings=n_recordings, seed=1, version=version)
    for seed in train_seeds:
        demo_model(made, work / f"model-{seed}", seed=seed)
        if not (work / f"index-{seed}" / "manifest.json").exists():
            index_archive(held.root, work / f"index-{seed}", work / f"model-{seed}", n_jobs=2)
        yield seed, Index.open(work / f"index-{seed}"), held


def main() -> None:
    t0 = time.perf_counter()
    args, heldout = heldout_runs(__doc__, "eval_demo.json", "0")
    runs = {}
    for seed, index, held in heldout:
        runs[seed] = evaluate_index(index, held.labels_path, held.root, elm_weights=ELM if ELM.is_dir() else None)
        report(runs[seed], seed)
    heads = [headline(r) for r in runs.values()]
    spread = {k: {"mean": float(np.mean([h[k] for h in heads])), "sd": float(np.std([h[k] for h in heads]))}
              for k in heads[0]}
    res = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "seconds": round(time.perf_counter() - t0, 1), "train_seeds": list(runs), "spread": spread,
           "eval": runs[next(iter(runs))], "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=float))
    if len(runs) > 1:
        print(f"over training seeds {list(runs)}: " + ", ".join(f"{k} {v['mean']:.3f} ± {v['sd']:.3f}"
                                                              for k, v in spread.items()))


def report(result: dict, seed: int) -> None:
    """Print one evaluation."""
    r = result["retrieval"]
    print(f"training seed {seed}; held-out seed 1, {result['n_recordings']} recordings, "
          f"chance R@10 {r['chance_R@10']:.3f}")
    print(f"text->EEG R@10 {r['text_to_eeg']['R@10']:.3f} MRR {r['text_to_eeg']['MRR']:.3f}; "
          f"EEG->report R@10 {r['eeg_to_report']['R@10']:.3f} MRR {r['eeg_to_report']['MRR']:.3f}")
    for c, m in result.get("zero_shot", {}).items():
        w = result.get("zero_shot_windows", {}).get(c, {}).get("auroc", float("nan"))
        print(f"zero-shot {c}: AUROC {m['auroc']:.3f} (from the windows {w:.3f}) balanced accuracy "
              f"{m['balanced_accuracy']:.3f} (n {m['n']})")
    print(f"prior cases compare: {result['similar_representation']}")
    for name, m in result.get("finding_precision", {}).items():
        sp = result["same_patient"][name]
        print(f"prior cases, {name}: finding P@5 {m['P@5']:.3f} (chance {m['chance']:.3f}), "
              f"same-patient R@5 {sp['R@5']:.3f} (chance {sp['chance']:.3f})")


if __name__ == "__main__":
    main()

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

from elmsearch.synthetic import generate_archive
from indexer.demo import demo_archive, demo_model
from indexer.evaluate import evaluate_index
from indexer.pipeline import index_archive
from indexer.search import Index

HERE = Path(__file__).resolve().parent
ELM = HERE.parents[1] / "shared" / "data" / "elm_pretrained" / "5s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-recordings", type=int, default=60)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "eval_demo.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="elmsearch-evaldemo-"))
    t0 = time.perf_counter()
    made = demo_archive(work, 100, seed=0)
    demo_model(made, work / "model", seed=0)
    held = generate_archive(work / "heldout", n_recordings=args.n_recordings, seed=1)
    index_archive(held.root, work / "index", work / "model", n_jobs=2)
    result = evaluate_index(Index.open(work / "index"), held.labels_path, held.root,
                            elm_weights=ELM if ELM.is_dir() else None)
    res = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "seconds": round(time.perf_counter() - t0, 1), "eval": result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=float))
    r = result["retrieval"]
    print(f"held-out seed 1, {result['n_recordings']} recordings, chance R@10 {r['chance_R@10']:.3f}")
    print(f"text->EEG R@10 {r['text_to_eeg']['R@10']:.3f} MRR {r['text_to_eeg']['MRR']:.3f}; "
          f"EEG->report R@10 {r['eeg_to_report']['R@10']:.3f} MRR {r['eeg_to_report']['MRR']:.3f}")
    for c, m in result.get("zero_shot", {}).items():
        print(f"zero-shot {c}: AUROC {m['auroc']:.3f} balanced accuracy {m['balanced_accuracy']:.3f} (n {m['n']})")


if __name__ == "__main__":
    main()

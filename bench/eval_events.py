"""Events on the held-out demo: which minutes a text query finds, and what training with events changes.

Run: ``python bench/eval_events.py [--train-seeds 0,1,2] [--weights 0,0.5] [--n-recordings 60] [--work DIR]``.

The demo archive (seed 0) and the held-out archive (seed 1) are made with generator version 2
(an EDF+ annotation signal and a TUH ``.csv`` per recording, ``events.csv`` as ground truth).
For each event weight (``TrainConfig.event_weight``; 0 = the report MIL pairs alone) and each
training seed, a demo model is trained, the held-out archive indexed with it, and measured:

- window-level localisation (``indexer.evaluate.event_localisation``): precision@10 of the
  windows a text query for each event kind returns, ``eeg`` (the embedding alone) and
  ``hybrid`` (which also reads the events the index holds);
- recording-level zero-shot AUROC per finding (``indexer.evaluate.evaluate_index``), pooled and
  from the minutes (``zero_shot_windows``);
- the existing retrieval (text→EEG R@10 of the recordings' own reports).

Writes ``bench/results/eval_events.json`` (mean and sd over the seeds per weight).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from eval_demo import write_results

from elmsearch.datasets.demo import generate_archive
from elmsearch.train.trainer import build_model, demo_config, load_items, train
from indexer.evaluate import evaluate_index
from indexer.pipeline import index_archive
from indexer.search import Index

HERE = Path(__file__).resolve().parent


def run(work: Path, n_recordings: int, seed: int, weight: float) -> dict:
    made = generate_archive(work / "archive", 100, seed=0, version=2)
    held = generate_archive(work / "heldout", n_recordings=n_recordings, seed=1, version=2)
    model_dir, db = work / f"model-w{weight:g}-s{seed}", work / f"index-w{weight:g}-s{seed}"
    if not (model_dir / "metrics.json").is_file():
        cfg = dataclasses.replace(demo_config(seed=seed), event_weight=weight)
        train(build_model("elm-5s", seed=seed), load_items(made.root, 5.0, "sentence"), model_dir, cfg, resume=True)
    if not (db / "manifest.json").is_file():
        index_archive(held.root, db, model_dir, n_jobs=2)
    res = evaluate_index(Index.open(db), held.labels_path, held.root, fractions=(1.0,), seeds=(0,),
                         baselines=False, cohort=False, events_csv=held.root / "events.csv")
    return {"events": res["events"], "zero_shot": {c: m["auroc"] for c, m in res["zero_shot"].items()},
            "zero_shot_minutes": {c: m["auroc"] for c, m in res["zero_shot_windows"].items()},
            "text_to_eeg_R@10": res["retrieval"]["text_to_eeg"]["R@10"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-seeds", default="0,1,2")
    ap.add_argument("--weights", default="0,0.5")
    ap.add_argument("--n-recordings", type=int, default=60)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "eval_events.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="elmsearch-events-"))
    t0 = time.perf_counter()
    runs: dict = {}
    for w in (float(x) for x in args.weights.split(",")):
        for seed in (int(x) for x in args.train_seeds.split(",")):
            r = run(work, args.n_recordings, seed, w)
            runs.setdefault(f"{w:g}", {})[seed] = r
            print(f"weight {w:g} seed {seed}: eeg P@10 {r['events']['eeg']['P@10']:.3f} "
                  f"{r['events']['eeg']['by']}, hybrid P@10 {r['events']['hybrid']['P@10']:.3f}, "
                  f"zero-shot {r['zero_shot']}, from the minutes {r['zero_shot_minutes']}, "
                  f"R@10 {r['text_to_eeg_R@10']:.3f}", flush=True)
    summary = {}
    for w, by_seed in runs.items():
        rs = list(by_seed.values())
        kinds = rs[0]["events"]["eeg"]["by"]
        summary[w] = {
            "eeg_P@10": [float(np.mean([r["events"]["eeg"]["P@10"] for r in rs])),
                         float(np.std([r["events"]["eeg"]["P@10"] for r in rs]))],
            "hybrid_P@10": float(np.mean([r["events"]["hybrid"]["P@10"] for r in rs])),
            "eeg_by": {k: float(np.mean([r["events"]["eeg"]["by"][k] for r in rs])) for k in kinds},
            "hybrid_by": {k: float(np.mean([r["events"]["hybrid"]["by"][k] for r in rs])) for k in kinds},
            "zero_shot": {c: float(np.mean([r["zero_shot"][c] for r in rs])) for c in rs[0]["zero_shot"]},
            "zero_shot_minutes": {c: [float(np.mean([r["zero_shot_minutes"][c] for r in rs])),
                                      float(np.std([r["zero_shot_minutes"][c] for r in rs]))]
                                  for c in rs[0]["zero_shot_minutes"]},
            "text_to_eeg_R@10": float(np.mean([r["text_to_eeg_R@10"] for r in rs])),
        }
    write_results(args.out, {"n_recordings": args.n_recordings, "summary": summary, "runs": runs}, t0)

if __name__ == "__main__":
    main()

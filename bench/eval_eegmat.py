"""Real EEG: train on 24 EEGMAT subjects, evaluate on the other 12 (rest vs mental arithmetic).

Run: ``python bench/eval_eegmat.py [--src ../shared/data/eegmat] [--work DIR] [--out FILE.json]``.

Lays EEGMAT out as a TUH-style archive (``elmsearch.datasets.eegmat``: symlinks, never copies),
trains the EEG-language model on the train subjects' recordings (EEG encoder initialised from
the ELM release and frozen; heads trained; patient-level validation), indexes all 72
recordings and runs ``indexer.evaluate.evaluate_index`` on the 12 test subjects only: zero-shot
rest-vs-arithmetic AUROC, linear probe with 4 labels per class (10 seeds) against log band power
and the ELM released weights, and same-subject prior-case Recall@5.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from elmsearch.archive.discovery import discovery_options
from elmsearch.datasets.eegmat import build_eegmat_archive
from elmsearch.train.trainer import build_model, load_items, recipe_config, train
from indexer.evaluate import evaluate_index
from indexer.pipeline import index_archive
from indexer.search import Index

HERE = Path(__file__).resolve().parent

SHARED = HERE.parents[1] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=SHARED / "eegmat")
    ap.add_argument("--elm", type=Path, default=SHARED / "elm_pretrained" / "5s")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipe", default="heads", help="elmsearch.train.trainer.RECIPES")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "eval_eegmat.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="elmsearch-eegmat-"))
    t0 = time.perf_counter()
    summary = build_eegmat_archive(args.src, work / "archive", seed=args.seed)
    root = Path(summary["root"])
    splits = json.loads((root / "splits.json").read_text())
    train_subjects, test_subjects = set(splits["train"]), set(splits["test"])
    with discovery_options(follow_outside=True):  # the archive is links to the EEGMAT files in --src
        items = [it for it in load_items(root, 5.0, "sentence") if it.patient in train_subjects]
        model = build_model("elm-5s", init=args.elm, seed=args.seed)
        cfg = recipe_config(args.recipe, args.seed, "cpu", val_fraction=0.25)
        metrics = train(model, items, work / "model", cfg, resume=False)
        index_archive(root, work / "index", work / "model", n_jobs=2)
    with (root / "labels.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["subject"] in test_subjects]
    test_labels = work / "labels_test.csv"
    with test_labels.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    index = Index.open(work / "index")
    result = evaluate_index(index, test_labels, root, columns=["arithmetic"],
                            seeds=tuple(range(10)), n_per_class=4, elm_weights=args.elm)
    # prior cases over all 72 recordings (the training subjects' too: search finds any earlier case)
    everyone = evaluate_index(index, root / "labels.csv", root, columns=["arithmetic"], seeds=(0,),
                              n_per_class=4, elm_weights=args.elm)
    result["same_patient_all"] = everyone["same_patient"]
    res = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "recipe": args.recipe, "train_subjects": len(train_subjects), "test_subjects": len(test_subjects),
           "n_train_recordings": metrics["n_train"], "n_val_recordings": metrics["n_val"],
           "seconds": round(time.perf_counter() - t0, 1), "eval": result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=float))
    zs = result["zero_shot"]["arithmetic"]
    zw = result["zero_shot_windows"]["arithmetic"]
    print(f"zero-shot rest vs arithmetic: AUROC {zs['auroc']:.3f} (from the windows {zw['auroc']:.3f}), "
          f"balanced accuracy {zs['balanced_accuracy']:.3f}")
    for name, rows_ in result["probe"]["arithmetic"].items():
        r = rows_[0]
        print(f"probe, 4 labels/class, {name}: AUROC {r['auroc']:.3f} ± {r['auroc_sd']:.3f}, "
              f"balanced accuracy {r['balanced_accuracy']:.3f} ± {r['balanced_accuracy_sd']:.3f}")
    print(f"prior cases compare: {result['similar_representation']}")
    for name, m in result["same_patient_all"].items():
        print(f"same-subject prior case R@5 over all {m['n']} recordings, {name}: {m['R@5']:.3f} "
              f"(chance {m['chance']:.3f})")


if __name__ == "__main__":
    main()

"""What labels buy on EEGMAT: supervised spectral classifiers, the ceiling for zero-shot.

Run: ``python bench/eval_eegmat_ceiling.py [--src ../shared/data/eegmat] [--seeds 0,1,2]``.

Issue 25 asks zero-shot rest-vs-arithmetic AUROC >= 0.85 on EEGMAT's 12 held-out subjects, the model
trained on the other 24 (``bench/eval_eegmat.py``). This script asks how far a classifier gets
when it is *told* the training subjects' labels, on the spectral features that separate the two
states within a subject (frontal theta up, alpha down during arithmetic): logistic regression,
its regularisation chosen by 6-fold cross-validation grouped by subject on the training subjects
only, then scored once on the held-out subjects of the same split (``split_subjects(seed)``).

Features, each per recording after ELM preprocessing (20 bipolar channels, 100 Hz, 5 s windows):

- ``band power``: the prior-case band-power map (``bandpower_profile``: absolute and relative
  log power in 5 bands and 20 channels, mean over windows; 200 features);
- ``relative spectrum``: log of each 0.5 Hz bin from 1 to 30 Hz relative to the channel's
  1-30 Hz power, mean over windows (20 x 59 features);
- ``windows``: log band power of every window (``band_power``, 4 bands), one classifier over
  the training windows, a recording scored by the median of its windows' scores;
- ``ELM release embedding``: the released 5 s encoder's window embeddings (``--elm``),
  mean-pooled: what the frozen trunk under ``eval_eegmat``'s heads can offer.

Zero-shot learns rest vs arithmetic from the same 24 subjects' reports, so it can be expected to
reach at best what these supervised classifiers reach.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
from run_all import machine, machine_line
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from elmsearch.datasets.eegmat import split_subjects
from elmsearch.io.windowed import WindowedRecording
from elmsearch.signal.bandpower import band_power, bandpower_profile, welch

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data"
CS = np.logspace(-3, 1, 9)


def features(src: Path, elm: Path | None) -> dict[str, dict[str, np.ndarray]]:
    """Feature name -> recording stem (``Subject07_2``) -> features (per window for ``windows``)."""
    out: dict[str, dict[str, np.ndarray]] = {"band power": {}, "relative spectrum": {}, "windows": {}}
    release = None
    if elm is not None:
        from elmsearch.models.factory import load_model

        release = load_model(elm)
        out["ELM release embedding"] = {}
    for fname in sorted(src.glob("Subject*_[12].edf")):
        win, keep = WindowedRecording(fname, window_s=5.0).windows()
        win = win[keep]
        out["band power"][fname.stem] = bandpower_profile(win, 100.0)
        freqs, psd = welch(win.astype(np.float64), 100.0, 200)
        band = psd[..., (freqs >= 1.0) & (freqs <= 30.0)]
        out["relative spectrum"][fname.stem] = np.log10(band / band.sum(-1, keepdims=True)).mean(0).ravel()
        out["windows"][fname.stem] = band_power(win, 100.0)
        if release is not None:
            out["ELM release embedding"][fname.stem] = release.encode_eeg(win, precision="fp32").mean(0)
    return out


def held_out_auroc(feats: dict[str, np.ndarray], train: list[str], test: list[str], per_window: bool) -> dict:
    """Fit on ``train`` subjects (C by subject-grouped CV), AUROC of arithmetic on ``test`` subjects."""
    def rows(subjects):
        x, y, g = [], [], []
        for i, s in enumerate(subjects):
            for state in (1, 2):
                f = feats[f"{s}_{state}"]
                f = f if per_window else f[None]
                x.append(f)
                y.append(np.full(len(f), state - 1))
                g.append(np.full(len(f), i))
        return np.concatenate(x), np.concatenate(y), np.concatenate(g)

    x, y, groups = rows(train)
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=CS, cv=list(GroupKFold(6).split(x, y, groups)), scoring="roc_auc", max_iter=5000,
        class_weight="balanced"))
    clf.fit(x, y)
    scores, labels = [], []
    for s in test:
        for state in (1, 2):
            f = feats[f"{s}_{state}"]
            d = clf.decision_function(f if per_window else f[None])
            scores.append(float(np.median(d)))
            labels.append(state - 1)
    return {"auroc": round(float(roc_auc_score(labels, scores)), 3),
            "C": float(clf[-1].C_[0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=SHARED / "eegmat")
    ap.add_argument("--elm", type=Path, default=SHARED / "elm_pretrained" / "5s",
                    help="released ELM encoder (skipped when the folder is missing)")
    ap.add_argument("--seeds", default="0,1,2", help="the subject splits of bench/eval_eegmat.py --seed")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "eegmat_ceiling.json")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    feats = features(args.src, args.elm if args.elm.is_dir() else None)
    subjects = sorted({stem.split("_")[0] for stem in feats["band power"]})
    res: dict = {"date": dt.date.today().isoformat(), "machine": machine(), "seeds": seeds, "results": {}}
    for name, per_name in feats.items():
        runs = []
        for seed in seeds:
            train, test = split_subjects(subjects, seed)
            runs.append({"seed": seed, **held_out_auroc(per_name, train, test, per_window=name == "windows")})
        aurocs = [r["auroc"] for r in runs]
        res["results"][name] = {"runs": runs, "mean": round(float(np.mean(aurocs)), 3),
                                "sd": round(float(np.std(aurocs, ddof=1)), 3) if len(aurocs) > 1 else 0.0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"Supervised rest vs arithmetic, 24 training subjects -> 12 held out ({machine_line(res['machine'])})")
    for name, r in res["results"].items():
        each = ", ".join(f"{x['auroc']:.3f}" for x in r["runs"])
        print(f"  {name:22s} AUROC {r['mean']:.3f} ± {r['sd']:.3f}  (seeds {args.seeds}: {each})")


if __name__ == "__main__":
    main()

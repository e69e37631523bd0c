"""Prior cases with the ELM release weights (no training): EEGMAT same-subject Recall@5.

Run: ``python bench/eval_prior_cases.py [--src ../shared/data/eegmat] [--elm ../shared/data/elm_pretrained/5s]``.

Indexes the 72 EEGMAT recordings (36 subjects, rest and arithmetic) with the released EEG
encoder as it is, so the index fits and chooses its prior-case space (``indexer.similar_space``),
then asks every recording for its 5 nearest (``similar --include-same-patient --all-per-patient``)
and counts those with another recording of the same subject among them. The design of the space
(features, components, weight) was chosen on subjects 00-17; the subjects 18-35 are reported
apart. Baselines on the same recordings: log band power (4 bands, z-scored over the archive,
``indexer.evaluate``) and the release embedding mean-pooled.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from db import from_blob
from elmsearch.archive.discovery import discovery_options
from elmsearch.datasets.eegmat import build_eegmat_archive
from elmsearch.io.recording import make_windows
from elmsearch.io.windowed import read_recording
from elmsearch.signal.bandpower import band_power
from elmsearch.signal.preprocessing import PreprocessingParams
from indexer.evaluate import _band_power_vectors
from indexer.pipeline import index_archive
from indexer.search import Index
from indexer.similar_space import same_patient_recall

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=SHARED / "eegmat")
    ap.add_argument("--elm", type=Path, default=SHARED / "elm_pretrained" / "5s")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "eval_prior_cases.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="elmsearch-prior-"))
    t0 = time.perf_counter()
    root = Path(build_eegmat_archive(args.src, work / "archive", seed=0)["root"])
    with discovery_options(follow_outside=True):
        index_archive(root, work / "index", args.elm, n_jobs=2)
    index = Index.open(work / "index")
    from sqlalchemy import select

    from db import Patient, Recording, Status

    with index.store.session() as s:
        rows = s.execute(select(Recording.id, Patient.key, Recording.path, Recording.emb)
                         .join(Patient, Recording.patient_id == Patient.id)
                         .where(Recording.status == Status.INDEXED).order_by(Recording.id)).all()
    ids = [r[0] for r in rows]
    patients = np.array([r[1] for r in rows])
    subjects = sorted(set(patients))
    reported = set(subjects[len(subjects) // 2:])
    hit = {}
    for rid, patient in zip(ids, patients, strict=True):
        near = index.similar(recording_id=rid, k=5, include_same_patient=True, one_per_patient=False)
        hit[rid] = any(h.patient == patient for h in near)

    def recall(subset) -> float:
        got = [hit[i] for i, p in zip(ids, patients, strict=True) if p in subset]
        return round(float(np.mean(got)), 4)

    pp = PreprocessingParams.from_dict(index.model.config.preprocessing or {})
    bp = []
    for r in rows:
        rec = read_recording(r[2], pp, min_duration=5.0)
        bp.append(band_power(make_windows(rec, 5.0), rec.sfreq))
    emb = np.stack([from_blob(r[3]) for r in rows])
    _, inverse = np.unique(patients, return_inverse=True)
    queries_all = np.arange(len(rows))
    queries_rep = np.flatnonzero(np.isin(patients, sorted(reported)))
    baselines = {}
    for name, v in {"band_power": _band_power_vectors(bp), "release_embedding": emb}.items():
        baselines[name] = {"all": round(same_patient_recall(v, inverse, queries_all), 4),
                           "subjects_18_35": round(same_patient_recall(v, inverse, queries_rep), 4)}
    result = {
        "date": dt.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "recordings": len(rows), "subjects": len(subjects),
        "chosen": index.manifest.get("similar_representation"),
        "measured_by_the_index": (index.manifest.get("similar_space") or {}).get("measured"),
        "similar_R@5": {"all": recall(set(subjects)), "subjects_18_35": recall(reported)},
        "baselines_R@5": baselines, "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Evaluate an index against a labels file: retrieval, zero-shot, probes, against baselines.

Measured on the labelled, indexed recordings:

- text→EEG and EEG→report Recall@1/5/10 and MRR (a report's own recording is its match);
- same-patient prior-case Recall@5 (another recording of the same patient among the 5 nearest);
- finding precision@5 of prior cases: of the 5 nearest other patients (one recording each, as
  ``elmsearch similar`` returns them), the fraction whose main finding is the query's;
- zero-shot AUROC and balanced accuracy per label column from a (negative, positive) prompt pair;
- the linear probe's label-efficiency curve (patient-level splits, several seeds) on our
  embeddings and, in the same run, on two baselines: log band power (delta/theta/alpha/beta per
  channel) and the ELM authors' released EEG weights without our training. The two prior-case
  measurements are made on the same baselines (recording vector: z-scored mean log band power,
  and the mean of the release's window embeddings).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import undefer

from db import Patient, Recording, Report, Status, Window, from_blob
from elmsearch.archive.discovery import archive_path
from elmsearch.archive.labels import label_key, parse_binary
from elmsearch.errors import RecordingError
from elmsearch.io.recording import make_windows
from elmsearch.io.window_store import WindowStore
from elmsearch.io.windowed import read_recording
from elmsearch.models.factory import load_model
from elmsearch.models.zeroshot import minutes_scores, prompt_embeddings, prompt_softmax, zero_shot
from elmsearch.signal.bandpower import band_power
from elmsearch.train.metrics import chance_recall, retrieval_metrics, same_patient_recall
from elmsearch.train.probe import ProbeData, label_efficiency, score_binary
from indexer.pipeline import recorded_window_store
from indexer.private import output_dir, private_umask
from indexer.search import Index

logger = logging.getLogger(__name__)

# (negative, positive) prompt per label column; a --prompts JSON file adds or overrides.
# Negatives state the normal finding instead of negating the abnormal one: a sentence encoder
# puts "no focal slowing" next to "focal slowing". In patient-grouped cross-validation on the
# demo training archive (bench/cv_recipe.py models, 4 folds) "normal EEG" as the negative
# raised zero-shot AUROC for focal slowing from 0.64 to 0.94, focal sharp waves 0.79 -> 0.81,
# spike-and-wave 0.83 -> 0.85, diffuse slowing 0.91 -> 1.00.
DEFAULT_PROMPTS: dict[str, tuple[str, str]] = {
    "abnormal": ("normal EEG", "abnormal EEG"),
    "spike_wave": ("normal EEG", "generalized 3 Hz spike and wave discharges"),
    "focal_slowing": ("normal EEG", "focal slowing"),
    "diffuse_slowing": ("normal EEG", "diffuse slowing"),
    "focal_sharp": ("normal EEG", "focal sharp waves"),
    "sleep": ("awake throughout the recording", "drowsiness and sleep with spindles and vertex waves"),
    "arithmetic": ("resting wakeful EEG with eyes closed", "EEG during mental arithmetic, serial subtraction"),
}


# The finding phrase a clinician would type for each label column (cohort retrieval).
COHORT_QUERIES: dict[str, str] = {
    "normal": "normal EEG",
    "abnormal": "abnormal EEG",
    "diffuse_slowing": "diffuse slowing",
    "focal_slowing": "focal slowing",
    "spike_wave": "generalized spike and wave",
    "focal_sharp": "focal sharp waves",
    "sleep": "sleep",
}


# The phrase a clinician would type for each event kind of a ground-truth events file (localisation).
EVENT_QUERIES: dict[str, str] = {
    "spike_wave": "spike and wave",
    "sharp_wave": "sharp wave",
    "spindle": "sleep spindle",
    "vertex_wave": "vertex wave",
    "eye_blink": "eye blink",
    "muscle": "muscle artifact",
}


def read_event_truth(fname: str | os.PathLike, root: str | os.PathLike) -> dict[str, list[tuple[float, float, str]]]:
    """Ground-truth events (CSV ``path,onset_s,duration_s,kind``, paths relative to ``root``) by archive path.

    Raises
    ------
    ValueError
        A missing column or a row whose times are not numbers (naming the line).
    """
    out: dict[str, list[tuple[float, float, str]]] = {}
    with open(fname, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "onset_s", "duration_s", "kind"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{fname}: missing column(s) {', '.join(sorted(missing))}")
        for n, row in enumerate(reader, 2):
            try:
                onset, duration = float(row["onset_s"]), float(row["duration_s"])
            except ValueError:
                raise ValueError(f"{fname}: line {n}: onset_s/duration_s are not numbers") from None
            path = archive_path(Path(root) / row["path"])
            out.setdefault(path, []).append((onset, onset + max(duration, 0.0), row["kind"]))
    return out


def event_localisation(index: Index, events_csv: str | os.PathLike, root: str | os.PathLike,
                       queries: dict[str, str] | None = None, sources=("eeg", "hybrid"), k: int = 10) -> dict:
    """Which minutes: precision@k of the windows a text query for an event kind returns.

    For each kind of the ground truth with a phrase (``EVENT_QUERIES``), ``search --level
    window`` returns ``k`` windows from each source; a window is right when an event of that
    kind overlaps it in its recording. ``eeg`` measures the EEG embedding alone; ``hybrid``
    also reads the events stored in the index (what technologists marked), so where the
    index holds the marks it measures the event search.

    Returns
    -------
    dict
        ``{source: {"P@k": mean over kinds, "by": {kind: P@k}}}``, ``"k"``, ``"queries"``.
    """
    truth = read_event_truth(events_csv, root)
    kinds = {kind for evs in truth.values() for _, _, kind in evs}
    queries = {c: q for c, q in (queries or EVENT_QUERIES).items() if c in kinds}
    with index.store.session() as s:
        path_of = dict(s.execute(select(Recording.id, Recording.path)).all())
    out: dict = {"k": k, "queries": queries}
    for source in sources:
        by = {}
        for kind, text in queries.items():
            hits = index.search_text(text, k, "window", None, source)
            right = sum(any(_overlaps(a, b, h.start_s, h.end_s) for a, b, kk in
                            truth.get(path_of.get(h.recording_id, ""), []) if kk == kind) for h in hits)
            by[kind] = right / k
        out[source] = {f"P@{k}": float(np.mean(list(by.values()))) if by else None, "by": by}
    return out


def _overlaps(onset: float, end: float, start_s: float, end_s: float) -> bool:
    """An event ``[onset, end]`` (a point when ``end == onset``) and a window ``[start_s, end_s)`` overlap."""
    return onset < end_s and end > start_s if end > onset else start_s <= onset < end_s


def withheld_reports(index: Index, fraction: float, seed: int = 0) -> set[int]:
    """Report ids of a seeded ``fraction`` of the index's patients: the reports a query may not read."""
    if fraction <= 0:
        return set()
    with index.store.session() as s:
        rows = s.execute(select(Patient.key, Recording.report_id).join(Patient, Recording.patient_id == Patient.id)
                         .where(Recording.status == Status.INDEXED, Recording.report_id.is_not(None))).all()
    patients = sorted({p for p, _ in rows})
    rng = np.random.default_rng(seed)
    chosen = set(rng.permutation(patients)[: int(round(fraction * len(patients)))].tolist())
    return {rep for p, rep in rows if p in chosen}


def cohort_retrieval(index: Index, labels_csv: str | os.PathLike, root: str | os.PathLike | None = None,
                     queries: dict[str, str] | None = None, sources=("eeg", "reports", "hybrid"),
                     withheld=(0.0, 0.5, 1.0), seed: int = 0) -> dict:
    """Cohort retrieval by finding: one query per label column, every labelled recording ranked.

    For each column with both labels, its phrase (``COHORT_QUERIES``) ranks all the labelled
    recordings from each source (``indexer.hybrid``), with a seeded share of the patients'
    reports withheld; average precision and precision@10 against the labels.

    Returns
    -------
    dict
        ``{f"{source}@{fraction}": {"MAP", "P@10", "AP": {column: ...}, "P@10_by": {...}}}``
        plus ``"n"`` (labelled recordings) and ``"queries"``.
    """
    from sklearn.metrics import average_precision_score

    from indexer.hybrid import rank
    from indexer.search import Filters

    table, names = read_label_table(labels_csv, root)
    queries = {c: q for c, q in (queries or COHORT_QUERIES).items() if c in names}
    with index.store.session() as s:
        rows = [(r.id, table.get(r.path) or table.get(r.key)) for r in s.scalars(
            select(Recording).where(Recording.status == Status.INDEXED).order_by(Recording.id))]
    labelled = {rid: row for rid, row in rows if row is not None}
    ids = np.array(sorted(labelled))
    out: dict = {"n": len(ids), "queries": queries}
    for fraction in withheld:
        held = withheld_reports(index, fraction, seed)
        for source in sources:
            ap, p10 = {}, {}
            for column, text in queries.items():
                y = np.array([parse_binary(labelled[i].get(column, "")) or 0 for i in ids])
                if y.min() == y.max():
                    continue
                q = index._text_query(text)
                with index.store.session() as s:
                    ranked = rank(index, s, text, q, len(ids) + 64, Filters(), source, held)
                order = {c.recording_id: n for n, c in enumerate(ranked)}
                score = -np.array([order.get(i, len(order) + j) for j, i in enumerate(ids)], float)
                ap[column] = float(average_precision_score(y, score))
                top = np.argsort(-score)[:10]
                p10[column] = float(y[top].mean())
            out[f"{source}@{fraction:g}"] = {"MAP": float(np.mean(list(ap.values()))) if ap else None,
                                            "P@10": float(np.mean(list(p10.values()))) if p10 else None,
                                            "AP": ap, "P@10_by": p10}
    return out


def read_label_table(fname: str | os.PathLike, root: str | os.PathLike | None) -> tuple[dict[str, dict], list[str]]:
    """Label rows keyed like ``elmsearch.archive.labels`` (path or subject/session/montage/token) + column names."""
    with open(fname, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    return {label_key(r, root): r for r in rows}, list(rows[0]) if rows else []


def _finding_precision(emb: np.ndarray, patients: np.ndarray, findings: np.ndarray, k: int = 5) -> dict:
    """Precision@k of the main finding among a recording's nearest other-patient prior cases.

    Parameters
    ----------
    emb : array, shape (n, dim)
        L2-normalised recording vectors (the score is their dot product, i.e. cosine).
    patients : array, shape (n,)
        Patient of each recording.
    findings : array of str, shape (n,)
        Main finding of each recording (``"normal"`` when it has none).
    k : int
        Prior cases per query.

    Returns
    -------
    dict
        ``{"P@k": mean precision, "n": queries, "chance": ..., "by_finding": {finding: {"P@k", "n"}}}``.
        Each query ranks the recordings of the other patients by score and keeps the best one of
        each patient, as ``elmsearch similar`` does by default; its own patient's recordings never
        count. Its precision is the share of its ``min(k, other patients)`` prior cases whose main
        finding equals its own. ``chance`` is the mean over queries of the fraction of other-patient
        recordings that share the query's main finding (a random neighbour's expected precision).
        Recordings without another patient are no query; with none, the values are NaN.
    """
    sim = emb @ emb.T
    prec, chance, asked = [], [], []
    for i in range(len(emb)):
        other = patients != patients[i]
        if not other.any():
            continue
        top, seen = [], set()
        for j in np.argsort(-sim[i], kind="stable"):
            if other[j] and patients[j] not in seen:
                seen.add(patients[j])
                top.append(j)
                if len(top) == k:
                    break
        prec.append(float(np.mean(findings[top] == findings[i])))
        chance.append(float(np.mean(findings[other] == findings[i])))
        asked.append(str(findings[i]))
    prec_a, asked_a = np.array(prec), np.array(asked)
    return {f"P@{k}": float(prec_a.mean()) if prec else float("nan"), "n": len(prec),
            "chance": float(np.mean(chance)) if chance else float("nan"),
            "by_finding": {f: {f"P@{k}": float(prec_a[asked_a == f].mean()), "n": int((asked_a == f).sum())}
                           for f in sorted(set(asked))}}


def _main_findings(labels: dict[str, np.ndarray], order: list[str]) -> np.ndarray | None:
    """Main finding per recording: the first finding column (in ``order``) that is 1, else ``"normal"``.

    The aggregate column ``abnormal`` is no finding when other columns are there. None without columns.
    """
    cols = sorted(labels, key=lambda c: order.index(c) if c in order else len(order))
    if len(cols) > 1:
        cols = [c for c in cols if c != "abnormal"]
    if not cols:
        return None
    n = len(labels[cols[0]])
    out = np.full(n, "normal", dtype=object)
    for c in reversed(cols):  # the earliest positive column is written last
        out[np.asarray(labels[c] == 1, dtype=bool)] = c
    return out.astype(str)


def _stored_windows(store: WindowStore | None, digest: str | None, params, window_seconds: float
                    ) -> np.ndarray | None:
    """A recording's windows (float32) from the index's window store, or None when it lacks them."""
    got = store.get(store.key(None, params.to_dict(), window_seconds, digest)) if store and digest else None
    return None if got is None else np.asarray(got[0][0 : len(got[0])], np.float32)


def _band_power_vectors(bp: list[np.ndarray]) -> np.ndarray:
    """Recording vectors of the band-power baseline: mean over windows, z-scored per feature, L2-normalised."""
    x = np.stack([f.mean(0) for f in bp]).astype(np.float64)
    sd = x.std(0)
    x = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def evaluate_index(index: Index, labels_csv: str | os.PathLike, root: str | os.PathLike | None = None,
                   columns: list[str] | None = None, prompts: dict | None = None,
                   fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2), n_per_class: int | None = None,
                   elm_weights: str | os.PathLike | None = None, baselines: bool = True, cohort: bool = True,
                   events_csv: str | os.PathLike | None = None) -> dict:
    """Evaluate the recordings of ``index`` that have a row in ``labels_csv``.

    Parameters
    ----------
    index : Index
    labels_csv : path-like
        ``path`` (relative to ``root``) or ``subject,session,montage,token`` + 0/1 label columns.
    root : path-like | None
        Archive root that relative label paths refer to.
    columns : list of str | None
        Label columns (default: those with prompts that the file has).
    prompts : dict | None
        ``{column: [negative, positive]}``, added to ``DEFAULT_PROMPTS``.
    fractions, seeds : tuple
        Label-efficiency points and splits.
    n_per_class : int | None
        Probe with exactly this many labels per class (e.g. 4) instead of ``fractions``.
    elm_weights : path-like | None
        ELM release folder for the untrained-weights baseline (skipped when None).
    events_csv : path-like | None
        Ground-truth events (``path,onset_s,duration_s,kind``) for the window-level localisation
        (``event_localisation``); skipped when None.
    baselines : bool
        Compute the band-power and ELM-weights baselines (reads the EDFs again).
    cohort : bool
        Cohort retrieval by finding (``cohort_retrieval``) for the label columns that have a
        phrase in ``COHORT_QUERIES`` (text models only).

    Returns
    -------
    dict
        ``n_recordings``, ``n_patients``, ``columns``, ``model``; ``retrieval`` (when reports are
        indexed); ``same_patient`` and ``finding_precision`` (prior cases, per representation:
        ``ours`` (what ``similar`` compares; ``ours_embedding`` too when that is the spectral
        profile), ``band_power``, ``elm_weights``; the latter only with at least one 0/1 label
        column, the main finding being the first positive finding column in the labels file's
        order, ``abnormal`` aside when other columns are there, else ``"normal"``);
        ``zero_shot`` (text models); ``cohort`` (text models: MAP and P@10 of each source with 0,
        50 and 100 % of the reports withheld); ``probe`` (per column and representation).
    """
    table, names = read_label_table(labels_csv, root)
    prompts = {**DEFAULT_PROMPTS, **{k: tuple(v) for k, v in (prompts or {}).items()}}
    columns = columns or [c for c in names if c in prompts]
    with index.store.session() as s:
        q = (select(Recording, Patient.key, Report.emb).outerjoin(Patient, Recording.patient_id == Patient.id)
             .outerjoin(Report, Recording.report_id == Report.id)
             .where(Recording.status == Status.INDEXED).order_by(Recording.id))
        profiled = index.similar_representation != "embedding"  # eeg_profile: spectral, bandpower or fusion
        if profiled:
            q = q.options(undefer(Recording.profile))
        recs, profiles = [], []
        for r, patient, rep_emb in s.execute(q):
            row = table.get(r.path) or table.get(r.key)
            if row is not None:
                recs.append((r.id, r.path, patient or r.path, from_blob(r.emb), rep_emb, r.report_id, row,
                             r.content_hash))
                profiles.append(from_blob(r.profile) if profiled and r.profile else None)
        if not recs:
            raise ValueError(f"{labels_csv}: no row matches an indexed recording (check --root)")
        windows = {rid: [] for rid, *_ in recs}
        for rid, emb in s.execute(select(Window.recording_id, Window.emb).where(
                Window.recording_id.in_(list(windows))).order_by(Window.recording_id, Window.ordinal)):
            windows[rid].append(from_blob(emb))
    emb = np.stack([x[3] for x in recs])
    patients = np.array([x[2] for x in recs])
    result: dict = {"n_recordings": len(recs), "n_patients": len(set(patients)), "columns": columns,
                    "model": index.manifest["model_path"], "similar_representation": index.similar_representation}

    with_report = [i for i, x in enumerate(recs) if x[4] is not None]
    if with_report:
        R = emb[with_report]
        T = np.stack([from_blob(recs[i][4]) for i in with_report])
        result["retrieval"] = {"text_to_eeg": retrieval_metrics(T @ R.T), "eeg_to_report": retrieval_metrics(R @ T.T),
                               "chance_R@10": chance_recall(len(with_report), 10)}

    labels = {c: np.array([parse_binary(x[6].get(c, "")) if x[6].get(c, "") != "" else -1 for x in recs])
              for c in columns}
    labels = {c: y for c, y in labels.items() if set(y[y >= 0]) == {0, 1}}
    if index.manifest.get("has_text"):
        result["zero_shot"] = {}
        for c, y in labels.items():
            ok = y >= 0
            p = zero_shot(index.model, emb[ok], list(prompts[c]))[:, 1]
            result["zero_shot"][c] = {**score_binary(y[ok], p), "prompts": list(prompts[c]), "n": int(ok.sum())}
        # from the minutes (``zero_shot_windows``): each window classified, the finding's best kept
        result["zero_shot_windows"] = {}
        for c, y in labels.items():
            ok = np.flatnonzero(y >= 0)
            prompt_emb = prompt_embeddings(index.model, list(prompts[c]))  # once for every recording
            p = np.array([minutes_scores(prompt_softmax(np.stack(windows[recs[i][0]]), prompt_emb,
                                                        index.model.temperature))[0][1] for i in ok])
            result["zero_shot_windows"][c] = {**score_binary(y[ok], p), "n": int(len(ok))}

    feats = {"ours": [np.stack(windows[x[0]]) for x in recs]}
    # one vector per recording, for the prior-case measurements: "ours" is what `similar` compares
    rec_vectors = {"ours": emb}
    if all(p is not None for p in profiles):
        rec_vectors = {"ours": np.stack(profiles), "ours_embedding": emb}
    if baselines:
        params = index.model.config.preprocessing
        from elmsearch.signal.preprocessing import PreprocessingParams

        pp = PreprocessingParams.from_dict(params or {})
        release = load_model(elm_weights) if elm_weights else None
        bp, rel = [], []
        kept = recorded_window_store(index.manifest)  # windows an index run kept: no EDF read again
        for x in recs:
            w = _stored_windows(kept, x[7], pp, index.model.window_seconds)
            if w is None:
                try:
                    rec = read_recording(x[1], pp, min_duration=index.model.window_seconds)
                except RecordingError as err:
                    raise ValueError(f"baseline features: {err}") from None
                w = make_windows(rec, index.model.window_seconds)
            bp.append(band_power(w, pp.sfreq))
            if release is not None:
                rel.append(release.encode_eeg(w, precision="fp32"))
        feats["band_power"] = bp
        rec_vectors["band_power"] = _band_power_vectors(bp)
        if release is not None:
            feats["elm_weights"] = rel
            rec_vectors["elm_weights"] = np.stack([e.mean(0) / np.linalg.norm(e.mean(0)) for e in rel])
    result["same_patient"] = {name: same_patient_recall(v, patients) for name, v in rec_vectors.items()}
    findings = _main_findings(labels, names)
    if findings is not None:
        result["finding_precision"] = {name: _finding_precision(v, patients, findings)
                                       for name, v in rec_vectors.items()}
    if cohort and index.manifest.get("has_text") and set(COHORT_QUERIES) & set(labels):
        result["cohort"] = cohort_retrieval(index, labels_csv, root,
                                            {c: q for c, q in COHORT_QUERIES.items() if c in labels})
    if events_csv is not None and index.manifest.get("has_text"):
        result["events"] = event_localisation(index, events_csv, root or Path(labels_csv).parent)
    result["probe"] = {}
    for c, y in labels.items():
        ok = np.flatnonzero(y >= 0)
        result["probe"][c] = {
            name: label_efficiency(ProbeData([f[i] for i in ok], y[ok], patients[ok]), fractions, seeds,
                                   n_per_class=n_per_class)
            for name, f in feats.items()}
    return result


def write_report(result: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``eval.json`` and one label-efficiency PNG per column (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with private_umask():  # per-recording results of patients: folder 0700, files 0600
        return _write_report(result, output_dir(out_dir, "eval.json", "evaluation"), plt)


def _write_report(result: dict, out: Path, plt) -> list[Path]:
    written = [out / "eval.json"]
    written[0].write_text(json.dumps(result, indent=1, default=float))
    for column, curves in result.get("probe", {}).items():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, rows in curves.items():
            rows = [r for r in rows if r["n_labels"] > 0 and np.isfinite(r["auroc"])]
            if not rows:
                continue
            x = [r["n_labels"] for r in rows]
            y = [r["auroc"] for r in rows]
            ax.errorbar(x, y, yerr=[r["auroc_sd"] for r in rows], marker="o", capsize=3, label=name)
        if column in result.get("zero_shot", {}):
            ax.axhline(result["zero_shot"][column]["auroc"], ls="--", c="gray", label="zero-shot")
        if ax.lines:
            ax.set_xscale("log")
        ax.set_xlabel("labelled training recordings")
        ax.set_ylabel("AUROC (held-out patients)")
        ax.set_title(f"linear probe: {column}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fname = out / f"probe_{column}.png"
        fig.savefig(fname, dpi=100)
        plt.close(fig)
        written.append(fname)
    return written

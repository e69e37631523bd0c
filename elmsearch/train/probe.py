"""Label-efficient linear probes on frozen embeddings (ELM's protocol).

A logistic regression is fitted on window embeddings, each window carrying its
recording's label; a recording's score is the mean of its windows' probabilities.
Splits are by patient. The label-efficiency curve refits on 1%, 10%, 100% of the
training recordings (at least one per class), over several seeds.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np


@dataclasses.dataclass
class ProbeData:
    """Window embeddings grouped by recording.

    Attributes
    ----------
    window_emb : list of arrays, shape (n_windows_i, dim)
    labels : array of int, shape (n_recordings,)
    patients : array of str, shape (n_recordings,)
    """

    window_emb: list[np.ndarray]
    labels: np.ndarray
    patients: np.ndarray


def _fit_predict(train_emb, train_y, test_emb, C: float, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.concatenate(train_emb)
    y = np.concatenate([np.full(len(e), lab) for e, lab in zip(train_emb, train_y, strict=True)])
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed,
                                                             class_weight="balanced"))
    clf.fit(X, y)
    return np.array([clf.predict_proba(e)[:, 1].mean() for e in test_emb])


def score_binary(y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Balanced accuracy (threshold 0.5) and AUROC."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    out = {"balanced_accuracy": float(balanced_accuracy_score(y_true, prob >= 0.5))}
    out["auroc"] = float(roc_auc_score(y_true, prob)) if len(set(y_true)) == 2 else float("nan")
    return out


def patient_split(patients: np.ndarray, labels: np.ndarray, test_fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of train and test recordings, no patient in both; both classes in each when possible."""
    rng = np.random.default_rng(seed)
    for _ in range(100):
        uniq = np.unique(patients)
        rng.shuffle(uniq)
        test_p = set(uniq[: max(1, int(round(len(uniq) * test_fraction)))])
        test = np.array([p in test_p for p in patients])
        if len(set(labels[test])) == 2 and len(set(labels[~test])) == 2:
            break
    return np.flatnonzero(~test), np.flatnonzero(test)


def label_subset(train_idx: np.ndarray, labels: np.ndarray, fraction: float, rng) -> np.ndarray:
    """A stratified subset of training recordings with at least one of each class."""
    chosen = []
    for c in np.unique(labels[train_idx]):
        idx = train_idx[labels[train_idx] == c]
        k = max(1, int(round(len(idx) * fraction)))
        chosen.append(rng.choice(idx, min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(chosen))


def label_efficiency(data: ProbeData, fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2),
                     test_fraction: float = 0.3, C: float = 1.0,
                     n_per_class: int | None = None) -> list[dict]:
    """The label-efficiency curve of a linear probe.

    Parameters
    ----------
    data : ProbeData
    fractions : tuple of float
        Fractions of training recordings whose labels are used.
    seeds : tuple of int
        One patient split and label subset per seed.
    test_fraction : float
        Fraction of patients held out.
    C : float
        Inverse regularisation of the logistic regression.
    n_per_class : int | None
        Use exactly this many labelled recordings per class instead of ``fractions``.

    Returns
    -------
    list of dict
        Per fraction: ``{"fraction", "n_labels", "balanced_accuracy", "auroc",
        "balanced_accuracy_sd", "auroc_sd", "n_seeds"}``.
    """
    labels = np.asarray(data.labels).astype(int)
    points = [n_per_class] if n_per_class else list(fractions)
    rows = []
    for point in points:
        scores, n_labels = [], []
        for seed in seeds:
            rng = np.random.default_rng([seed, 7])
            tr, te = patient_split(np.asarray(data.patients), labels, test_fraction, seed)
            if n_per_class:
                sub = np.sort(np.concatenate([
                    rng.choice(tr[labels[tr] == c], min(n_per_class, int((labels[tr] == c).sum())),
                               replace=False) for c in np.unique(labels[tr])]))
            else:
                sub = label_subset(tr, labels, point, rng)
            if len(set(labels[sub])) < 2:
                continue
            prob = _fit_predict([data.window_emb[i] for i in sub], labels[sub],
                                [data.window_emb[i] for i in te], C, seed)
            scores.append(score_binary(labels[te], prob))
            n_labels.append(len(sub))
        ba = [s["balanced_accuracy"] for s in scores]
        au = [s["auroc"] for s in scores]
        rows.append({"fraction": None if n_per_class else point,
                     "n_per_class": n_per_class, "n_labels": float(np.mean(n_labels)) if n_labels else 0,
                     "balanced_accuracy": float(np.mean(ba)) if ba else float("nan"),
                     "balanced_accuracy_sd": float(np.std(ba)) if ba else float("nan"),
                     "auroc": float(np.nanmean(au)) if au else float("nan"),
                     "auroc_sd": float(np.nanstd(au)) if au else float("nan"),
                     "n_seeds": len(scores)})
    return rows


def run_probe(model, root, labels_csv, column: str, fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2),
              on_item=None) -> list[dict]:
    """Embed an archive's labelled recordings with ``model`` and run ``label_efficiency``.

    Recordings are matched to label rows by path or by key (see ``elmsearch.archive.labels``);
    unreadable recordings are skipped with a warning.
    """
    import logging

    from elmsearch.archive.discovery import discover
    from elmsearch.archive.labels import read_labels
    from elmsearch.errors import RecordingError
    from elmsearch.models.embedding import embed_recording

    log = logging.getLogger(__name__)
    labels = read_labels(labels_csv, column, root)
    embs, ys, patients = [], [], []
    for entry in discover(root):
        y = labels.get(os.path.abspath(entry.path), labels.get("/".join(entry.key)))
        if y is None:
            continue
        try:
            e = embed_recording(model, entry.path)
        except RecordingError as err:
            log.warning("%s", err)
            continue
        embs.append(e.window_emb)
        ys.append(y)
        patients.append(entry.info.subject)
        if on_item:
            on_item(entry)
    if len(set(ys)) < 2:
        raise ValueError(f"{labels_csv}: column {column!r} needs both classes among readable recordings")
    return label_efficiency(ProbeData(embs, np.array(ys), np.array(patients)), fractions, seeds)

"""The prior-case space of an index: fitted on its own archive, chosen by what finds a patient's recordings.

A model's EEG embedding is not always the best way to find a patient's other recordings. With
the ELM release weights (no training on reports), the mean-pooled embeddings of all EEGMAT
recordings are nearly parallel (cosines 0.986-0.999) and another recording of the same subject
is among the 5 nearest for 58 % of the recordings; a log band-power map standardised over the
archive finds it for 88 %. An index whose model has no spectral profile of its own (see
``ELMModel.similar_representation``) therefore fits its prior-case space on its archive at the
end of every run that changed it, and chooses among three kinds:

- ``embedding``: the recording embeddings as they are (FAISS ``eeg_recording``);
- ``bandpower``: the band-power map of each recording (``bandpower_profile``: absolute and
  relative log power, 20 channels x 5 bands), z-scored per feature over the archive;
- ``fusion``: the embeddings' top ``EMB_COMPONENTS`` principal components over the archive,
  whitened, beside the z-scored band-power map, the two parts weighted ``WEIGHT`` and
  ``1 - WEIGHT`` of the squared norm (the cosine is the weighted sum of the two cosines).

For a model that ``elmsearch train`` produced, its choice stands: training measured it on
held-out patients, and the same-patient measurement below would ignore what a trained model
adds, recordings that share findings (on the held-out demo, finding precision@5 0.707 with the
embedding against 0.563 with ``fusion``, which same-patient recall preferred, 0.667 vs 0.632).
For the other models (the ELM release weights: EEG only), when the archive holds at least
``MIN_PATIENTS`` patients with two or more recordings, the index measures, for each kind, how
often another recording of the same patient is among the 5 nearest (up to ``MAX_QUERIES`` of
those recordings as queries, against the whole archive) and takes the best (a tie goes to the
default); otherwise it takes the default, ``DEFAULT``: the kind that held on the public data
measured (EEGMAT, docs/benchmarks.md "Prior cases with the release weights").
The fitted space and the measurement go into the manifest (``similar_space``); the vectors of
``bandpower`` and ``fusion`` into ``Recording.profile`` and FAISS ``eeg_profile``. A query file
gets the same transform (``SimilarSpace.transform``).
"""

from __future__ import annotations

import base64
import dataclasses
import logging

import numpy as np
from sqlalchemy import func, select, update

from db import Recording, Status, from_blob, to_blob

logger = logging.getLogger(__name__)

KINDS = ("embedding", "bandpower", "fusion")
DEFAULT = "fusion"
EMB_COMPONENTS = 16
WEIGHT = 0.3  # the embedding's share of the fused vector's squared norm
MIN_PATIENTS = 5  # patients with two or more recordings needed to measure the choice on the archive
MAX_QUERIES = 2000  # recordings used as queries in that measurement
K = 5
DIM = 256
FIT_MAX = 50_000  # recordings the space is fitted on at most (drawn at random above that)
CHUNK = 900  # recordings read and written at once


def _arr(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, "<f4").tobytes()).decode()


def _unarr(s: str, shape=None) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(s), "<f4").astype(np.float32)
    return a.reshape(shape) if shape is not None else a


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


@dataclasses.dataclass
class SimilarSpace:
    """A fitted prior-case space (see the module's docstring).

    Attributes
    ----------
    kind : str
        ``embedding``, ``bandpower`` or ``fusion``.
    emb_mean : array, shape (256,)
    emb_axes : array, shape (n_components, 256)
        Principal axes of the embeddings, each divided by its standard deviation (whitening).
    bp_mean, bp_scale : array, shape (n_bandpower,)
        Per-feature mean and standard deviation of the band-power maps.
    weight : float
        The embedding's share in ``fusion``.
    measured : dict
        Same-patient Recall@5 of each kind on the archive, with ``n_queries`` and
        ``n_patients`` (empty when it could not be measured).
    """

    kind: str
    emb_mean: np.ndarray
    emb_axes: np.ndarray
    bp_mean: np.ndarray
    bp_scale: np.ndarray
    weight: float = WEIGHT
    measured: dict = dataclasses.field(default_factory=dict)

    def transform(self, emb: np.ndarray, bandpower: np.ndarray, kind: str | None = None) -> np.ndarray:
        """Prior-case vectors, shape (n, 256), unit norm (zero-padded), from embeddings and band-power maps.

        Parameters
        ----------
        emb : array, shape (n, 256) or (256,)
            Recording embeddings.
        bandpower : array, shape (n, n_bandpower) or (n_bandpower,)
            Their band-power maps (``bandpower_profile``).
        kind : str | None
            Another kind than the chosen one (the measurement compares them).
        """
        kind = kind or self.kind
        e = np.atleast_2d(np.asarray(emb, np.float64))
        b = np.atleast_2d(np.asarray(bandpower, np.float64))
        if kind == "embedding":
            v = _unit(e)
        else:
            z = _unit((b - self.bp_mean) / self.bp_scale)
            if kind == "bandpower":
                v = z
            else:
                pcs = _unit((e - self.emb_mean) @ self.emb_axes.T)
                v = np.hstack([np.sqrt(self.weight) * pcs, np.sqrt(1 - self.weight) * z])
        out = np.zeros((len(v), DIM), np.float32)
        out[:, : v.shape[1]] = _unit(v)
        return out

    def to_dict(self) -> dict:
        """JSON-ready (arrays as base64 float32), for the manifest."""
        return {"kind": self.kind, "weight": self.weight, "measured": self.measured,
                "emb_mean": _arr(self.emb_mean), "emb_axes": _arr(self.emb_axes),
                "n_components": int(len(self.emb_axes)), "bp_mean": _arr(self.bp_mean), "bp_scale": _arr(self.bp_scale)}

    @classmethod
    def from_dict(cls, d: dict) -> SimilarSpace:
        """Inverse of ``to_dict``."""
        return cls(d["kind"], _unarr(d["emb_mean"]), _unarr(d["emb_axes"], (int(d["n_components"]), -1)),
                   _unarr(d["bp_mean"]), _unarr(d["bp_scale"]), float(d["weight"]), d.get("measured") or {})


def same_patient_recall(v: np.ndarray, patients: np.ndarray, queries: np.ndarray, k: int = K) -> float:
    """Share of ``queries`` with another recording of their patient among their ``k`` nearest (cosine)."""
    hits = 0
    for start in range(0, len(queries), 256):
        q = queries[start : start + 256]
        sim = v[q] @ v.T
        sim[np.arange(len(q)), q] = -np.inf  # never the query itself
        top = np.argpartition(-sim, min(k, sim.shape[1] - 1), axis=1)[:, :k]
        hits += int((patients[top] == patients[q][:, None]).any(axis=1).sum())
    return hits / len(queries) if len(queries) else float("nan")


def fit(emb: np.ndarray, bandpower: np.ndarray, patients: np.ndarray, seed: int = 0,
        default: str = DEFAULT, measure: bool = True) -> SimilarSpace:
    """Fit the space on an archive's recordings and choose its kind (see the module's docstring).

    Parameters
    ----------
    emb : array, shape (n, 256)
    bandpower : array, shape (n, n_bandpower)
    patients : array, shape (n,)
        Patient keys (None or "" for unknown: never counted as the same patient).
    default : str
        The kind when the archive cannot measure the choice, and the winner of a tie: ``DEFAULT``,
        or the representation ``elmsearch train`` chose for the model on its held-out patients.
    measure : bool
        Measure the choice on the archive when it can; False keeps ``default`` (a trained model's).
    """
    emb = np.asarray(emb, np.float64)
    bp = np.asarray(bandpower, np.float64)
    sd = bp.std(0)
    mean = emb.mean(0)
    n_comp = max(1, min(EMB_COMPONENTS, len(emb) - 1))
    _, s, vt = np.linalg.svd(emb - mean, full_matrices=False)
    scale = s[:n_comp] / np.sqrt(max(len(emb) - 1, 1))
    axes = vt[:n_comp] / np.where(scale > 1e-12, scale, 1.0)[:, None]
    space = SimilarSpace(default, mean.astype(np.float32), axes.astype(np.float32), bp.mean(0).astype(np.float32),
                         np.where(sd > 1e-9, sd, 1.0).astype(np.float32))
    keys = np.array([str(p) if p else f"\0{i}" for i, p in enumerate(patients)])  # unknown: a patient of its own
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    several = np.flatnonzero(counts[inverse] >= 2)
    n_patients = int((counts >= 2).sum())
    if not measure:
        logger.info("prior cases: %s (chosen by training on held-out patients)", default)
        return space
    if n_patients < MIN_PATIENTS:
        logger.info("prior cases: %s (%d patients with several recordings, %d needed to measure the choice)",
                    default, n_patients, MIN_PATIENTS)
        return space
    queries = several if len(several) <= MAX_QUERIES else np.sort(
        np.random.default_rng(seed).choice(several, MAX_QUERIES, replace=False))
    recall = {kind: round(same_patient_recall(space.transform(emb, bp, kind), inverse, queries), 4) for kind in KINDS}
    best = max(recall.values())
    space.kind = default if recall[default] == best else max(recall, key=recall.get)
    space.measured = {"recall_at_5": recall, "n_queries": int(len(queries)), "n_patients": n_patients}
    logger.info("prior cases: %s (same-patient R@5 on this archive: %s; %d queries, %d patients)", space.kind,
                ", ".join(f"{k} {v:.3f}" for k, v in recall.items()), len(queries), n_patients)
    return space


def refresh(store, model_hash: str, default: str = DEFAULT, seed: int = 0, measure: bool = True
            ) -> SimilarSpace | None:
    """Fit the space on an index's indexed recordings and write their prior-case vectors.

    ``default``, ``measure``: as in ``fit``. The space is fitted on up to ``FIT_MAX`` recordings drawn at
    random (every one below that); every recording's vector is then written, ``CHUNK`` at a
    time, so memory stays bounded whatever the archive. Returns None (prior cases by the
    embeddings) when fewer than 3 recordings are indexed or some have no band-power map (rows
    written before it existed: ``elmsearch index --reembed``).
    """
    from db import Patient

    indexed = (Recording.status == Status.INDEXED, Recording.model_hash == model_hash)
    with store.session() as s:
        ids = np.array(s.scalars(select(Recording.id).where(*indexed).order_by(Recording.id)).all(), np.int64)
        missing = s.scalar(select(func.count()).select_from(Recording).where(*indexed, Recording.bandpower.is_(None)))
    space = None
    if len(ids) >= 3 and missing:
        logger.warning("prior cases: by the embeddings; %d recordings have no band-power map (written by an "
                       "older version): `elmsearch index --reembed` fits the prior-case space", missing)
    elif len(ids) >= 3:
        fit_ids = ids if len(ids) <= FIT_MAX else np.sort(np.random.default_rng(seed).choice(ids, FIT_MAX, False))
        emb, bp, patients = [], [], []
        with store.session() as s:
            for start in range(0, len(fit_ids), CHUNK):
                chunk = fit_ids[start : start + CHUNK].tolist()
                for e, b, p in s.execute(select(Recording.emb, Recording.bandpower, Patient.key)
                                         .outerjoin(Patient, Recording.patient_id == Patient.id)
                                         .where(Recording.id.in_(chunk)).order_by(Recording.id)):
                    emb.append(from_blob(e))
                    bp.append(from_blob(b))
                    patients.append(p or "")
        space = fit(np.stack(emb), np.stack(bp), np.array(patients, dtype=object), default=default, measure=measure)
        del emb, bp
    with store.session() as s, s.begin():
        if space is None or space.kind == "embedding":
            s.execute(update(Recording).where(Recording.profile.is_not(None)).values(profile=None))
            return space
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK].tolist()
            rows = s.execute(select(Recording.id, Recording.emb, Recording.bandpower)
                             .where(Recording.id.in_(chunk)).order_by(Recording.id)).all()
            vectors = space.transform(np.stack([from_blob(r[1]) for r in rows]),
                                      np.stack([from_blob(r[2]) for r in rows]))
            s.execute(update(Recording), [{"id": r[0], "profile": to_blob(v)}
                                          for r, v in zip(rows, vectors, strict=True)])
    return space

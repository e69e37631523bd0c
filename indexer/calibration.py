"""Scores a person can read: each hit's percentile among the archive's own scores of its query kind.

A raw score means little by itself: with the ELM release weights every recording of one subject
scores 0.986-0.999 against the others, and a model trained on reports gives cosines near zero on
EEG unlike its training data. What a reader can use is where a score stands among the scores the
same kind of query gets in this archive:

- ``similar``: up to ``N_RECORDINGS`` indexed recordings drawn at random (fixed seed) each ask for
  their prior cases, with the rules a query gets (other patients, one hit per patient); the
  scores of their top ``K`` hits are the reference, and each one's best score the *nearest*
  reference (how close an archive recording's nearest other patient is);
- ``reports``: the same recordings' top ``K`` report hits, their own report left out (a new
  recording's report is never in the index);
- ``search/SOURCE`` and ``window/SOURCE``: up to ``N_SENTENCES`` finding sentences of the
  archive's reports without a negation or uncertainty cue, searched as queries (text →
  recordings, text → windows).

``percentile(kind, score)`` is the share of the reference at or below ``score`` (0-100): a hit at
the 95th percentile scores higher than 95 % of the top hits that archive queries of its kind get.
A query recording whose nearest hit is below the ``UNLIKE_PERCENTILE``-th percentile of the
nearest reference is *unlike the archive*: its prior cases are the least unlike, not alike.

A kind's reference is built the first time it is needed (about a second per kind on the demo
archive: it runs the real queries) and kept in ``DIR/cache/score_reference.json``, keyed by the
manifest: a new index run makes it again. Without a writable folder it lives in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import func, select

from db import Recording, Segment, Status
from elmsearch.text.assertion import has_cue

if TYPE_CHECKING:
    from indexer.search import Index

logger = logging.getLogger(__name__)

N_RECORDINGS = 200  # recordings asked for prior cases and reports
N_SENTENCES = 32  # finding sentences searched as text queries
K = 10  # hits per reference query
UNLIKE_PERCENTILE = 5.0  # a nearest hit below this percentile of the archive's own nearest hits: unlike it
SEED = 0
FILE = "score_reference.json"
VERSION = 1


def _manifest_key(folder: Path) -> str:
    try:
        return hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def _sample_ids(s, column, where, n: int, rng: np.random.Generator) -> list[int]:
    """Up to ``n`` ids of rows passing ``where``, drawn at random without reading every id."""
    top = s.scalar(select(func.max(column)))
    if not top:
        return []
    got: list[int] = []
    seen: set[int] = set()
    for _ in range(8):  # a few rounds: ids of removed rows and rows that fail ``where`` are skipped
        want = min(int(top), 4 * (n - len(got)) + 16)
        draw = [i for i in dict.fromkeys(rng.integers(1, top + 1, size=want).tolist()) if i not in seen]
        seen.update(draw)
        for chunk in range(0, len(draw), 900):
            got += s.scalars(select(column).where(column.in_(draw[chunk : chunk + 900]), *where)).all()
        if len(got) >= n or len(seen) >= top:
            break
    return sorted(set(got))[:n]


class ScoreReference:
    """The reference scores of an index, by query kind (see the module's docstring).

    Parameters
    ----------
    index : Index
        The index whose own queries make the reference.
    """

    def __init__(self, index: Index):
        self.index = index
        self.folder = index.store.folder / "cache"
        self.key = _manifest_key(index.store.folder)
        self._kinds: dict[str, np.ndarray] = {}
        self._lock = threading.RLock()
        self._read()

    # ---- reading and writing ----------------------------------------------------------------
    def _read(self) -> None:
        try:
            doc = json.loads((self.folder / FILE).read_text())
        except (OSError, ValueError):
            return
        if doc.get("version") == VERSION and doc.get("manifest") == self.key:
            self._kinds = {k: np.asarray(v, np.float64) for k, v in doc.get("kinds", {}).items()}

    def _write(self) -> None:
        doc = {"version": VERSION, "manifest": self.key,
               "kinds": {k: v.tolist() for k, v in self._kinds.items()}}
        try:
            self.folder.mkdir(exist_ok=True)
            tmp = self.folder / f".{FILE}.{os.getpid()}.{threading.get_ident()}"
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.folder / FILE)
        except OSError as err:  # a read-only index: the reference lives in memory
            logger.debug("score reference not saved in %s: %s", self.folder, err)

    # ---- the references -----------------------------------------------------------------------
    def scores(self, kind: str) -> np.ndarray:
        """The sorted reference scores of a query kind (built on first use; empty when none can be)."""
        with self._lock:
            if kind not in self._kinds:
                built = self._build(kind)
                # rounded as written (and as hits show their scores): the same answer before and after a reload
                self._kinds.update({k: np.sort(np.round(np.asarray(v, np.float64), 6)) for k, v in built.items()})
                self._kinds.setdefault(kind, np.zeros(0))
                self._write()
            return self._kinds[kind]

    def percentile(self, kind: str, score: float) -> float | None:
        """The share (0-100) of the reference of ``kind`` at or below ``score``; None without a reference."""
        ref = self.scores(kind)
        if len(ref) == 0:
            return None
        return round(100.0 * float(np.searchsorted(ref, round(float(score), 6), side="right")) / len(ref), 1)

    def nearest(self, score: float) -> dict | None:
        """Where a query recording's nearest hit stands among the archive's own nearest hits.

        Returns
        -------
        dict | None
            ``{"score", "percentile", "unlike_archive", "reference"}`` (``reference``: the
            archive's nearest-hit score at ``UNLIKE_PERCENTILE``), or None without a reference.
        """
        ref = self.scores("nearest")
        if len(ref) == 0:
            return None
        pct = self.percentile("nearest", score)
        floor = float(np.percentile(ref, UNLIKE_PERCENTILE))
        return {"score": round(float(score), 6), "percentile": pct, "unlike_archive": bool(score < floor),
                "reference": round(floor, 6)}

    def _build(self, kind: str) -> dict[str, list[float]]:
        index = self.index
        rng = np.random.default_rng(SEED)
        with index.store.session() as s:
            if kind in {"similar", "nearest", "reports"}:
                ids = _sample_ids(s, Recording.id, [Recording.status == Status.INDEXED], N_RECORDINGS, rng)
                reports = dict(s.execute(select(Recording.id, Recording.report_id)
                                         .where(Recording.id.in_(ids))).all()) if ids else {}
                texts = []
            else:
                ids = []
                seg = _sample_ids(s, Segment.id, [Segment.finding.is_(True), Segment.text.is_not(None)],
                                  N_SENTENCES, rng)
                # sentences that read as plain affirmed queries: no cue phrase, so no spaCy pipeline to load
                texts = [t for t in s.scalars(select(Segment.text).where(Segment.id.in_(seg)))
                         if t and t.strip() and not has_cue(t)] if seg else []
        if kind in {"similar", "nearest"}:
            hits_of, nearest = [], []
            for rid in ids:
                hits = index.similar(recording_id=rid, k=K)
                hits_of += [h.score for h in hits]
                nearest += [h.score for h in hits[:1]]
            logger.info("score reference: prior cases of %d recordings", len(ids))
            return {"similar": hits_of, "nearest": nearest}
        if kind == "reports":
            if not index.manifest.get("has_text"):
                return {}
            out = []
            for rid in ids:
                hits = [h for h in index.search_reports(recording_id=rid, k=K + 1) if h.report_id != reports.get(rid)]
                out += [h.score for h in hits[:K]]
            logger.info("score reference: reports of %d recordings", len(ids))
            return {"reports": out}
        level, _, source = kind.partition("/")
        if level not in {"search", "window"} or not index.manifest.get("has_text"):
            return {}
        out = []
        for text in texts:
            out += [h.score for h in index.search_text(text, K, "recording" if level == "search" else "window",
                                                       source=source)]
        logger.info("score reference: %d sentences searched (%s)", len(texts), kind)
        return {kind: out}


def prepare(folder: str | os.PathLike, db_url: str | None = None) -> None:
    """Build the references of the usual query kinds now (``elmsearch index`` does, after a run).

    Prior cases, reports (a model with text) and the default text search; the first query of
    each kind then finds its reference ready. An index with no manifest yet is left alone.
    """
    from elmsearch.errors import ElmsearchError
    from indexer.search import Index

    try:
        index = Index.open(folder, db_url)
    except ElmsearchError as err:
        logger.debug("no score reference for %s: %s", folder, err)
        return
    kinds = ["similar", "reports", "search/hybrid"] if index.manifest.get("has_text") else ["similar"]
    for kind in kinds:
        index.reference.scores(kind)


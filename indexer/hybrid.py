"""Hybrid text → EEG ranking: what the reports say, and what the EEG looks like, in one score.

For a query such as "focal sharp waves" the evidence of each recording comes from two sources:

- **its report** (when it has one the query may read): report sentences found by the database's
  full-text index (``indexer.fulltext``: BM25 over Porter stems) and by the dense sentence
  embeddings (FAISS ``segment``), each read with its assertion status
  (``elmsearch.text.assertion``): a sentence counts for the query only when the query's terms
  stand in it with the status the query asks for ("no focal slowing" does not match "focal
  slowing"; the query "no epileptiform discharges" matches exactly such sentences). The report's
  probability of matching, ``p_report``, is the share of the query's terms its best agreeing
  sentence holds, or the calibrated dense similarity of that sentence, whichever is higher; a
  report that states the query's words with the other status more fully than as asked ("there
  are no focal sharp waves") is capped at ``1 - `` that share, so a full denial scores 0.
- **its EEG**: the cosine of the pooled recording embedding and of its best window (FAISS
  ``eeg_recording`` and ``eeg_window``; a window carries intermittent findings that pooling
  dilutes), averaged, along the query's direction minus the reference finding ("normal EEG";
  ``eeg_direction``).

The fusion is calibrated on the archive itself, for each query (``eeg_probability``): the
candidate recordings whose reports were read are labelled by them (the report matches or not),
and a logistic regression on their recording embeddings (a per-query linear probe; Platt
scaling of the one-dimensional EEG score when there are too few labels) gives every candidate
the probability that its report would match, ``p_eeg``. A recording with a report is scored
``0.9 p_report + 0.1 p_eeg`` (the report decides; the EEG orders within equal report evidence);
one without a readable report gets ``p_eeg``, capped at 0.9 so that it ranks below strong report
evidence but above reports that are silent about the finding or deny it. The lexical share of a
sentence weighs each query term by its idf over the report sentences (``fulltext.term_weights``),
so "EEG", a word of nearly every report, counts little in "normal EEG". The rules measured
(naive reciprocal-rank fusion, Platt scaling on the EEG score alone, the probe, with and without
idf weights) are in docs/benchmarks.md ("Hybrid search").
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from db import Recording, Segment, Window, from_blob
from elmsearch.io.events import Event
from indexer.events import match_events
from indexer.filters import SOURCES

if TYPE_CHECKING:
    from indexer.search import Filters, Index

logger = logging.getLogger(__name__)

EEG_CANDIDATES = 256  # recordings taken from the EEG ranking besides those with report evidence (at least 4k)
LEXICAL_CANDIDATES = 25  # full-text sentence matches read per hit wanted (at least 300), best first
DENSE_CANDIDATES = 256  # nearest report sentences read per query
WINDOW_CANDIDATES = 512  # nearest windows read per query (best-window evidence), at least 16 per hit wanted
REPORT_WEIGHT = 0.9  # a recording with a report: REPORT_WEIGHT * p_report + (1 - REPORT_WEIGHT) * p_eeg
EEG_CAP = 0.9  # a recording without a readable report: p_eeg, at most this
REFERENCE = ("normal EEG", "abnormal EEG")  # what the EEG score is taken away from (eeg_direction)
PROBE_MIN = 3  # recordings on each side (report matches / does not) before a per-query probe is fitted
PROBE_MAX = 4000  # recordings a per-query probe is fitted on at most
PROBE_DIMS = 32  # the probe is fitted in the top principal directions of the labelled candidates' embeddings


@dataclasses.dataclass
class SentenceEvidence:
    """A report sentence that speaks to the query, with why."""

    segment_id: int
    report_id: int
    section: str
    text: str | None
    status: str  # the status of the query's terms in this sentence (or of the sentence, for a dense match)
    agrees: bool  # that status is the one the query asks for
    lexical: float  # share of the query's terms the sentence holds, idf-weighted (0..1)
    dense: float  # cosine of the sentence embedding and the query

    def to_dict(self) -> dict:
        """JSON-ready (``"evidence"."sentences"`` of a hit)."""
        return {"section": self.section, "text": self.text, "status": self.status, "agrees": self.agrees,
                "lexical": round(self.lexical, 4), "dense": round(self.dense, 4)}


@dataclasses.dataclass
class Scored:
    """A candidate recording and its evidence."""

    recording_id: int
    report_id: int | None
    readable: bool  # a report the query may read (not withheld, text stored)
    eeg_cosine: float
    window_cosine: float
    p_report: float | None = None
    p_eeg: float = 0.0
    score: float = 0.0
    sentences: list[SentenceEvidence] = dataclasses.field(default_factory=list)
    p_event: float = 0.0  # share of the query's terms its best matching event holds (indexer.events)
    event: Event | None = None

    @property
    def eeg(self) -> float:
        """The EEG score: mean of the pooled and the best-window cosine."""
        return 0.5 * (self.eeg_cosine + self.window_cosine)

    def sources(self) -> dict:
        """The score of each source (``"sources"`` of a hit)."""
        return {"report": None if self.p_report is None else round(self.p_report, 4),
                "event": round(self.p_event, 4) if self.event is not None else None,
                "eeg": round(self.p_eeg, 4), "eeg_cosine": round(self.eeg_cosine, 4),
                "window_cosine": round(self.window_cosine, 4)}


def platt(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 25) -> tuple[float, float]:
    """Fit ``P(y=1 | x) = 1 / (1 + exp(-(a x + b)))`` by Newton's method (Platt scaling).

    ``x`` is standardised inside; a small L2 penalty keeps ``a`` finite when the classes separate.

    Returns
    -------
    a, b : float
        For the raw ``x``.
    """
    mu, sd = float(x.mean()), float(x.std()) or 1.0
    z = (x - mu) / sd
    # Platt's targets: (n+ + 1) / (n+ + 2) and 1 / (n- + 2), never exactly 0 or 1
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    t = np.where(y > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    w = np.zeros(2)
    design = np.stack([z, np.ones_like(z)], 1)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(design @ w)))
        grad = design.T @ (p - t) + l2 * np.array([w[0], 0.0])
        hess = (design * (p * (1 - p))[:, None]).T @ design + l2 * np.diag([1.0, 1e-9])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[0] / sd), float(w[1] - w[0] * mu / sd)


def logistic_regression(X: np.ndarray, y: np.ndarray, C: float = 1.0, iters: int = 12) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression with balanced class weights, by Newton's method.

    The objective of scikit-learn's ``LogisticRegression(C=C, class_weight="balanced")`` (the
    intercept unpenalised; tests/test_hybrid.py checks the two agree), in numpy: importing
    scikit-learn would add more than a second to a cold ``elmsearch search``.

    Parameters
    ----------
    X : array, shape (n_samples, n_features)
    y : array of 0/1, shape (n_samples,)
        Both classes present.
    C : float
        Inverse regularisation strength.
    iters : int
        Newton steps at most. Well-posed data converges in 4-6; where the candidates are
        nearly separable (few labels in 256 dimensions) the optimum is approached slowly and
        the fit stops early: a ranking needs the direction, not the last digits.

    Returns
    -------
    coef : array, shape (n_features,)
    intercept : float
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64)
    n, d = X.shape
    weight = np.where(y > 0, n / (2 * y.sum()), n / (2 * (n - y.sum())))
    design = np.hstack([X, np.ones((n, 1))])
    penalty = np.full(d + 1, 1.0 / C)
    penalty[-1] = 0.0
    w = np.zeros(d + 1)
    for _ in range(iters):
        p = _sigmoid(design @ w)
        grad = design.T @ (weight * (p - y)) + penalty * w
        hess = (design * (weight * p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-10)
        step = np.linalg.solve(hess, grad)  # positive definite (the penalty, p(1 - p) > 0); numpy: no scipy import
        w -= step
        if np.abs(step).max() < 1e-9 * (1 + np.abs(w).max()):
            break
    return w[:-1], float(w[-1])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x, -50, 50)))


def report_evidence(index: Index, s, text: str, q: np.ndarray, withheld: Collection[int] = (), k: int = 10
                    ) -> dict[int, list[SentenceEvidence]]:
    """The report sentences that speak to a query, by report id, best first.

    Sentences come from the full-text index (any query term) and from the dense sentence index;
    each is read with its assertion status. Reports in ``withheld`` are not read.
    """
    from elmsearch.text.assertion import parse_query, read_terms, scopes_from_json
    from indexer.fulltext import match_segments, term_weights

    query = parse_query(text)
    terms = list(query.terms)
    limit = max(300, LEXICAL_CANDIDATES * k)
    lexical = {m.segment_id for m in match_segments(s, terms, limit, ranked=False)} if terms else set()
    weights = term_weights(s, terms) if lexical else {}
    dense: dict[int, float] = {}
    seg_index = index.faiss("segment")
    if seg_index is not None and seg_index.ntotal:
        from indexer.vectors.ops import search

        scores, ids = search(seg_index, q, min(DENSE_CANDIDATES, seg_index.ntotal))
        dense = {int(i): float(sc) for i, sc in zip(ids[0], scores[0], strict=True) if i >= 0}
    ids = sorted(set(lexical) | set(dense))
    out: dict[int, list[SentenceEvidence]] = {}
    withheld = set(withheld)
    from indexer.search import _chunks

    for chunk in _chunks(ids):
        rows = s.execute(select(Segment.id, Segment.report_id, Segment.section, Segment.text, Segment.assertion,
                                Segment.scopes, Segment.emb).where(Segment.id.in_(chunk)))
        for seg_id, rep_id, section, sentence, assertion, scopes, emb in rows:
            if rep_id in withheld:
                continue
            cos = dense.get(seg_id)
            if cos is None:
                cos = float(from_blob(emb) @ q) if emb is not None else 0.0
            status, held = None, set()
            if sentence and terms:  # one pass over its words: the status of the query's terms, and which it holds
                status, held = read_terms(sentence, scopes_from_json(scopes) if scopes else [], terms)
            if status is None:  # a dense match without the query's words: the sentence's own status
                status = assertion or "affirmed"
            share = _weighted_share(held, terms, weights) if seg_id in lexical else 0.0
            out.setdefault(rep_id, []).append(SentenceEvidence(
                seg_id, rep_id, section, sentence or None, status, status == query.status, share, cos))
    for sentences in out.values():
        sentences.sort(key=lambda e: (e.agrees, e.lexical, e.dense), reverse=True)
    return out


def _weighted_share(held: set[str], terms: list[str], weights: dict[str, float]) -> float:
    """The share of the query's terms a sentence holds (``held``: their stems), each term weighted by its idf.

    "normal EEG": a sentence with "normal" holds most of the query, one with only "EEG" (a
    word of nearly every report) little of it.
    """
    from elmsearch.text.assertion import stem

    if not held or not terms:
        return 0.0
    total = sum(weights.get(t, 1.0) for t in terms)
    if total <= 0:
        return sum(stem(t) in held for t in terms) / len(terms)
    return sum(weights.get(t, 1.0) for t in terms if stem(t) in held) / total


def _dense_calibration(evidence: dict[int, list[SentenceEvidence]]) -> tuple[float, float] | None:
    """Platt fit of "holds every query term" on the dense score of the agreeing sentences read."""
    sent = [e for es in evidence.values() for e in es if e.agrees]
    if len(sent) < 8:
        return None
    x = np.array([e.dense for e in sent])
    y = np.array([e.lexical >= 1.0 for e in sent], float)
    if y.sum() < 2 or y.sum() > len(y) - 2:
        return None
    return platt(x, y)


def rank(index: Index, s, text: str, q: np.ndarray, k: int, filters: Filters, source: str = "hybrid",
         withheld: Collection[int] = ()) -> list[Scored]:
    """Rank recordings for a text query from the chosen ``source`` (see the module notes).

    Parameters
    ----------
    index : indexer.search.Index
    s : sqlalchemy.orm.Session
    text : str
        The query as typed.
    q : array, shape (256,)
        Its normalised embedding.
    k : int
        Hits wanted; at least ``4 k`` EEG candidates are read.
    filters : indexer.search.Filters
    source : {"hybrid", "reports", "eeg"}
    withheld : collection of int
        Report ids the query may not read (evaluation: reports withheld).

    Returns
    -------
    list of Scored
        Best first, at most ``k``.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    from indexer.search import _chunks

    use_reports = source != "eeg" and index.manifest.get("has_text", False)
    evidence = report_evidence(index, s, text, q, withheld, k) if use_reports else {}
    # candidates: the EEG's best, and every recording whose report speaks to the query
    fetch = max(EEG_CANDIDATES, 4 * k)
    _, eeg_ids = index._rank(s, "eeg_recording", q, fetch, filters)
    pooled = eeg_ids.tolist()
    cands: dict[int, Scored] = {}
    embs: dict[int, np.ndarray] = {}
    withheld = set(withheld)
    stmt = select(Recording.id, Recording.report_id, Recording.emb)
    for chunk in _chunks(sorted(set(pooled))):
        for rid, rep, emb in s.execute(stmt.where(Recording.id.in_(chunk))):
            if emb is not None:
                cands[rid], embs[rid] = Scored(rid, rep, False, 0.0, 0.0), from_blob(emb)
    for chunk in _chunks(list(evidence)):
        for rid, rep, emb in s.execute(filters.apply(stmt.where(Recording.report_id.in_(chunk),
                                                                Recording.status == "indexed"))):
            if rid not in cands and emb is not None:
                cands[rid], embs[rid] = Scored(rid, rep, False, 0.0, 0.0), from_blob(emb)
    # and every recording with an event that speaks to the query (what a technologist marked)
    events: dict[int, tuple[Event, float]] = {}
    if source != "eeg":
        for rid, event, share in match_events(s, text):
            events.setdefault(rid, (event, share))  # best share first
        for chunk in _chunks(sorted(set(events) - set(cands))):
            for rid, rep, emb in s.execute(filters.apply(stmt.where(Recording.id.in_(chunk),
                                                                    Recording.status == "indexed"))):
                if emb is not None:
                    cands[rid], embs[rid] = Scored(rid, rep, False, 0.0, 0.0), from_blob(emb)
    if not cands:
        return []
    for rid, (event, share) in events.items():
        if rid in cands:
            cands[rid].event, cands[rid].p_event = event, share
    readable = index.manifest.get("has_text", False) and index.manifest.get("report_text", True)
    for c in cands.values():
        c.readable = bool(use_reports and readable and c.report_id is not None and c.report_id not in withheld)
    # the EEG score: towards the query, away from the reference finding (see eeg_direction)
    direction = eeg_direction(index, text, q)
    E = np.stack([embs[rid] for rid in cands])
    for c, cos in zip(cands.values(), (E @ direction).tolist(), strict=True):
        c.eeg_cosine = c.window_cosine = cos
    _window_scores(index, s, direction, cands, max(WINDOW_CANDIDATES, 16 * k))
    eeg = np.array([c.eeg for c in cands.values()])
    if source == "eeg":
        for c in cands.values():
            c.score = c.p_eeg = c.eeg
        return sorted(cands.values(), key=lambda c: c.score, reverse=True)[:k]

    dense_fit = _dense_calibration(evidence)
    for c in cands.values():
        if not c.readable:
            continue
        sentences = evidence.get(c.report_id, [])
        agreeing = [e for e in sentences if e.agrees]
        against = sorted((e for e in sentences if not e.agrees and e.lexical > 0), key=lambda e: e.lexical,
                         reverse=True)
        c.sentences = agreeing[:2] + against[:1]
        best = 0.0
        for e in agreeing:
            p_dense = float(_sigmoid(np.array(dense_fit[0] * e.dense + dense_fit[1]))) if dense_fit else 0.0
            best = max(best, e.lexical, p_dense)
        # a report that states the query's words with the other status ("no focal sharp waves")
        # more fully than it states them as asked speaks against the query
        said = max((e.lexical for e in agreeing), default=0.0)
        denied = against[0].lexical if against else 0.0
        c.p_report = min(best, 1.0 - denied) if denied > said else best
    if source == "reports":
        for c in cands.values():
            c.score = _text_evidence(c) if c.p_report is not None or c.event is not None else -1.0
            c.p_eeg = c.eeg
        ranked = sorted(cands.values(), key=lambda c: (c.score, max((e.dense for e in c.sentences), default=0.0)),
                        reverse=True)
        return ranked[:k]
    p_eeg = eeg_probability(cands, E, eeg)
    for c, p in zip(cands.values(), p_eeg.tolist(), strict=True):
        c.p_eeg = p
        if c.p_report is not None or c.event is not None:
            c.score = REPORT_WEIGHT * _text_evidence(c) + (1 - REPORT_WEIGHT) * p
        else:
            c.score = min(p, EEG_CAP)
    return sorted(cands.values(), key=lambda c: c.score, reverse=True)[:k]


def _text_evidence(c: Scored) -> float:
    """What the recording's text says: its report, or an event marked in it, whichever speaks more fully."""
    return max(c.p_report or 0.0, c.p_event)


def eeg_direction(index: Index, text: str, q: np.ndarray) -> np.ndarray:
    """The direction the EEG is scored along: the query minus the reference finding, unit length.

    The reference is ``REFERENCE`` ("normal EEG"; "abnormal EEG" for a query about a normal
    EEG): what every recording of a clinical archive shares is taken out, so that recordings
    rank by what sets them apart in the query's direction (the zero-shot prompts' negatives in
    ``indexer.evaluate.DEFAULT_PROMPTS`` do the same).
    """
    from elmsearch.text.assertion import parse_query

    about_normal = "normal" in parse_query(text).terms
    ref = index._text_query(REFERENCE[1] if about_normal else REFERENCE[0])
    d = q - ref
    n = float(np.linalg.norm(d))
    return d / n if n > 1e-6 else q


def eeg_probability(cands: dict[int, Scored], E: np.ndarray, eeg: np.ndarray) -> np.ndarray:
    """P(the report matches | EEG) for every candidate, learnt from the candidates whose reports were read.

    With at least ``PROBE_MIN`` recordings on each side (report matches, report does not), a
    logistic regression (``logistic_regression``, in the candidates' top ``PROBE_DIMS``
    principal directions: ``_reduced_fit``) on the recording embeddings (a per-query linear
    probe: the reports label the archive's own EEG); with fewer, Platt scaling of the one-dimensional EEG score;
    with too few for that, the EEG score rescaled to [0, 0.5].

    Parameters
    ----------
    cands : dict
        The candidates, in the order of the rows of ``E`` and ``eeg``.
    E : array, shape (n_candidates, 256)
        Their recording embeddings.
    eeg : array, shape (n_candidates,)
        Their EEG scores.
    """
    read = np.array([c.p_report is not None for c in cands.values()])
    y = np.array([(c.p_report or 0.0) >= 0.5 for c in cands.values()], float)
    n_pos, n_neg = int(y[read].sum()), int(read.sum() - y[read].sum())
    if min(n_pos, n_neg) >= PROBE_MIN:
        rows = np.flatnonzero(read)
        if len(rows) > PROBE_MAX:  # a bounded, seeded sample keeps a common finding's query fast
            rows = np.random.default_rng(0).choice(rows, PROBE_MAX, replace=False)
        coef, intercept = _reduced_fit(E[rows], y[rows])
        return _sigmoid(E @ coef + intercept)
    if min(n_pos, n_neg) >= 2:
        a, b = platt(eeg[read], y[read])
        return _sigmoid(a * eeg + b)
    span = float(eeg.max() - eeg.min()) or 1.0  # nothing to learn from: below any report evidence
    return 0.5 * (eeg - eeg.min()) / span


def _reduced_fit(X: np.ndarray, y: np.ndarray, dims: int = PROBE_DIMS) -> tuple[np.ndarray, float]:
    """``logistic_regression`` in the top ``dims`` principal directions of ``X``, mapped back to ``X``'s space.

    A Newton step costs ``n d^2``: in 32 dimensions instead of 256 the probe takes a fraction of
    the time, and on the held-out demo it ranked the same (cohort MAP with half the reports
    withheld 0.8972 with 16, 32, 64 or all 256 dimensions; docs/benchmarks.md, "Hybrid search").
    """
    X = np.asarray(X, np.float64)
    mu = X.mean(0)
    if dims >= X.shape[1]:
        return logistic_regression(X, y)
    centred = X - mu
    _, vecs = np.linalg.eigh(centred.T @ centred)  # ascending; a 256 x 256 problem: faster than an SVD of X
    basis = vecs[:, ::-1][:, :dims]  # (n_features, dims)
    coef, intercept = logistic_regression(centred @ basis, y)
    full = basis @ coef
    return full, intercept - float(mu @ full)


def _window_scores(index: Index, s, q: np.ndarray, cands: dict[int, Scored], n_windows: int) -> None:
    """Set each candidate's best-window cosine from the nearest windows (FAISS ``eeg_window``).

    A recording none of whose windows is among the nearest keeps its pooled cosine there.
    """
    from indexer.search import _chunks
    from indexer.vectors.ops import search

    win_index = index.faiss("eeg_window")
    if win_index is None or not win_index.ntotal:
        return
    scores, wids = search(win_index, q, min(n_windows, win_index.ntotal))
    best: dict[int, float] = {}
    wid_score = {int(w): float(sc) for w, sc in zip(wids[0], scores[0], strict=True) if w >= 0}
    for chunk in _chunks(sorted(wid_score)):
        for wid, rid in s.execute(select(Window.id, Window.recording_id).where(Window.id.in_(chunk))):
            if rid in cands and wid_score[wid] > best.get(rid, -np.inf):
                best[rid] = wid_score[wid]
    for rid, c in cands.items():
        c.window_cosine = max(best.get(rid, c.eeg_cosine), c.eeg_cosine)

"""Query an index: text → EEG, EEG → report, prior cases, zero-shot; typed results.

```python
index = Index.open("elmsearch-index")
hits = index.search_text("generalized 3 Hz spike and wave", k=10)
hits = index.search_reports(fname="new.edf")          # or recording_id=...
hits = index.similar(recording_id=42, before=dt.date(2020, 1, 1))
```

Filters run in SQL. The unfiltered best few hundred hits are checked against them first
(milliseconds; enough whenever the filter keeps a good share of the archive). Otherwise
SQL lists every surviving row: when few survive they are scored exactly from their stored
embeddings, else the FAISS index is searched with an ID selector restricted to them
(over-fetching where hits are collapsed per patient).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import threading
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Select, or_, select

from db import Patient, Recording, RecordingEvent, Report, Segment, Status, Visit, Window, from_blob
from elmsearch._lazy import lazy_module
from elmsearch.errors import ElmsearchError
from elmsearch.text.report import parse_report
from indexer.store import IndexStateError, IndexStore
from indexer.vectors.tables import VECTOR_TABLES

if TYPE_CHECKING:
    import numpy as np

    from elmsearch.models.model import ELMModel
    from elmsearch.models.zeroshot import Classification
else:
    np = lazy_module("numpy", globals(), "np")  # on first use: `elmsearch show` never computes

# torch, the model and FAISS are imported where first needed: `elmsearch show` needs none of
# them, and a query by recording id needs FAISS but no model (tests/test_cold_imports.py).

logger = logging.getLogger(__name__)

EXACT_BELOW = 20_000  # filtered candidates scored exactly from SQL below this many
POSTFILTER_FETCH = 256  # unfiltered hits checked against the filters before listing every survivor (0: never)
CHUNK = 900  # bound parameters per IN (...) clause


class QueryError(ElmsearchError):
    """A query that cannot be answered (unknown id, unreadable file...)."""


class NotFoundError(QueryError):
    """An id that names no indexed recording (HTTP 404)."""


@dataclasses.dataclass(frozen=True)
class Filters:
    """Restrictions on the recordings a query may return (all optional)."""

    sex: str | None = None
    age_min: float | None = None
    age_max: float | None = None
    after: dt.date | None = None
    before: dt.date | None = None
    montage: str | None = None
    min_duration: float | None = None
    has_event: str | None = None

    def apply(self, q: Select) -> Select:
        """Add the WHERE clauses to a select over ``Recording``."""
        if self.sex:
            q = q.where(Recording.sex == self.sex.upper()[:1])
        if self.age_min is not None:
            q = q.where(Recording.age >= self.age_min)
        if self.age_max is not None:
            q = q.where(Recording.age <= self.age_max)
        if self.after is not None:
            q = q.where(Recording.date >= dt.datetime.combine(self.after, dt.time()))
        if self.before is not None:
            q = q.where(Recording.date < dt.datetime.combine(self.before, dt.time()))
        if self.montage:
            q = q.where(Recording.montage.icontains(self.montage))
        if self.min_duration is not None:
            q = q.where(Recording.duration >= self.min_duration)
        if self.has_event:
            text = " ".join(self.has_event.split())
            q = q.where(select(RecordingEvent.id).where(
                RecordingEvent.recording_id == Recording.id,
                or_(RecordingEvent.label.icontains(text, autoescape=True),
                    RecordingEvent.meaning.icontains(text, autoescape=True))).exists())
        return q

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return any(v is not None and v != "" for v in dataclasses.astuple(self))


@dataclasses.dataclass
class Hit:
    """One result. ``start_s``/``end_s``: the best-matching window; ``sentence``: report hits only."""

    rank: int
    score: float
    recording_id: int
    patient: str | None
    session: str | None
    date: str | None
    age: float | None
    sex: str | None
    montage: str
    path: str
    start_s: float | None
    end_s: float | None
    impression: str | None
    report_id: int | None = None
    sentence: str | None = None
    sources: dict | None = None
    evidence: list[dict] | None = None
    also: list[int] | None = None
    percentile: float | None = None  # among the archive's scores of its query kind (indexer.calibration)

    def to_dict(self) -> dict:
        """JSON-ready dict with the documented keys.

        ``sentence`` only on report hits; ``sources`` (the score of each source), ``evidence``
        (the report sentences that speak to the query, with their assertion status) and
        ``also`` (other recordings of the same visit) only on text-search hits. ``percentile``:
        the score's percentile among the archive's own scores of its query kind
        (``indexer.calibration``), None where the archive has no reference for it.
        """
        d = dataclasses.asdict(self)
        d["score"] = round(float(self.score), 6)
        for key in ("sentence", "sources", "evidence", "also"):
            if d[key] is None:
                d.pop(key)
        return d


@dataclasses.dataclass
class Query:
    """What a recording query resolved to."""

    emb: np.ndarray
    recording_id: int | None
    patient: str | None
    path: str | None
    window_emb: np.ndarray | None = None
    profile: np.ndarray | None = None  # the prior-case vector, for indices whose prior cases use eeg_profile
    window_spans: list[tuple[float, float]] | None = None  # (start_s, end_s) of each row of window_emb


def _check_filters(s, filters: Filters) -> None:
    """A filter the index cannot answer yet is a query error (one line), not a database error."""
    from indexer.events import NoEventsError, check_event_filter

    try:
        check_event_filter(s, filters.has_event)
    except NoEventsError as err:
        raise QueryError(str(err)) from None


def _chunks(ids, n: int = CHUNK):
    ids = list(ids)
    for i in range(0, len(ids), n):
        yield ids[i : i + n]


class Index:
    """A searchable index: metadata, FAISS indices and the model that built them.

    Use ``Index.open``. ``backend`` is the EEG inference engine for query files (see
    ``ELMModel.encode_eeg``; the CLI's ``--backend``).
    """

    def __init__(self, store: IndexStore, model: ELMModel | None = None):
        self.store = store
        self.backend = "auto"
        # Where query-text features are cached: None is the index's DIR/cache; a server sets
        # elmsearch.models.textcache.MEMORY (an in-memory LRU: query texts never reach the disk).
        self.text_cache: str | os.PathLike | None = None
        self.manifest = store.manifest
        self._model = model
        self._query_model = None
        self._model_checked = False  # config_hash hashes every weight (~5 ms): once per Index
        self._faiss: dict[str, object] = {}
        self._reference = None
        self._loading = threading.RLock()  # lazy loads happen once when threads share an Index
        # A run newer than the FAISS files is writing (or died): every hit is checked in SQL,
        # since that run may have changed or removed the rows behind some FAISS ids.
        self.stale = store.pending_run is not None

    @classmethod
    def open(cls, folder: str | os.PathLike, db_url: str | None = None, model: ELMModel | None = None,
             verify: bool = True) -> Index:
        """Open an index folder; with ``verify`` check that the FAISS files match the database.

        The check is the quick one (``IndexStore.verify(full=False)``): milliseconds at any size.

        Raises
        ------
        IndexStateError
            No index, or the index and database disagree (the message says how).
        """
        store = IndexStore.open(folder, db_url)
        if verify:
            store.verify(full=False)
        return cls(store, model)

    # ---- lazily loaded parts --------------------------------------------------------------
    @property
    def model(self) -> ELMModel:
        """The model the index was built with (loaded and checked on first use)."""
        from elmsearch.models.factory import load_model
        from elmsearch.models.identity import config_hash

        with self._loading:
            if self._model is None:
                path = self.manifest["model_path"]
                if not Path(path).exists():
                    raise IndexStateError(f"the index's model {path} is gone; re-index with `elmsearch index --model`")
                self._model = load_model(path)
                self._model.cache_dir = self._text_cache_dir()
            if not self._model_checked:
                if config_hash(self._model) != self.manifest["model_hash"]:
                    raise IndexStateError(f"{self.store.folder}: built with model {self.manifest['model_hash']}, "
                                          f"but {self.manifest['model_path']} is now {config_hash(self._model)}; "
                                          "re-run `elmsearch index`")
                self._model_checked = True
            return self._model

    @property
    def query_model(self):
        """What embeds query texts and files: the compiled query model, else ``model``.

        The compiled model (``elmsearch.models.compiled``: ONNX Runtime and numpy, no torch)
        serves when ``backend`` is ``auto`` or ``onnxruntime`` and the indexer left one for
        this index's model on this machine.
        """
        with self._loading:
            if self._query_model is None:
                if self.backend in {"auto", "onnxruntime"} and self._model is None:
                    from elmsearch.models.compiled import QueryModel

                    self._query_model = QueryModel.load(self.manifest["model_hash"], self.manifest["model_path"],
                                                        self._text_cache_dir())
                if self._query_model is None:
                    self._query_model = self.model
            return self._query_model

    def _text_cache_dir(self):
        return self.store.folder / "cache" if self.text_cache is None else self.text_cache

    @property
    def reference(self):
        """The archive's own scores by query kind (``indexer.calibration.ScoreReference``)."""
        from indexer.calibration import ScoreReference

        with self._loading:
            if self._reference is None:
                self._reference = ScoreReference(self)
            return self._reference

    def faiss(self, name: str):
        """A FAISS index of this store, read once."""
        with self._loading:
            if name not in self._faiss:
                self._faiss[name] = self.store.load_index(name)
            return self._faiss[name]

    # ---- helpers --------------------------------------------------------------------------
    def _require_text(self) -> None:
        if not self.manifest.get("has_text"):
            from elmsearch.models.protocol import NoTextModelError

            raise NoTextModelError(f"{self.store.folder} was built with an EEG-only model "
                                   f"({self.manifest['model_path']}); text queries need a model trained "
                                   "with `elmsearch train`")

    def _text_query(self, text: str) -> np.ndarray:
        self._require_text()
        return self.query_model.encode_query(text)

    def _filtered_ids(self, s, name: str, filters: Filters, among: np.ndarray | None = None) -> np.ndarray:
        """Ids of index ``name`` whose recording passes ``filters`` (only those in ``among`` if given)."""
        col, q = VECTOR_TABLES[name].passing()
        _check_filters(s, filters)
        q = filters.apply(q)
        if among is None:
            return np.fromiter(s.scalars(q), np.int64)
        return np.fromiter((i for chunk in _chunks(among.tolist()) for i in s.scalars(q.where(col.in_(chunk)))),
                           np.int64)

    def _rank(self, s, name: str, q: np.ndarray, k: int, filters: Filters) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) of index ``name`` among the rows whose recording passes ``filters``.

        With filters: first the unfiltered top ``max(POSTFILTER_FETCH, 8k)`` are checked in SQL
        (milliseconds; enough when the filter keeps many recordings). When fewer than ``k``
        pass, SQL lists every passing row: up to ``EXACT_BELOW`` are scored exactly from
        their stored embeddings, more are searched in FAISS with an ID selector.
        """
        from indexer.vectors.arrays import array_chunks
        from indexer.vectors.ops import search
        from indexer.vectors.tuning import exact_topk

        index = self.faiss(name)
        empty = np.zeros(0, np.float32), np.zeros(0, np.int64)
        if index is None:
            return empty
        if not filters.active and not self.stale:
            scores, found = search(index, q, min(k, index.ntotal))
            keep = found[0] >= 0
            return scores[0][keep], found[0][keep]
        if POSTFILTER_FETCH:
            fetch = min(index.ntotal, max(POSTFILTER_FETCH, 8 * k))
            scores, found = search(index, q, fetch)
            scores, found = scores[0][found[0] >= 0], found[0][found[0] >= 0]
            passing = np.isin(found, self._filtered_ids(s, name, filters, found))
            if passing.sum() >= k or len(found) == index.ntotal:  # every vector seen: nothing more can pass
                return scores[passing][:k], found[passing][:k]
        allowed = self._filtered_ids(s, name, filters)
        if len(allowed) == 0:
            return empty
        if len(allowed) <= EXACT_BELOW:
            key_col, column = VECTOR_TABLES[name].id_column, VECTOR_TABLES[name].emb_column
            ids, blobs = [], []
            for chunk in _chunks(allowed.tolist()):
                for i, e in s.execute(select(key_col, column).where(key_col.in_(chunk), column.is_not(None))):
                    ids.append(i)
                    blobs.append(e)
            if not ids:
                return empty
            embs = np.frombuffer(b"".join(blobs), np.float32).reshape(len(ids), -1)
            scores, found = exact_topk(q, array_chunks(embs, np.array(ids, np.int64)), k)
        else:
            scores, found = search(index, q, k, allowed_ids=allowed)
        keep = found[0] >= 0
        return scores[0][keep], found[0][keep]

    def _hits(self, s, rec_ids: list[int], scores: list[float], q: np.ndarray | None,
              windows: dict[int, tuple[float, float]] | None = None) -> list[Hit]:
        """Hits with metadata, in the given order; best window by ``q`` unless given."""
        rows = {}
        for chunk in _chunks(rec_ids):
            stmt = (select(Recording, Patient.key, Visit.key, Report.impression)
                    .outerjoin(Patient, Recording.patient_id == Patient.id)
                    .outerjoin(Visit, Recording.visit_id == Visit.id)
                    .outerjoin(Report, Recording.report_id == Report.id).where(Recording.id.in_(chunk)))
            rows.update((r.id, (r, p, ss, imp)) for r, p, ss, imp in s.execute(stmt))
        if windows is None and q is not None:
            windows = self._best_windows(s, rec_ids, q)
        hits = []
        for rid, score in zip(rec_ids, scores, strict=True):
            if rid not in rows:  # removed by a run that is writing now
                continue
            r, patient, session, impression = rows[rid]
            rank = len(hits) + 1
            start, end = (windows or {}).get(rid, (None, None))
            hits.append(Hit(rank, float(score), rid, patient, session, r.date.isoformat() if r.date else None,
                            r.age, r.sex, r.montage, r.path, start, end, impression, r.report_id))
        return hits

    def _best_windows(self, s, rec_ids: list[int], q: np.ndarray) -> dict[int, tuple[float, float]]:
        """(start_s, end_s) of each recording's window nearest to ``q`` (one matrix product)."""
        rids, spans, blobs = [], [], []
        for chunk in _chunks(rec_ids):
            for rid, start, end, emb in s.execute(select(Window.recording_id, Window.start_s, Window.end_s,
                                                         Window.emb).where(Window.recording_id.in_(chunk))):
                rids.append(rid)
                spans.append((start, end))
                blobs.append(emb)
        if not rids:
            return {}
        scores = np.frombuffer(b"".join(blobs), np.float32).reshape(len(rids), -1) @ q
        rids_a = np.array(rids)
        order = np.lexsort((-scores, rids_a))  # by recording, best window first
        first = np.ones(len(order), bool)
        first[1:] = rids_a[order][1:] != rids_a[order][:-1]
        return {rids[i]: spans[i] for i in order[first].tolist()}

    # ---- queries --------------------------------------------------------------------------
    def search_text(self, text: str, k: int = 10, level: str = "recording",
                    filters: Filters | None = None, source: str = "hybrid", withheld: Collection[int] = ()
                    ) -> list[Hit]:
        """Text → EEG: recordings (or windows, ``level="window"``) that match a description.

        Recordings are ranked from ``source`` (``indexer.hybrid``): ``"hybrid"`` (what their
        reports say, negation-aware, and their EEG, fused by a calibration on the archive),
        ``"reports"`` or ``"eeg"``; the recordings of one visit (a session recorded in two
        montage folders) are one hit, the others listed in ``Hit.also``. Windows inside events
        whose label holds the query come first, then windows by the EEG (``_window_hits``).
        ``withheld``: report ids the query may not read (evaluation).
        """
        from indexer.hybrid import SOURCES, rank

        if level not in {"recording", "window"}:
            raise ValueError(f"level must be 'recording' or 'window', got {level!r}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        q = self._text_query(text)
        filters = filters or Filters()
        with self.store.session() as s:
            if level == "recording":
                return self._visit_hits(s, rank(self, s, text, q, 2 * k, filters, source, withheld), q, k)
            return self._window_hits(s, text, q, k, filters, source)

    def _window_hits(self, s, text: str, q: np.ndarray, k: int, filters: Filters, source: str) -> list[Hit]:
        """Windows for a text query: inside matching events first (``hybrid``, ``reports``), then by the EEG.

        A window inside an event whose label or meaning holds the query's terms
        (``indexer.events``) scores ``0.5 + 0.5 share`` (above 0.5; the event is its ``evidence``),
        ordered by its EEG cosine within an equal share; a window found by the EEG alone scores
        ``(1 + cosine) / 4`` (below 0.5). ``source="eeg"``: the cosine alone, as before events.
        """
        from indexer.events import match_events, windows_in

        scored: dict[int, tuple[float, float, object]] = {}  # window id -> (score, cosine, event)
        if source != "eeg":
            in_events = windows_in(s, match_events(s, text))
            if in_events:
                allowed = set(self._filtered_ids(s, "eeg_window", filters, np.fromiter(in_events, np.int64)).tolist())
                cos = self._window_cosines(s, sorted(allowed), q)
                for wid in allowed:
                    event, share = in_events[wid]
                    scored[wid] = (0.5 + 0.5 * share, cos.get(wid, 0.0), event)
        if source != "reports" and len(scored) < k:
            scores, wids = self._rank(s, "eeg_window", q, k + len(scored), filters)
            for wid, cos in zip(wids.tolist(), scores.tolist(), strict=True):
                if wid not in scored:
                    scored[wid] = (cos if source == "eeg" else (1 + cos) / 4, cos, None)
        best = sorted(scored.items(), key=lambda x: (x[1][0], x[1][1]), reverse=True)[:k]
        win = {}
        for chunk in _chunks([wid for wid, _ in best]):
            win.update((w.id, w) for w in s.scalars(select(Window).where(Window.id.in_(chunk))))
        hits = []
        for wid, (score, cos, event) in best:
            w = win.get(wid)
            if w is None:  # replaced by a run that is writing now
                continue
            hit = self._hits(s, [w.recording_id], [score], None, {w.recording_id: (w.start_s, w.end_s)})
            for h in hit:
                h.sources = {"event": None if event is None else round(2 * score - 1, 4), "eeg_cosine": round(cos, 4)}
                if event is not None:
                    h.evidence = [{"event": event.to_dict()}]
            hits += hit
        for i, h in enumerate(hits, 1):
            h.rank = i
        return hits

    def _window_cosines(self, s, wids: list[int], q: np.ndarray) -> dict[int, float]:
        """The cosine of the query and each window's stored embedding."""
        out = {}
        for chunk in _chunks(wids):
            for wid, emb in s.execute(select(Window.id, Window.emb).where(Window.id.in_(chunk))):
                out[wid] = float(from_blob(emb) @ q)
        return out

    def _visit_hits(self, s, scored: list, q: np.ndarray, k: int) -> list[Hit]:
        """Hits of ranked recordings, one per visit (the first of a visit leads, the rest in ``also``)."""
        visits = {}
        for chunk in _chunks([c.recording_id for c in scored]):
            visits.update(s.execute(select(Recording.id, Recording.visit_id).where(Recording.id.in_(chunk))).all())
        lead: dict[int, object] = {}
        groups: list[tuple[object, list[int]]] = []
        for c in scored:
            visit = visits.get(c.recording_id)
            if visit is not None and visit in lead:
                lead[visit][1].append(c.recording_id)
                continue
            group = (c, [])
            groups.append(group)
            if visit is not None:
                lead[visit] = group
        groups = groups[:k]
        hits = self._hits(s, [c.recording_id for c, _ in groups], [c.score for c, _ in groups], q)
        by_id = {c.recording_id: (c, also) for c, also in groups}
        for h in hits:
            c, also = by_id[h.recording_id]
            h.sources = c.sources()
            h.evidence = [e.to_dict() for e in c.sentences] if c.readable else None
            h.also = also or None
            if c.event is not None:  # the minutes a technologist marked: the hit's window is inside the event
                from indexer.events import windows_in

                inside = windows_in(s, [(c.recording_id, c.event, c.p_event)])
                cos = self._window_cosines(s, sorted(inside), q)
                if cos:
                    wid = max(cos, key=cos.get)
                    h.start_s, h.end_s = s.execute(select(Window.start_s, Window.end_s)
                                                   .where(Window.id == wid)).one()
                h.evidence = (h.evidence or []) + [{"event": c.event.to_dict()}]
        return hits

    def resolve(self, fname: str | os.PathLike | None = None, recording_id: int | None = None) -> Query:
        """The embedding of a query recording: from the index when it is there, else computed now."""
        with self.store.session() as s:
            if recording_id is not None:
                r = s.get(Recording, int(recording_id))
                if r is None or r.status != Status.INDEXED:
                    raise NotFoundError(f"recording {recording_id}: not in the index"
                                     + (f" ({r.error})" if r is not None and r.error else ""))
                patient = s.get(Patient, r.patient_id).key if r.patient_id else None
                return Query(from_blob(r.emb), r.id, patient, r.path, profile=self._profile(r))
            if fname is None:
                raise QueryError("give a file or a recording id")
            from elmsearch.archive.discovery import archive_path, file_hash, special_file_reason  # files only

            path = Path(fname)
            if not path.is_file():
                raise QueryError(f"{fname}: {special_file_reason(path) or 'no such file'}")
            r = s.scalar(select(Recording).where(Recording.path == archive_path(path)))
            if r is not None and r.status == Status.INDEXED and r.model_hash == self.manifest["model_hash"]:
                st = path.stat()
                if (r.size, r.mtime) == (st.st_size, st.st_mtime) or r.content_hash == file_hash(path):
                    patient = s.get(Patient, r.patient_id).key if r.patient_id else None
                    return Query(from_blob(r.emb), r.id, patient, r.path, profile=self._profile(r))
        from elmsearch.io.meta import path_info_for
        from elmsearch.models.embedding import embed_recording

        model = self.query_model
        emb = embed_recording(model, path, pooling="attention" if model.has_text else "mean", backend=self.backend)
        patient = path_info_for(path).subject or emb.recording.meta.subject
        profile = emb.profile
        if self.similar_representation in {"bandpower", "fusion"}:  # the archive's space, as its own rows
            profile = self.similar_space.transform(emb.recording_emb, emb.bandpower)[0]
        return Query(emb.recording_emb, None, patient, archive_path(path), emb.window_emb, profile,
                     emb.window_spans)

    @property
    def similar_representation(self) -> str:
        """What ``similar`` compares (the manifest's choice): ``"embedding"``, or profiles in ``eeg_profile``.

        ``"spectral"`` (the model's spectral profile), ``"bandpower"`` or ``"fusion"`` (the space
        the index fitted on its archive, ``indexer.similar_space``).
        """
        rep = self.manifest.get("similar_representation", "embedding")
        return rep if rep != "embedding" and self.manifest["counts"].get("eeg_profile") else "embedding"

    @property
    def similar_space(self):
        """The prior-case space fitted on the archive (``SimilarSpace``), or None."""
        from indexer.similar_space import SimilarSpace

        d = self.manifest.get("similar_space")
        return SimilarSpace.from_dict(d) if d else None

    def _profile(self, r: Recording) -> np.ndarray | None:
        return from_blob(r.profile) if self.similar_representation != "embedding" and r.profile else None

    def similar(self, fname: str | os.PathLike | None = None, recording_id: int | None = None, k: int = 10,
                include_same_patient: bool = False, one_per_patient: bool = True,
                filters: Filters | None = None, query: Query | None = None) -> list[Hit]:
        """Prior cases: the recordings nearest to a recording, never the recording itself.

        One hit per patient by default; the query's own patient is excluded unless
        ``include_same_patient``.
        """
        query = query or self.resolve(fname, recording_id)
        filters = filters or Filters()
        profiled = query.profile is not None and self.similar_representation != "embedding"
        name, q = ("eeg_profile", query.profile) if profiled else ("eeg_recording", query.emb)
        with self.store.session() as s:
            # never the query's own bytes either: a copy of the file elsewhere is not a prior case
            query_hash = None
            if query.recording_id is not None:
                query_hash = s.scalar(select(Recording.content_hash).where(Recording.id == query.recording_id))
            elif fname is not None:
                from elmsearch.archive.discovery import file_hash

                try:
                    query_hash = file_hash(fname)  # the indexer's content hash of a new file
                except OSError:
                    pass
            n_total = self.manifest["counts"][name]
            fetch = min(n_total, max(4 * k, k + 16))
            while True:
                scores, ids = self._rank(s, name, q, fetch, filters)
                info = {}
                for chunk in _chunks(ids.tolist()):
                    info.update((rid, (p, path, digest)) for rid, p, path, digest in s.execute(
                        select(Recording.id, Patient.key, Recording.path, Recording.content_hash)
                        .outerjoin(Patient, Recording.patient_id == Patient.id).where(Recording.id.in_(chunk))))
                keep_ids, keep_scores, seen = [], [], set()
                for rid, score in zip(ids.tolist(), scores.tolist(), strict=True):
                    if rid not in info:  # removed by a run that is writing now
                        continue
                    p, path, digest = info[rid]
                    if rid == query.recording_id or path == query.path:  # never the query itself
                        continue
                    if query_hash is not None and digest == query_hash:  # nor a copy of it
                        continue
                    if not include_same_patient and p is not None and p == query.patient:
                        continue
                    if one_per_patient and p is not None:
                        if p in seen:
                            continue
                        seen.add(p)
                    keep_ids.append(rid)
                    keep_scores.append(score)
                    if len(keep_ids) == k:
                        break
                if len(keep_ids) == k or fetch >= n_total or len(ids) < fetch:
                    break
                fetch = min(n_total, fetch * 4)
            return self._hits(s, keep_ids, keep_scores, None, self._best_windows(s, keep_ids, query.emb))

    def search_reports(self, fname: str | os.PathLike | None = None, recording_id: int | None = None,
                       k: int = 10, filters: Filters | None = None, query: Query | None = None) -> list[Hit]:
        """EEG → report: the reports that best describe a recording, each with its best sentence.

        ``query`` (from ``resolve``) instead of a file or id: a file embedded once serves several queries.
        """
        if not self.manifest.get("has_text"):
            from elmsearch.models.protocol import NoTextModelError

            raise NoTextModelError(f"{self.store.folder} was built with an EEG-only model; reports need a model "
                                   "trained with `elmsearch train`")
        query = query or self.resolve(fname, recording_id)
        filters = filters or Filters()
        with self.store.session() as s:
            scores, rep_ids = self._rank(s, "report", query.emb, k, filters)
            hits = []
            for rep_id, score in zip(rep_ids.tolist(), scores.tolist(), strict=True):
                rec_q = select(Recording.id).where(Recording.report_id == rep_id, Recording.status == Status.INDEXED)
                rec_id = s.scalar(filters.apply(rec_q).order_by(Recording.id).limit(1))
                if rec_id is None:  # its recordings were changed by a run that is writing now
                    continue
                best, best_score = None, -np.inf
                for text, section, emb in s.execute(select(Segment.text, Segment.section, Segment.emb)
                                                    .where(Segment.report_id == rep_id)):
                    sc = float(from_blob(emb) @ query.emb) if emb is not None else -np.inf
                    if sc > best_score:
                        best, best_score = (f"{section}: {text}" if section else text), sc
                for hit in self._hits(s, [rec_id], [score], query.emb):
                    hit.sentence = best
                    hits.append(hit)
            for i, h in enumerate(hits, 1):
                h.rank = i
            return hits

    def classify(self, prompts: list[str], fname: str | os.PathLike | None = None,
                 recording_id: int | None = None, windows: float | None = None) -> Classification:
        """Zero-shot of a recording (prompt order): pooled, and from its minutes with the window behind each.

        ``windows``: the window percentile of the minutes' scores (None: ``WINDOW_PERCENTILE``;
        ``elmsearch.models.zeroshot.classify_recording``; the first prompt is the background).
        """
        from elmsearch.models.zeroshot import classify_recording

        self._require_text()  # before a file is read
        query = self.resolve(fname, recording_id)
        w, spans = query.window_emb, query.window_spans
        if w is None:
            with self.store.session() as s:
                rows = s.execute(select(Window.emb, Window.start_s, Window.end_s).where(
                    Window.recording_id == query.recording_id).order_by(Window.ordinal)).all()
            w, spans = np.stack([from_blob(e) for e, *_ in rows]), [(a, b) for _, a, b in rows]
        return classify_recording(self.query_model, query.emb, w, spans, prompts, windows)

    def match_sentence(self, recording_id: int, text: str) -> dict | None:
        """The sentence of a recording's report nearest to a text query, or None (no report).

        Returns
        -------
        dict | None
            ``{"section": ..., "text": ..., "score": ...}`` (``text`` None in an index built
            with ``--no-report-text``).
        """
        q = self._text_query(text)
        with self.store.session() as s:
            r = s.get(Recording, int(recording_id))
            if r is None:
                raise NotFoundError(f"recording {recording_id}: no such id in {self.store.folder}")
            best = None
            for section, sentence, emb in s.execute(select(Segment.section, Segment.text, Segment.emb)
                                                    .where(Segment.report_id == r.report_id,
                                                           Segment.emb.is_not(None))):
                score = float(from_blob(emb) @ q)
                if best is None or score > best["score"]:
                    best = {"section": section, "text": sentence, "score": round(score, 6)}
            return best

    def recording_file(self, recording_id: int) -> tuple[str, str, str | None]:
        """``(path, status, error)`` of a recording the index knows (indexed or refused)."""
        with self.store.session() as s:
            row = s.execute(select(Recording.path, Recording.status, Recording.error)
                            .where(Recording.id == int(recording_id))).one_or_none()
        if row is None:
            raise NotFoundError(f"recording {recording_id}: no such id in {self.store.folder}")
        return row[0], str(row[1]), row[2]

    def events(self, recording_id: int) -> dict:
        """The events of a recording and its reading warnings (without the rest of ``show``)."""
        from indexer.events import recording_events, recording_warnings

        with self.store.session() as s:
            if s.get(Recording, int(recording_id)) is None:
                raise NotFoundError(f"recording {recording_id}: no such id in {self.store.folder}")
            return {"recording_id": int(recording_id),
                    "events": [e.to_dict() for e in recording_events(s, int(recording_id))],
                    "warnings": recording_warnings(s, int(recording_id))}

    def show(self, recording_id: int) -> dict:
        """Everything stored about a recording: metadata, report by section, windows, events, warnings."""
        from indexer.events import recording_events, recording_warnings

        with self.store.session() as s:
            r = s.get(Recording, int(recording_id))
            if r is None:
                raise NotFoundError(f"recording {recording_id}: no such id in {self.store.folder}")
            patient = s.get(Patient, r.patient_id).key if r.patient_id else None
            visit = s.get(Visit, r.visit_id) if r.visit_id else None
            report = s.get(Report, r.report_id) if r.report_id else None
            windows = s.execute(select(Window.ordinal, Window.start_s, Window.end_s)
                                .where(Window.recording_id == r.id).order_by(Window.ordinal)).all()
            sections = []
            if report is not None and report.text:
                sections = [{"heading": sec.heading, "text": sec.text} for sec in parse_report(report.text).sections]
            elif report is not None:  # indexed with --no-report-text: the headings, no text
                heads = s.scalars(select(Segment.section).where(Segment.report_id == report.id)
                                  .order_by(Segment.ordinal)).all()
                sections = [{"heading": h, "text": ""} for h in dict.fromkeys(heads)]
            return {
                "recording_id": r.id, "path": r.path, "key": r.key, "status": str(r.status), "error": r.error,
                "patient": patient, "session": visit.key if visit else None,
                "session_date": visit.date.isoformat() if visit and visit.date else None,
                "date": r.date.isoformat() if r.date else None, "date_suspect": r.date_suspect,
                "age": r.age, "sex": r.sex, "montage": r.montage, "layout": r.layout,
                "duration_s": r.duration, "native_sfreq": r.native_sfreq, "size": r.size,
                "content_hash": r.content_hash, "n_windows": r.n_windows,
                "report": None if report is None else {"report_id": report.id, "source": report.source,
                                                       "impression": report.impression, "sections": sections},
                "windows": [{"ordinal": o, "start_s": a, "end_s": b} for o, a, b in windows],
                "events": [e.to_dict() for e in recording_events(s, r.id)],
                "warnings": recording_warnings(s, r.id),
            }

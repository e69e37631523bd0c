"""Index an archive: discover → read + preprocess (worker processes) → embed → SQL rows → FAISS.

The database is the source of truth: each recording is written in one transaction with
its windows, report, sentences and embeddings, so a run killed at any moment leaves
only whole recordings behind and the next run carries on. The FAISS indices are derived
from the database at the end of a run and written atomically, the manifest last.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from db import IndexRun, Patient, Recording, RecordingEvent, Report, Segment, Status, Visit, Window, to_blob
from db.models import utcnow
from elmsearch.archive.discovery import (
    ArchiveEntry,
    Walk,
    archive_path,
    discover,
    file_hash,
    load_report_text,
    patient_of,
    special_file_reason,
)
from elmsearch.errors import RecordingError, ReportError
from elmsearch.io.chunks import LONG_RECORDING_S
from elmsearch.io.events import Event, read_events, sidecar_stamp
from elmsearch.io.window_store import DEFAULT_MAX_BYTES, WindowStore, WindowStoreFull
from elmsearch.io.windowed import WindowedRecording, WindowFile
from elmsearch.models.backends import get_encoder
from elmsearch.models.compiled import write_query_model
from elmsearch.models.embedding import embed_windows
from elmsearch.models.factory import load_model
from elmsearch.models.identity import config_hash, cpu_has_bf16
from elmsearch.models.model import ELMModel
from elmsearch.signal.bandpower import bandpower_profile
from elmsearch.signal.preprocessing import PreprocessingParams
from elmsearch.text.assertion import assertion_scopes, scopes_to_json, sentence_status
from elmsearch.text.report import FINDING_HEADINGS, parse_report
from indexer.fulltext import rebuild_fulltext
from indexer.lock import IndexLock
from indexer.private import private_umask
from indexer.store import IndexStateError, IndexStore
from indexer.workers import DEFAULT_TIMEOUT_S, auto_jobs, failure_reason, run_isolated

logger = logging.getLogger(__name__)

ASSERTION_BATCH = 2000  # stored sentences per transaction when an older index gets assertion statuses
SPILL_CHUNK_S = 1800.0  # long recordings are preprocessed 30 min at a time (elmsearch.io.chunks)


@dataclasses.dataclass
class Prepared:
    """What a worker hands back for one recording."""

    entry: ArchiveEntry
    size: int
    mtime: float
    content_hash: str | None
    windows: np.ndarray | None = None
    windows_file: Path | None = None
    keep: np.ndarray | None = None
    meta: object | None = None
    report_text: str | None = None
    error: str | None = None
    report_error: str | None = None
    seconds: float = 0.0
    eeg: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    text_emb: tuple[np.ndarray | None, np.ndarray | None] | None = None
    events: list[Event] | None = None  # None: not read (a file that could not be opened)
    warnings: list[str] = dataclasses.field(default_factory=list)
    events_stamp: str | None = None
    stored: str | None = None  # its windows and the window store: "read", "written", or why they were not kept
    bandpower: np.ndarray | None = None  # the band-power map of the kept windows, made by the reader


def prepare(entry: ArchiveEntry, params: PreprocessingParams, window_seconds: float,
            known_hash: str | None = None, spill_dir: Path | None = None,
            known_stat: tuple[int, float] | None = None, window_store: WindowStore | None = None) -> Prepared:
    """Hash, read, preprocess and window one recording; read its report. Never raises.

    When the content hash equals ``known_hash`` the signal is not read (the caller only
    refreshes size and mtime, and the events); when the file's size and modification time
    equal ``known_stat`` (only its event files changed), it is not even hashed. The events
    (``elmsearch.io.events``) are read in both cases. Recordings longer than
    ``LONG_RECORDING_S`` are processed in chunks into a memory-mapped file in ``spill_dir``
    (``windows_file``), so that neither this worker nor the embedding process holds a 24 h
    recording in memory. With ``window_store`` (``elmsearch.io.window_store``) a recording
    whose windows it holds (same bytes, same preprocessing) is not preprocessed: only its
    header and events are read; others are written to it (float16; the embedding is then made
    from those values, so a recording embeds the same from the store as from its file). Any
    exception, expected or not, becomes ``error``.
    """
    t0 = time.perf_counter()
    special = special_file_reason(entry.path)  # stat only: a FIFO blocks whoever opens it
    if special:
        return Prepared(entry, 0, 0.0, None, error=special)
    try:
        st = entry.path.stat()
        same = known_hash is not None and known_stat is not None and (st.st_size, st.st_mtime) == tuple(known_stat)
        digest = known_hash if same else file_hash(entry.path)
    except OSError as err:
        if entry.path.is_symlink() and not entry.path.exists():
            reason = "symlink to a file that is not there (a DataLad/git-annex file whose content was not fetched?)"
        elif entry.path.is_dir():
            reason = "a folder, not a recording file"
        else:
            reason = f"cannot read ({err.strerror or err})"
        return Prepared(entry, 0, 0.0, None, error=reason)
    out = Prepared(entry, st.st_size, st.st_mtime, digest)
    if known_hash is not None and digest == known_hash:
        _read_events(out)  # label files beside an unchanged recording may be new
        out.seconds = time.perf_counter() - t0
        return out
    try:
        out.report_text = load_report_text(entry)
    except ReportError as err:
        out.report_error = err.reason
    except Exception as err:  # noqa: BLE001 -- a report that cannot be read never stops the run
        out.report_error = failure_reason(err)
    try:
        rec = WindowedRecording(entry.path, params, window_s=window_seconds, chunk_s=SPILL_CHUNK_S)
        key = window_store.key(None, params.to_dict(), window_seconds, digest) if window_store is not None else None
        got = window_store.get(key) if window_store is not None else None
        if got is not None:
            (out.windows, out.keep), out.stored = got, "read"
        elif spill_dir is not None and rec.meta.duration > LONG_RECORDING_S:
            out.windows_file, out.keep = rec.spill(spill_dir)
        else:
            out.windows, out.keep = rec.windows()
        if got is None and window_store is not None:
            _keep_windows(out, window_store, key)
        if out.keep.any():  # here, in the reader process, beside the encoder's work instead of after it
            windows = WindowFile(out.windows_file) if out.windows_file is not None else out.windows
            out.bandpower = bandpower_profile(windows, params.sfreq, np.flatnonzero(out.keep))
        out.meta = rec.meta
        _read_events(out, rec.header, getattr(rec.source, "raw", None), rec.meta.duration)
    except RecordingError as err:
        out.error = err.reason
    except Exception as err:  # noqa: BLE001 -- a reader bug on one file never stops the run
        logger.debug("%s", entry.path, exc_info=True)
        out.error = failure_reason(err)
    out.seconds = time.perf_counter() - t0
    return out


def _keep_windows(p: Prepared, store: WindowStore, key: str) -> None:
    """Write ``p``'s windows to ``store`` and embed from what it holds; a full store only warns."""
    try:
        kept = store.put(key, WindowFile(p.windows_file) if p.windows_file is not None else p.windows, p.keep,
                         str(p.entry.path))
    except WindowStoreFull as err:
        p.stored = str(err)
        return
    except OSError as err:  # a store that cannot be written never fails the recording
        p.stored = f"window store {store.folder}: cannot write ({err.strerror or err}); windows not kept"
        return
    if p.windows_file is not None:
        p.windows_file.unlink(missing_ok=True)
        p.windows_file, p.windows = None, kept
    else:  # in memory: the same float16 values as the store's, half the bytes
        p.windows = p.windows.astype(np.float16)
    p.stored = "written"


def _read_events(p: Prepared, header=None, raw=None, duration: float | None = None) -> None:
    """The recording's events and their warnings onto ``p`` (``elmsearch.io.events``; never raises)."""
    got = read_events(p.entry.path, header, raw, duration)
    p.events, p.warnings, p.events_stamp = got.events, got.warnings, got.stamp


def run_error(err: BaseException) -> bool:
    """Whether an exception while storing one recording is the run's problem, not the file's.

    Database errors (unreachable server, disk full, locked beyond the busy timeout) and a
    full disk stop the run: every later file would fail the same way.
    """
    return isinstance(err, DBAPIError | MemoryError) or (isinstance(err, OSError) and err.errno in {28, 122})


def file_error(err: BaseException) -> str:
    """One line saying why embedding or storing one recording failed (its ``Recording.error``)."""
    return getattr(err, "reason", None) or failure_reason(err)


def _sentence_text(section: str, text: str) -> str:
    return f"{section}: {text}" if section else text


def clean_report_text(text: str | None) -> str | None:
    """A report as it is stored: PostgreSQL text cannot hold NUL (SQLite can), so they are dropped."""
    return text.replace("\x00", "") if text else text


def embed_report(model: ELMModel, parsed) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Embeddings of a parsed report: one per sentence, and the report's (mean of its units, normalised).

    Parameters
    ----------
    model : ELMModel
    parsed : ParsedReport
        ``elmsearch.text.report.parse_report`` of the cleaned text (``clean_report_text``).

    Returns
    -------
    seg_emb : array of float32, shape (n_sentences, 256) | None
    rep_emb : array of float32, shape (256,) | None
        Both None when the model has no text side or the report no sentence.
    """
    texts = [_sentence_text(x.section, x.text) for x in parsed.sentences]
    if not (model.has_text and texts):
        return None, None
    seg_emb = model.encode_text(texts)
    units = parsed.segments("sentence") or texts
    rep = model.encode_text(units).mean(0)
    return seg_emb, rep / max(float(np.linalg.norm(rep)), 1e-12)


def similar_extra(store: IndexStore, model, model_hash: str, changed: bool) -> dict:
    """The manifest's prior-case entries: the model's spectral profile, else the space fitted on the archive.

    ``changed``: the run changed the index, so the space is fitted again (``indexer.similar_space``)
    and every recording's prior-case vector rewritten; otherwise the manifest's entries are kept.
    """
    if model.similar_representation == "spectral":
        return {"similar_representation": "spectral", "similar_space": None}
    previous = store.read_manifest_or_none() or {}
    if not changed and previous.get("model_hash") == model_hash and "similar_space" in previous:
        return {"similar_representation": previous.get("similar_representation", "embedding"),
                "similar_space": previous["similar_space"]}
    from indexer.similar_space import DEFAULT, refresh

    trained = bool((model.config.similar or {}).get("measured"))  # `train` measured its choice: it stands
    space = refresh(store, model_hash, model.similar_representation if trained else DEFAULT, measure=not trained)
    return {"similar_representation": space.kind if space is not None else "embedding",
            "similar_space": space.to_dict() if space is not None else None}


def embed_eeg(model: ELMModel, windows, keep: np.ndarray | None, fname: str | os.PathLike, precision: str,
              backend: str, pooling: str, bandpower: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Window and recording embeddings of one prepared recording.

    Returns
    -------
    window_emb : array of float32, shape (n_kept, 256)
    window_index : array of int64, shape (n_kept,)
    rec_emb : array of float32, shape (256,)
    profile : array of float32, shape (256,) | None
        The spectral profile, when the model's prior-case search uses it.
    bandpower : array of float32, shape (200,)
        The band-power map of the same windows (``bandpower_profile``; ``indexer.similar_space``);
        the one given (made by the reader from ``keep``) or made here.

    Raises
    ------
    RecordingError
        No window carries signal, or an embedding is not finite.
    """
    window_emb, index = embed_windows(model, windows, fname, precision, keep, backend=backend)
    rec_emb = model.pool_windows(window_emb, pooling)
    if not np.isfinite(rec_emb).all():
        raise RecordingError(fname, "pooling gave a non-finite recording embedding")
    profile = model.spectral_profile(windows, index) if model.similar_representation == "spectral" else None
    if profile is not None and not np.isfinite(profile).all():
        raise RecordingError(fname, "the spectral profile is not finite")
    if bandpower is None or keep is None:
        bandpower = bandpower_profile(windows, model.config.eeg.sfreq, index)
    if not np.isfinite(bandpower).all():
        raise RecordingError(fname, "the band-power map is not finite")
    return window_emb, index, rec_emb, profile, bandpower


def embed_prepared(p: Prepared, model: ELMModel, precision: str, backend: str, pooling: str,
                   text: bool = True, timings: dict | None = None) -> Prepared:
    """Embed a prepared recording in place (``p.eeg``, and ``p.text_emb`` with ``text``); never raises for the file.

    Both runners call this between ``prepare`` and ``Indexer._write``: the local one with
    ``text=False`` (a report is embedded while it is written, only when it changed), the Ray
    actors with ``text=True`` (they cannot see the database). A recording whose embedding
    fails gets ``p.error`` (``file_error``); its windows (and spilled windows file) are
    released either way. Errors of the run (``run_error``) propagate.

    Parameters
    ----------
    p : Prepared
        From ``prepare``; unchanged files (no windows) and failed ones are left as they are.
    model : ELMModel
    precision, backend : str
        See ``ELMModel.encode_eeg``.
    pooling : str
        See ``ELMModel.pool_windows``.
    text : bool
        Also embed the report text.
    timings : dict | None
        ``embed_eeg_s`` and ``embed_text_s`` are added to it.

    Returns
    -------
    Prepared
        ``p``.
    """
    timings = {} if timings is None else timings
    try:
        if p.error is None and (p.windows is not None or p.windows_file is not None):
            try:
                t0 = time.perf_counter()
                windows = WindowFile(p.windows_file) if p.windows_file is not None else p.windows
                p.eeg = embed_eeg(model, windows, p.keep, p.entry.path, precision, backend, pooling, p.bandpower)
                timings["embed_eeg_s"] = timings.get("embed_eeg_s", 0.0) + time.perf_counter() - t0
                report = clean_report_text(p.report_text)
                if text and report:
                    t0 = time.perf_counter()
                    p.text_emb = embed_report(model, parse_report(report))
                    timings["embed_text_s"] = timings.get("embed_text_s", 0.0) + time.perf_counter() - t0
            except Exception as err:
                if run_error(err):
                    raise
                logger.debug("%s", p.entry.path, exc_info=True)
                p.eeg = p.text_emb = None
                p.error = file_error(err)
    finally:
        p.windows = p.keep = None
        if p.windows_file is not None:
            p.windows_file.unlink(missing_ok=True)
            p.windows_file = None
    return p


@dataclasses.dataclass
class IndexSummary:
    """What a run did."""

    added: int = 0
    updated: int = 0
    skipped: int = 0  # unchanged since the last run (``still_refused`` of them refused then)
    failed: int = 0
    removed: int = 0
    still_refused: int = 0
    hours: float = 0.0
    timings: dict = dataclasses.field(default_factory=dict)
    failures: list = dataclasses.field(default_factory=list)
    skipped_files: list = dataclasses.field(default_factory=list)
    counts: dict = dataclasses.field(default_factory=dict)
    # the window store's part: recordings read from it and written to it, its size at the end
    window_store: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-serialisable."""
        return dataclasses.asdict(self)


def _versions() -> dict:
    import faiss
    import mne
    import sqlalchemy
    import torch

    import elmsearch

    return {"elmsearch": elmsearch.__version__, "torch": torch.__version__, "faiss": faiss.__version__,
            "mne": mne.__version__, "sqlalchemy": sqlalchemy.__version__, "numpy": np.__version__}


class Indexer:
    """Index archives into an ``IndexStore`` with one model.

    Parameters
    ----------
    store : IndexStore
        Database + FAISS folder.
    model : ELMModel
        Loaded model.
    model_path : path-like
        Where the model was loaded from (recorded in the manifest).
    precision : {"fp32", "bf16", "auto"}
        EEG encoder precision (see ``ELMModel.encode_eeg``).
    report_text : bool
        Store report text. With False the index keeps the report embeddings, sections and
        sentence offsets but no text (``--no-report-text``).
    timeout : float | None
        Seconds a worker may spend reading one file before it is stopped.
    backend : {"auto", "torch", "onnxruntime", "openvino"}
        EEG inference engine (``elmsearch.models.backends``; torch where the one asked for is
        missing or fails its check). The run records it with the precision, e.g. ``ov-bf16``.
    reembed : bool
        The index holds another model's embeddings: re-embed every recording into a new
        generation of the index (``IndexStore.next_generation``), made current at the end of
        the run in one step; readers answer from the old generation until then. Besides
        ``root`` the run walks every archive root earlier runs indexed; recordings that are
        not found again are kept as failed, with the reason.
    window_store : WindowStore | None
        Keep every recording's preprocessed windows there, and take them from there instead of
        reading the file again (``prepare``): a ``--reembed`` after a model change with the same
        preprocessing, ``train`` and ``eval`` then read no EDF. Recorded in the manifest, so later
        runs use it too.
    """

    def __init__(self, store: IndexStore, model: ELMModel, model_path: str | os.PathLike,
                 precision: str = "fp32", report_text: bool = True, timeout: float | None = DEFAULT_TIMEOUT_S,
                 backend: str = "auto", reembed: bool = False, window_store: WindowStore | None = None):
        self.store = store
        self.reembed = reembed
        self.window_store = window_store
        self.earlier_roots: list[str] = []
        self.report_text = report_text
        self.timeout = timeout
        if precision == "auto":
            precision = "bf16" if model.device.type == "cpu" and cpu_has_bf16() else "fp32"
        self.precision = precision
        self.backend = backend
        self.model = model
        self.model_path = str(Path(model_path).resolve())
        self.model_hash = config_hash(model)
        self.params = PreprocessingParams.from_dict(model.config.preprocessing or {})
        self.window_seconds = model.window_seconds
        self.pooling = "attention" if model.has_text else "mean"
        model.cache_dir = store.folder / "cache"
        self.timings = {"read_preprocess_s": 0.0, "embed_eeg_s": 0.0, "embed_text_s": 0.0, "db_s": 0.0,
                        "faiss_s": 0.0}

    # ---- per-recording writes -----------------------------------------------------------
    def _patient_visit(self, s, entry: ArchiveEntry, meta) -> tuple[Patient, Visit | None]:
        """The patient and visit rows of a recording, created when new (rules: ``archive.patient_of``)."""
        key = _db_text(patient_of(entry, meta.subject if meta else None))
        patient = s.scalar(select(Patient).where(Patient.key == key))
        sex = (meta.sex if meta else None) or (entry.participant or {}).get("sex")
        if patient is None:
            patient = Patient(key=key, sex=sex)
            s.add(patient)
            s.flush()
        elif patient.sex is None and sex:
            patient.sex = sex
        visit = None
        if entry.info.session:
            visit = s.scalar(select(Visit).where(Visit.patient_id == patient.id,
                                                     Visit.key == _db_text(entry.info.session)))
            if visit is None:
                visit = Visit(patient_id=patient.id, key=_db_text(entry.info.session), date=entry.info.session_date)
                s.add(visit)
                s.flush()
        return patient, visit

    def _report(self, s, entry: ArchiveEntry, text: str | None,
                text_emb: tuple[np.ndarray | None, np.ndarray | None] | None = None) -> Report | None:
        """The report row of ``text``, written when new or changed; ``text_emb`` embeds it when given."""
        text = clean_report_text(text)  # before hashing and parsing (offsets)
        if not text:
            return None
        source = str(entry.report_path.resolve()) if entry.report_path else \
            "reports:" + "/".join(entry.key[:2])
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        report = s.scalar(select(Report).where(Report.source == source))
        if report is not None and report.text_hash == digest and (
                report.model_hash == self.model_hash or not self.model.has_text) and (
                bool(report.text) == self.report_text):
            return report
        parsed = parse_report(text)
        stored = text if self.report_text else ""
        if report is None:
            report = Report(source=source, text_hash=digest, text=stored)
            s.add(report)
        report.text, report.text_hash = stored, digest
        report.impression = parsed.impression if self.report_text else None
        report.segments.clear()
        s.flush()
        wanted = {h.upper() for h in FINDING_HEADINGS}
        sentences = list(parsed.sentences)
        if text_emb is not None:  # embedded elsewhere (a Ray actor) from this very text
            seg_emb, rep_emb = text_emb
        else:
            t0 = time.perf_counter()
            seg_emb, rep_emb = embed_report(self.model, parsed)
            self.timings["embed_text_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()  # assertion status counts as text processing
        scopes = assertion_scopes([x.text for x in sentences])
        self.timings["embed_text_s"] += time.perf_counter() - t0
        for i, x in enumerate(sentences):
            report.segments.append(Segment(
                ordinal=i, section=x.section, start=x.start, end=x.end, text=x.text if self.report_text else "",
                finding=x.section.upper() in wanted,
                emb=to_blob(seg_emb[i]) if seg_emb is not None else None,
                assertion=sentence_status(x.text, scopes[i]),
                scopes=scopes_to_json(scopes[i]) if self.report_text else None))
        report.emb = to_blob(rep_emb) if rep_emb is not None else None
        report.model_hash = self.model_hash if rep_emb is not None else None
        s.flush()
        return report

    def _write(self, p: Prepared, existing: Recording | None) -> tuple[str, float]:
        """Embed (unless done) and write one prepared recording in one transaction.

        Returns its outcome and hours of EEG. Both runners store every recording through
        here. An exception that concerns this recording (embedding, a value the database
        refuses) rolls its transaction back and records it as failed; one of the run
        (``run_error``) propagates.
        """
        embed_prepared(p, self.model, self.precision, self.backend, self.pooling, text=False, timings=self.timings)
        if p.error is None:
            try:
                return self._write_rows(p, existing)
            except Exception as err:
                if run_error(err):
                    raise
                logger.debug("%s", p.entry.path, exc_info=True)
                p.error = file_error(err)
        return self._write_rows(p, existing)

    def _write_rows(self, p: Prepared, existing: Recording | None) -> tuple[str, float]:
        path = archive_path(p.entry.path)
        with self.store.session() as s, s.begin():
            rec = s.get(Recording, existing.id) if existing is not None else None
            if rec is not None and p.error is None and p.eeg is None:
                # same bytes, new mtime (and the label files beside it read again)
                rec.size, rec.mtime = p.size, p.mtime
                _write_events(s, rec, p)
                return "skipped", 0.0
            meta = p.meta
            if rec is None:
                rec = s.scalar(select(Recording).where(Recording.path == path))  # a failed attempt this run
            if rec is None:
                rec = Recording(path=path, key=_db_text("/".join(p.entry.key)), layout=p.entry.info.layout,
                                size=p.size, mtime=p.mtime, status=Status.FAILED)
                s.add(rec)
            else:
                s.execute(delete(Window).where(Window.recording_id == rec.id))
            rec.size, rec.mtime, rec.content_hash = p.size, p.mtime, p.content_hash
            rec.model_hash, rec.indexed_at = self.model_hash, utcnow()
            rec.montage = _db_text(p.entry.info.montage)
            if p.error is not None:
                patient, visit = self._patient_visit(s, p.entry, None)
                rec.patient_id, rec.visit_id = patient.id, visit.id if visit else None
                rec.status, rec.error, rec.n_windows, rec.emb = Status.FAILED, p.error.replace("\x00", ""), 0, None
                rec.profile = rec.bandpower = None
                rec.report_id = None
                return "failed", 0.0
            patient, visit = self._patient_visit(s, p.entry, meta)
            rec.patient_id, rec.visit_id = patient.id, visit.id if visit else None
            rec.status, rec.error = Status.INDEXED, None
            rec.duration, rec.native_sfreq = meta.duration, meta.native_sfreq
            rec.age, rec.sex = meta.age, meta.sex
            rec.date = meta.start or (dt.datetime.combine(p.entry.info.session_date, dt.time())
                                      if p.entry.info.session_date else None)
            rec.date_suspect = meta.date_suspect
            text = p.report_text
            if text is None and self.reembed and p.report_error is None and rec.report_id is not None:
                old = s.get(Report, rec.report_id)  # a report from a side file this run was not given
                text = old.text if old is not None and old.text else None
            report = self._report(s, p.entry, text, p.text_emb)
            rec.report_id = report.id if report else None
            _write_events(s, rec, p)
            window_emb, index, rec_emb, profile, bandpower = p.eeg
            rec.emb = to_blob(rec_emb)
            # the model's spectral profile; else the index's prior-case vector, written at the run's end
            rec.profile = to_blob(profile) if profile is not None else None
            rec.bandpower = to_blob(bandpower)
            rec.n_windows = len(window_emb)
            s.flush()
            w = self.window_seconds
            s.execute(insert(Window), [
                {"recording_id": rec.id, "ordinal": int(i), "start_s": int(i) * w, "end_s": (int(i) + 1) * w,
                 "emb": to_blob(e)}
                for i, e in zip(index, window_emb, strict=True)])
            return ("updated" if existing is not None else "added"), meta.duration / 3600

    # ---- the run ------------------------------------------------------------------------
    def run(self, root: str | os.PathLike, reports: str | os.PathLike | None = None, n_jobs: int | str = "auto",
            prune: bool = False, on_item: Callable[[str, str, float], None] | None = None,
            on_plan: Callable[[int, int], None] | None = None, retry_failed: bool = False) -> IndexSummary:
        """Index (or update the index of) an archive, holding the index folder's writer lock.

        Parameters
        ----------
        root : path-like
            Archive folder or one file.
        reports : path-like | None
            JSON-lines reports side file.
        n_jobs : int | "auto"
            Worker processes that read and preprocess while this process embeds; each file
            is isolated (a crash or a run past ``timeout`` fails that file alone). 0 reads
            in this process (no isolation); ``"auto"``: one per four cores.
        prune : bool
            Remove recordings under ``root`` whose files are gone.
        on_item : callable | None
            Called per processed recording with ``(path, outcome, hours)``; outcome is
            ``added``, ``updated``, ``skipped`` or ``failed``.
        on_plan : callable | None
            Called once with ``(n_to_process, n_unchanged)`` before the work starts.
        retry_failed : bool
            Try again the files that failed before although they did not change.

        Raises
        ------
        IndexLockedError
            Another process is writing to this index.
        """
        import torch

        # The reader workers take n_jobs cores; torch's default of one thread per core then
        # oversubscribes the CPU, and its spinning threads slow the encoder down badly on a
        # busy machine (measured on 2 cores, 24 h recording: 1 thread 108 s, 2 threads 122 s
        # idle, 650 s with one core taken by another process). A compiled engine (OpenVINO,
        # ONNX Runtime) keeps every core: the readers need ~a tenth of the encoder's time, and
        # on 2 cores OpenVINO with 2 threads embeds 2.4x faster than with 1 (bench_backends).
        n_jobs = auto_jobs(n_jobs)
        threads = torch.get_num_threads()
        engine = get_encoder(self.model, self.backend, self.precision).name  # resolved (and cached) once
        if n_jobs > 0 and engine == "torch":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) - n_jobs))
        try:
            with IndexLock(self.store.folder), private_umask():
                if self.reembed:
                    self.start_generation()
                return self._run(root, reports, n_jobs, prune, on_item, on_plan, retry_failed)
        finally:
            torch.set_num_threads(threads)

    def start_generation(self) -> None:
        """Switch ``store`` to the next generation (a copy of the database) for a re-embedding run.

        Called holding the lock. Remembers the archive roots earlier runs indexed, so that the
        run re-embeds every recording, not only those under this run's root.
        """
        with self.store.session() as s:
            self.earlier_roots = sorted({a for (a,) in s.execute(select(IndexRun.archive)) if a})
        old = self.store
        self.store = old.next_generation(self.model_hash)
        self.store.faiss_policy = old.faiss_policy
        logger.warning("%s: re-embedding every recording with model %s (%s) into generation %s; queries answer "
                       "from the current one until the run finishes", old.folder, self.model_hash, self.model_path,
                       self.store.generation)

    def _run(self, root, reports, n_jobs, prune, on_item, on_plan, retry_failed) -> IndexSummary:
        t_run = time.perf_counter()
        run_id, summary, todo = self.plan(root, reports, prune, on_plan, retry_failed)
        spill = self.store.folder / "tmp"  # long recordings' windows, memory-mapped (private, like the index)
        shutil.rmtree(spill, ignore_errors=True)  # left by a killed run
        spill.mkdir(mode=0o700)
        jobs = (((entry, ex), (entry, self.params, self.window_seconds, self.known_hash(ex), spill,
                               (ex.size, ex.mtime) if ex is not None else None, self.window_store))
                for entry, ex in todo)
        for (entry, ex), p, error in run_isolated(prepare, jobs, n_jobs, self.timeout):
            if p is None:  # the worker died or ran out of time: the file alone fails
                p = Prepared(entry, *_stat(entry.path), error=error)
            self.store_prepared(p, ex, summary, on_item)
        shutil.rmtree(spill, ignore_errors=True)
        return self.finish(run_id, summary, t_run)

    # ---- the steps of a run, shared with indexer.ray_runner ------------------------------
    def plan(self, root, reports=None, prune: bool = False, on_plan: Callable[[int, int], None] | None = None,
             retry_failed: bool = False) -> tuple[int, IndexSummary, list[tuple[ArchiveEntry, Recording | None]]]:
        """Start a run: discover, record an ``IndexRun``, and list what changed (the caller holds the lock).

        Returns
        -------
        run_id : int
            The new ``IndexRun`` row.
        summary : IndexSummary
            With ``skipped``, ``skipped_files`` and ``removed`` filled in.
        todo : list of (ArchiveEntry, Recording | None)
            Files to prepare, in archive order, with their row when they have one.
        """
        summary = IndexSummary()
        walk = Walk()
        entries = discover(root, reports, walk)
        if self.reembed:  # every recording of the index, also those of earlier runs' roots
            here = archive_path(root).rstrip(os.sep) + os.sep
            seen = {e.path for e in entries}
            for other in self.earlier_roots:
                if (other + os.sep).startswith(here) or not os.path.exists(other):
                    continue
                entries += [e for e in discover(other, None, walk) if e.path not in seen]
        summary.skipped_files = walk.skipped
        enc = get_encoder(self.model, self.backend, self.precision)  # once: later batches reuse it
        self.backend, self.precision = enc.name, enc.precision
        with self.store.session() as s, s.begin():
            run_row = IndexRun(archive=archive_path(root), model_hash=self.model_hash,
                               model_path=self.model_path, preprocessing=self.params.to_dict(),
                               precision=enc.engine, versions=_versions())
            s.add(run_row)
            s.flush()
            run_id = run_row.id
            known = {r.path: r for r in s.scalars(select(Recording))}
            stamps = dict(s.execute(select(Recording.id, Recording.events_stamp)).all())
        self.backfill_assertions()  # before --no-report-text drops the text it reads
        with self.store.session() as s, s.begin():
            if not self.report_text:  # --no-report-text on an index that holds text: drop it now
                s.execute(update(Report).where(Report.text != "").values(text="", impression=None))
                s.execute(update(Segment).where(Segment.text != "").values(text="", scopes=None))
        todo: list[tuple[ArchiveEntry, Recording | None]] = []
        for entry in entries:
            ex = known.get(archive_path(entry.path))
            try:
                st = entry.path.stat()
            except OSError:
                st = None
            if (ex is not None and st is not None and ex.size == st.st_size and ex.mtime == st.st_mtime
                    and ex.model_hash == self.model_hash
                    and not (retry_failed and ex.status == Status.FAILED)):
                if ex.status != Status.INDEXED or stamps.get(ex.id) == sidecar_stamp(entry.path):
                    summary.skipped += 1
                    summary.still_refused += ex.status == Status.FAILED
                    continue
                # the same bytes, but its event files changed (or its events were never read):
                # prepared again without hashing or reading its signal (``prepare``'s known_stat)
            todo.append((entry, ex))
        if prune:
            summary.removed = self._prune(root)
        if on_plan:
            on_plan(len(todo), summary.skipped)
        logger.info("%d recordings to index, %d unchanged%s", len(todo), summary.skipped,
                    f" ({summary.still_refused} of them refused before: --retry-failed reads them again)"
                    if summary.still_refused else "")
        return run_id, summary, todo

    def backfill_assertions(self, batch_size: int | None = None) -> int:
        """Fill the assertion status and scopes of stored sentences that have text but no status.

        An index written before ``Segment.assertion`` existed gets them here, on its next run:
        batches of ``batch_size`` sentences, one transaction each, so a killed run keeps what it
        filled and the next one goes on. Sentences whose text is not stored (``--no-report-text``)
        cannot be read again and keep NULL.

        Parameters
        ----------
        batch_size : int | None
            Sentences per transaction (default ``ASSERTION_BATCH``).

        Returns
        -------
        int
            Sentences filled.
        """
        batch_size = batch_size or ASSERTION_BATCH
        done, last = 0, 0
        while True:
            with self.store.session() as s, s.begin():
                rows = s.execute(
                    select(Segment.id, Segment.text)
                    .where(Segment.assertion.is_(None), Segment.text != "", Segment.id > last)
                    .order_by(Segment.id).limit(batch_size)).all()
                if not rows:
                    break
                t0 = time.perf_counter()
                scopes = assertion_scopes([text for _, text in rows])
                self.timings["embed_text_s"] += time.perf_counter() - t0
                s.execute(update(Segment), [
                    {"id": sid, "assertion": sentence_status(text, sc),
                     "scopes": scopes_to_json(sc) if self.report_text else None}
                    for (sid, text), sc in zip(rows, scopes, strict=True)])
            done += len(rows)
            last = rows[-1][0]
        if done:
            logger.info("assertion status filled for %d stored report sentences", done)
        return done

    def known_hash(self, ex: Recording | None) -> str | None:
        """Content hash of a file indexed with this model (``prepare`` skips reading it when it is the same)."""
        return ex.content_hash if ex is not None and ex.model_hash == self.model_hash \
            and ex.status == Status.INDEXED else None

    def store_prepared(self, p: Prepared, ex: Recording | None, summary: IndexSummary,
                       on_item: Callable[[str, str, float], None] | None = None) -> str:
        """Write one prepared (or prepared and embedded) recording and count it in ``summary``; returns the outcome."""
        self.timings["read_preprocess_s"] += p.seconds
        t0 = time.perf_counter()
        embedding = self.timings["embed_eeg_s"] + self.timings["embed_text_s"]
        outcome, hours = self._write(p, ex)
        embedding = self.timings["embed_eeg_s"] + self.timings["embed_text_s"] - embedding
        self.timings["db_s"] += time.perf_counter() - t0 - embedding
        setattr(summary, outcome, getattr(summary, outcome) + 1)
        summary.hours += hours
        if p.stored is not None:
            store = summary.window_store
            if p.stored in ("read", "written"):
                store[p.stored] = store.get(p.stored, 0) + 1
            elif not store.get("not_kept"):  # said once (full, not writable): later files would say the same
                logger.warning("%s", p.stored)
                store["not_kept"] = p.stored
        if p.error:
            logger.warning("%s: %s", p.entry.path, p.error)
            summary.failures.append({"path": str(p.entry.path), "reason": p.error})
        if p.report_error:
            logger.warning("report of %s: %s", p.entry.path, p.report_error)
        if on_item:
            on_item(str(p.entry.path), outcome, hours)
        return outcome

    def finish(self, run_id: int, summary: IndexSummary, t_run: float) -> IndexSummary:
        """End a run: rebuild the FAISS indices, write the query model, close the ``IndexRun`` row."""
        if self.reembed:
            summary.failed += self._fail_not_reembedded(summary)
        t0 = time.perf_counter()
        changed = summary.added + summary.updated + summary.removed + summary.failed > 0
        similar = similar_extra(self.store, self.model, self.model_hash, changed)
        kept = {}
        if self.window_store is not None:
            ws = self.window_store
            kept = {"window_store": {"path": str(ws.folder.resolve()), "max_gib": ws.max_bytes / 2**30}}
            summary.window_store = {"read": 0, "written": 0, **summary.window_store, "folder": str(ws.folder),
                                    "bytes": ws.size(), "max_gib": ws.max_bytes / 2**30}
        summary.counts = self.store.rebuild(self.model_hash, self.model_path, self.model.config,
                                            force=changed, run_id=run_id, fresh={"eeg_profile"} if changed else (),
                                            extra={"report_text": self.report_text, **similar, **kept,
                                                   **_text_model(self.model)})
        self.timings["faiss_s"] = time.perf_counter() - t0
        if summary.counts.get("eeg_recording"):
            t0 = time.perf_counter()  # cold queries run it without importing torch (~1 s)
            write_query_model(self.model, self.model_path)
            self.timings["query_model_s"] = time.perf_counter() - t0
        self.timings["wall_s"] = time.perf_counter() - t_run
        summary.timings = {k: round(v, 3) for k, v in self.timings.items()}
        with self.store.session() as s, s.begin():
            s.execute(update(IndexRun).where(IndexRun.id == run_id).values(
                finished=utcnow(), n_added=summary.added, n_updated=summary.updated, n_skipped=summary.skipped,
                n_failed=summary.failed, n_removed=summary.removed, timings=summary.timings))
        return summary

    def _fail_not_reembedded(self, summary: IndexSummary) -> int:
        """Mark failed the indexed recordings a re-embedding run did not find again (one index, one model)."""
        reason = f"not re-embedded with model {self.model_hash}: the file was not found under the archive roots"
        with self.store.session() as s, s.begin():
            stale = s.execute(select(Recording.id, Recording.path).where(
                Recording.status == Status.INDEXED, Recording.model_hash != self.model_hash)).all()
            for i in range(0, len(stale), 500):
                s.execute(update(Recording).where(Recording.id.in_([r[0] for r in stale[i:i + 500]])).values(
                    status=Status.FAILED, error=reason, model_hash=self.model_hash, emb=None, n_windows=0))
            s.execute(delete(Window).where(Window.recording_id.in_(
                select(Recording.id).where(Recording.status == Status.FAILED))))
        for _, path in stale:
            logger.warning("%s: %s", path, reason)
            summary.failures.append({"path": path, "reason": reason})
        return len(stale)

    def _prune(self, root: str | os.PathLike) -> int:
        """Delete the rows of recordings under ``root`` whose files are gone.

        A file counts as gone only when the operating system says so (``FileNotFoundError``
        for the path itself, its symlink included): a file that cannot be looked at
        (permissions, a share that is not mounted, I/O errors) keeps its rows. An archive
        root that is missing or empty prunes nothing.
        """
        base = archive_path(root)
        if not os.path.isdir(base) or not any(os.scandir(base)):
            logger.warning("%s: missing or empty; nothing pruned", base)
            return 0
        gone = []
        with self.store.session() as s, s.begin():
            for rid, path in s.execute(select(Recording.id, Recording.path)):
                if not (path == base or path.startswith(base.rstrip(os.sep) + os.sep)):
                    continue
                try:
                    os.lstat(path)
                except FileNotFoundError:
                    gone.append(rid)
                except OSError as err:
                    logger.warning("%s: cannot look at it (%s); kept", path, err.strerror or err)
            for i in range(0, len(gone), 500):
                s.execute(delete(Recording).where(Recording.id.in_(gone[i : i + 500])))
            self.store.delete_orphans(s)
        if gone:
            logger.info("pruned %d recordings whose files are gone", len(gone))
        return len(gone)


def _text_model(model: ELMModel) -> dict:
    """``has_text`` for the manifest when the model reads text.

    An archive without reports (events only, or reports to come) is still searched by text.
    """
    return {"has_text": True} if model.has_text else {}


def _write_events(s, rec: Recording, p: Prepared) -> None:
    """Replace a recording's events and warnings with those ``p`` read (unless it read none: left as they are)."""
    if p.events is None:
        return
    rec.warnings = _db_text("\n".join(p.warnings)) if p.warnings else None
    rec.events_stamp = p.events_stamp
    if rec.id is not None:
        s.execute(delete(RecordingEvent).where(RecordingEvent.recording_id == rec.id))
    s.flush()
    if p.events:
        s.execute(insert(RecordingEvent), [
            {"recording_id": rec.id, "onset": e.onset, "duration": e.duration, "label": _db_text(e.label),
             "meaning": e.meaning, "channels": _db_text(",".join(e.channels)) or "", "source": e.source}
            for e in p.events])


def _db_text(text: str | None) -> str | None:
    r"""A name taken from a file name, storable as UTF-8: undecodable bytes (surrogates) as ``\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") if text else text


def _stat(path: Path) -> tuple[int, float, str | None]:
    """Size and mtime of a file whose worker gave no result (zeros if it cannot be looked at).

    Only ``stat``: the worker died or ran past the per-file time limit on this file, so this
    process never reads it (hashing a FIFO or a hanging network file here would block the run
    while it holds the lock). The content hash is None: unknown.
    """
    try:
        st = path.stat()
        return st.st_size, st.st_mtime, None
    except OSError:
        return 0, 0.0, None


def index_archive(root: str | os.PathLike, db_dir: str | os.PathLike, model_path: str | os.PathLike,
                  reports: str | os.PathLike | None = None, n_jobs: int | str = "auto", prune: bool = False,
                  db_url: str | None = None, precision: str = "fp32", on_item=None, on_plan=None,
                  retry_failed: bool = False, report_text: bool | None = None,
                  timeout: float | None = DEFAULT_TIMEOUT_S, backend: str = "auto", reembed: bool = False,
                  window_store: str | os.PathLike | None = None, window_store_gb: float | None = None
                  ) -> IndexSummary:
    """Load a model and index an archive into ``db_dir`` (see ``Indexer.run``).

    ``report_text=None`` keeps the index's setting (text stored unless an earlier run was
    told ``report_text=False``); ``reembed``, ``window_store``: see ``make_indexer``.
    """
    indexer = make_indexer(db_dir, model_path, db_url, precision, report_text, timeout, backend, reembed,
                           window_store, window_store_gb)
    return indexer.run(root, reports, n_jobs, prune, on_item, on_plan, retry_failed)


def recorded_window_store(manifest: dict, max_gib: float | None = None) -> WindowStore | None:
    """The window store an index's runs keep windows in (its manifest's ``window_store``), if still there."""
    kept = manifest.get("window_store") or {}
    if not kept.get("path") or not Path(kept["path"]).is_dir():
        return None
    gib = max_gib if max_gib is not None else kept.get("max_gib", DEFAULT_MAX_BYTES / 2**30)
    return WindowStore(kept["path"], int(gib * 2**30))


def make_indexer(db_dir: str | os.PathLike, model_path: str | os.PathLike, db_url: str | None = None,
                 precision: str = "fp32", report_text: bool | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT_S, backend: str = "auto", reembed: bool = False,
                 window_store: str | os.PathLike | None = None, window_store_gb: float | None = None) -> Indexer:
    """Load a model, create or open the index in ``db_dir`` and check that it holds that model's embeddings.

    ``report_text=None`` keeps the index's setting. ``window_store`` (a folder) and
    ``window_store_gb`` (its limit, default 200 GiB) make a ``WindowStore``; without them the
    store an earlier run recorded in the manifest is used, when its folder is still there. The
    other parameters are ``Indexer``'s.

    Raises
    ------
    IndexStateError
        The index holds another model's embeddings and ``reembed`` is False (one index holds
        one model), or ``reembed`` on a database other than the index folder's own SQLite file.
    """
    model = load_model(model_path)
    store = IndexStore.create(db_dir, db_url)
    manifest = store.read_manifest() or {}
    if report_text is None:
        report_text = manifest.get("report_text", True)
    windows = recorded_window_store(manifest, window_store_gb) if window_store is None else \
        WindowStore(window_store, int((window_store_gb or DEFAULT_MAX_BYTES / 2**30) * 2**30))
    if windows is not None and window_store is None:
        logger.info("window store %s (recorded by an earlier run)", windows.folder)
    mh = config_hash(model)
    have = store.index_model()
    if not reembed or have is None or have[0] == mh:
        store.check_model(mh, Path(model_path).resolve())
        reembed = False
    elif not store.owns_database:
        raise IndexStateError(
            f"{db_dir}: --reembed keeps the old model's index answering while it works, which needs the index "
            f"folder's own SQLite database; for {store.engine.url.render_as_string(hide_password=True)} index into "
            "a new --db folder and --db-url with the new model, then switch (docs: running at scale)")
    return Indexer(store, model, model_path, precision, report_text, timeout, backend, reembed, windows)


def rebuild_faiss(db_dir: str | os.PathLike, db_url: str | None = None) -> dict:
    """Rebuild every FAISS file, the full-text index and the manifest from the database (``index --rebuild-faiss``).

    What to do when a FAISS file or the manifest is damaged: the database is the source of
    truth. Takes the writer lock; the model is the manifest's (or, with a damaged manifest, the
    last run's) and must still be what it was.

    Returns
    -------
    dict
        The vector counts.

    Raises
    ------
    IndexStateError
        No index, or its model is gone or changed.
    """
    store = IndexStore.create(db_dir, db_url, tolerate_damage=True)
    with IndexLock(store.folder), private_umask():
        with store.session() as s:
            last = s.scalar(select(IndexRun).where(IndexRun.finished.is_not(None)).order_by(IndexRun.id.desc())
                            .limit(1)) or s.scalar(select(IndexRun).order_by(IndexRun.id.desc()).limit(1))
            has_text = s.scalar(select(func.count()).select_from(Report).where(Report.text != "")) > 0
        have = store.index_model()
        if have is None or last is None:
            raise IndexStateError(f"{db_dir}: no indexed recordings to rebuild from")
        model_hash, model_path = have
        if not Path(model_path).exists():
            raise IndexStateError(f"{db_dir}: the index's model {model_path} is gone; re-index with `elmsearch index "
                                  "--reembed --model DIR`")
        model = load_model(model_path)
        if config_hash(model) != model_hash:
            raise IndexStateError(f"{db_dir}: the index's model {model_path} is now {config_hash(model)}, not "
                                  f"{model_hash}; re-index with `elmsearch index --reembed --model DIR`")
        manifest = store.read_manifest_or_none() or {}
        rebuild_fulltext(store.engine)
        return store.rebuild(model_hash, str(model_path), model.config, force=True, run_id=last.id,
                             fresh={"eeg_profile"}, extra={"report_text": manifest.get("report_text", has_text),
                                                           **similar_extra(store, model, model_hash, True),
                                                           **_text_model(model)})

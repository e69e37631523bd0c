"""One API for every front end: the command line, Python and HTTP get the same documents.

```python
svc = SearchService.open("elmsearch-index")
svc.search("generalized 3 Hz spike and wave", k=10)      # {"query": ..., "hits": [...]}
svc.similar(recording_id=42, filters=Filters(before=dt.date(2020, 1, 1)))
svc.window_png(42, start_s=120, end_s=130)               # PNG bytes
```

Each query method returns the JSON document that ``elmsearch ... --json`` prints and the
HTTP API serves (same keys); the CLI and the server only parse arguments and present it.
A service opens its index once and is read-only; it is safe to share between threads
(lazy parts load under a lock).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from elmsearch.errors import ElmsearchError, InputFileError
from elmsearch.io.display import DISPLAY_RATE
from indexer.filters import FilterError
from indexer.search import Filters, Hit, Index, NotFoundError, QueryError
from indexer.store import INDEX_NAMES
from indexer.uploads import KeptUploads

if TYPE_CHECKING:
    import numpy as np

    from elmsearch.models.zeroshot import Classification

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # an upload larger than this is refused (a 24 h EDF is ~1 GB)
MAX_K = 1000
MAX_ID = 2**63 - 1  # ids are SQL BIGINT / FAISS int64: anything else names no recording
REPORT_PAGE_CHARS = 100_000  # report characters ``show`` returns at once (a 50 MB report is paged)


class UploadError(ElmsearchError):
    """An uploaded file that cannot be used (HTTP 400); the message names the client's file name."""


def check_id(recording_id: int, what: str = "recording") -> int:
    """A recording id as int; ``NotFoundError`` when it cannot name one (below 1 or over 64 bits).

    SQLite and FAISS ids are signed 64-bit: a larger number would overflow in the driver.
    """
    try:
        rid = int(recording_id)
    except (TypeError, ValueError):
        raise NotFoundError(f"{what} {recording_id!r}: no such id") from None
    if not 1 <= rid <= MAX_ID:
        raise NotFoundError(f"{what} {rid}: no such id")
    return rid


def page_report(report: dict | None, offset: int = 0, limit: int = REPORT_PAGE_CHARS) -> dict | None:
    """One page of a report document: the characters [offset, offset + limit) of its sections.

    Offsets count the characters of the section texts in order (headings not counted). Each
    returned section is cut to the page; ``text_chars`` is the whole report's count, ``next``
    the offset of the next page (None on the last) and ``impression`` at most ``limit``
    characters.

    Raises
    ------
    FilterError
        A negative offset or a limit below 1.
    """
    if report is None:
        return None
    offset, limit = int(offset), int(limit)
    if offset < 0:
        raise FilterError(f"offset: expected a number >= 0, got {offset}")
    if limit < 1:
        raise FilterError(f"limit: expected a number >= 1, got {limit}")
    end, pos, sections = offset + limit, 0, []
    for sec in report["sections"]:
        text = sec["text"] or ""
        a, b = max(offset, pos), min(end, pos + len(text))
        if a < b or (not text and offset <= pos < end):
            sections.append({"heading": sec["heading"], "text": text[a - pos : b - pos], "start": a})
        pos += len(text)
    impression = report.get("impression")
    return {**report, "impression": impression[:limit] if impression else impression, "sections": sections,
            "text_chars": pos, "offset": offset, "limit": limit, "next": end if end < pos else None}


def _manifest_stamp(folder: str | os.PathLike) -> tuple | None:
    """What changes when the indexer replaces an index's manifest (inode, size, mtime)."""
    try:
        st = os.stat(Path(folder) / "manifest.json")
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def manifest_model_path(folder: str | os.PathLike) -> Path:
    """The model an index folder was built with (its manifest's ``model_path``).

    Raises
    ------
    ElmsearchError
        No index manifest in ``folder``.
    """
    manifest = Path(folder) / "manifest.json"
    try:
        return Path(json.loads(manifest.read_text())["model_path"])
    except (OSError, ValueError, KeyError) as err:
        raise ElmsearchError(f"{folder}: no index manifest (build one with `elmsearch index`)") from err


def read_prompts(fname: str | os.PathLike) -> dict[str, list[str]]:
    """A prompts file: JSON ``{"column": ["negative prompt", "positive prompt"], ...}``.

    Raises
    ------
    InputFileError
        Unreadable, not JSON, or not of that shape (one-line reason).
    """
    try:
        doc = json.loads(Path(fname).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputFileError(fname, f"not valid JSON ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(fname, f"cannot read ({err})") from None
    if not (isinstance(doc, dict) and all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(p, str) for p in v) for v in doc.values())):
        raise InputFileError(fname, 'expected {"column": ["negative prompt", "positive prompt"], ...}')
    return doc


def hits_document(query: str, hits: list[Hit], source: str | None = None) -> dict:
    """The document of a ranked query: ``{"query": ..., "hits": [Hit.to_dict(), ...]}``.

    A text search adds ``"source"``: what ranked it (``hybrid``, ``reports`` or ``eeg``).
    """
    doc = {"query": query, "hits": [h.to_dict() for h in hits]}
    if source is not None:
        doc["source"] = source
    return doc


def classify_document(recording: str, prompts: list[str], result: Classification) -> dict:
    """The document of a zero-shot classification, prompts in the order given.

    Each prompt has ``probability`` (the softmax of the pooled recording: what holds throughout),
    ``minutes`` (``zero_shot_windows``: what its most convincing windows show; the first prompt
    is the background) and ``window`` (``[start_s, end_s]`` of the window behind ``minutes``).
    ``windows``: the window percentile ``minutes`` came from.
    """
    return {"recording": recording, "windows": result.percentile,
            "scores": [{"prompt": p, "probability": round(float(q), 6), "minutes": round(float(m), 6),
                        "window": [round(a, 3), round(b, 3)]}
                       for p, q, m, (a, b) in zip(prompts, result.probabilities, result.minutes, result.spans,
                                                  strict=True)]}


def classify_file(model, fname: str | os.PathLike, prompts: list[str], backend: str = "auto",
                  windows: float | None = None) -> dict:
    """Zero-shot classification of one file with a model (no index), as a document."""
    from elmsearch.models.embedding import embed_recording
    from elmsearch.models.zeroshot import classify_recording

    if Path(fname).is_file():  # a missing file is named by the reader; a readable one is not read in vain
        model.require_text()
    emb = embed_recording(model, fname, pooling="attention" if model.has_text else "mean", backend=backend)
    return classify_document(str(fname), prompts, classify_recording(
        model, emb.recording_emb, emb.window_emb, emb.window_spans, prompts, windows))


def _check_k(k: int) -> int:
    if not 1 <= int(k) <= MAX_K:
        raise ValueError(f"k: expected 1 to {MAX_K}, got {k}")
    return int(k)


class SearchService:
    """The read-only query API of one index (see the module notes).

    Parameters
    ----------
    index : Index
        An open index.
    """

    def __init__(self, index: Index, max_upload_bytes: int = MAX_UPLOAD_BYTES, db_url: str | None = None):
        self._index = index
        self._db_url = db_url
        self._stamp = _manifest_stamp(index.store.folder)
        self._reload = threading.Lock()
        self.max_upload_bytes = int(max_upload_bytes)
        self.uploads = KeptUploads()  # uploads whose page the page shows (``upload_file(keep=True)``)

    def close(self) -> None:
        """Close the index's database connections and delete the kept uploads."""
        self._index.store.close()
        self.uploads.close()

    @property
    def index(self) -> Index:
        """The open index; re-opened when its manifest changed (a run finished, a new generation).

        One ``stat`` per call. A long-running server thus answers from the index (and model)
        the manifest names now, without a restart; a request already running keeps the
        ``Index`` it started with, whose files the indexer keeps for one generation.
        """
        stamp = _manifest_stamp(self._index.store.folder)
        if stamp != self._stamp:
            with self._reload:
                if stamp != self._stamp:
                    old = self._index
                    try:
                        new = Index.open(old.store.folder, self._db_url)
                    except ElmsearchError as err:  # a manifest being written, or damaged: keep answering
                        logger.warning("%s: not reloaded (%s); answering from the index opened before",
                                       old.store.folder, err)
                        return old
                    new.backend, new.text_cache = old.backend, old.text_cache
                    self._index, self._stamp = new, stamp
                    logger.info("%s: index changed (run %s, generation %s); reloaded", old.store.folder,
                                new.manifest.get("run_id"), new.manifest.get("generation"))
        return self._index

    @classmethod
    def open(cls, folder: str | os.PathLike, db_url: str | None = None, backend: str = "auto",
             max_upload_bytes: int = MAX_UPLOAD_BYTES, text_cache: str = "disk") -> SearchService:
        """Open an index folder (checked quickly, see ``Index.open``) for queries.

        Parameters
        ----------
        text_cache : {"disk", "memory"}
            Where query-text features are kept: ``DIR/cache`` (an SQLite file), or a bounded
            in-memory LRU (``elmsearch.models.textcache.MemoryCache``) so that no query text
            is written to disk: what ``elmsearch serve`` uses unless ``--disk-cache``.
        """
        if text_cache not in {"disk", "memory"}:
            raise ValueError(f"text_cache must be 'disk' or 'memory', got {text_cache!r}")
        index = Index.open(folder, db_url)
        index.backend = backend
        if text_cache == "memory":
            from elmsearch.models.textcache import MEMORY

            index.text_cache = MEMORY
        return cls(index, max_upload_bytes, db_url)

    @property
    def folder(self) -> Path:
        """The index folder."""
        return self.index.store.folder

    def warm(self) -> SearchService:
        """Load the query model and the FAISS indices now (a server does it once, before requests)."""
        model = self.index.query_model
        if model.has_text:
            model.encode_text(["warm up"])  # the language model's session, too
        for name in INDEX_NAMES:
            self.index.faiss(name)
        import mne  # noqa: F401 -- the viewer's reader: the first page drawn does not wait for its import
        import scipy.signal  # noqa: F401
        return self

    # ---- queries (documents) -------------------------------------------------------------
    def search(self, text: str, k: int = 10, level: str = "recording", filters: Filters | None = None,
               source: str = "hybrid") -> dict:
        """Text → EEG (``elmsearch search --json``), ranked from ``source`` (``indexer.hybrid``)."""
        if not str(text).strip():
            raise ValueError("q: give a description to search for")
        hits = self.index.search_text(text, _check_k(k), level, filters, source)
        kind = f"{'search' if level == 'recording' else 'window'}/{source}"
        return self._document(text, hits, kind, source if level == "recording" else "eeg")

    def similar(self, fname: str | os.PathLike | None = None, recording_id: int | None = None, k: int = 10,
                include_same_patient: bool = False, one_per_patient: bool = True,
                filters: Filters | None = None, label: str | None = None) -> dict:
        """Prior cases (``elmsearch similar --json``)."""
        recording_id = None if recording_id is None else check_id(recording_id)
        hits = self.index.similar(fname, recording_id, _check_k(k), include_same_patient, one_per_patient,
                                      filters)
        plain = not include_same_patient and one_per_patient and not (filters and filters.active)
        return self._document(label or _label(fname, recording_id), hits, "similar", nearest=plain)

    def reports(self, fname: str | os.PathLike | None = None, recording_id: int | None = None, k: int = 5,
                filters: Filters | None = None, label: str | None = None) -> dict:
        """EEG → report (``elmsearch reports --json``)."""
        recording_id = None if recording_id is None else check_id(recording_id)
        hits = self.index.search_reports(fname, recording_id, _check_k(k), filters)
        return self._document(label or _label(fname, recording_id), hits, "reports")

    def classify(self, prompts: list[str], fname: str | os.PathLike | None = None,
                 recording_id: int | None = None, label: str | None = None, windows: float | None = None) -> dict:
        """Zero-shot scores of each prompt, pooled and from the minutes (``classify --json``; ``Index.classify``)."""
        recording_id = None if recording_id is None else check_id(recording_id)
        prompts = [str(p) for p in prompts if str(p).strip()]
        if len(prompts) < 2:
            raise ValueError("prompts: give at least two (one per class)")
        return classify_document(label or _label(fname, recording_id), prompts,
                                 self.index.classify(prompts, fname, recording_id, windows))

    def _document(self, query: str, hits: list[Hit], kind: str, source: str | None = None,
                  nearest: bool = False) -> dict:
        """``hits_document`` with each hit's percentile among the archive's scores of ``kind``.

        ``nearest``: add ``"nearest"``, where the query's best hit stands among the archive's own
        nearest hits (``ScoreReference.nearest``; ``unlike_archive`` flags a query recording
        unlike every recording in the archive).
        """
        reference = self.index.reference
        for h in hits:
            h.percentile = reference.percentile(kind, h.score)
        doc = hits_document(query, hits, source)
        if nearest and hits:
            doc["nearest"] = reference.nearest(hits[0].score)
        return doc

    def show(self, recording_id: int, match: str | None = None, offset: int = 0,
             limit: int = REPORT_PAGE_CHARS) -> dict:
        """Everything stored about a recording (``elmsearch show --json``), its report paged.

        ``match``: a text query; adds ``"match"``, the report sentence nearest to it.
        ``offset``, ``limit``: the report characters returned (``page_report``): a report of
        any size gives a document of at most about ``limit`` characters of report text.
        """
        recording_id = check_id(recording_id)
        doc = self.index.show(recording_id)
        doc["report"] = page_report(doc["report"], offset, limit)
        if match and str(match).strip() and doc["report"] is not None and self.index.manifest.get("has_text"):
            doc["match"] = self.index.match_sentence(recording_id, match)
        return doc

    def events(self, recording_id: int) -> dict:
        """The events of a recording and its reading warnings (``GET /api/recordings/{id}/events``)."""
        return self.index.events(check_id(recording_id))

    def stats(self) -> dict:
        """Counts, failures, model and index files (``elmsearch stats --json``)."""
        return self.index.store.stats()

    # ---- uploads -------------------------------------------------------------------------
    @contextlib.contextmanager
    def uploaded(self, data: bytes, filename: str) -> Iterator[Path]:
        """A private temporary copy of uploaded bytes (0600, deleted afterwards; never indexed).

        Raises
        ------
        ValueError
            Empty, too large, or a suffix elmsearch does not read.
        """
        from elmsearch.archive.discovery import EEG_SUFFIXES

        suffix = Path(str(filename or "")).suffix.lower()
        if suffix not in {".edf", ".bdf"}:
            raise ValueError(f"upload: expected an .edf or .bdf file, got {filename!r}"
                             + (" (multi-file formats such as .vhdr/.set cannot be uploaded)"
                                if suffix in EEG_SUFFIXES else ""))
        if not data:
            raise ValueError("upload: the file is empty")
        if len(data) > self.max_upload_bytes:
            raise ValueError(f"upload: {len(data) / 2**20:.1f} MiB is over the "
                             f"{self.max_upload_bytes / 2**20:g} MiB limit")
        fd, tmp = tempfile.mkstemp(prefix="elmsearch-upload-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as f:  # mkstemp makes it 0600
                f.write(data)
            yield Path(tmp)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def upload(self, data: bytes, filename: str, k: int = 10, filters: Filters | None = None) -> dict:
        """Similar cases and reports for an uploaded EDF that is not (and will not be) in the index."""
        with self.uploaded(data, filename) as path:
            return self.upload_file(path, filename, k, filters)

    def upload_file(self, path: str | os.PathLike, filename: str, k: int = 10,
                    filters: Filters | None = None, keep: bool = False) -> dict:
        """``upload`` of an upload already written to a private file ``path`` (the HTTP server streams it).

        Errors name ``filename`` (the client's name), never ``path``. ``keep``: the service takes
        the file over (``self.uploads``) so that its EEG can be drawn and its answers read again
        under the returned ``"upload_id"`` (``upload_document``, ``upload_signal``); it is still
        never indexed, and deleted when it expires.
        """
        name = Path(str(filename)).name
        k = _check_k(k)
        try:
            query = self.index.resolve(fname=path)  # read, preprocessed and embedded once
        except (ElmsearchError, ValueError, OSError) as err:
            logger.info("upload %s (as %s) refused: %s", name, path, err)
            reason = str(getattr(err, "reason", None) or err).replace(str(path), name)
            raise UploadError(f"upload {name}: {reason}") from None
        query.path = name
        out = {"filename": name, "n_windows": None if query.window_emb is None else int(len(query.window_emb)),
               "similar": self._document(name, self.index.similar(k=k, filters=filters, query=query), "similar",
                                         nearest=not (filters and filters.active))}
        if self.index.manifest.get("has_text"):
            out["reports"] = self._document(name, self.index.search_reports(k=k, filters=filters, query=query),
                                            "reports")
        if keep:
            out["upload_id"] = self.uploads.keep(path, name, out)
        return out

    def upload_document(self, upload_id: str) -> dict:
        """The answers of a kept upload (``upload_file(keep=True)``), as they were given."""
        return self.uploads.get(upload_id).doc

    def upload_signal(self, upload_id: str, start_s: float = 0.0, end_s: float | None = None,
                      montage: str = "bipolar", lff: float | None = 1.0, hff: float | None = 70.0,
                      notch: float | None = None, rate: float | None = DISPLAY_RATE) -> tuple[dict, np.ndarray]:
        """``signal`` of a kept upload: its header has ``upload_id`` and ``filename``, status ``upload``."""
        kept = self.uploads.get(upload_id)
        header, data = _display(str(kept.path), start_s, end_s, montage, lff, hff, notch, rate, kept.filename)
        return {**header, "upload_id": upload_id, "filename": kept.filename, "status": "upload", "error": None}, data

    # ---- the signal, for the viewer --------------------------------------------------------
    def signal(self, recording_id: int, start_s: float = 0.0, end_s: float | None = None, montage: str = "bipolar",
               lff: float | None = 1.0, hff: float | None = 70.0, notch: float | None = None,
               rate: float | None = DISPLAY_RATE) -> tuple[dict, np.ndarray]:
        """A span of a recording's raw signal in a montage, filtered for display (``elmsearch.io.display``).

        Any recording the index knows, also one refused for indexing (its header says why:
        ``status`` and ``error``), as long as its file can be read.

        Returns
        -------
        header : dict
            ``DisplaySignal.header()`` plus ``recording_id``, ``status`` and ``error``.
        data : array of float32, shape (n_chans, n_times)
            Microvolts.
        """
        recording_id = check_id(recording_id)
        path, status, error = self.index.recording_file(recording_id)
        header, data = _display(path, start_s, end_s, montage, lff, hff, notch, rate, f"recording {recording_id}")
        return {**header, "recording_id": recording_id, "status": status, "error": error}, data

    # ---- pictures ------------------------------------------------------------------------
    def _span(self, recording_id: int, start_s: float | None, end_s: float | None) -> tuple[str, float, float]:
        recording_id = check_id(recording_id)
        doc = self.index.show(recording_id)
        if doc["status"] != "indexed":
            raise NotFoundError(f"recording {recording_id}: not in the index")
        start = 0.0 if start_s is None else float(start_s)
        end = start + 10.0 if end_s is None else float(end_s)
        return doc["path"], start, end

    def window_png(self, recording_id: int, start_s: float | None = None, end_s: float | None = None,
                   width_px: int = 1100, height_px: int = 520) -> bytes:
        """The 20-channel bipolar (TCP) waveform of seconds [start_s, end_s) as PNG."""
        path, start, end = self._span(recording_id, start_s, end_s)
        return _waveform(path, start, end, width_px, height_px, _mtime(path))

    def spectrogram_png(self, recording_id: int, start_s: float | None = None, end_s: float | None = None,
                        width_px: int = 1100, height_px: int = 360) -> bytes:
        """The spectrogram (median over channels) of seconds [start_s, end_s) as PNG."""
        path, start, end = self._span(recording_id, start_s, end_s)
        return _spectrogram(path, start, end, width_px, height_px, _mtime(path))


def _label(fname, recording_id) -> str:
    return str(fname) if fname is not None else f"recording {recording_id}"


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError as err:
        raise QueryError(f"{path}: the recording's file cannot be read ({err.strerror})") from None


_display_lock = threading.Lock()  # one reader of the cached MNE raws at a time


def _display(path: str, start_s: float, end_s: float | None, montage: str, lff: float | None, hff: float | None,
             notch: float | None, rate: float | None, name: str) -> tuple[dict, np.ndarray]:
    """``read_display`` of a file through the cache of open raws; errors are one ``QueryError`` line."""
    from elmsearch.errors import RecordingError
    from elmsearch.io.display import DisplayError, read_display

    end = start_s + 10.0 if end_s is None else end_s
    try:
        with _display_lock:
            got = read_display(path, float(start_s), float(end), montage, lff, hff, notch, rate,
                               raw=_open_display(path, _mtime(path)))
    except DisplayError as err:
        raise QueryError(str(err).replace(path, name)) from None
    except RecordingError as err:
        raise QueryError(f"{name}: {str(err).replace(path, name)}") from None
    return got.header(), got.data


@lru_cache(maxsize=8)
def _open_display(path: str, _mtime_ns: int):
    """The recording opened with MNE (not preloaded), kept for the next page of the same file."""
    from elmsearch.io.source import open_raw

    return open_raw(path)


@lru_cache(maxsize=64)
def _waveform(path: str, start: float, end: float, width: int, height: int, _mtime_ns: int) -> bytes:
    from elmsearch.viz.plots import read_span, waveform_png

    data, sfreq, names = read_span(path, start, end)
    return waveform_png(data, sfreq, names, max(start, 0.0), width_px=width, height_px=height)


@lru_cache(maxsize=64)
def _spectrogram(path: str, start: float, end: float, width: int, height: int, _mtime_ns: int) -> bytes:
    from elmsearch.viz.plots import read_span, spectrogram_png

    data, sfreq, _ = read_span(path, start, end)
    return spectrogram_png(data, sfreq, max(start, 0.0), width_px=width, height_px=height)

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
import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from elmsearch.errors import ElmsearchError, InputFileError
from indexer.search import Filters, Hit, Index, QueryError
from indexer.store import INDEX_NAMES

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # an upload larger than this is refused (a 24 h EDF is ~1 GB)
MAX_K = 1000


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


def parse_filters(sex: str | None = None, age_min: float | None = None, age_max: float | None = None,
                  after: dt.date | str | None = None, before: dt.date | str | None = None,
                  montage: str | None = None, min_duration: float | None = None) -> Filters:
    """``Filters`` from front-end values (dates as ``date``, ``datetime`` or ``YYYY-MM-DD``).

    Raises
    ------
    ValueError
        A value out of range (one line naming it).
    """
    def day(v, name):
        if v is None or v == "":
            return None
        if isinstance(v, dt.datetime):
            return v.date()
        if isinstance(v, dt.date):
            return v
        try:
            return dt.date.fromisoformat(str(v))
        except ValueError:
            raise ValueError(f"{name}: expected a date YYYY-MM-DD, got {v!r}") from None

    if sex not in (None, "") and str(sex).upper()[:1] not in {"F", "M"}:
        raise ValueError(f"sex: expected F or M, got {sex!r}")
    for name, v in (("age_min", age_min), ("age_max", age_max), ("min_duration", min_duration)):
        if v is not None and not (0 <= float(v) < 1e6):
            raise ValueError(f"{name}: expected a number >= 0, got {v!r}")
    return Filters(sex=str(sex).upper()[:1] if sex else None, age_min=age_min, age_max=age_max,
                   after=day(after, "after"), before=day(before, "before"), montage=montage or None,
                   min_duration=min_duration)


def hits_document(query: str, hits: list[Hit]) -> dict:
    """The document of a ranked query: ``{"query": ..., "hits": [Hit.to_dict(), ...]}``."""
    return {"query": query, "hits": [h.to_dict() for h in hits]}


def classify_document(recording: str, prompts: list[str], probabilities) -> dict:
    """The document of a zero-shot classification, prompts in the order given."""
    return {"recording": recording,
            "scores": [{"prompt": p, "probability": round(float(q), 6)}
                       for p, q in zip(prompts, probabilities, strict=True)]}


def classify_file(model, fname: str | os.PathLike, prompts: list[str], backend: str = "auto") -> dict:
    """Zero-shot classification of one file with a model (no index), as a document."""
    from elmsearch.embedding import embed_recording
    from elmsearch.zeroshot import zero_shot

    emb = embed_recording(model, fname, pooling="attention" if model.has_text else "mean", backend=backend)
    return classify_document(str(fname), prompts, zero_shot(model, emb.recording_emb, prompts))


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

    def __init__(self, index: Index, max_upload_bytes: int = MAX_UPLOAD_BYTES):
        self.index = index
        self.max_upload_bytes = int(max_upload_bytes)

    @classmethod
    def open(cls, folder: str | os.PathLike, db_url: str | None = None, backend: str = "auto",
             max_upload_bytes: int = MAX_UPLOAD_BYTES) -> SearchService:
        """Open an index folder (checked quickly, see ``Index.open``) for queries."""
        index = Index.open(folder, db_url)
        index.backend = backend
        return cls(index, max_upload_bytes)

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
        return self

    # ---- queries (documents) -------------------------------------------------------------
    def search(self, text: str, k: int = 10, level: str = "recording", filters: Filters | None = None) -> dict:
        """Text → EEG (``elmsearch search --json``)."""
        if not str(text).strip():
            raise ValueError("q: give a description to search for")
        return hits_document(text, self.index.search_text(text, _check_k(k), level, filters))

    def similar(self, fname: str | os.PathLike | None = None, recording_id: int | None = None, k: int = 10,
                include_same_patient: bool = False, one_per_patient: bool = True,
                filters: Filters | None = None, label: str | None = None) -> dict:
        """Prior cases (``elmsearch similar --json``)."""
        hits = self.index.similar(fname, recording_id, _check_k(k), include_same_patient, one_per_patient,
                                      filters)
        return hits_document(label or _label(fname, recording_id), hits)

    def reports(self, fname: str | os.PathLike | None = None, recording_id: int | None = None, k: int = 5,
                filters: Filters | None = None, label: str | None = None) -> dict:
        """EEG → report (``elmsearch reports --json``)."""
        hits = self.index.search_reports(fname, recording_id, _check_k(k), filters)
        return hits_document(label or _label(fname, recording_id), hits)

    def classify(self, prompts: list[str], fname: str | os.PathLike | None = None,
                 recording_id: int | None = None, label: str | None = None) -> dict:
        """Zero-shot probabilities of each prompt (``elmsearch classify --json``)."""
        prompts = [str(p) for p in prompts if str(p).strip()]
        if len(prompts) < 2:
            raise ValueError("prompts: give at least two (one per class)")
        probs = self.index.classify(prompts, fname, recording_id)
        return classify_document(label or _label(fname, recording_id), prompts, probs)

    def show(self, recording_id: int, match: str | None = None) -> dict:
        """Everything stored about a recording (``elmsearch show --json``).

        ``match``: a text query; adds ``"match"``, the report sentence nearest to it.
        """
        doc = self.index.show(recording_id)
        if match and str(match).strip() and doc["report"] is not None and self.index.manifest.get("has_text"):
            doc["match"] = self.index.match_sentence(recording_id, match)
        return doc

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
        from elmsearch.archive import EEG_SUFFIXES

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
        name = Path(str(filename)).name
        k = _check_k(k)
        with self.uploaded(data, filename) as path:
            query = self.index.resolve(fname=path)  # read, preprocessed and embedded once
        query.path = name
        out = {"filename": name, "n_windows": None if query.window_emb is None else int(len(query.window_emb)),
               "similar": hits_document(name, self.index.similar(k=k, filters=filters, query=query))}
        if self.index.manifest.get("has_text"):
            out["reports"] = hits_document(name, self.index.search_reports(k=k, filters=filters, query=query))
        return out

    # ---- pictures ------------------------------------------------------------------------
    def _span(self, recording_id: int, start_s: float | None, end_s: float | None) -> tuple[str, float, float]:
        doc = self.index.show(recording_id)
        if doc["status"] != "indexed":
            raise QueryError(f"recording {recording_id}: not in the index")
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


@lru_cache(maxsize=64)
def _waveform(path: str, start: float, end: float, width: int, height: int, _mtime_ns: int) -> bytes:
    from elmsearch.plots import read_span, waveform_png

    data, sfreq, names = read_span(path, start, end)
    return waveform_png(data, sfreq, names, max(start, 0.0), width_px=width, height_px=height)


@lru_cache(maxsize=64)
def _spectrogram(path: str, start: float, end: float, width: int, height: int, _mtime_ns: int) -> bytes:
    from elmsearch.plots import read_span, spectrogram_png

    data, sfreq, _ = read_span(path, start, end)
    return spectrogram_png(data, sfreq, max(start, 0.0), width_px=width, height_px=height)

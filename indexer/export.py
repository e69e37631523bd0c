"""Export an index's embeddings and metadata as Parquet files (pyarrow) for analysis."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select

from db import Patient, Recording, RecordingEvent, Report, Segment, Visit, Window
from indexer.events import events_ready
from indexer.private import output_dir, private_umask
from indexer.store import IndexStore

logger = logging.getLogger(__name__)


def _emb_column(blobs: list[bytes | None], dim: int = 256) -> pa.Array:
    """Embeddings as a fixed-size list<float32> column (nulls kept)."""
    mask = np.array([b is None for b in blobs])
    flat = np.zeros((len(blobs), dim), np.float32)
    for i, b in enumerate(blobs):
        if b is not None:
            flat[i] = np.frombuffer(b, np.float32)
    arr = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), pa.float32()), dim)
    if mask.any():
        arr = pa.FixedSizeListArray.from_arrays(arr.values, dim, mask=pa.array(mask))
    return arr


EVENT_SCHEMA = pa.schema([("event_id", pa.int64()), ("recording_id", pa.int64()), ("onset_s", pa.float64()),
                          ("duration_s", pa.float64()), ("label", pa.string()), ("meaning", pa.string()),
                          ("channels", pa.list_(pa.string())), ("source", pa.string())])


def _write(rows: list[dict], emb: list[bytes | None] | None, fname: Path, schema: pa.Schema | None = None) -> int:
    table = pa.Table.from_pylist(rows, schema=schema)
    if emb is not None:
        table = table.append_column("emb", _emb_column(emb))
    pq.write_table(table, fname.with_suffix(".parquet.tmp"), compression="zstd")
    os.replace(fname.with_suffix(".parquet.tmp"), fname)
    return table.num_rows


def export_parquet(store: IndexStore, out_dir: str | os.PathLike) -> dict[str, int]:
    """Write ``recordings``, ``windows``, ``reports``, ``segments``, ``events`` ``.parquet`` files into ``out_dir``.

    ``out_dir`` must be new, empty, or an earlier export (it holds ``recordings.parquet``):
    the files are patient data, created 0600 in a folder created 0700, and nothing else in
    the folder is touched.

    Raises
    ------
    FolderInUseError
        ``out_dir`` holds other files.

    Returns
    -------
    dict
        Rows written per file.
    """
    with private_umask():  # patient data: folder 0700, files 0600
        return _export(store, output_dir(out_dir, "recordings.parquet", "export"))


def _export(store: IndexStore, out: Path) -> dict[str, int]:
    written = {}
    with store.session() as s:
        q = (select(Recording, Patient.key, Visit.key).outerjoin(Patient, Recording.patient_id == Patient.id)
             .outerjoin(Visit, Recording.visit_id == Visit.id).order_by(Recording.id))
        rows, emb = [], []
        for r, patient, session in s.execute(q):
            rows.append({"recording_id": r.id, "path": r.path, "key": r.key, "patient": patient, "session": session,
                         "report_id": r.report_id, "layout": r.layout, "montage": r.montage, "size": r.size,
                         "content_hash": r.content_hash, "duration_s": r.duration, "native_sfreq": r.native_sfreq,
                         "age": r.age, "sex": r.sex, "date": r.date, "date_suspect": r.date_suspect,
                         "status": str(r.status), "error": r.error, "model_hash": r.model_hash,
                         "n_windows": r.n_windows})
            emb.append(r.emb)
        written["recordings"] = _write(rows, emb, out / "recordings.parquet")
        rows, emb = [], []
        for w in s.execute(select(Window.id, Window.recording_id, Window.ordinal, Window.start_s, Window.end_s,
                                  Window.emb).order_by(Window.id)):
            rows.append({"window_id": w.id, "recording_id": w.recording_id, "ordinal": w.ordinal,
                         "start_s": w.start_s, "end_s": w.end_s})
            emb.append(w.emb)
        written["windows"] = _write(rows, emb, out / "windows.parquet")
        rows, emb = [], []
        for r in s.scalars(select(Report).order_by(Report.id)):
            rows.append({"report_id": r.id, "source": r.source, "text": r.text, "impression": r.impression})
            emb.append(r.emb)
        written["reports"] = _write(rows, emb, out / "reports.parquet")
        rows, emb = [], []
        for g in s.scalars(select(Segment).order_by(Segment.id)):
            rows.append({"segment_id": g.id, "report_id": g.report_id, "ordinal": g.ordinal, "section": g.section,
                         "start": g.start, "end": g.end, "text": g.text, "finding": g.finding})
            emb.append(g.emb)
        written["segments"] = _write(rows, emb, out / "segments.parquet")
        rows = []
        if events_ready(s):
            for e in s.scalars(select(RecordingEvent).order_by(RecordingEvent.recording_id, RecordingEvent.onset,
                                                               RecordingEvent.id)):
                rows.append({"event_id": e.id, "recording_id": e.recording_id, "onset_s": e.onset,
                             "duration_s": e.duration, "label": e.label, "meaning": e.meaning,
                             "channels": [c for c in (e.channels or "").split(",") if c], "source": e.source})
        written["events"] = _write(rows, None, out / "events.parquet", EVENT_SCHEMA)
    logger.info("exported %s to %s", written, out)
    return written

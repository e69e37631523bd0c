"""SQLAlchemy 2.x ORM models of an elmsearch index.

Every FAISS id is the primary key of the row it embeds: ``recordings.id`` (EEG per
recording), ``windows.id`` (EEG per window), ``reports.id`` (report per recording) and
``segments.id`` (report sentences). Embeddings are stored with their rows (float32
bytes) so that the database alone is the source of truth: the FAISS files are derived
from it and can always be rebuilt.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

if TYPE_CHECKING:
    import numpy as np

# SQLite keys are 64-bit; BIGINT on PostgreSQL, INTEGER (rowid alias) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Timezone-aware now in UTC."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING)


class Status(enum.StrEnum):
    """State of a recording in the index."""

    INDEXED = "indexed"
    FAILED = "failed"


# numpy is imported where used: `elmsearch show` reads no embedding (tests/test_cold_imports.py)
def to_blob(vec: np.ndarray) -> bytes:
    """Store an embedding as float32 bytes."""
    import numpy as np

    return np.ascontiguousarray(vec, dtype=np.float32).tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    """Read an embedding stored with ``to_blob``."""
    import numpy as np

    return np.frombuffer(blob, dtype=np.float32)


class Patient(Base):
    """A subject of the archive (the TUH subject id, BIDS ``sub-``, or the file stem)."""

    __tablename__ = "patients"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    sex: Mapped[str | None] = mapped_column(String(1))
    sessions: Mapped[list[Visit]] = relationship(back_populates="patient")


class Visit(Base):
    """A visit (TUH's session ``sNNN``) of a patient, with the date from the folder name when known.

    Named apart from SQLAlchemy's ``Session``; the table keeps its name ``sessions``.
    """

    __tablename__ = "sessions"
    __table_args__ = (Index("uq_sessions_patient_key", "patient_id", "key", unique=True),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    date: Mapped[dt.date | None]
    patient: Mapped[Patient] = relationship(back_populates="sessions")


class Report(Base):
    """A report text; shared by the recordings of its session."""

    __tablename__ = "reports"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    source: Mapped[str] = mapped_column(String(1024), unique=True)
    text_hash: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    impression: Mapped[str | None] = mapped_column(Text)
    emb: Mapped[bytes | None] = mapped_column(LargeBinary)
    model_hash: Mapped[str | None] = mapped_column(String(32))
    segments: Mapped[list[Segment]] = relationship(back_populates="report", cascade="all, delete-orphan",
                                                   passive_deletes=True, order_by="Segment.ordinal")


class Segment(Base):
    """A sentence of a report, with its section and character offsets into ``Report.text``."""

    __tablename__ = "segments"
    __table_args__ = (Index("ix_segments_report_ordinal", "report_id", "ordinal"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(Integer)
    section: Mapped[str] = mapped_column(String(128))
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    finding: Mapped[bool] = mapped_column(Boolean, default=False)
    emb: Mapped[bytes | None] = mapped_column(LargeBinary)
    # assertion status of the sentence (elmsearch.text.assertion.STATUSES) and the JSON ranges of
    # its non-affirmed terms (NULL when the text is not stored); NULL in an index written before
    # the columns existed until the next writer fills them
    assertion: Mapped[str | None] = mapped_column(String(16))
    scopes: Mapped[str | None] = mapped_column(Text)
    report: Mapped[Report] = relationship(back_populates="segments")


class Recording(Base):
    """An EDF/BDF file, indexed or refused (with the reason)."""

    __tablename__ = "recordings"
    __table_args__ = (
        Index("ix_recordings_status", "status"),
        Index("ix_recordings_patient", "patient_id"),
        # a report's recordings: the rows behind the report and sentence indices are found through
        # it (without it, counting them scans every recording per sentence)
        Index("ix_recordings_report", "report_id"),
        # query filters: covering indexes (SQLite keeps the row id in each), so listing the
        # recordings that pass a filter reads an index, not the embedding-carrying rows
        Index("ix_recordings_status_date", "status", "date"),
        Index("ix_recordings_status_sex_age", "status", "sex", "age"),
        Index("ix_recordings_status_age", "status", "age"),
        Index("ix_recordings_status_duration", "status", "duration"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    path: Mapped[str] = mapped_column(String(2048), unique=True)
    key: Mapped[str] = mapped_column(String(512))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id", ondelete="SET NULL"))
    # the visit (``Visit``; the column keeps its name, ``session_id``)
    visit_id: Mapped[int | None] = mapped_column("session_id", ForeignKey("sessions.id", ondelete="SET NULL"))
    report_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id", ondelete="SET NULL"))
    layout: Mapped[str] = mapped_column(String(16))
    montage: Mapped[str] = mapped_column(String(64), default="")
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    duration: Mapped[float | None] = mapped_column(Float)
    native_sfreq: Mapped[float | None] = mapped_column(Float)
    age: Mapped[float | None] = mapped_column(Float)
    sex: Mapped[str | None] = mapped_column(String(1))
    date: Mapped[dt.datetime | None] = mapped_column(DateTime)
    date_suspect: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[Status] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    model_hash: Mapped[str | None] = mapped_column(String(32))
    n_windows: Mapped[int] = mapped_column(Integer, default=0)
    emb: Mapped[bytes | None] = mapped_column(LargeBinary)
    # spectral profile for prior-case search (models with a spectral view); deferred, so an
    # index written before the column existed can still be read
    profile: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    # band-power map (elmsearch.signal.bandpower.bandpower_profile, float32): what the index fits its
    # prior-case space on (indexer.similar_space); NULL in rows written before it existed
    bandpower: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    indexed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    patient: Mapped[Patient | None] = relationship()
    visit: Mapped[Visit | None] = relationship()
    report: Mapped[Report | None] = relationship()
    windows: Mapped[list[Window]] = relationship(back_populates="recording", cascade="all, delete-orphan",
                                                 passive_deletes=True, order_by="Window.ordinal")
    events: Mapped[list[RecordingEvent]] = relationship(back_populates="recording", cascade="all, delete-orphan",
                                                        passive_deletes=True,
                                                        order_by="RecordingEvent.onset")
    # what was read with a warning (an unreadable annotation signal or label file), one line each;
    # deferred, so an index written before the column existed can still be read
    warnings: Mapped[str | None] = mapped_column(Text, deferred=True)
    # the event files beside it when its events were read (elmsearch.io.events.sidecar_stamp);
    # NULL: events not read yet (an index written before events were stored)
    events_stamp: Mapped[str | None] = mapped_column(String(32), deferred=True)


class RecordingEvent(Base):
    """A time-stamped event of a recording (``elmsearch.io.events.Event``): an annotation or a label file's row."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_recording_onset", "recording_id", "onset"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id", ondelete="CASCADE"))
    onset: Mapped[float] = mapped_column(Float)  # seconds from the first sample
    duration: Mapped[float] = mapped_column(Float)
    label: Mapped[str] = mapped_column(String(512))
    meaning: Mapped[str | None] = mapped_column(String(256))  # the vocabulary's words for a coded label
    channels: Mapped[str] = mapped_column(Text, default="")  # comma-separated; empty: the whole recording
    source: Mapped[str] = mapped_column(String(16))
    recording: Mapped[Recording] = relationship(back_populates="events")


class Window(Base):
    """A window of a recording: ``[start_s, end_s)`` seconds from its start."""

    __tablename__ = "windows"
    __table_args__ = (Index("ix_windows_recording_ordinal", "recording_id", "ordinal"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(Integer)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    emb: Mapped[bytes] = mapped_column(LargeBinary)
    recording: Mapped[Recording] = relationship(back_populates="windows")


class IndexRun(Base):
    """One run of ``elmsearch index``: what it used, what it did, how long each stage took."""

    __tablename__ = "index_runs"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    archive: Mapped[str] = mapped_column(String(2048))
    model_hash: Mapped[str] = mapped_column(String(32))
    model_path: Mapped[str] = mapped_column(String(2048))
    preprocessing: Mapped[dict] = mapped_column(JSON)
    precision: Mapped[str] = mapped_column(String(8), default="fp32")
    versions: Mapped[dict] = mapped_column(JSON)
    started: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    n_added: Mapped[int] = mapped_column(Integer, default=0)
    n_updated: Mapped[int] = mapped_column(Integer, default=0)
    n_skipped: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    n_removed: Mapped[int] = mapped_column(Integer, default=0)
    timings: Mapped[dict | None] = mapped_column(JSON)

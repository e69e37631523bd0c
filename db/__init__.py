"""Metadata storage for elmsearch (SQLAlchemy 2.x): patients, sessions, recordings, reports.

Imports ``elmsearch`` never; ``indexer`` and ``cli`` import it.
"""

from db.engine import DB_FILE, is_read_only, make_engine, make_sessionmaker, sqlite_url
from db.models import (
    Base,
    IndexRun,
    Patient,
    Recording,
    RecordingEvent,
    Report,
    Segment,
    Status,
    Visit,
    Window,
    from_blob,
    to_blob,
)

__all__ = ["DB_FILE", "Base", "IndexRun", "Patient", "Recording", "RecordingEvent", "Report", "Segment", "Status",
           "Visit", "Window", "from_blob", "is_read_only", "make_engine", "make_sessionmaker", "sqlite_url", "to_blob"]

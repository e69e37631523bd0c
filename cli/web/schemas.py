"""Response documents of the HTTP API, for its OpenAPI description.

The routes return the service's documents unchanged (what ``elmsearch ... --json``
prints); these models name and type their keys.
"""

from __future__ import annotations

from pydantic import BaseModel

from indexer.search import Hit  # a dataclass: pydantic documents its fields as they are


class HitsDocument(BaseModel):
    """A ranked query: what it was and its hits."""

    query: str
    hits: list[Hit]


class Score(BaseModel):
    """One prompt's probability."""

    prompt: str
    probability: float


class ClassifyDocument(BaseModel):
    """Zero-shot probabilities in prompt order."""

    recording: str
    scores: list[Score]


class UploadDocument(BaseModel):
    """Answers for an uploaded recording (never indexed)."""

    filename: str
    n_windows: int | None
    similar: HitsDocument
    reports: HitsDocument | None = None


class Section(BaseModel):
    """A report section."""

    heading: str | None
    text: str


class ReportDoc(BaseModel):
    """A recording's report."""

    report_id: int
    source: str | None
    impression: str | None
    sections: list[Section]


class Match(BaseModel):
    """The report sentence nearest to a text query."""

    section: str | None
    text: str | None
    score: float


class WindowSpan(BaseModel):
    """One embedded window."""

    ordinal: int
    start_s: float
    end_s: float


class Recording(BaseModel):
    """Everything stored about a recording (``elmsearch show --json``)."""

    recording_id: int
    path: str
    key: str
    status: str
    error: str | None
    patient: str | None
    session: str | None
    session_date: str | None
    date: str | None
    date_suspect: bool | None
    age: float | None
    sex: str | None
    montage: str
    layout: str | None
    duration_s: float | None
    native_sfreq: float | None
    size: int | None
    content_hash: str | None
    n_windows: int | None
    report: ReportDoc | None
    windows: list[WindowSpan]
    match: Match | None = None


class Stats(BaseModel, extra="allow"):
    """Counts, failures, model and index files (``elmsearch stats --json``)."""

    recordings: int
    failed: int
    reports: int
    segments: int
    windows: int
    patients: int
    hours: float

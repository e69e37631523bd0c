"""Response documents of the HTTP API, for its OpenAPI description.

The routes return the service's documents unchanged (what ``elmsearch ... --json``
prints); these models name and type their keys.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from indexer.search import Hit  # a dataclass: pydantic documents its fields as they are


class Document(BaseModel):
    """A response document: every key it has is declared (tests validate the responses)."""

    model_config = ConfigDict(extra="forbid")


class Nearest(Document):
    """Where a query recording's best hit stands among the archive's own recordings' best hits."""

    score: float
    percentile: float = Field(description="Share (0-100) of the archive's nearest-hit scores at or below it.")
    unlike_archive: bool = Field(description=(
        "Below the archive's 5th percentile: less like its nearest recording than 95 % of the archive's "
        "recordings are like theirs."))
    reference: float = Field(description="The archive's nearest-hit score at its 5th percentile.")


class HitsDocument(Document):
    """A ranked query: what it was and its hits."""

    query: str
    hits: list[Hit]
    source: str | None = Field(None, description="Text search: what ranked the hits (hybrid, reports or eeg).")
    nearest: Nearest | None = Field(None, description=(
        "Prior cases of a recording: its best hit among the archive's own best hits (absent with filters)."))


class Score(Document):
    """One prompt's zero-shot scores."""

    prompt: str
    probability: float = Field(description="From the pooled recording (softmax over the prompts).")
    minutes: float = Field(description=(
        "From the windows: the finding's score at the document's window percentile; the first prompt, the "
        "background, must hold in every window."))
    window: tuple[float, float] = Field(description="[start_s, end_s] of the window behind 'minutes'.")


class ClassifyDocument(Document):
    """Zero-shot scores in prompt order, pooled and from the minutes."""

    recording: str
    windows: float = Field(description="The window percentile of each score's 'minutes' (100: the best window).")
    scores: list[Score]


class UploadDocument(Document):
    """Answers for an uploaded recording (never indexed)."""

    filename: str
    n_windows: int | None
    similar: HitsDocument
    reports: HitsDocument | None = None
    upload_id: str | None = Field(None, description=(
        "Sent with keep=true: names the kept upload (/api/uploads/{upload_id}, its /signal, /uploads/{upload_id})."))


class Section(Document):
    """A report section."""

    heading: str | None
    text: str
    start: int = Field(description="Offset of this text in the whole report (characters of section texts).")


class ReportDoc(Document):
    """A recording's report."""

    report_id: int
    source: str | None
    impression: str | None
    sections: list[Section]
    text_chars: int = Field(description="Characters of the whole report's section texts.")
    offset: int = Field(description="First character of this page.")
    limit: int = Field(description="Characters per page.")
    next: int | None = Field(description="Offset of the next page; null on the last.")


class Match(Document):
    """The report sentence nearest to a text query."""

    section: str | None
    text: str | None
    score: float


class WindowSpan(Document):
    """One embedded window."""

    ordinal: int
    start_s: float
    end_s: float


class EventDoc(BaseModel):
    """A time-stamped event of a recording: an annotation, a marker or a label file's row."""

    onset: float = Field(description="Seconds from the recording's first sample.")
    duration: float = Field(description="Seconds; 0 for a point event.")
    label: str
    meaning: str | None = Field(description="The vocabulary's words for a coded label (TUH: spsw, seiz...).")
    channels: list[str] = Field(description="Channels it was marked on; empty: the whole recording.")
    source: str = Field(description="edf+, brainvision, eeglab, bids, or a TUH label format (tuh-csv...).")


class EventsDocument(Document):
    """The events of one recording (``GET /api/recordings/{id}/events``)."""

    recording_id: int
    events: list[EventDoc]
    warnings: list[str]


class Recording(Document):
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
    events: list[EventDoc] = []
    warnings: list[str] = []
    match: Match | None = None


class Stats(Document):
    """Counts, failures, model and index files (``elmsearch stats --json``)."""

    model_config = ConfigDict(extra="allow")  # model, indices, writer...: documented in docs/user-guide.md

    recordings: int
    failed: int
    reports: int = Field(description="Distinct reports (the recordings of one visit share one).")
    with_report: int = Field(description="Indexed recordings that have a report (what `scan` counts).")
    segments: int
    windows: int
    patients: int
    hours: float

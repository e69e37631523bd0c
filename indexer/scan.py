"""Scan an archive: read and preprocess every recording, parse every report, keep going.

A bad file is reported with its reason and never stops the scan.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable

from elmsearch.archive.discovery import ArchiveEntry, Walk, discover, display_path, load_report_text
from elmsearch.errors import RecordingError, ReportError
from elmsearch.io.recording import make_windows
from elmsearch.io.windowed import read_recording
from elmsearch.signal.preprocessing import PreprocessingParams
from elmsearch.text.report import parse_report
from indexer.workers import DEFAULT_TIMEOUT_S, failure_reason, run_isolated

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ScanItem:
    r"""Outcome for one recording.

    Attributes
    ----------
    path : str
        ``archive.display_path`` of the file (bytes that are not UTF-8 shown as ``\\xNN``).
    key : tuple of str
        ``(subject, session, montage, token)``.
    ok : bool
        The recording was read and preprocessed.
    error : str | None
        Why it was refused (one line), when it was.
    duration, native_sfreq, age : float | None
    sex : str | None
    n_windows : int
        Windows of the requested length.
    report_sections : tuple of str
        Headings found in the report (empty without a report).
    report_error : str | None
        One line when the report exists but could not be read.
    seconds : float
        Time spent on this recording.
    """

    path: str
    key: tuple[str, str, str, str]
    ok: bool
    error: str | None = None
    duration: float | None = None
    native_sfreq: float | None = None
    age: float | None = None
    sex: str | None = None
    n_windows: int = 0
    report_sections: tuple[str, ...] = ()
    report_error: str | None = None
    seconds: float = 0.0


@dataclasses.dataclass
class ScanSummary:
    """All outcomes of a scan, in archive order."""

    items: list[ScanItem]
    seconds: float
    skipped: list[dict] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> list[ScanItem]:
        """Recordings that were read."""
        return [i for i in self.items if i.ok]

    @property
    def failed(self) -> list[ScanItem]:
        """Recordings that were refused, with their reasons."""
        return [i for i in self.items if not i.ok]

    @property
    def hours(self) -> float:
        """Hours of EEG read."""
        return sum(i.duration or 0.0 for i in self.ok) / 3600

    def to_dict(self) -> dict:
        """JSON-serialisable summary (stable keys)."""
        return {
            "recordings": len(self.ok),
            "failed": len(self.failed),
            "reports": sum(bool(i.report_sections) for i in self.items),
            "windows": sum(i.n_windows for i in self.ok),
            "hours": round(self.hours, 4),
            "seconds": round(self.seconds, 3),
            "failures": [{"path": i.path, "reason": i.error} for i in self.failed],
            "report_failures": [
                {"path": i.path, "reason": i.report_error} for i in self.items if i.report_error
            ],
            "skipped": list(self.skipped),
        }


def scan_one(entry: ArchiveEntry, params: PreprocessingParams, window_seconds: float) -> ScanItem:
    """Read, preprocess and window one recording and parse its report.

    Never raises for bad input: the reason is in the returned item.
    """
    t0 = time.perf_counter()
    sections: tuple[str, ...] = ()
    report_error = None
    try:
        text = load_report_text(entry)
        if text is not None:
            sections = tuple(s.heading for s in parse_report(text).sections if s.heading)
    except ReportError as err:
        report_error = err.reason
    except Exception as err:  # noqa: BLE001 -- a bad report never stops the scan
        report_error = failure_reason(err)
    try:
        rec = read_recording(entry.path, params, min_duration=window_seconds)
        n_windows = len(make_windows(rec, window_seconds))
    except Exception as err:  # noqa: BLE001 -- RecordingError, or anything a reader raises on this file
        reason = err.reason if isinstance(err, RecordingError) else failure_reason(err)
        return ScanItem(display_path(entry.path), entry.key, False, error=reason,
                        report_sections=sections, report_error=report_error,
                        seconds=time.perf_counter() - t0)
    m = rec.meta
    return ScanItem(display_path(entry.path), entry.key, True, None, m.duration, m.native_sfreq, m.age,
                    m.sex, n_windows, sections, report_error, time.perf_counter() - t0)


def scan_archive(
    root: str | os.PathLike,
    reports: str | os.PathLike | None = None,
    params: PreprocessingParams | None = None,
    window_seconds: float = 5.0,
    n_jobs: int = 1,
    on_item: Callable[[ScanItem], None] | None = None,
    entries: list[ArchiveEntry] | None = None,
    walk: Walk | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    follow_outside: bool | None = None,
    patients: str | os.PathLike | None = None,
) -> ScanSummary:
    """Scan every recording of an archive.

    Parameters
    ----------
    root : path-like
        Archive folder or a single file.
    reports : path-like | None
        JSON-lines side file of reports.
    params : PreprocessingParams | None
        Defaults to ELM's recipe.
    window_seconds : float
        Window length used to count windows (5 or 60).
    n_jobs : int
        Worker processes; each file is read in isolation (a crash or a run past ``timeout``
        fails that file alone). 0: in this process.
    on_item : callable | None
        Called with each ``ScanItem`` as it completes (progress bars, logging).
    entries : list of ArchiveEntry | None
        Already-discovered entries (skips discovery).
    walk : Walk | None
        What that discovery skipped (listed in the summary).
    timeout : float | None
        Seconds one file may take in a worker.
    follow_outside : bool | None
        Read links that lead out of ``root`` (``archive.discover``); None: the
        ``archive.discovery_options`` in force (default: refused with a reason).
    patients : path-like | None
        A ``path-or-glob,patient`` CSV (``archive.read_patient_map``).

    Returns
    -------
    ScanSummary
    """
    params = params or PreprocessingParams()
    t0 = time.perf_counter()
    if entries is None:
        walk = Walk()
        entries = discover(root, reports, walk, follow_outside=follow_outside, patients=patients)
    items: list[ScanItem] = []
    jobs = ((entry, (entry, params, window_seconds)) for entry in entries)
    for entry, item, error in run_isolated(scan_one, jobs, n_jobs, timeout):
        if item is None:
            item = ScanItem(display_path(entry.path), entry.key, False, error=error)
        if not item.ok:
            logger.warning("%s: %s", item.path, item.error)
        if item.report_error:
            logger.warning("report of %s: %s", item.path, item.report_error)
        items.append(item)
        if on_item:
            on_item(item)
    order = {display_path(e.path): i for i, e in enumerate(entries)}
    items.sort(key=lambda i: order.get(i.path, len(order)))  # archive order, whatever finished first
    return ScanSummary(items, time.perf_counter() - t0, walk.skipped if walk is not None else [])

"""Find the recordings of an archive and the report that goes with each.

Layouts recognised per file, so mixed trees work: TUH EEG v2
(``edf/NNN/SUBJECT/sNNN_YYYY[_MM_DD]/01_tcp_ar/SUBJECT_sNNN_tNNN.edf``), TUAB
(``edf/{train,eval}/{normal,abnormal}/...``), BIDS EEG
(``sub-XX/[ses-YY/]eeg/sub-XX_..._eeg.edf``) and any flat folder of EDF/BDF files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from elmsearch.errors import ReportError
from elmsearch.report import read_reports_jsonl
from elmsearch.tuh import PathInfo, parse_recording_path

logger = logging.getLogger(__name__)

EEG_SUFFIXES = (".edf", ".bdf")


@dataclasses.dataclass(frozen=True)
class ArchiveEntry:
    """One recording found in an archive.

    Attributes
    ----------
    path : Path
        The EDF/BDF file.
    info : PathInfo
        Key (subject, session, montage, token) and layout parsed from the path.
    report_path : Path | None
        A report ``.txt`` beside the session, when there is one.
    report_text : str | None
        The report from a ``--reports`` side file, when given (wins over the .txt).
    """

    path: Path
    info: PathInfo
    report_path: Path | None = None
    report_text: str | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        """``(subject, session, montage, token)``."""
        return self.info.key


def iter_eeg_files(root: str | os.PathLike) -> Iterator[Path]:
    """Yield EDF/BDF files under ``root`` in sorted order (a single file yields itself)."""
    root = Path(root)
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in sorted(filenames):
            if name.lower().endswith(EEG_SUFFIXES) and not name.startswith("."):
                yield Path(dirpath) / name


def _session_report(path: Path, info: PathInfo, root: Path) -> Path | None:
    """Find a report .txt for a recording.

    ``SUBJECT_sNNN.txt`` in the session folder, else one named like the recording,
    else the only .txt in the session or recording folder.
    """
    candidates: list[Path] = [path.with_suffix(".txt")]
    folders = [path.parent]
    if info.montage and path.parent.name == info.montage:
        folders.insert(0, path.parent.parent)
    for folder in folders:
        if info.session:
            candidates.append(folder / f"{info.subject}_{info.session}.txt")
    for cand in candidates:
        if cand.is_file():
            return cand
    if info.layout in {"tuh", "tuab"}:
        for folder in folders:
            if folder == root:
                continue
            txts = sorted(folder.glob("*.txt"))
            if len(txts) == 1:
                return txts[0]
    return None


def discover(root: str | os.PathLike, reports: str | os.PathLike | None = None) -> list[ArchiveEntry]:
    """List the recordings of an archive with their reports.

    Parameters
    ----------
    root : path-like
        Archive folder (or a single EDF/BDF file).
    reports : path-like | None
        A JSON-lines side file, one ``{"subject", "session", "report"}`` per line,
        for releases that ship EDFs without reports.

    Returns
    -------
    list of ArchiveEntry
        Sorted by path.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    side: dict[tuple[str, str], str] = {}
    if reports is not None:
        side = read_reports_jsonl(reports)
    base = root if root.is_dir() else root.parent
    entries = []
    for path in iter_eeg_files(root):
        # a single file keeps the folders above it: they carry its session and montage
        parts = path.relative_to(base).parts if root.is_dir() else path.resolve().parts[1:]
        info = parse_recording_path(parts)
        text = side.get((info.subject, info.session))
        if text is None and info.session == "":
            text = side.get((info.subject, ""))
        report_path = None if text is not None else _session_report(path, info, base)
        entries.append(ArchiveEntry(path, info, report_path, text))
    logger.info("%s: %d recordings, %d with a report", root, len(entries),
                sum(e.report_path is not None or e.report_text is not None for e in entries))
    return entries


def load_report_text(entry: ArchiveEntry) -> str | None:
    """The entry's report text, or None when it has none.

    Raises
    ------
    ReportError
        The report file exists but cannot be read or decoded.
    """
    if entry.report_text is not None:
        return entry.report_text
    if entry.report_path is None:
        return None
    from elmsearch.report import decode_report_bytes

    try:
        data = entry.report_path.read_bytes()
    except OSError as err:
        raise ReportError(entry.report_path, f"cannot read ({err.strerror or err})") from None
    return decode_report_bytes(data, entry.report_path)

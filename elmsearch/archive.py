"""Find the recordings of an archive and the report that goes with each.

Layouts recognised per file, so mixed trees work: TUH EEG v2
(``edf/NNN/SUBJECT/sNNN_YYYY[_MM_DD]/01_tcp_ar/SUBJECT_sNNN_tNNN.edf``), TUAB
(``edf/{train,eval}/{normal,abnormal}/...``), BIDS EEG
(``sub-XX/[ses-YY/]eeg/sub-XX_..._eeg.edf``) and any flat folder of EDF/BDF files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from elmsearch.errors import ReportError
from elmsearch.report import read_reports_jsonl
from elmsearch.tuh import PathInfo, parse_recording_path

logger = logging.getLogger(__name__)

# Recordings: EDF/BDF, and the header files of the other formats BIDS EEG allows.
EEG_SUFFIXES = (".edf", ".bdf", ".vhdr", ".set")
# Files that belong to a recording whose header is listed above (never reported as skipped).
COMPANIONS = {".eeg": (".vhdr",), ".vmrk": (".vhdr",), ".fdt": (".set",)}
# EEG formats elmsearch does not read: listed as skipped with that reason, never ignored silently.
OTHER_EEG_SUFFIXES = (".fif", ".gdf", ".cnt", ".e", ".trc", ".nwb", ".mff", ".xdf", ".edf+", ".rec", ".eeg",
                      ".vmrk", ".fdt", ".sig", ".erd", ".nedf", ".mef", ".lay", ".dat")
# Side files of an archive: reports, BIDS sidecars, checksums. Not EEG, not worth a line.
SIDE_SUFFIXES = (".txt", ".json", ".tsv", ".csv", ".md", ".jsonl", ".sha256", ".md5", ".xml", ".html", ".pdf",
                 ".png", ".jpg", ".svg", ".bidsignore", ".yaml", ".yml", ".rst", ".py", ".log")


def archive_path(path: str | os.PathLike) -> str:
    """The identity of a recording: its absolute path in the archive, symlinks not resolved.

    DataLad / git-annex datasets are all symlinks into an object store; resolving them would
    name a content hash instead of the recording, and two archive paths to one file would
    collide.
    """
    return os.path.abspath(os.fspath(path))


HASH_CHUNK = 1 << 20


def file_hash(fname: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex): a recording's content identity."""
    h = hashlib.sha256()
    with open(fname, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclasses.dataclass
class Walk:
    """What walking an archive found besides its recordings.

    Attributes
    ----------
    skipped : list of dict
        ``{"path", "reason"}`` for every file that is not a recording elmsearch reads (other
        EEG formats, stray companion files, unknown files) and every folder it could not
        enter (unreadable, a symlink loop). Report texts and BIDS sidecars are not listed.
    """

    skipped: list[dict] = dataclasses.field(default_factory=list)

    def skip(self, path: str | os.PathLike, reason: str) -> None:
        """Record one skipped path."""
        self.skipped.append({"path": os.fspath(path), "reason": reason})
        logger.info("skipped %s: %s", path, reason)


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


def _file_verdict(dirpath: str, name: str, names: set[str]) -> str | None:
    """None for a recording to read, "" for a file to pass over quietly, else why it is skipped."""
    lower = name.lower()
    suffix = os.path.splitext(lower)[1]
    if lower.endswith(EEG_SUFFIXES):
        return None
    if suffix in COMPANIONS:
        stem = os.path.splitext(name)[0]
        if any(stem + s in names or stem + s.upper() in names for s in COMPANIONS[suffix]):
            return ""
        # BrainVision .eeg/.vmrk and EEGLAB .fdt are read through their header file
        return f"{suffix} file without its {' or '.join(COMPANIONS[suffix])} header"
    if suffix in OTHER_EEG_SUFFIXES:
        return f"EEG format {suffix} is not read by elmsearch (it reads EDF, BDF, BrainVision .vhdr, EEGLAB .set)"
    if suffix in SIDE_SUFFIXES or lower in {"readme", "changes", "license", "records", "sha256sums", ".ds_store"}:
        return ""
    return f"not an EEG recording (unknown file type{' ' + suffix if suffix else ''})"


def iter_eeg_files(root: str | os.PathLike, walk: Walk | None = None) -> Iterator[Path]:
    """Yield the recordings under ``root`` in sorted order (a single file yields itself).

    Symlinked files and folders are followed (DataLad datasets are symlinks); a folder
    reached twice through links is entered once, so symlink loops end. Hidden folders
    (``.git``, ``.datalad``) are not entered. Folders that cannot be read and files that
    are not recordings are recorded in ``walk``.
    """
    root = Path(root)
    walk = walk if walk is not None else Walk()
    if not root.is_dir():
        yield root
        return
    seen: set[tuple[int, int]] = set()

    def onerror(err: OSError) -> None:
        walk.skip(err.filename, f"cannot read folder ({err.strerror or err})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError as err:
            walk.skip(dirpath, f"cannot read folder ({err.strerror or err})")
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            walk.skip(dirpath, "folder already walked (symlink loop or second link to it)")
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for d in [d for d in dirnames if d.startswith(".")]:
            if d not in {".git", ".datalad", ".svn", ".hg"}:
                walk.skip(os.path.join(dirpath, d), "hidden folder not entered")
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        names = set(filenames)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            verdict = _file_verdict(dirpath, name, names)
            if verdict is None:
                yield Path(dirpath) / name
            elif verdict:
                walk.skip(os.path.join(dirpath, name), verdict)


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


def discover(root: str | os.PathLike, reports: str | os.PathLike | None = None,
             walk: Walk | None = None) -> list[ArchiveEntry]:
    """List the recordings of an archive with their reports.

    Parameters
    ----------
    root : path-like
        Archive folder (or a single EDF/BDF file).
    reports : path-like | None
        A JSON-lines side file, one ``{"subject", "session", "report"}`` per line,
        for releases that ship EDFs without reports.
    walk : Walk | None
        Collects what was skipped and why (folders that cannot be read, files that are
        not recordings).

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
    for path in iter_eeg_files(root, walk):
        # a single file keeps the folders above it: they carry its session and montage
        parts = path.relative_to(base).parts if root.is_dir() else Path(archive_path(path)).parts[1:]
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

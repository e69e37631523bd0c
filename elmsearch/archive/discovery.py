"""Find the recordings of an archive and the report that goes with each.

Layouts recognised per file, so mixed trees work: TUH EEG v2
(``edf/NNN/SUBJECT/sNNN_YYYY[_MM_DD]/01_tcp_ar/SUBJECT_sNNN_tNNN.edf``), TUAB
(``edf/{train,eval}/{normal,abnormal}/...``), BIDS EEG
(``sub-XX/[ses-YY/]eeg/sub-XX_..._eeg.edf``) and any flat folder of EDF/BDF files.
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import dataclasses
import fnmatch
import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from elmsearch.archive.tuh import PathInfo, name_patient, parse_recording_path, real_patient_code
from elmsearch.errors import InputFileError, ReportError
from elmsearch.text.report import read_reports_jsonl

logger = logging.getLogger(__name__)

# Recordings: EDF/BDF, and the header files of the other formats BIDS EEG allows.
EEG_SUFFIXES = (".edf", ".bdf", ".vhdr", ".set")
# Files that belong to a recording whose header is listed above (never reported as skipped).
COMPANIONS = {".eeg": (".vhdr",), ".vmrk": (".vhdr",), ".fdt": (".set",)}
# EEG formats elmsearch does not read: listed as skipped with that reason, never ignored silently.
OTHER_EEG_SUFFIXES = (".fif", ".gdf", ".cnt", ".e", ".trc", ".nwb", ".mff", ".xdf", ".edf+", ".rec", ".eeg",
                      ".vmrk", ".fdt", ".sig", ".erd", ".nedf", ".mef", ".lay", ".dat")
# A report file larger than this is refused (the recording is indexed without it).
MAX_REPORT_BYTES = 1 << 20
_SPECIAL_FILES = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
# Side files of an archive: reports, BIDS sidecars, checksums. Not EEG, not worth a line.
SIDE_SUFFIXES = (".txt", ".json", ".tsv", ".csv", ".md", ".jsonl", ".sha256", ".md5", ".xml", ".html", ".pdf",
                 ".png", ".jpg", ".svg", ".bidsignore", ".yaml", ".yml", ".rst", ".py", ".log")


# Bytes of a file name that are not UTF-8 are stored as these private-use characters
# (byte 0xNN -> U+F7NN, NN >= 0x80): text any database holds, and reversible.
_PUA_LO, _PUA_HI = "\uf780", "\uf7ff"
_SURR_LO, _SURR_HI = "\udc80", "\udcff"  # how Python's surrogateescape holds those bytes


def path_to_text(path: str | bytes | os.PathLike) -> str:
    """A path as text any database can store, losslessly (``text_to_path`` reverses it).

    A name that is valid UTF-8 is returned unchanged (so indices built before stay valid).
    Each byte that is not part of valid UTF-8 (Python holds it as a lone surrogate, which no
    UTF-8 encoder accepts) becomes the private-use character U+F7NN for byte 0xNN; a name that
    already holds such a character has that character's UTF-8 bytes escaped the same way, so
    the mapping stays one to one.

    Parameters
    ----------
    path : str | bytes | path-like

    Returns
    -------
    str
        Encodable as UTF-8.
    """
    text = os.fsdecode(os.fspath(path))
    if not any(_SURR_LO <= c <= _SURR_HI or _PUA_LO <= c <= _PUA_HI for c in text):
        return text
    out = []
    for c in text:
        if _SURR_LO <= c <= _SURR_HI:
            out.append(chr(0xF700 + ord(c) - 0xDC00))
        elif _PUA_LO <= c <= _PUA_HI:
            out.extend(chr(0xF700 + b) for b in c.encode("utf-8"))
        else:
            out.append(c)
    return "".join(out)


def text_to_path(text: str) -> Path:
    """The path that ``path_to_text`` stored as ``text``."""
    if not any(_PUA_LO <= c <= _PUA_HI for c in text):
        return Path(text)
    raw = bytearray()
    for c in text:
        raw += bytes([ord(c) - 0xF700]) if _PUA_LO <= c <= _PUA_HI else c.encode("utf-8")
    return Path(os.fsdecode(bytes(raw)))


def display_path(path: str | bytes | os.PathLike) -> str:
    r"""A path for people (logs, tables, JSON): bytes that are not UTF-8 shown as ``\xNN``.

    Accepts a path or the text ``path_to_text`` made of one.
    """
    if isinstance(path, str) and any(_PUA_LO <= c <= _PUA_HI for c in path):
        path = text_to_path(path)
    return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")


def archive_path(path: str | os.PathLike) -> str:
    """The identity of a recording: its absolute path in the archive, symlinks not resolved.

    DataLad / git-annex datasets are all symlinks into an object store; resolving them would
    name a content hash instead of the recording, and two archive paths to one file would
    collide. Returned as ``path_to_text`` of the path, so a name in any bytes can be stored.
    """
    return path_to_text(os.path.abspath(os.fspath(path)))


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
        """Record one skipped path (shown with ``display_path``: any bytes of its name printable)."""
        shown = display_path(path)
        self.skipped.append({"path": shown, "reason": reason})
        logger.info("skipped %s: %s", shown, reason)


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
    report_refused : str | None
        Why ``report_path`` is not read (a link out of the archive); ``load_report_text``
        raises it as a ``ReportError``.
    patient : str | None
        The patient a ``--patients`` mapping gives this recording.
    participant : dict | None
        The BIDS ``participants.tsv`` row of its subject (``sex``, ``age``), when there is one.
    """

    path: Path
    info: PathInfo
    report_path: Path | None = None
    report_text: str | None = None
    report_refused: str | None = None
    patient: str | None = None
    participant: dict | None = None

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


def not_read_reason(fname: str | os.PathLike) -> str | None:
    """Why a file, by its name, is not a recording elmsearch reads (the reason ``scan`` lists), or None.

    None for the recording suffixes and for side files (reports, sidecars), which are not
    refused, only passed over. ``edf.read_edf_header`` gives this reason for a file given on
    its own (``inspect``, ``reports``, ``similar``) that is not EDF/BDF.
    """
    name = os.path.basename(os.fspath(fname))
    return _file_verdict("", name, set()) or None


def find_nothing_message(root: str | os.PathLike, follow_outside: bool | None = None) -> str | None:
    """``"ROOT: no recordings found (looked for .edf, ...)"`` when ``root`` holds no recording, else None.

    Stops at the first recording, so a large archive costs one step of its walk.
    """
    follow = _OPTIONS.get().follow_outside if follow_outside is None else follow_outside
    if next(iter_eeg_files(root, Walk(), follow), None) is not None:
        return None
    return f"{display_path(root)}: no recordings found (looked for {', '.join(EEG_SUFFIXES)})"


def is_inside(path: str | os.PathLike, root_real: str) -> bool:
    """Whether ``path``, every link resolved, lies in the folder ``root_real`` (itself resolved)."""
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


OUTSIDE = "a link to {what} outside the archive ({target}); give --follow-outside to read it"


def special_file_reason(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a regular file to read (a FIFO, socket, device, folder), or None.

    Uses ``stat`` only (links followed), so nothing is opened: opening a FIFO blocks until a
    writer comes. A path that cannot be looked at gives None (its reader says why).
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    for test, what in _SPECIAL_FILES:
        if test(st.st_mode):
            return f"{what}, not a recording file"
    if stat.S_ISDIR(st.st_mode):
        return "a folder, not a recording file"
    return None


def iter_eeg_files(root: str | os.PathLike, walk: Walk | None = None, follow_outside: bool = False
                   ) -> Iterator[Path]:
    """Yield the recordings under ``root`` in sorted order (a single file yields itself).

    Symlinked files and folders are followed (DataLad datasets are symlinks); a folder
    reached twice through links is entered once, so symlink loops end. Hidden folders
    (``.git``, ``.datalad``) are not entered. Folders that cannot be read, files that
    are not recordings, named pipes, sockets and devices (looked at with ``stat``, never
    opened), folders named like a recording (``x.edf/``, whose contents are still walked)
    and, unless ``follow_outside``, links that lead out of ``root`` are recorded in ``walk``.
    """
    root = Path(root)
    walk = walk if walk is not None else Walk()
    if not root.is_dir():
        why = special_file_reason(root)
        if why:
            walk.skip(root, why)
            return
        yield root
        return
    root_real = os.path.realpath(root)
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
        if not follow_outside:
            for d in list(dirnames):
                sub = os.path.join(dirpath, d)
                if not is_inside(sub, root_real):
                    walk.skip(sub, OUTSIDE.format(what="a folder", target=display_path(os.path.realpath(sub))))
                    dirnames.remove(d)
        for d in dirnames:
            if d.lower().endswith(EEG_SUFFIXES):
                walk.skip(os.path.join(dirpath, d), "a folder named like a recording, not read as one "
                                                    "(the files in it are)")
        names = set(filenames)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            verdict = _file_verdict(dirpath, name, names)
            path = os.path.join(dirpath, name)
            if verdict is None:
                verdict = special_file_reason(path)
                if verdict is None and not follow_outside and not is_inside(path, root_real) \
                        and os.path.exists(path):
                    verdict = OUTSIDE.format(what="a recording", target=display_path(os.path.realpath(path)))
                if verdict is None:
                    verdict = _companion_outside(path, root_real) if not follow_outside else None
            if verdict is None:
                yield Path(path)
            elif verdict:
                walk.skip(path, verdict)


def _companion_outside(path: str, root_real: str) -> str | None:
    """For a BrainVision header: why its data or marker file (a link out of the archive) is refused."""
    if not path.lower().endswith(".vhdr"):
        return None
    from elmsearch.io.header import vhdr_companions

    try:
        files = vhdr_companions(path)
    except (OSError, InputFileError):
        return None  # the reader says what is wrong with it
    for key, name in files.items():
        other = os.path.join(os.path.dirname(path), name)
        if os.path.exists(other) and not is_inside(other, root_real):
            return OUTSIDE.format(what=f"its {key} {name!r}", target=display_path(os.path.realpath(other)))
    return None


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


@dataclasses.dataclass(frozen=True)
class DiscoverOptions:
    """How ``discover`` treats an archive when its caller does not say (``discovery_options``).

    Attributes
    ----------
    follow_outside : bool
        Read links (recordings, folders, reports, BrainVision data files) that lead out of
        the archive root.
    patient_map : tuple of (str, str) | None
        A ``--patients`` CSV mapping, as ``read_patient_map`` read it.
    """

    follow_outside: bool = False
    patient_map: tuple[tuple[str, str], ...] | None = None


_DEFAULT_OPTIONS = DiscoverOptions()  # frozen: one shared default is safe
_OPTIONS: contextvars.ContextVar[DiscoverOptions] = contextvars.ContextVar("discover_options",
                                                                          default=_DEFAULT_OPTIONS)


@contextlib.contextmanager
def discovery_options(follow_outside: bool = False, patients: str | os.PathLike | None = None):
    """Within the block, ``discover`` (however deep in a call) uses these defaults.

    For callers whose library function does not forward the options itself, e.g.::

        with discovery_options(follow_outside=True):
            index_archive(root, db, model)

    The ``patients`` mapping is read here, once, so that a bad file is refused before
    anything else happens.

    Raises
    ------
    PatientMapError
        The patients mapping cannot be read.
    """
    mapping = tuple(read_patient_map(patients)) if patients is not None else None
    token = _OPTIONS.set(DiscoverOptions(follow_outside, mapping))
    try:
        yield
    finally:
        _OPTIONS.reset(token)


class PatientMapError(InputFileError):
    """A ``--patients`` CSV file that cannot be read."""


def read_patient_map(fname: str | os.PathLike) -> list[tuple[str, str]]:
    """Read a ``--patients`` CSV: one ``path-or-glob,patient`` per line (a header line is optional).

    Paths and globs are relative to the archive root (``sub/*.edf``, ``S001R*.edf``), or
    absolute; a folder matches every file under it. The first matching line wins.

    Raises
    ------
    PatientMapError
        The file cannot be read, or a line does not have two non-empty columns.
    """
    try:
        with open(fname, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as err:
        raise PatientMapError(fname, f"cannot read the patients mapping ({getattr(err, 'strerror', None) or err})"
                              ) from None
    out = []
    for i, row in enumerate(rows, 1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if i == 1 and [c.lower() for c in cells[:2]] in (["path", "patient"], ["glob", "patient"],
                                                         ["path-or-glob", "patient"]):
            continue
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise PatientMapError(fname, f"line {i}: expected 'path-or-glob,patient', got {','.join(row)!r}")
        out.append((cells[0], cells[1]))
    return out


def mapped_patient(mapping: list[tuple[str, str]], rel: str, absolute: str) -> str | None:
    """The patient of the first line of ``mapping`` that matches a file (posix ``rel`` path or ``absolute``)."""
    for pattern, patient in mapping:
        pat = pattern.replace(os.sep, "/").rstrip("/")
        target = absolute if os.path.isabs(pattern) else rel
        if fnmatch.fnmatchcase(target, pat) or target.startswith(pat + "/"):
            return patient
    return None


def read_participants(fname: str | os.PathLike) -> dict[str, dict]:
    """A BIDS ``participants.tsv``: subject label (without ``sub-``) -> ``{"sex", "age"}``.

    Unreadable files and values give nothing (logged); this never raises.
    """
    try:
        with open(fname, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        logger.warning("%s: cannot read (%s)", display_path(fname), err)
        return {}
    out = {}
    for row in rows:
        pid = (row.get("participant_id") or "").strip()
        if not pid:
            continue
        sex = (row.get("sex") or row.get("gender") or "").strip().upper()[:1]
        try:
            age = float(row.get("age") or "")
        except ValueError:
            age = None
        out[pid.removeprefix("sub-")] = {"sex": sex if sex in {"M", "F"} else None, "age": age}
    return out


def patient_of(entry: ArchiveEntry, edf_code: str | None = None) -> str:
    """Who a recording belongs to (``Patient.key``), from what is known about it, in order.

    1. a ``--patients`` mapping (``entry.patient``);
    2. the archive layout: BIDS ``sub-XX``, TUH / TUAB subject folders and names;
    3. a structured EDF+ patient code (``real_patient_code``: not ``X``, not a placeholder);
    4. a PhysioNet-style name (``S001R03`` -> ``S001``, ``chb01_03`` -> ``chb01``,
       ``Subject00_1`` -> ``Subject00``; ``tuh.name_patient``);
    5. the file's stem.

    Parameters
    ----------
    entry : ArchiveEntry
    edf_code : str | None
        The code of the file's EDF patient field (``RecordingMeta.subject``), when read.
    """
    if entry.patient:
        return entry.patient
    if entry.info.layout != "flat" and entry.info.subject:
        return entry.info.subject
    stem = entry.path.name.rsplit(".", 1)[0] if "." in entry.path.name else entry.path.name
    return real_patient_code(edf_code) or name_patient(stem) or entry.info.subject or stem


def discover(root: str | os.PathLike, reports: str | os.PathLike | None = None,
             walk: Walk | None = None, follow_outside: bool | None = None,
             patients: str | os.PathLike | None = None) -> list[ArchiveEntry]:
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
        not recordings, links out of the archive).
    follow_outside : bool | None
        Read links that lead out of ``root`` (recordings, folders, reports). None: the
        ``discovery_options`` in force (default False).
    patients : path-like | None
        A CSV mapping ``path-or-glob,patient`` (``read_patient_map``); None: the
        ``discovery_options`` in force (default none).

    Returns
    -------
    list of ArchiveEntry
        Sorted by path.

    Raises
    ------
    PatientMapError
        The patients mapping cannot be read.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{display_path(root)}: no such file or folder")
    opts = _OPTIONS.get()
    follow_outside = opts.follow_outside if follow_outside is None else follow_outside
    mapping = read_patient_map(patients) if patients is not None else (opts.patient_map or ())
    side: dict[tuple[str, str], str] = {}
    if reports is not None:
        side = read_reports_jsonl(reports)
    base = root if root.is_dir() else root.parent
    base_real = os.path.realpath(base)
    participants_tsv = base / "participants.tsv"
    participants = read_participants(participants_tsv) if participants_tsv.is_file() else {}
    entries = []
    for path in iter_eeg_files(root, walk, follow_outside):
        # a single file keeps the folders above it: they carry its session and montage
        parts = path.relative_to(base).parts if root.is_dir() else Path(os.path.abspath(path)).parts[1:]
        info = parse_recording_path(parts)
        text = side.get((info.subject, info.session))
        if text is None and info.session == "":
            text = side.get((info.subject, ""))
        report_path = None if text is not None else _session_report(path, info, base)
        refused = None
        if report_path is not None and not follow_outside and not is_inside(report_path, base_real):
            refused = OUTSIDE.format(what="a report", target=display_path(os.path.realpath(report_path)))
        rel = path.relative_to(base).as_posix() if path.is_relative_to(base) else path.name
        patient = mapped_patient(mapping, rel, os.path.abspath(path)) if mapping else None
        participant = participants.get(info.subject) if info.layout == "bids" else None
        entries.append(ArchiveEntry(path, info, report_path, text, refused, patient, participant))
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
    if entry.report_refused:
        raise ReportError(display_path(entry.report_path), entry.report_refused)
    from elmsearch.text.report import decode_report_bytes

    shown = display_path(entry.report_path)
    try:
        st = os.stat(entry.report_path)  # looked at before it is opened: a FIFO would block the open
        if not stat.S_ISREG(st.st_mode):
            raise ReportError(shown, special_file_reason(entry.report_path) or "not a regular file")
        if st.st_size > MAX_REPORT_BYTES:
            raise ReportError(shown, f"report file is {st.st_size / 2**20:.1f} MB, over the "
                                     f"{MAX_REPORT_BYTES / 2**20:g} MB limit")
        with open(entry.report_path, "rb") as f:
            data = f.read(MAX_REPORT_BYTES + 1)  # a file growing while read stays bounded too
    except OSError as err:
        raise ReportError(shown, f"cannot read ({err.strerror or err})") from None
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError(shown, f"report file is over the {MAX_REPORT_BYTES / 2**20:g} MB limit")
    return decode_report_bytes(data, entry.report_path)

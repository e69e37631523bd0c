"""Recording headers: EDF/BDF validated byte by byte, BrainVision and EEGLAB through MNE.

BrainVision (``.vhdr``) and EEGLAB (``.set``) files, which BIDS EEG also allows, are read
through MNE alone (``open_mne_format``).

The samples are read by a ``source.SignalSource``; this module only checks the fixed-size
header first so that damaged files fail with a reason a person can act on (truncated,
header that lies about its length, not an EDF at all) instead of an exception from deep
inside a reader.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

from elmsearch.errors import CorruptFileError, UnsupportedFileError

logger = logging.getLogger(__name__)

_EDF_MAGIC = b"0       "
_BDF_MAGIC = b"\xffBIOSEMI"


@dataclasses.dataclass(frozen=True)
class EdfHeader:
    """The fixed part of an EDF/BDF header, decoded (latin-1, so decoding never fails).

    Attributes
    ----------
    fname : str
        The file the header was read from.
    kind : str
        ``"EDF"`` or ``"BDF"``.
    patient, recording : str
        The 80-character local patient and recording identification fields.
    startdate, starttime : str
        ``dd.mm.yy`` and ``hh.mm.ss``.
    n_records : int
        Number of data records (computed from the file size when the header says -1).
    record_duration : float
        Seconds per data record.
    labels : tuple of str
    samples_per_record : tuple of int
    physical_min, physical_max, digital_min, digital_max : tuple of float
        Per signal; NaN where the header field is not a number.
    extra_records : int
        Whole data records the file holds past the ``n_records`` its header declares; they
        are not read (every reader stops at the header's records).
    reserved : str
        The 44-character reserved field: ``EDF+C`` / ``EDF+D`` (``BDF+C`` / ``BDF+D``) in an
        EDF+ (BDF+) file, continuous or with gaps between its data records.
    """

    fname: str
    kind: str
    patient: str
    recording: str
    startdate: str
    starttime: str
    n_records: int
    record_duration: float
    labels: tuple[str, ...]
    samples_per_record: tuple[int, ...]
    physical_min: tuple[float, ...] = ()
    physical_max: tuple[float, ...] = ()
    digital_min: tuple[float, ...] = ()
    digital_max: tuple[float, ...] = ()
    extra_records: int = 0
    reserved: str = ""

    def range_problem(self, index: int) -> str | None:
        """Why signal ``index`` cannot be scaled to physical units, or None when it can.

        MNE scales each sample by ``(pmax - pmin) / (dmax - dmin)``; a range that is not a
        finite number, empty, or inverted gives infinite, NaN or silently flipped signals.
        """
        if not self.physical_min:
            return None
        pmin, pmax = self.physical_min[index], self.physical_max[index]
        dmin, dmax = self.digital_min[index], self.digital_max[index]
        label = self.labels[index]
        if not all(math.isfinite(v) for v in (pmin, pmax, dmin, dmax)):
            return f"signal {label!r} has a non-numeric or infinite range (physical {pmin:g}..{pmax:g}, " \
                   f"digital {dmin:g}..{dmax:g})"
        if dmax <= dmin:
            return f"signal {label!r} has an empty or inverted digital range ({dmin:g}..{dmax:g})"
        if pmax == pmin:
            return f"signal {label!r} has an empty physical range ({pmin:g}..{pmax:g})"
        gain = (pmax - pmin) / (dmax - dmin)
        if not math.isfinite(gain) or max(abs(pmin), abs(pmax)) > 1e12:
            return f"signal {label!r} has an implausible physical range ({pmin:g}..{pmax:g})"
        return None

    @property
    def header_bytes(self) -> int:
        """Bytes before the first data record."""
        return 256 * (len(self.labels) + 1)

    @property
    def discontinuous(self) -> bool:
        """An EDF+D / BDF+D file: its data records need not follow each other in time."""
        return self.reserved.upper().startswith(("EDF+D", "BDF+D"))

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.n_records * self.record_duration

    def sfreq_of(self, index: int) -> float:
        """Sampling rate of signal ``index`` in Hz."""
        return self.samples_per_record[index] / self.record_duration


def _field(raw: bytes, start: int, size: int) -> str:
    # some writers pad with NUL instead of spaces
    return raw[start : start + size].decode("latin-1").replace("\x00", " ").strip()


def read_edf_header(fname: str | os.PathLike) -> EdfHeader:
    """Read and validate an EDF/BDF header.

    Parameters
    ----------
    fname : path-like
        The file.

    Returns
    -------
    EdfHeader

    Raises
    ------
    UnsupportedFileError
        Not an EDF/BDF file.
    CorruptFileError
        Unreadable numbers, a header size that does not match its signal count,
        or a file shorter than its header promises.
    """
    fname = str(fname)
    try:
        size = os.path.getsize(fname)
        with open(fname, "rb") as fh:
            fixed = fh.read(256)
            magic = fixed[:8]
            if magic not in (_EDF_MAGIC, _BDF_MAGIC):
                from elmsearch.archive.discovery import not_read_reason  # scan's reason for this kind of file

                what = "empty file" if not fixed else f"starts with {magic[:8]!r}"
                raise UnsupportedFileError(fname, not_read_reason(fname) or f"not an EDF/BDF file ({what})")
            if len(fixed) < 256:
                raise CorruptFileError(fname, f"truncated header ({len(fixed)} of 256 bytes)")
            kind = "BDF" if magic == _BDF_MAGIC else "EDF"
            def number(name: str, start: int, size: int, kind=int):
                text = _field(fixed, start, size)
                try:
                    return kind(text)
                except ValueError:
                    raise CorruptFileError(fname, f"unreadable {name} in the header ({text!r})") from None

            header_bytes = number("header length", 184, 8)
            n_records = number("number of data records", 236, 8)
            record_duration = number("data record duration", 244, 8, float)
            n_signals = number("number of signals", 252, 4)
            if n_signals <= 0 or header_bytes != 256 * (n_signals + 1):
                raise CorruptFileError(
                    fname,
                    f"header says {header_bytes} bytes for {n_signals} signals "
                    f"(expected {256 * (max(n_signals, 0) + 1)})",
                )
            rest = fh.read(header_bytes - 256)
    except OSError as err:
        raise UnsupportedFileError(fname, f"cannot open ({err.strerror or err})") from None
    if len(rest) < header_bytes - 256:
        raise CorruptFileError(fname, f"truncated signal headers ({256 + len(rest)} of {header_bytes} bytes)")

    def column(offset: int, width: int) -> list[str]:
        base = offset * n_signals
        return [_field(rest, base + i * width, width) for i in range(n_signals)]

    labels = column(0, 16)

    def numbers(offset: int) -> tuple[float, ...]:
        out = []
        for v in column(offset, 8):
            try:
                out.append(float(v))
            except ValueError:
                out.append(math.nan)
        return tuple(out)

    # per-signal fields: label 16, transducer 80, dimension 8, phys min/max 8+8,
    # dig min/max 8+8, prefiltering 80, samples per record 8, reserved 32
    try:
        spr = [int(v) for v in column(16 + 80 + 8 + 8 + 8 + 8 + 8 + 80, 8)]
    except ValueError as err:
        raise CorruptFileError(fname, f"unreadable samples-per-record ({err})") from None
    if not (0 < record_duration < 1e6) or any(s <= 0 for s in spr):
        raise CorruptFileError(fname, "non-positive record duration or samples per record")
    bytes_per_sample = 3 if kind == "BDF" else 2
    record_bytes = sum(spr) * bytes_per_sample
    available = (size - header_bytes) // record_bytes
    if n_records == -1:
        n_records = available
    elif available < n_records:
        raise CorruptFileError(
            fname,
            f"truncated: header promises {n_records} data records "
            f"({header_bytes + n_records * record_bytes} bytes) but the file has {size} bytes",
        )
    if n_records <= 0:
        raise CorruptFileError(fname, "no data records")
    extra = available - n_records
    if extra > 0:
        logger.warning("%s: the file holds %d data records past the %d its header declares; reading the "
                       "header's %d (%g s)", fname, extra, n_records, n_records, n_records * record_duration)
    return EdfHeader(
        fname=fname,
        kind=kind,
        patient=_field(fixed, 8, 80),
        recording=_field(fixed, 88, 80),
        startdate=_field(fixed, 168, 8),
        starttime=_field(fixed, 176, 8),
        n_records=n_records,
        record_duration=record_duration,
        labels=tuple(labels),
        samples_per_record=tuple(spr),
        physical_min=numbers(16 + 80 + 8),
        physical_max=numbers(16 + 80 + 8 + 8),
        digital_min=numbers(16 + 80 + 8 + 8 + 8),
        digital_max=numbers(16 + 80 + 8 + 8 + 8 + 8),
        extra_records=max(extra, 0),
        reserved=_field(fixed, 192, 44),
    )


# Formats read through MNE alone (no EDF header to validate first): suffix -> (kind, MNE reader name)
MNE_FORMATS = {".vhdr": ("BrainVision", "read_raw_brainvision"), ".set": ("EEGLAB", "read_raw_eeglab")}


def mne_reason(err: BaseException) -> str:
    """One line naming an exception raised by an MNE reader (its type and first line)."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


_VHDR_KEYS = {"datafile": "DataFile", "markerfile": "MarkerFile"}


def parse_vhdr_companions(text: str) -> dict[str, str]:
    """The ``DataFile=`` and ``MarkerFile=`` of a BrainVision header's ``[Common Infos]`` (keys as written)."""
    out, section = {}, ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
            continue
        if section == "common infos" and "=" in line and not line.startswith(";"):
            key, value = line.split("=", 1)
            if key.strip().lower() in _VHDR_KEYS:
                out[_VHDR_KEYS[key.strip().lower()]] = value.strip()
    return out


def companion_problem(key: str, name: str) -> str | None:
    """Why a BrainVision ``DataFile``/``MarkerFile`` value is refused: it must name a file in the header's folder."""
    if not name:
        return f"{key}= is empty"
    if "/" in name or "\\" in name or name in {".", ".."} or os.path.isabs(name) or ":" in name[:2]:
        return (f"{key}={name} does not name a file in the header's own folder (no folders, '..' or absolute "
                "paths allowed)")
    return None


def vhdr_companions(fname: str | os.PathLike) -> dict[str, str]:
    """The data and marker file names a BrainVision header names, checked (``companion_problem``).

    Raises
    ------
    CorruptFileError
        A name leaves the header's folder, or the header cannot be read.
    """
    try:
        with open(fname, "rb") as f:
            text = f.read(1 << 20).decode("latin-1")
    except OSError as err:
        raise UnsupportedFileError(fname, f"cannot open ({err.strerror or err})") from None
    files = parse_vhdr_companions(text)
    for key, name in files.items():
        problem = companion_problem(key, name)
        if problem:
            raise CorruptFileError(fname, problem)
    return files


def open_mne_format(fname: str, kind: str):
    """Open a BrainVision or EEGLAB file (``MNE_FORMATS``) with MNE, not preloaded.

    Raises
    ------
    CorruptFileError
        A companion file outside the header's folder, or any failure of MNE's reader.
    """
    import mne

    if kind == "BrainVision":
        vhdr_companions(fname)  # before MNE follows DataFile= anywhere on the disk
    reader = getattr(mne.io, MNE_FORMATS[os.path.splitext(fname)[1].lower()][1])
    try:
        return reader(fname, preload=False, verbose="error")
    except Exception as err:  # noqa: BLE001 -- any reader failure is a property of this file
        raise CorruptFileError(Path(fname), f"MNE cannot read this {kind} file: {mne_reason(err)}") from None


def read_header(fname: str | os.PathLike) -> EdfHeader:
    """Read a recording's header: EDF/BDF validated byte by byte, BrainVision and EEGLAB through MNE.

    For MNE-read formats the header is expressed as one-sample records (``record_duration``
    is ``1 / sfreq``), with the start date and time from the measurement date.

    Raises
    ------
    RecordingError
        ``UnsupportedFileError`` or ``CorruptFileError`` with a one-line reason.
    """
    fname = str(fname)
    from elmsearch.archive.discovery import special_file_reason

    special = special_file_reason(fname)  # stat only: opening a FIFO blocks until a writer comes
    if special:
        raise UnsupportedFileError(fname, special)
    suffix = os.path.splitext(fname)[1].lower()
    if suffix not in MNE_FORMATS:
        return read_edf_header(fname)
    kind = MNE_FORMATS[suffix][0]
    raw = open_mne_format(fname, kind)
    sfreq, n_times = float(raw.info["sfreq"]), int(raw.n_times)
    if not (sfreq > 0 and n_times > 0):
        raise CorruptFileError(fname, f"{kind} file with {n_times} samples at {sfreq:g} Hz")
    when = raw.info.get("meas_date")
    return EdfHeader(
        fname=fname, kind=kind, patient="", recording="",
        startdate=f"{when:%d.%m.%y}" if when else "", starttime=f"{when:%H.%M.%S}" if when else "",
        n_records=n_times, record_duration=1.0 / sfreq, labels=tuple(raw.ch_names),
        samples_per_record=(1,) * len(raw.ch_names),
    )

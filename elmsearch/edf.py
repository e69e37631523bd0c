"""EDF/BDF entry point: header validation, then a thin wrapper over MNE's reader.

MNE reads the signals (``mne.io.read_raw_edf`` / ``read_raw_bdf``); this module only
checks the fixed-size header first so that damaged files fail with a reason a
person can act on (truncated, header that lies about its length, not an EDF at
all) instead of an exception from deep inside a reader.
"""

from __future__ import annotations

import dataclasses
import logging
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

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.n_records * self.record_duration

    def sfreq_of(self, index: int) -> float:
        """Sampling rate of signal ``index`` in Hz."""
        return self.samples_per_record[index] / self.record_duration


def _field(raw: bytes, start: int, size: int) -> str:
    return raw[start : start + size].decode("latin-1").strip()


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
                what = "empty file" if not fixed else f"starts with {magic[:8]!r}"
                raise UnsupportedFileError(fname, f"not an EDF/BDF file ({what})")
            if len(fixed) < 256:
                raise CorruptFileError(fname, f"truncated header ({len(fixed)} of 256 bytes)")
            kind = "BDF" if magic == _BDF_MAGIC else "EDF"
            try:
                header_bytes = int(_field(fixed, 184, 8))
                n_records = int(_field(fixed, 236, 8))
                record_duration = float(_field(fixed, 244, 8))
                n_signals = int(_field(fixed, 252, 4))
            except ValueError as err:
                raise CorruptFileError(fname, f"unreadable header number ({err})") from None
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
    # per-signal fields: label 16, transducer 80, dimension 8, phys min/max 8+8,
    # dig min/max 8+8, prefiltering 80, samples per record 8, reserved 32
    try:
        spr = [int(v) for v in column(16 + 80 + 8 + 8 + 8 + 8 + 8 + 80, 8)]
    except ValueError as err:
        raise CorruptFileError(fname, f"unreadable samples-per-record ({err})") from None
    if record_duration <= 0 or any(s <= 0 for s in spr):
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
    )


def open_raw(fname: str | os.PathLike, header: EdfHeader | None = None):
    """Open an EDF/BDF with MNE without loading data (validated first).

    Parameters
    ----------
    fname : path-like
        The file.
    header : EdfHeader | None
        An already-read header, to skip reading it again.

    Returns
    -------
    mne.io.BaseRaw
        Not preloaded; use ``get_data(picks=...)``.
    """
    import mne

    header = header or read_edf_header(fname)
    reader = mne.io.read_raw_bdf if header.kind == "BDF" else mne.io.read_raw_edf
    fname = str(fname)
    try:
        try:
            return reader(fname, preload=False, verbose="error")
        except UnicodeDecodeError:
            logger.debug("%s: header is not UTF-8, retrying as latin-1", fname)
            return reader(fname, preload=False, encoding="latin1", verbose="error")
    except (ValueError, RuntimeError, OSError, IndexError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CorruptFileError(Path(fname), f"MNE cannot read it: {reason}") from None

"""What is known about a recording before its samples are read: header checks and metadata."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from pathlib import Path

from elmsearch.archive.tuh import PathInfo, date_is_suspect, parse_patient_field, parse_start
from elmsearch.errors import CorruptFileError, MissingChannelError, TooShortError, UnsupportedFileError
from elmsearch.io.header import EdfHeader, read_header
from elmsearch.signal.channels import TCP_ELECTRODES, map_electrodes
from elmsearch.signal.preprocessing import PreprocessingParams

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RecordingMeta:
    """Everything known about a recording apart from its samples.

    Attributes
    ----------
    fname : str
    subject, sex : str | None
        From the EDF patient field (TUH: ``00009932 F 01-JAN-1961 00009932 Age:53``).
    age : float | None
        Years; fractional ages kept.
    birthdate : datetime.date | None
    start : datetime.datetime | None
        Recording start from the header.
    date_suspect : bool
        The start date looks anonymised or bogus (1899, 1 Jan 2000, future...); kept, flagged.
    duration : float
        Seconds, from the header.
    native_sfreq : float
        Sampling rate of the montage electrodes in the file, Hz.
    n_chans_native : int
        Signals in the file.
    electrode_labels : dict
        Canonical electrode -> label in the file.
    patient_field, recording_field : str
        Raw header fields, for audit.
    """

    fname: str
    subject: str | None
    sex: str | None
    age: float | None
    birthdate: dt.date | None
    start: dt.datetime | None
    date_suspect: bool
    duration: float
    native_sfreq: float
    n_chans_native: int
    electrode_labels: dict[str, str]
    patient_field: str
    recording_field: str


def inspect_edf(fname: str | os.PathLike, params: PreprocessingParams | None = None,
                min_duration: float = 5.0) -> tuple[EdfHeader, RecordingMeta, dict[str, int]]:
    """Validate a file for ELM preprocessing from its header alone (no samples read).

    Parameters
    ----------
    fname : path-like
        EDF or BDF file.
    params : PreprocessingParams | None
        Defaults to ELM's recipe.
    min_duration : float
        Shortest usable recording, seconds.

    Returns
    -------
    header : EdfHeader
    meta : RecordingMeta
    electrodes : dict
        Canonical electrode -> signal index in the header.

    Raises
    ------
    RecordingError
        Any subclass, with the file name and a one-line reason.
    """
    params = params or PreprocessingParams()
    header = read_header(fname)
    found, duplicates = map_electrodes(list(header.labels))
    clashing = {e: labels for e, labels in duplicates.items() if e in TCP_ELECTRODES}
    if clashing:
        e, labels = next(iter(clashing.items()))
        raise UnsupportedFileError(fname, f"electrode {e} appears more than once ({', '.join(labels)})")
    missing = [e for e in TCP_ELECTRODES if e not in found]
    if missing:
        labels = [repr(x) for x in header.labels[:24]]
        shown = f"{', '.join(labels)}{f' and {len(header.labels) - 24} more' if len(header.labels) > 24 else ''}"
        if len(missing) == len(TCP_ELECTRODES):
            raise MissingChannelError(fname, missing, f"no 10-20 scalp EEG electrodes found (labels: {shown})")
        raise MissingChannelError(
            fname, missing, f"missing electrode(s) {', '.join(missing)} for the TCP montage (labels: {shown})")
    for e in TCP_ELECTRODES:
        problem = header.range_problem(found[e])
        if problem:
            raise CorruptFileError(fname, problem)
    rates = sorted({header.sfreq_of(found[e]) for e in TCP_ELECTRODES})
    if len(rates) > 1:
        raise UnsupportedFileError(fname, f"montage electrodes sampled at different rates {rates} Hz")
    native = rates[0]
    if native > 100_000:
        raise CorruptFileError(fname, f"montage electrodes sampled at {native:g} Hz (record duration "
                                      f"{header.record_duration:g} s): not a plausible EEG rate")
    if native < params.sfreq:
        raise UnsupportedFileError(
            fname, f"sampled at {native:g} Hz, below the {params.sfreq:g} Hz the model needs")
    if header.duration < min_duration:
        raise TooShortError(fname, f"{header.duration:.1f} s long, shorter than {min_duration:g} s")
    patient = parse_patient_field(header.patient)
    start = parse_start(header.startdate, header.starttime, header.recording)
    meta = RecordingMeta(
        fname=str(fname),
        subject=patient.code,
        sex=patient.sex,
        age=patient.age,
        birthdate=patient.birthdate,
        start=start,
        date_suspect=date_is_suspect(start),
        duration=header.duration,
        native_sfreq=native,
        n_chans_native=len(header.labels),
        electrode_labels={e: header.labels[found[e]] for e in TCP_ELECTRODES},
        patient_field=header.patient,
        recording_field=header.recording,
    )
    return header, meta, {e: found[e] for e in TCP_ELECTRODES}


def path_info_for(fname: str | os.PathLike, root: str | os.PathLike | None = None) -> PathInfo:
    """Parse the recording key from a path (relative to ``root`` when given)."""
    from elmsearch.archive.tuh import parse_recording_path

    path = Path(fname)
    parts = path.relative_to(root).parts if root else path.parts
    return parse_recording_path(parts)

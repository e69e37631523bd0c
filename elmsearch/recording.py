"""Read one EEG recording into ELM's representation, and cut it into windows."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from pathlib import Path

import numpy as np

from elmsearch.channels import TCP_CH_NAMES, TCP_ELECTRODES, map_electrodes
from elmsearch.edf import EdfHeader, open_raw, read_header
from elmsearch.edfread import open_edf_reader
from elmsearch.errors import (
    CorruptFileError,
    MissingChannelError,
    TooShortError,
    UnsupportedFileError,
)
from elmsearch.preprocessing import PreprocessingParams, preprocess
from elmsearch.tuh import PathInfo, date_is_suspect, parse_patient_field, parse_start

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


@dataclasses.dataclass(frozen=True)
class PreprocessedRecording:
    """A preprocessed recording.

    Attributes
    ----------
    data : array of float32, shape (20, n_times)
        TCP bipolar channels at ``sfreq``, in units of 10 uV, clipped.
    ch_names : tuple of str
        ``channels.TCP_CH_NAMES``.
    sfreq : float
        Hz (100).
    meta : RecordingMeta
    params : PreprocessingParams
    flat_seconds : array of bool, shape (n_seconds,) | None
        Seconds in which every montage electrode of the raw file is constant (a gap the
        recorder filled with a constant, a disconnected headbox).
    """

    data: np.ndarray
    ch_names: tuple[str, ...]
    sfreq: float
    meta: RecordingMeta
    params: PreprocessingParams
    flat_seconds: np.ndarray | None = None

    @property
    def n_times(self) -> int:
        """Number of samples."""
        return self.data.shape[1]

    @property
    def duration(self) -> float:
        """Seconds of preprocessed signal."""
        return self.n_times / self.sfreq


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


def read_electrodes(fname: str | os.PathLike, header: EdfHeader, electrodes: dict[str, int]
                    ) -> tuple[np.ndarray, float]:
    """Read the montage electrodes' samples: EDF/BDF from a memory map where possible, else MNE.

    ``edfread.open_edf_reader`` gives MNE's values bit for bit; files it leaves to MNE
    (EDF+D, electrodes slower than the fastest signal, ...) are read with MNE.

    Returns
    -------
    data : array of float64, shape (17, n_times)
        Volts, rows in ``channels.TCP_ELECTRODES`` order.
    sfreq : float
        Rate of ``data`` (MNE resamples slower signals up to the file's fastest rate).
    """
    fast = open_edf_reader(fname, header, [electrodes[e] for e in TCP_ELECTRODES])
    raw = fast if fast is not None else open_raw(fname, header)
    try:
        data = fast.read() if fast is not None else raw.get_data(picks=electrode_picks(raw, header, electrodes))
    except Exception as err:  # noqa: BLE001 -- MNE raises bare Exception for some damaged files
        msg = str(err).strip().splitlines()
        raise CorruptFileError(fname, f"cannot read samples: {type(err).__name__}"
                                      f"{': ' + msg[0] if msg else ''}") from None
    check_signals(fname, data, [header.labels[electrodes[e]] for e in TCP_ELECTRODES])
    return data, fast.sfreq if fast is not None else float(raw.info["sfreq"])


def electrode_picks(raw, header: EdfHeader, electrodes: dict[str, int]) -> list[int]:
    """Indices into ``raw.ch_names`` of the montage electrodes, in ``TCP_ELECTRODES`` order."""
    labels = [header.labels[electrodes[e]] for e in TCP_ELECTRODES]
    names = raw.ch_names
    try:
        return [names.index(label) for label in labels]
    except ValueError:
        # MNE strips or de-duplicates labels; fall back to position among non-annotation signals
        signal_labels = [lab for lab in header.labels if "annotations" not in lab.lower()]
        return [signal_labels.index(label) for label in labels]


FLAT_V = 1e-8  # peak-to-peak below 0.01 uV over the whole recording: no signal
SATURATED_FRACTION = 0.5  # half the samples at the channel's own extreme values: clipped amplifier
WRONG_UNIT_STD_V = 1e-2  # a median channel std of 10 mV is 200x EEG: the physical unit is wrong
FLAT_WINDOW_UNITS = 0.05  # a window whose 20 channels all stay within 0.5 uV peak-to-peak carries no EEG


def signal_problems(data: np.ndarray, labels: list[str]) -> str | None:
    """Why referential electrode signals cannot be used, or None.

    Rules (README, "What is refused"): every sample finite; the median channel standard
    deviation at most 10 mV (else the header's physical unit is wrong); no montage
    electrode flat (peak-to-peak < 0.01 uV) or saturated (at least half of its samples at
    its own minimum or maximum) for the whole recording, since the bipolar derivations
    built from it would be silently wrong.

    Parameters
    ----------
    data : array, shape (n_electrodes, n_times)
        Volts.
    labels : list of str
        The electrodes' labels in the file, for the message.
    """
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        return f"non-finite samples in {', '.join(np.asarray(labels)[bad][:6])}"
    flat, saturated = dead_electrodes(data)
    problem = dead_problem(flat, saturated, labels)
    if problem:
        return problem
    scale = float(np.median(np.std(data, axis=1)))
    if scale > WRONG_UNIT_STD_V:
        return f"median channel standard deviation {scale:.3g} V is not EEG: check the physical dimension field"
    return None


def dead_electrodes(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per electrode: flat, and saturated (see ``signal_problems``), each shape (n_electrodes,) bool."""
    lo, hi = data.min(axis=1), data.max(axis=1)
    flat = (hi - lo) < FLAT_V
    at_edge = ((data == lo[:, None]) | (data == hi[:, None])).mean(axis=1)
    return flat, ~flat & (at_edge >= SATURATED_FRACTION)


def dead_problem(flat: np.ndarray, saturated: np.ndarray, labels: list[str]) -> str | None:
    """The refusal for electrodes flat or saturated for the whole recording, or None."""
    if not (flat.any() or saturated.any()):
        return None
    parts = []
    if flat.any():
        parts.append(f"flat: {', '.join(np.asarray(labels)[flat])}")
    if saturated.any():
        parts.append(f"saturated: {', '.join(np.asarray(labels)[saturated])}")
    return f"montage electrode(s) without usable signal for the whole recording ({'; '.join(parts)})"


def check_signals(fname: str | os.PathLike, data: np.ndarray, labels: list[str]) -> None:
    """Raise ``CorruptFileError`` when ``signal_problems`` finds one."""
    problem = signal_problems(data, labels)
    if problem:
        raise CorruptFileError(fname, problem)


def usable_windows(windows: np.ndarray) -> np.ndarray:
    """Which preprocessed windows carry signal, shape (n_windows,) bool.

    A window whose 20 channels all stay within ``FLAT_WINDOW_UNITS`` peak-to-peak (0.5 uV;
    e.g. a gap a recorder filled with zeros, or a disconnected headbox) is not embedded.
    """
    if len(windows) == 0:
        return np.zeros(0, bool)
    ptp = windows.max(axis=-1) - windows.min(axis=-1)
    return (ptp >= FLAT_WINDOW_UNITS).any(axis=1)


def read_recording(
    fname: str | os.PathLike,
    params: PreprocessingParams | None = None,
    min_duration: float = 5.0,
) -> PreprocessedRecording:
    """Read an EDF/BDF file and apply ELM preprocessing.

    Parameters
    ----------
    fname : path-like
        EDF or BDF file with the 17 electrodes of the TCP montage under any
        common spelling (``EEG FP1-REF``, ``EEG FP1-LE``, ``Fp1``, ``T7`` for ``T3``...).
    params : PreprocessingParams | None
        Defaults to ELM's recipe: TCP, 0.1 Hz high-pass, FFT resampling to 100 Hz
        (its 50 Hz brick-wall is the low-pass; see ``elmsearch.preprocessing``), x1e5,
        clip +-80.
    min_duration : float
        Shortest usable recording in seconds (``TooShortError`` below).

    Returns
    -------
    PreprocessedRecording
        ``data`` has shape (20, n_times) at 100 Hz, float32.

    Raises
    ------
    RecordingError
        ``UnsupportedFileError``, ``CorruptFileError``, ``MissingChannelError`` or
        ``TooShortError``; ``str(err)`` is one line naming the file and the reason.
    """
    params = params or PreprocessingParams()
    header, meta, electrodes = inspect_edf(fname, params, min_duration)
    data, sfreq = read_electrodes(fname, header, electrodes)
    out = preprocess(data, sfreq, params)
    if not np.isfinite(out).all():
        raise CorruptFileError(fname, "preprocessing gave non-finite values (amplitudes beyond float32 range)")
    return PreprocessedRecording(out, TCP_CH_NAMES, params.sfreq, meta, params, flat_seconds(data, sfreq))


def flat_seconds(data: np.ndarray, sfreq: float) -> np.ndarray:
    """Seconds in which every electrode is constant (peak-to-peak < ``FLAT_V``), shape (n_seconds,).

    Parameters
    ----------
    data : array, shape (n_electrodes, n_times)
        Raw referential signals in volts at ``sfreq``.
    """
    n = int(round(sfreq))
    n_sec = data.shape[1] // n if n > 0 and abs(n - sfreq) < 1e-6 else 0
    if n_sec == 0:
        return np.zeros(0, bool)
    blocks = data[:, : n_sec * n].reshape(data.shape[0], n_sec, n)
    return ((blocks.max(axis=-1) - blocks.min(axis=-1)) < FLAT_V).all(axis=0)


def window_mask(recording: PreprocessedRecording, seconds: float) -> np.ndarray:
    """Which of ``make_windows(recording, seconds)`` carry EEG, shape (n_windows,) bool.

    A window is left out when every second of it was flat in the raw file (``flat_seconds``)
    or when its preprocessed channels are all flat (``usable_windows``).
    """
    windows = make_windows(recording, seconds)
    keep = usable_windows(windows)
    flat = recording.flat_seconds
    s = int(round(seconds))
    if flat is not None and len(flat) and abs(s - seconds) < 1e-9:
        n = min(len(keep), len(flat) // s)
        keep[:n] &= ~flat[: n * s].reshape(n, s).all(axis=1)
    return keep


def make_windows(recording: PreprocessedRecording | np.ndarray, seconds: float, sfreq: float = 100.0
                 ) -> np.ndarray:
    """Cut a recording into non-overlapping windows (the remainder is dropped).

    Parameters
    ----------
    recording : PreprocessedRecording | array, shape (n_chans, n_times)
        A preprocessed recording, or its data.
    seconds : float
        Window length (ELM: 5 or 60).
    sfreq : float
        Sampling rate of an array input (a ``PreprocessedRecording`` brings its own).

    Returns
    -------
    array, shape (n_windows, n_chans, seconds * sfreq)
        A read-only view on the recording's data.
    """
    name = recording.meta.fname if isinstance(recording, PreprocessedRecording) else "<array>"
    if isinstance(recording, PreprocessedRecording):
        data, sfreq = recording.data, recording.sfreq
    else:
        data = np.asarray(recording)
    n = int(round(seconds * sfreq))
    if n <= 0:
        raise ValueError(f"window length must be positive, got {seconds} s")
    n_windows = data.shape[1] // n
    if n_windows == 0:
        raise TooShortError(name, f"{data.shape[1] / sfreq:.1f} s is shorter than one {seconds:g} s window")
    out = data[:, : n_windows * n].reshape(data.shape[0], n_windows, n).transpose(1, 0, 2)
    out.flags.writeable = False
    return out


def path_info_for(fname: str | os.PathLike, root: str | os.PathLike | None = None) -> PathInfo:
    """Parse the recording key from a path (relative to ``root`` when given)."""
    from elmsearch.tuh import parse_recording_path

    path = Path(fname)
    parts = path.relative_to(root).parts if root else path.parts
    return parse_recording_path(parts)

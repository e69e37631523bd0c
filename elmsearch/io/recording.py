"""A preprocessed recording held in memory, and how it is cut into windows."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from elmsearch.errors import TooShortError
from elmsearch.io.checks import window_keep
from elmsearch.io.meta import RecordingMeta
from elmsearch.signal.preprocessing import PreprocessingParams

logger = logging.getLogger(__name__)


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



def window_mask(recording: PreprocessedRecording, seconds: float) -> np.ndarray:
    """Which of ``make_windows(recording, seconds)`` carry EEG, shape (n_windows,) bool.

    A window is left out when every second of it was flat in the raw file (``flat_seconds``)
    or when its preprocessed channels are all flat (``usable_windows``).
    """
    return window_keep(make_windows(recording, seconds), recording.flat_seconds, seconds)

"""Checks on samples: what makes referential EEG unusable, and which windows carry no signal.

Numpy in, answers out. ``SignalChecks`` applies them to the spans a recording is read in,
so that a file read in one span (the whole file) and in many (chunks) is judged alike.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from elmsearch.errors import CorruptFileError

logger = logging.getLogger(__name__)

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


def window_keep(windows: np.ndarray, flat: np.ndarray | None, seconds: float, first: int = 0) -> np.ndarray:
    """Which windows carry EEG, shape (n_windows,) bool.

    A window is left out when its preprocessed channels are all flat (``usable_windows``) or
    when every second of it was flat in the raw file (``flat_seconds``).

    Parameters
    ----------
    windows : array, shape (n_windows, n_chans, n_times)
        Consecutive preprocessed windows.
    flat : array of bool, shape (n_seconds,) | None
        The whole recording's flat seconds (None or empty: not known, e.g. a fractional rate).
    seconds : float
        Window length; the flat seconds are used only when it is a whole number of seconds.
    first : int
        Position of ``windows[0]`` among the recording's windows.
    """
    keep = usable_windows(windows)
    s = int(round(seconds))
    if flat is not None and len(flat) and abs(s - seconds) < 1e-9:
        n = min(len(keep), len(flat) // s - first)
        if n > 0:
            keep[:n] &= ~flat[first * s : (first + n) * s].reshape(n, s).all(axis=1)
    return keep


class SignalChecks:
    """The checks of ``signal_problems`` on a recording read span by span.

    Every span must be finite and the first must have a plausible unit; dead electrodes are
    accumulated and judged by ``finish`` once every span has been read. For a recording read
    in one span, ``update`` then ``finish`` refuse what ``check_signals`` refuses, with the
    same message. Flat seconds are collected from every span into ``flat_seconds``.

    Parameters
    ----------
    fname : path-like
        For errors.
    labels : list of str
        The electrodes' labels in the file.
    sfreq : float
        Rate of the samples, Hz.
    n_times : int
        Samples in the recording.
    """

    def __init__(self, fname: str | os.PathLike, labels: list[str], sfreq: float, n_times: int):
        self.fname, self.labels, self.sfreq, self.n_times = fname, list(labels), sfreq, n_times
        self._checked_unit = False
        self._alive: np.ndarray | None = None  # usable in some span
        self._flat: np.ndarray | None = None  # flat in every span
        n_sec = int(n_times // sfreq) if abs(sfreq - round(sfreq)) < 1e-6 else 0
        self.flat_seconds = np.zeros(n_sec, bool)

    def update(self, data: np.ndarray, start: int, stop: int) -> None:
        """Check samples ``[start, stop)``, array shape (n_electrodes, stop - start), volts.

        Raises
        ------
        CorruptFileError
            The span shows a problem that does not need the rest of the recording.
        """
        if not self._checked_unit:
            self._checked_unit = True
            problem = signal_problems(data, self.labels)  # non-finite, unit; dead electrodes judged at the end
            if problem and "whole recording" not in problem:
                raise CorruptFileError(self.fname, problem)
        if not np.isfinite(data).all():
            raise CorruptFileError(self.fname, f"non-finite samples in {start}-{stop}")
        flat, saturated = dead_electrodes(data)
        if self._alive is None:
            self._alive = np.zeros(len(flat), bool)
            self._flat = np.ones(len(flat), bool)
        self._alive |= ~(flat | saturated)
        self._flat &= flat
        if len(self.flat_seconds):  # whole seconds inside [start, stop)
            n = int(round(self.sfreq))
            first = -(-start // n)
            secs = flat_seconds(data[:, first * n - start :], self.sfreq)
            self.flat_seconds[first : first + len(secs)] = secs[: len(self.flat_seconds) - first]

    def problem(self) -> str | None:
        """After every span was read: electrodes flat or saturated throughout, or None."""
        if self._alive is None or self._flat is None:
            return None
        dead = ~self._alive
        return dead_problem(dead & self._flat, dead & ~self._flat, self.labels)

    def finish(self) -> None:
        """Raise ``CorruptFileError`` when ``problem`` finds one."""
        problem = self.problem()
        if problem:
            raise CorruptFileError(self.fname, problem)

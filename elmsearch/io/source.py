"""Where samples come from: one ``SignalSource`` protocol, two implementations.

Modelled on MNE's ``BaseRaw`` / ``_read_segment_file(start, stop)`` split: a source reads the
samples of chosen signals for a span of samples, and reading a whole file is the one-span
case. Everything above a source (checks, preprocessing, windowing, chunking) lives once, in
``windowed.WindowedRecording``.

- ``edf_mmap.EdfSignalReader``: EDF/BDF from a memory map, MNE's values bit for bit.
- ``MneSource``: MNE for the rest (EDF+D, montage electrodes slower than the file's fastest
  signal, BrainVision, EEGLAB, ...).

``open_source`` picks the memory map where it can promise MNE's values, else MNE.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from elmsearch.errors import CorruptFileError
from elmsearch.io.edf_mmap import open_edf_reader
from elmsearch.io.header import EdfHeader, mne_reason, open_mne_format, read_header

logger = logging.getLogger(__name__)


@runtime_checkable
class SignalSource(Protocol):
    """Reads spans of samples of chosen signals of one recording.

    Attributes
    ----------
    fname : str
        The file.
    sfreq : float
        Rate of the samples read, Hz.
    n_times : int
        Samples per signal in the file.
    """

    fname: str
    sfreq: float
    n_times: int

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples ``[start, stop)`` of the chosen signals, array of float64, shape (n_chans, stop - start), volts."""
        ...


class MneSource:
    """A ``SignalSource`` over an MNE ``Raw`` that is not preloaded.

    Parameters
    ----------
    fname : path-like
        The file.
    raw : mne.io.BaseRaw
        From ``open_raw``.
    picks : sequence of int
        Indices into ``raw.ch_names``, in output row order.
    """

    def __init__(self, fname: str | os.PathLike, raw, picks: Sequence[int]):
        self.fname = str(fname)
        self.raw = raw
        self.picks = list(picks)
        self.sfreq = float(raw.info["sfreq"])
        self.n_times = int(raw.n_times)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples ``[start, stop)`` of the picked channels, as ``raw.get_data``, shape (n_picks, n_times)."""
        return self.raw.get_data(picks=self.picks, start=start, stop=stop)


def open_raw(fname: str | os.PathLike, header: EdfHeader | None = None):
    """Open a recording with MNE without loading data (EDF/BDF validated first).

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

    Raises
    ------
    CorruptFileError
        Whatever MNE raises for this file (MNE raises bare ``Exception`` for some
        damaged EDFs), as one line naming the file.
    """
    import mne

    header = header or read_header(fname)
    fname = str(fname)
    if header.kind not in {"EDF", "BDF"}:
        return open_mne_format(fname, header.kind)
    reader = mne.io.read_raw_bdf if header.kind == "BDF" else mne.io.read_raw_edf
    try:
        try:
            raw = reader(fname, preload=False, verbose="error")
        except UnicodeDecodeError:
            logger.debug("%s: header is not UTF-8, retrying as latin-1", fname)
            raw = reader(fname, preload=False, encoding="latin1", verbose="error")
        return _crop_to_header(raw, header)
    except Exception as err:  # noqa: BLE001 -- any reader failure is a property of this file
        raise CorruptFileError(Path(fname), f"MNE cannot read it: {mne_reason(err)}") from None


def _crop_to_header(raw, header: EdfHeader):
    """MNE counts the data records from the file's size; keep only the header's (as ``edf_mmap`` does)."""
    n_times = int(round(header.duration * float(raw.info["sfreq"])))
    if header.extra_records > 0 and raw.n_times > n_times:
        raw.crop(tmax=(n_times - 1) / raw.info["sfreq"])
    return raw


def electrode_picks(raw, header: EdfHeader, signals: Sequence[int]) -> list[int]:
    """Indices into ``raw.ch_names`` of header signals ``signals``, in that order.

    MNE strips or de-duplicates some labels; those are found by their position among the
    signals that are not annotations.
    """
    labels = [header.labels[i] for i in signals]
    names = raw.ch_names
    try:
        return [names.index(label) for label in labels]
    except ValueError:
        signal_labels = [lab for lab in header.labels if "annotations" not in lab.lower()]
        return [signal_labels.index(label) for label in labels]


def open_source(fname: str | os.PathLike, header: EdfHeader, signals: Sequence[int]) -> SignalSource:
    """Open header signals ``signals`` of a recording for reading: a memory map where possible, else MNE.

    Parameters
    ----------
    fname, header : path-like, EdfHeader
        The file and its header (``header.read_header``).
    signals : sequence of int
        Signal indices in the header, in output row order.

    Returns
    -------
    SignalSource
        ``edf_mmap.EdfSignalReader`` (MNE's values bit for bit) or ``MneSource``.
    """
    mapped = open_edf_reader(fname, header, signals)
    if mapped is not None:
        return mapped
    raw = open_raw(fname, header)
    return MneSource(fname, raw, electrode_picks(raw, header, signals))

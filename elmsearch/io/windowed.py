"""One lazy windowed recording: checks, preprocessing, the flat-second mask and chunking, once.

``WindowedRecording`` opens a file (header checks, ``meta.inspect_edf``), reads its montage
electrodes from a ``source.SignalSource`` span by span (each span checked by
``checks.SignalChecks``), preprocesses them chunk by chunk on the whole recording's grid
(``chunks``) and cuts windows with the mask of those that carry EEG. The whole file is the
one-chunk case (``read``, ``windows``); a long one is written chunk by chunk to a ``.npy`` file
(``spill``) read back a slice at a time (``WindowFile``), so memory stays bounded whatever its
duration. Training, the indexer, embedding and queries on a new file all read through it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from elmsearch.errors import CorruptFileError, TooShortError
from elmsearch.io.checks import SignalChecks, window_keep
from elmsearch.io.chunks import CHUNK_S, OVERLAP_S, Chunk, cut_windows, n_times_out, plan_chunks, run_chunks, whole
from elmsearch.io.meta import inspect_edf
from elmsearch.io.recording import PreprocessedRecording
from elmsearch.io.source import open_source
from elmsearch.signal.channels import TCP_CH_NAMES, TCP_ELECTRODES
from elmsearch.signal.preprocessing import PreprocessingParams

logger = logging.getLogger(__name__)


class WindowedRecording:
    """A recording opened for reading: header checked, samples not read yet.

    Parameters
    ----------
    fname : path-like
        EDF, BDF, BrainVision or EEGLAB file with the 17 electrodes of the TCP montage under
        any common spelling (``EEG FP1-REF``, ``Fp1``, ``T7`` for ``T3``...).
    params : PreprocessingParams | None
        Defaults to ELM's recipe (see ``elmsearch.signal.preprocessing``).
    window_s : float | None
        Window length in seconds (ELM: 5 or 60), for ``windows``, ``iter_windows`` and ``spill``.
    min_duration : float | None
        Shortest usable recording in seconds (default: one window, else 5 s).
    chunk_s, overlap_s : float
        Chunking of long recordings, see ``chunks.plan_chunks``.

    Attributes
    ----------
    meta : RecordingMeta
    header : EdfHeader
    source : SignalSource
        The montage electrodes, rows in ``channels.TCP_ELECTRODES`` order.
    sfreq : float
        Rate of the samples read (MNE's rate for the file).
    n_times : int
        Native samples in the file.

    Raises
    ------
    RecordingError
        ``UnsupportedFileError``, ``CorruptFileError``, ``MissingChannelError`` or
        ``TooShortError``; ``str(err)`` is one line naming the file and the reason.
    """

    def __init__(self, fname: str | os.PathLike, params: PreprocessingParams | None = None,
                 window_s: float | None = None, min_duration: float | None = None,
                 chunk_s: float = CHUNK_S, overlap_s: float = OVERLAP_S):
        self.fname = fname
        self.params = params or PreprocessingParams()
        self.window_s = window_s
        if min_duration is None:
            min_duration = 5.0 if window_s is None else window_s
        self.header, self.meta, electrodes = inspect_edf(fname, self.params, min_duration)
        signals = [electrodes[e] for e in TCP_ELECTRODES]
        self.labels = [self.header.labels[i] for i in signals]
        self.source = open_source(fname, self.header, signals)
        self.sfreq, self.n_times = self.source.sfreq, self.source.n_times
        self.chunk_s, self.overlap_s = chunk_s, overlap_s
        self.checks = SignalChecks(fname, self.labels, self.sfreq, self.n_times)

    @property
    def n_times_out(self) -> int:
        """Samples of the preprocessed recording."""
        return n_times_out(self.n_times, self.sfreq, self.params)

    def read_span(self, start: int, stop: int) -> np.ndarray:
        """The montage electrodes' native samples ``[start, stop)``, checked.

        Returns
        -------
        array of float64, shape (17, stop - start)
            Volts, rows in ``channels.TCP_ELECTRODES`` order.

        Raises
        ------
        CorruptFileError
            The samples cannot be read, or ``checks.SignalChecks`` refuses them (electrodes
            dead throughout are judged only once every span has been read).
        """
        try:
            data = self.source.read(start, stop)
        except Exception as err:  # noqa: BLE001 -- MNE raises bare Exception for some damaged files
            msg = str(err).strip().splitlines()
            span = "" if (start, stop) == (0, self.n_times) else f" {start}-{stop}"
            raise CorruptFileError(self.fname, f"cannot read samples{span}: {type(err).__name__}"
                                               f"{': ' + msg[0] if msg else ''}") from None
        self.checks.update(data, start, stop)
        return data

    def plan(self, chunked: bool = True) -> list[Chunk]:
        """The chunks the recording is preprocessed in (``chunked=False``: one, the whole file)."""
        if not chunked:
            return whole(self.n_times, self.sfreq, self.params)
        return plan_chunks(self.n_times, self.sfreq, self.params, self.chunk_s, self.overlap_s, self.window_s)

    def _read_judged(self, start: int, stop: int) -> np.ndarray:
        """``read_span``; a span that is the whole file is judged at once (``SignalChecks.finish``)."""
        data = self.read_span(start, stop)
        if (start, stop) == (0, self.n_times):
            self.checks.finish()
        return data

    def _blocks(self, chunks: list[Chunk]) -> Iterator[np.ndarray]:
        for block in run_chunks(self._read_judged, self.n_times, self.sfreq, self.params, chunks):
            if not np.isfinite(block).all():
                raise CorruptFileError(self.fname, "preprocessing gave non-finite values (amplitudes beyond "
                                                   "float32 range)")
            yield block

    def read(self) -> PreprocessedRecording:
        """Read and preprocess the whole file in one chunk.

        Returns
        -------
        PreprocessedRecording
            ``data`` has shape (20, n_times) at ``params.sfreq``, float32.
        """
        block = next(self._blocks(self.plan(chunked=False)))
        return PreprocessedRecording(block, TCP_CH_NAMES, self.params.sfreq, self.meta, self.params,
                                     self.checks.flat_seconds)

    def iter_windows(self, chunked: bool = True) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Windows chunk by chunk, with which of them carry EEG.

        Equivalent to ``make_windows`` and ``window_mask`` on ``read()``; with ``chunked`` peak
        memory depends on ``chunk_s``, not on the duration. Electrodes dead for the whole
        recording are refused after the last chunk.

        Yields
        ------
        first : int
            Position of the block's first window in the recording.
        windows : array of float32, shape (n_windows, 20, window_s * params.sfreq)
            C-contiguous.
        keep : array of bool, shape (n_windows,)
            Windows that carry EEG (``checks.window_keep``).

        Raises
        ------
        TooShortError
            The recording is shorter than one window (at the call, not when iterating).
        """
        if self.window_s is None:
            raise ValueError("no window length: open the recording with window_s")
        w = int(round(self.window_s * self.params.sfreq))
        if w <= 0:
            raise ValueError(f"window length must be positive, got {self.window_s} s")
        if self.n_times_out < w:
            raise TooShortError(self.meta.fname, f"{self.n_times_out / self.params.sfreq:.1f} s is shorter "
                                                 f"than one {self.window_s:g} s window")
        chunks = self.plan(chunked)
        logger.debug("%s: %.1f h in %d chunk(s)", self.fname, self.n_times / self.sfreq / 3600, len(chunks))
        return self._iter_windows(chunks, w)

    def _iter_windows(self, chunks: list[Chunk], w: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for first, windows in cut_windows(self._blocks(chunks), chunks, w):
            yield first, windows, window_keep(windows, self.checks.flat_seconds, self.window_s, first)
        self.checks.finish()

    def windows(self) -> tuple[np.ndarray, np.ndarray]:
        """All windows of the whole file read in one chunk, and which carry EEG.

        Returns
        -------
        windows : array of float32, shape (n_windows, 20, window_s * params.sfreq)
        keep : array of bool, shape (n_windows,)
        """
        (_, windows, keep), = self.iter_windows(chunked=False)
        return windows, keep

    def spill(self, folder: str | os.PathLike) -> tuple[Path, np.ndarray]:
        """Write the windows chunk by chunk to a ``.npy`` file in ``folder`` (bounded memory).

        Returns
        -------
        fname : Path
            The file; read it with ``WindowFile``, delete it when done.
        keep : array of bool, shape (n_windows,)
            Windows that carry EEG.
        """
        blocks = self.iter_windows(chunked=True)
        n_samples = round(self.window_s * self.params.sfreq)
        n_win = self.n_times_out // n_samples
        fd, tmp = tempfile.mkstemp(suffix=".npy", dir=folder)
        path = Path(tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                         "shape": (n_win, len(TCP_CH_NAMES), n_samples)})
                keep = np.zeros(n_win, bool)
                written = 0
                for first, windows, kept in blocks:
                    if first != written:
                        raise RuntimeError(f"chunk starts at window {first}, expected {written}")
                    f.write(np.ascontiguousarray(windows, dtype="<f4").tobytes())
                    keep[first : first + len(windows)] = kept
                    written += len(windows)
                if written != n_win:
                    raise RuntimeError(f"{written} windows written, {n_win} expected")
            return path, keep
        except BaseException:
            path.unlink(missing_ok=True)
            raise


class WindowFile:
    """Windows in a ``.npy`` file (``WindowedRecording.spill``), read a slice at a time (``windows[i:j]``).

    Plain reads rather than a memory map: pages of a map count in the reader's resident
    memory until it is dropped, a 24 h recording's windows are 0.7 GB, and here only the
    slice being embedded is ever held.
    """

    def __init__(self, fname: str | os.PathLike):
        self.fname = Path(fname)
        with open(self.fname, "rb") as f:
            np.lib.format.read_magic(f)  # written with write_array_header_1_0
            self.shape, _, self.dtype = np.lib.format.read_array_header_1_0(f)
            self.offset = f.tell()
        self.row_bytes = int(np.prod(self.shape[1:])) * np.dtype(self.dtype).itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        """Rows ``windows[i:j]`` (contiguous) or ``windows[idx]`` (an array of row numbers), read now."""
        if not isinstance(rows, slice):  # row numbers: one read per run of consecutive rows
            idx = np.asarray(rows, np.int64).reshape(-1)
            if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
                raise IndexError(f"row out of range for {len(self)} windows")
            idx = np.where(idx < 0, idx + len(self), idx)
            out = np.empty((len(idx), *self.shape[1:]), self.dtype)
            order = np.argsort(idx, kind="stable")
            sorted_idx = idx[order]
            breaks = np.flatnonzero(np.diff(sorted_idx) != 1) + 1
            for run in np.split(np.arange(len(idx)), breaks):
                if len(run):
                    a = int(sorted_idx[run[0]])
                    out[order[run]] = self[a : a + len(run)]
            return out
        start, stop, step = rows.indices(len(self))
        if step != 1:
            raise IndexError("only contiguous slices")
        n = max(stop - start, 0)
        with open(self.fname, "rb") as f:
            f.seek(self.offset + start * self.row_bytes)
            data = np.fromfile(f, self.dtype, n * self.row_bytes // np.dtype(self.dtype).itemsize)
        return data.reshape((n, *self.shape[1:]))


def read_recording(fname: str | os.PathLike, params: PreprocessingParams | None = None,
                   min_duration: float = 5.0) -> PreprocessedRecording:
    """Read a recording and apply ELM preprocessing, the whole file at once (``WindowedRecording.read``).

    Parameters
    ----------
    fname, params, min_duration
        See ``WindowedRecording``.

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
    return WindowedRecording(fname, params, min_duration=min_duration).read()

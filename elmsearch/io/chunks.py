"""Preprocess long recordings in bounded memory: overlapping chunks on the whole file's grid.

A 24-72 h recording at up to 1 kHz does not fit in a worker's memory as one array
(17 electrodes x 86 M samples is 12 GB in float64). Here it is read and preprocessed
in chunks of ``chunk_s`` seconds, each extended by ``overlap_s`` on both sides, and
only each chunk's core is kept. The output matches ``preprocess`` on the whole
recording (per-channel correlation >= 0.99999 in tests/test_chunked.py) because

- every span is resampled on the whole recording's output grid
  (``preprocess(..., offset=, n_total=)``: MNE's ``npad="auto"`` grid depends on the
  total length, so a chunk resampled on its own would sit up to a fraction of a
  sample away);
- spans start on whole output samples that are whole native samples and whole
  4 Hz high-pass blocks, so the high-pass sees the same block means;
- the overlap (default 60 s) exceeds the reach of the 0.1 Hz high-pass FIR (about
  16.5 s each side) and of the FFT resampler's edge effects; the first and last
  chunks contain the file's own first and last samples, which the whole-file path
  reflects about.

What remains is the FFT resampler's brick-wall: its sinc kernel decays as 1/t, so
content beyond a chunk's read range still reaches the core faintly. With 60 s of
overlap the difference is about 1e-3 of the signal's RMS at a core's edge (less
inside), and near the recording's first and last seconds, where the FFT length
differs, a few 1e-2 for a second or two.

Chunk cores start on whole windows, so windows can be cut per chunk
(``iter_windows_chunked``). The functions here are numpy only and take a ``read(start, stop)``
callable; ``windowed.WindowedRecording`` runs them on a file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator

import numpy as np

from elmsearch.errors import TooShortError
from elmsearch.signal.preprocessing import HP_BLOCK, PreprocessingParams, highpass_reach_s, output_ratio, preprocess

logger = logging.getLogger(__name__)

CHUNK_S = 1800.0
"""Default chunk core length, seconds (30 min: 130 MB of float32 electrodes at 1 kHz)."""
OVERLAP_S = 60.0
"""Default overlap on each side of a chunk, seconds."""
LONG_RECORDING_S = 1.25 * CHUNK_S
"""Recordings longer than this are read in more than one chunk with the defaults.

Shorter ones are one chunk, preprocessed exactly as ``read_recording`` does
(``windowed.WindowedRecording`` callers read in chunks only recordings longer than this).
Peak memory of reading + preprocessing + windowing (bench/bench_long.py, above the ~110 MB
of imports): whole file, about 370 MB per hour at 256 Hz and 1.2 GB per hour at 1 kHz;
chunked with the defaults, about 240 MB at 256 Hz and 750 MB at 1 kHz whatever the
duration. (A caller that keeps all windows of a recording adds 29 MB per hour.)
"""
_RESAMPLER_MARGIN_S = 5.0  # FFT resampler edge effects, on top of the high-pass reach

Reader = Callable[[int, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One chunk of a long recording.

    Attributes
    ----------
    read_start, read_stop : int
        Native samples read (the core plus the overlap on each side, within the file).
    out_read_start : int
        Output sample at which the preprocessed span starts (``read_start`` on the output grid).
    out_start, out_stop : int
        Output samples of the core: the part of this chunk that is kept.
    """

    read_start: int
    read_stop: int
    out_read_start: int
    out_start: int
    out_stop: int


def n_times_out(n_times: int, sfreq: float, params: PreprocessingParams | None = None) -> int:
    """Number of output samples ``preprocess`` gives for ``n_times`` native samples."""
    params = params or PreprocessingParams()
    up, down = output_ratio(sfreq, params)
    return max(int(round(n_times * up / down)), 1)


def span_unit(sfreq: float, params: PreprocessingParams | None = None,
              window_s: float | None = None) -> tuple[int, int]:
    """Smallest step on which spans may start so that they match the whole file.

    A step is a whole number of output samples that is a whole number of native
    samples and of 4 Hz high-pass blocks (and of windows, when ``window_s`` is given).

    Parameters
    ----------
    sfreq : float
        Native sampling rate in Hz.
    params : PreprocessingParams | None
        Defaults to ELM's recipe.
    window_s : float | None
        Window length in seconds; must be a whole number of output samples.

    Returns
    -------
    native, out : int
        The step in native and in output samples.
    """
    params = params or PreprocessingParams()
    up, down = output_ratio(sfreq, params)
    unit = math.lcm(up, HP_BLOCK)
    if window_s is not None:
        w = int(round(window_s * params.sfreq))
        if w <= 0 or abs(w - window_s * params.sfreq) > 1e-6:
            raise ValueError(f"window of {window_s} s is not a whole number of "
                             f"{params.sfreq:g} Hz samples")
        unit = math.lcm(unit, w)
    return unit * down // up, unit


def min_overlap_s(params: PreprocessingParams | None = None) -> float:
    """Shortest overlap that covers the high-pass FIR's reach and the resampler's edge effects."""
    params = params or PreprocessingParams()
    return highpass_reach_s(params) + _RESAMPLER_MARGIN_S


def plan_chunks(n_times: int, sfreq: float, params: PreprocessingParams | None = None,
                chunk_s: float = CHUNK_S, overlap_s: float = OVERLAP_S,
                window_s: float | None = None) -> list[Chunk]:
    """Split a recording into overlapping chunks on the whole recording's output grid.

    Parameters
    ----------
    n_times : int
        Native samples in the recording.
    sfreq : float
        Native sampling rate in Hz.
    params : PreprocessingParams | None
        Defaults to ELM's recipe.
    chunk_s : float
        Core length of a chunk in seconds, rounded to a whole ``span_unit`` (with
        ``window_s``: a whole number of windows), at least one unit.
    overlap_s : float
        Context read on each side of a core, seconds, rounded up to a whole unit;
        at least ``min_overlap_s(params)``.
    window_s : float | None
        Window length that chunk cores must be whole multiples of.

    Returns
    -------
    list of Chunk
        Cores tile ``[0, n_times_out)``. A tail shorter than a quarter core joins the
        last chunk, so cores are at most 1.25 ``chunk_s`` long and a recording up to
        that long is one chunk (then processed exactly as ``preprocess`` does).
    """
    params = params or PreprocessingParams()
    if overlap_s < min_overlap_s(params):
        raise ValueError(f"overlap of {overlap_s:g} s is shorter than the high-pass FIR's reach "
                         f"plus the resampler's margin ({min_overlap_s(params):.1f} s)")
    up, down = output_ratio(sfreq, params)
    _, core_unit = span_unit(sfreq, params, window_s)
    _, ov_unit = span_unit(sfreq, params)
    core = max(1, int(round(chunk_s * params.sfreq / core_unit))) * core_unit
    ov = -(-int(math.ceil(overlap_s * params.sfreq)) // ov_unit) * ov_unit
    if core_unit > 2 * chunk_s * params.sfreq:
        logger.warning("%g Hz: chunks must be multiples of %.0f s to stay on the output grid",
                       sfreq, core_unit / params.sfreq)
    n_out = n_times_out(n_times, sfreq, params)
    chunks = []
    for out_start in range(0, n_out, core):
        out_stop = min(out_start + core, n_out)
        if n_out - out_stop < core // 4:  # fold a short tail into the last chunk
            out_stop = n_out
        lo = max(0, out_start - ov)
        hi = out_stop + ov
        read_stop = n_times if hi >= n_out else min(n_times, hi * down // up)
        chunks.append(Chunk(lo * down // up, read_stop, lo, out_start, out_stop))
        if out_stop == n_out:
            break
    return chunks


def preprocess_chunked(read: Reader, n_times: int, sfreq: float,
                       params: PreprocessingParams | None = None, chunk_s: float = CHUNK_S,
                       overlap_s: float = OVERLAP_S, window_s: float | None = None
                       ) -> Iterator[np.ndarray]:
    """Apply ELM preprocessing to a long recording chunk by chunk.

    Parameters
    ----------
    read : callable
        ``read(start, stop)`` returns the referential electrodes of native samples
        ``[start, stop)``: array, shape (17, stop - start), volts, rows in
        ``channels.TCP_ELECTRODES`` order.
    n_times, sfreq, params, chunk_s, overlap_s, window_s
        See ``plan_chunks``.

    Yields
    ------
    array of float32, shape (20, n_times_chunk)
        Consecutive blocks of the preprocessed recording; concatenated they match
        ``preprocess(whole recording, sfreq, params)`` (see the module's notes).
    """
    params = params or PreprocessingParams()
    chunks = plan_chunks(n_times, sfreq, params, chunk_s, overlap_s, window_s)
    return run_chunks(read, n_times, sfreq, params, chunks)


def whole(n_times: int, sfreq: float, params: PreprocessingParams) -> list[Chunk]:
    """The one-chunk plan: the whole recording, preprocessed exactly as ``preprocess`` does."""
    n_out = n_times_out(n_times, sfreq, params)
    return [Chunk(0, n_times, 0, 0, n_out)]


def run_chunks(read: Reader, n_times: int, sfreq: float, params: PreprocessingParams,
               chunks: list[Chunk]) -> Iterator[np.ndarray]:
    """Preprocess the chunks of a plan (``plan_chunks`` or ``whole``) one at a time.

    Parameters
    ----------
    read, n_times, sfreq, params
        See ``preprocess_chunked``.
    chunks : list of Chunk
        The plan.

    Yields
    ------
    array of float32, shape (20, n_times_core)
        Each chunk's core, in order.
    """
    if len(chunks) == 1:
        yield preprocess(_checked(read, 0, n_times), sfreq, params)
        return
    for i, c in enumerate(chunks):
        x = _checked(read, c.read_start, c.read_stop)
        y = preprocess(x, sfreq, params, offset=c.read_start, n_total=n_times)
        del x
        lo = c.out_start - c.out_read_start
        block = np.ascontiguousarray(y[:, lo : lo + c.out_stop - c.out_start])
        del y
        logger.debug("chunk %d/%d: output samples [%d, %d)", i + 1, len(chunks), c.out_start,
                     c.out_stop)
        yield block


def _checked(read: Reader, start: int, stop: int) -> np.ndarray:
    x = read(start, stop)
    if x.shape[-1] != stop - start:
        raise ValueError(f"read({start}, {stop}) returned {x.shape[-1]} samples")
    return x


def iter_windows_chunked(read: Reader, n_times: int, sfreq: float, window_s: float,
                         params: PreprocessingParams | None = None, chunk_s: float = CHUNK_S,
                         overlap_s: float = OVERLAP_S, name: str = "<array>"
                         ) -> Iterator[tuple[int, np.ndarray]]:
    """Cut a long recording into windows chunk by chunk (``make_windows`` on ``preprocess``).

    Parameters
    ----------
    read, n_times, sfreq, params, chunk_s, overlap_s
        See ``preprocess_chunked``.
    window_s : float
        Window length in seconds (ELM: 5 or 60); a whole number of output samples.
    name : str
        Recording name for errors.

    Returns
    -------
    iterator of (int, array of float32, shape (n_windows, 20, window_s * params.sfreq))
        Index of each block's first window in the recording, and the block's windows
        (C-contiguous). Together: the windows ``make_windows`` cuts from the whole
        recording's output, in order; the remainder is dropped.

    Raises
    ------
    TooShortError
        The recording is shorter than one window (raised at the call, not when iterating).
    """
    params = params or PreprocessingParams()
    w = int(round(window_s * params.sfreq))
    n_out = n_times_out(n_times, sfreq, params)
    if w <= 0:
        raise ValueError(f"window length must be positive, got {window_s} s")
    if n_out < w:
        raise TooShortError(name, f"{n_out / params.sfreq:.1f} s is shorter than one "
                                  f"{window_s:g} s window")
    chunks = plan_chunks(n_times, sfreq, params, chunk_s, overlap_s, window_s)
    return cut_windows(run_chunks(read, n_times, sfreq, params, chunks), chunks, w)


def cut_windows(blocks: Iterator[np.ndarray], chunks: list[Chunk], w: int
                ) -> Iterator[tuple[int, np.ndarray]]:
    """Cut each chunk's core into windows of ``w`` output samples (a core's remainder is dropped).

    Yields
    ------
    first : int
        Position of the block's first window in the recording.
    windows : array of float32, shape (n_windows, 20, w)
        C-contiguous.
    """
    for c, block in zip(chunks, blocks, strict=True):
        n = block.shape[1] // w
        if n == 0:
            continue
        win = block[:, : n * w].reshape(block.shape[0], n, w).transpose(1, 0, 2)
        yield c.out_start // w, np.ascontiguousarray(win)

"""EEG pictures for a search hit: a stacked-trace plot and a spectrogram of a span, as PNG bytes.

A neurophysiologist judges a hit by looking at its EEG. ``read_span`` reads seconds
``[start_s, end_s)`` of a recording as the indexer sees them (the 20-channel TCP
bipolar montage at 100 Hz after ELM preprocessing) and converts them to microvolts;
``waveform_png`` and ``spectrogram_png`` draw them. Reading is separate from drawing:
the drawing functions take arrays and never touch files.

Drawing uses matplotlib's object API only (``Figure`` and ``FigureCanvasAgg``, never
``pyplot``), so it is safe in a threaded server. matplotlib, scipy and the reading
pipeline are imported on first use: importing this module costs only numpy.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from elmsearch.signal.preprocessing import PreprocessingParams

logger = logging.getLogger(__name__)

MAX_SPAN_S = 60.0
"""Longest span ``read_span`` reads, seconds."""
MARGIN_S = 60.0
"""Context read on each side of a span of a long recording, seconds (``io.chunks.OVERLAP_S``)."""
DPI = 100
"""Dots per inch of the figures; sizes are given in pixels."""
_NICE_STEPS = (1.0, 2.0, 5.0)


def read_span(fname: str | os.PathLike, start_s: float, end_s: float,
              params: PreprocessingParams | None = None, *, margin_s: float = MARGIN_S
              ) -> tuple[np.ndarray, float, tuple[str, ...]]:
    """Read seconds ``[start_s, end_s)`` of a recording, preprocessed, in microvolts.

    The span is clamped to the recording (a negative start reads from 0 s, an end past
    the recording stops at its end); its first sample is the preprocessed sample
    ``round(max(start_s, 0) * params.sfreq)``. A recording whose span plus
    ``margin_s`` on each side covers the whole file is read and preprocessed whole,
    exactly as ``io.windowed.read_recording`` does; from a longer one only the span and
    its margins are read, preprocessed on the whole recording's output grid as
    ``io.chunks`` does for the indexer (same values to about 1e-3 of the signal's RMS
    with the default margin).

    Parameters
    ----------
    fname : path-like
        EDF, BDF, BrainVision or EEGLAB file with the 17 TCP montage electrodes.
    start_s, end_s : float
        Span in seconds from the start of the recording; at most ``MAX_SPAN_S`` long.
    params : PreprocessingParams | None
        Defaults to ELM's recipe (the one the index was built with).
    margin_s : float
        Context read on each side of the span, seconds; at least
        ``io.chunks.min_overlap_s(params)`` (the high-pass filter's reach).

    Returns
    -------
    data : array of float32, shape (20, n_times)
        TCP bipolar channels in microvolts (preprocessed units x 1e6 / ``params.scale``),
        clipped as preprocessing clips them (+-800 uV with ELM's recipe).
    sfreq : float
        ``params.sfreq`` (100 Hz).
    ch_names : tuple of str
        ``channels.TCP_CH_NAMES``.

    Raises
    ------
    ValueError
        The span is empty, negative, longer than ``MAX_SPAN_S``, not finite, or starts
        at or after the end of the recording.
    RecordingError
        The file cannot be read (``UnsupportedFileError``, ``CorruptFileError``,
        ``MissingChannelError``), as ``io.windowed.WindowedRecording`` and its ``read_span`` raise.
    """
    from elmsearch.errors import CorruptFileError
    from elmsearch.io.chunks import min_overlap_s, n_times_out, span_unit
    from elmsearch.io.windowed import WindowedRecording
    from elmsearch.signal.channels import TCP_CH_NAMES
    from elmsearch.signal.preprocessing import PreprocessingParams, output_ratio, preprocess

    params = params or PreprocessingParams()
    _check_span(start_s, end_s)
    if margin_s < min_overlap_s(params):
        raise ValueError(f"margin of {margin_s:g} s is shorter than the high-pass filter's reach "
                         f"({min_overlap_s(params):.1f} s)")
    reader = WindowedRecording(fname, params, min_duration=0.0)
    sfreq, n_times = reader.sfreq, reader.n_times
    n_out = n_times_out(n_times, sfreq, params)
    out_start = int(round(max(start_s, 0.0) * params.sfreq))
    out_stop = min(out_start + int(round((end_s - max(start_s, 0.0)) * params.sfreq)), n_out)
    if out_start >= n_out:
        raise ValueError(f"span {start_s:g}-{end_s:g} s starts at or after the end of the recording "
                         f"({n_out / params.sfreq:g} s)")
    if out_stop <= out_start:
        raise ValueError(f"span {start_s:g}-{end_s:g} s holds no {params.sfreq:g} Hz sample")

    up, down = output_ratio(sfreq, params)
    _, unit = span_unit(sfreq, params)
    margin = int(math.ceil(margin_s * params.sfreq))
    lo = max(0, out_start - margin) // unit * unit  # a whole span unit: on the whole file's grid
    hi = out_stop + margin
    read_stop = n_times if hi >= n_out else min(n_times, hi * down // up)
    read_start = lo * down // up
    x = reader.read_span(read_start, read_stop)
    if read_start == 0 and read_stop == n_times:  # the whole file, as read_recording
        y = preprocess(x, sfreq, params)
    else:
        y = preprocess(x, sfreq, params, offset=read_start, n_total=n_times)
    del x
    if y.shape[1] < out_stop - lo:  # cannot happen on a consistent grid; never return a short span
        raise CorruptFileError(fname, f"samples {read_start}-{read_stop} gave {y.shape[1]} output samples, "
                                      f"fewer than the {out_stop - lo} needed")
    data = y[:, out_start - lo : out_stop - lo] * np.float32(1e6 / params.scale)
    if not np.isfinite(data).all():
        raise CorruptFileError(fname, "preprocessing gave non-finite values (amplitudes beyond float32 range)")
    logger.debug("%s: span %.2f-%.2f s from native samples %d-%d of %d", fname, out_start / params.sfreq,
                 out_stop / params.sfreq, read_start, read_stop, n_times)
    return np.ascontiguousarray(data, dtype=np.float32), float(params.sfreq), tuple(TCP_CH_NAMES)


def _check_span(start_s: float, end_s: float) -> None:
    if not (math.isfinite(start_s) and math.isfinite(end_s)):
        raise ValueError(f"span {start_s}-{end_s} s is not finite")
    if end_s <= start_s:
        raise ValueError(f"empty span: end {end_s:g} s is not after start {start_s:g} s")
    if end_s - start_s > MAX_SPAN_S:
        raise ValueError(f"span of {end_s - start_s:g} s is longer than the {MAX_SPAN_S:g} s limit")


# ---- drawing ------------------------------------------------------------------------------------


def nice_ceil(x: float) -> float:
    """Smallest value of the 1-2-5 series (..., 10, 20, 50, 100, ...) at least ``x`` (> 0)."""
    if not (x > 0 and math.isfinite(x)):
        raise ValueError(f"expected a positive finite value, got {x}")
    exp = math.floor(math.log10(x))
    return next(v for v in (s * 10.0**exp for s in (*_NICE_STEPS, 10.0)) if v >= x * (1 - 1e-9))


def trace_spacing(data: np.ndarray) -> float:
    """Vertical distance between stacked traces, microvolts: a round value from the robust amplitude.

    Six robust standard deviations (1.4826 x the median absolute deviation, median over
    channels), rounded up in the 1-2-5 series; 100 uV for flat data.

    Parameters
    ----------
    data : array, shape (n_chans, n_times)
        Microvolts.

    Returns
    -------
    float
    """
    x = np.asarray(data, dtype=np.float64)
    if x.size == 0:
        return 100.0
    mad = np.median(np.abs(x - np.median(x, axis=-1, keepdims=True)), axis=-1)
    sigma = 1.4826 * float(np.median(mad))
    return nice_ceil(6 * sigma) if sigma > 1e-3 and math.isfinite(sigma) else 100.0


def _figure(width_px: int, height_px: int, layout: str | None = None) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if width_px < 100 or height_px < 100:
        raise ValueError(f"figure of {width_px}x{height_px} px is too small (at least 100x100)")
    # a hair over the size so that int() of width x dpi never rounds down a pixel
    fig = Figure(figsize=((width_px + 0.25) / DPI, (height_px + 0.25) / DPI), dpi=DPI, facecolor="white",
                 layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def _time_axis(ax, start_s: float, duration: float) -> None:
    from matplotlib.ticker import MaxNLocator, MultipleLocator

    ax.set_xlim(start_s, start_s + duration)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=12, steps=[1, 2, 5, 10], integer=duration >= 5))
    ax.xaxis.set_minor_locator(MultipleLocator(1.0))
    ax.set_xlabel("Time (s)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)


def waveform_png(data: np.ndarray, sfreq: float, ch_names: Sequence[str], start_s: float = 0.0, *,
                 title: str | None = None, width_px: int = 1100, height_px: int = 520) -> bytes:
    """Draw a clinical-style stacked trace plot of a span as a PNG.

    Channels run top to bottom in the given order (TCP order from ``read_span``), labelled
    on the left; the time axis is in seconds from the start of the recording; light
    vertical lines mark each second; a vertical bar on the right shows the amplitude
    scale, equal to the distance between traces (``trace_spacing``).

    Parameters
    ----------
    data : array, shape (n_chans, n_times)
        Microvolts.
    sfreq : float
        Sampling rate in Hz.
    ch_names : sequence of str
        One label per row of ``data``.
    start_s : float
        Time of the first sample, seconds from the start of the recording.
    title : str | None
        Drawn above the traces.
    width_px, height_px : int
        Size of the image in pixels.

    Returns
    -------
    bytes
        A PNG image of ``width_px`` x ``height_px`` pixels.
    """
    from matplotlib.transforms import blended_transform_factory

    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"expected data of shape (n_chans, n_times > 0), got {x.shape}")
    if len(ch_names) != x.shape[0]:
        raise ValueError(f"{len(ch_names)} channel names for {x.shape[0]} channels")
    if not sfreq > 0:
        raise ValueError(f"sampling rate must be positive, got {sfreq}")
    n_chans, n_times = x.shape
    spacing = trace_spacing(x)
    centred = x - np.median(x, axis=1, keepdims=True)
    offsets = -spacing * np.arange(n_chans)
    t = start_s + np.arange(n_times) / sfreq

    fig = _figure(width_px, height_px)
    fig.subplots_adjust(left=0.085, right=0.93, top=0.92 if title else 0.97, bottom=0.1)
    ax = fig.add_subplot()
    ax.plot(t, (centred + offsets[:, None]).T, color="black", linewidth=0.6, antialiased=True)
    ax.set_ylim(offsets[-1] - spacing, spacing)
    ax.set_yticks(offsets)
    ax.set_yticklabels(list(ch_names), fontsize=7)
    ax.tick_params(axis="y", length=0)
    _time_axis(ax, start_s, n_times / sfreq)
    ax.grid(True, which="both", axis="x", color="0.85", linewidth=0.5)
    ax.set_axisbelow(True)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    # amplitude scale bar: x in axes coordinates (just right of the traces), y in microvolts
    trans = blended_transform_factory(ax.transAxes, ax.transData)
    y0 = offsets[-1] - 0.75 * spacing
    ax.plot([1.015, 1.015], [y0, y0 + spacing], transform=trans, color="black", linewidth=1.5,
            clip_on=False, solid_capstyle="butt")
    ax.text(1.025, y0 + spacing / 2, f"{spacing:g} µV", transform=trans, fontsize=7, va="center",
            ha="left")
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    return _png(fig)


def spectrogram_arrays(data: np.ndarray, sfreq: float, start_s: float = 0.0, *, fmax: float = 50.0,
                       window_s: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median-over-channels power spectral density over time, in decibels.

    Hann windows of ``window_s`` seconds (default: a quarter of the span, between 0.5 and
    2 s, so that spans from 2 to 60 s give both useful frequency resolution and several
    columns), advancing by a tenth of a window, zero-padded to 0.25 Hz bins at 100 Hz
    (4 s of samples).

    Parameters
    ----------
    data, sfreq, start_s
        The span in microvolts, its sampling rate and the time of its first sample, as for
        ``waveform_png``.
    fmax : float
        Highest frequency kept, Hz (capped at the Nyquist frequency).
    window_s : float | None
        Window length in seconds; at most the span.

    Returns
    -------
    freqs : array, shape (n_freqs,)
        Hz, from 0 to ``fmax``.
    times : array, shape (n_segments,)
        Centre of each window, seconds from the start of the recording.
    power_db : array, shape (n_freqs, n_segments)
        ``10 log10`` of the median over channels of the power spectral density, dB re
        1 uV^2/Hz.
    """
    import scipy.signal as ss

    x = np.asarray(data, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"expected data of shape (n_chans, n_times >= 2), got {np.shape(data)}")
    n_times = x.shape[1]
    duration = n_times / sfreq
    if window_s is None:
        window_s = min(2.0, max(0.5, duration / 4))
    nperseg = min(max(int(round(window_s * sfreq)), 2), n_times)
    step = max(1, int(round(nperseg / 10)))
    nfft = max(nperseg, int(round(4 * sfreq)))
    freqs, times, sxx = ss.spectrogram(x, fs=sfreq, window="hann", nperseg=nperseg,
                                       noverlap=nperseg - step, nfft=nfft, detrend="constant",
                                       scaling="density", axis=-1)
    power = np.median(sxx, axis=0)
    keep = freqs <= min(fmax, sfreq / 2) + 1e-9
    tiny = np.finfo(np.float64).tiny
    return freqs[keep], times + start_s, 10 * np.log10(np.maximum(power[keep], tiny))


def spectrogram_png(data: np.ndarray, sfreq: float, start_s: float = 0.0, *, title: str | None = None,
                    width_px: int = 1100, height_px: int = 360, fmax: float = 50.0,
                    window_s: float | None = None, dynamic_range_db: float = 40.0) -> bytes:
    """Draw the time-frequency image of a span (``spectrogram_arrays``) as a PNG.

    Parameters
    ----------
    data, sfreq, start_s, fmax, window_s
        See ``spectrogram_arrays``.
    title : str | None
        Drawn above the image.
    width_px, height_px : int
        Size of the image in pixels.
    dynamic_range_db : float
        The colour scale spans this many dB below the highest power (99.5th percentile).

    Returns
    -------
    bytes
        A PNG image of ``width_px`` x ``height_px`` pixels.
    """
    freqs, times, power_db = spectrogram_arrays(data, sfreq, start_s, fmax=fmax, window_s=window_s)
    vmax = float(np.percentile(power_db, 99.5))
    vmin = max(float(power_db.min()), vmax - dynamic_range_db)
    if vmax <= vmin:
        vmin = vmax - 1.0

    fig = _figure(width_px, height_px, layout="constrained")
    ax = fig.add_subplot(facecolor="0.92")  # grey where no window is centred (the span's edges)
    mesh = ax.pcolormesh(times, freqs, power_db, shading="nearest", cmap="viridis", vmin=vmin, vmax=vmax,
                         rasterized=True)
    _time_axis(ax, start_s, np.asarray(data).shape[-1] / sfreq)
    ax.set_ylim(0, freqs[-1])
    ax.set_ylabel("Frequency (Hz)", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    cbar = fig.colorbar(mesh, ax=ax, pad=0.01, fraction=0.04)
    cbar.set_label("Power (dB re 1 µV²/Hz)", fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    return _png(fig)

"""Log band-power features of EEG windows: a classical baseline for evaluating embeddings.

Power per channel in the clinical bands (delta 1-4 Hz, theta 4-8, alpha 8-13, beta 13-30)
from Welch's periodogram, on the preprocessed windows ``make_windows`` returns
(20 TCP channels at 100 Hz). Numpy in, numpy out; no files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

CLASSIC_BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
}
"""Band name -> ``(low, high)`` in Hz; a band holds the frequencies ``low <= f < high``."""


def band_power(
    windows: np.ndarray,
    sfreq: float = 100.0,
    bands: Mapping[str, tuple[float, float]] = CLASSIC_BANDS,
    seconds: float = 2.0,
    eps: float = 1e-10,
) -> np.ndarray:
    """Log10 band power per window, channel and band.

    Parameters
    ----------
    windows : array, shape (n_windows, n_chans, n_times)
        EEG windows, e.g. from ``elmsearch.io.recording.make_windows`` (20 channels at 100 Hz).
    sfreq : float
        Sampling rate in Hz.
    bands : mapping
        Band name -> ``(low, high)`` in Hz, half-open ``[low, high)``; defaults to ``CLASSIC_BANDS``.
    seconds : float
        Welch segment length in seconds (50 % overlap, Hann window); shortened to the
        window length when the windows are shorter.
    eps : float
        Added to the power before the logarithm, so a flat channel gives ``log10(eps)``
        rather than ``-inf``.

    Returns
    -------
    array of float32, shape (n_windows, n_chans * n_bands)
        ``log10(power + eps)``, channel-major: column ``ch * n_bands + b`` is channel
        ``ch`` in the ``b``-th band (see ``band_feature_names``). Power is the PSD
        integrated over the band, in the squared unit of ``windows``.

    Raises
    ------
    ValueError
        ``windows`` is not 3-D, or a band holds no frequency bin at this resolution or
        lies above the Nyquist frequency.
    """
    x = np.asarray(windows, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"windows must have shape (n_windows, n_chans, n_times), got {x.shape}")
    n_windows, n_chans, n_times = x.shape
    if n_times < 2:
        raise ValueError(f"windows of {n_times} sample(s) are too short for a spectrum")
    nperseg = max(2, min(n_times, int(round(seconds * sfreq))))
    masks = _band_masks(np.fft.rfftfreq(nperseg, 1.0 / sfreq), sfreq, bands, nperseg)
    out = np.empty((n_windows, n_chans, len(masks)), dtype=np.float64)
    if n_windows:
        freqs, psd = welch(x, sfreq, nperseg)
        df = freqs[1] - freqs[0]
        for b, mask in enumerate(masks):
            out[..., b] = psd[..., mask].sum(axis=-1) * df
    return np.log10(out + eps).reshape(n_windows, n_chans * len(masks)).astype(np.float32)


def band_feature_names(ch_names: Sequence[str], bands: Mapping[str, tuple[float, float]] = CLASSIC_BANDS
                       ) -> list[str]:
    """Column names of ``band_power``'s output, e.g. ``"FP1-F7 alpha"``.

    Parameters
    ----------
    ch_names : sequence of str
        Channel names in the windows' row order (``channels.TCP_CH_NAMES`` for ELM windows).
    bands : mapping
        As for ``band_power``.

    Returns
    -------
    list of str
        ``len(ch_names) * len(bands)`` names, channel-major.
    """
    return [f"{ch} {band}" for ch in ch_names for band in bands]


def welch(x: np.ndarray, sfreq: float, nperseg: int) -> tuple[np.ndarray, np.ndarray]:
    """Welch's power spectral density along the last axis, as ``scipy.signal.welch`` with its defaults.

    Periodic Hann window, 50 % overlap, each segment's mean removed, one-sided density, the mean
    over segments; in numpy, so that a query file's band powers do not import SciPy (the tests
    check it against SciPy).

    Returns
    -------
    freqs : array, shape (nperseg // 2 + 1,)
    psd : array, shape (..., nperseg // 2 + 1)
    """
    x = np.asarray(x, np.float64)
    step = nperseg - nperseg // 2
    n_seg = (x.shape[-1] - nperseg // 2) // step
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(nperseg) / nperseg)
    starts = np.arange(n_seg) * step
    segs = x[..., starts[:, None] + np.arange(nperseg)]  # (..., n_seg, nperseg)
    segs = (segs - segs.mean(-1, keepdims=True)) * window
    psd = np.abs(np.fft.rfft(segs, axis=-1)) ** 2 / (sfreq * (window**2).sum())
    psd[..., 1 : nperseg // 2 + (nperseg % 2)] *= 2  # one-sided: every bin but DC (and Nyquist, even n)
    return np.fft.rfftfreq(nperseg, 1.0 / sfreq), psd.mean(-2)


def _band_masks(freqs: np.ndarray, sfreq: float, bands: Mapping[str, tuple[float, float]],
                nperseg: int) -> list[np.ndarray]:
    masks = []
    for name, (lo, hi) in bands.items():
        if not 0 <= lo < hi:
            raise ValueError(f"band {name!r}: need 0 <= low < high, got ({lo}, {hi}) Hz")
        if lo >= sfreq / 2:
            raise ValueError(f"band {name!r} ({lo:g}-{hi:g} Hz) is above the Nyquist frequency {sfreq / 2:g} Hz")
        mask = (freqs >= lo) & (freqs < hi)
        if not mask.any():
            raise ValueError(f"band {name!r} ({lo:g}-{hi:g} Hz) holds no frequency bin at "
                             f"{sfreq / nperseg:g} Hz resolution; use longer windows")
        masks.append(mask)
    return masks


PROFILE_BANDS: dict[str, tuple[float, float]] = {**CLASSIC_BANDS, "gamma": (30.0, 45.0)}
"""The bands of ``bandpower_profile``: the clinical four and 30-45 Hz."""


def bandpower_profile(windows, sfreq: float, index: np.ndarray | None = None, batch_size: int = 256) -> np.ndarray:
    """A recording's band-power map for prior cases: absolute and relative log power, mean over windows.

    The quantitative-EEG map of a recording: per channel and ``PROFILE_BANDS`` band, the mean
    over windows of ``log10`` band power, then the same relative to the channel's 1-45 Hz power.
    Unlike a model's spectral profile it needs no fitted statistics; the index standardises it
    over its archive (``indexer.similar_space``).

    Parameters
    ----------
    windows : array-like, shape (n_windows, n_chans, n_times)
        Preprocessed windows (anything that gives arrays for slices, e.g. windows spilled to disk).
    sfreq : float
        Their sampling rate in Hz.
    index : array of int | None
        The windows to use (default: all).
    batch_size : int
        Windows read at once.

    Returns
    -------
    array of float32, shape (2 * n_chans * 5,)
        Absolute log powers (channel-major, as ``band_power``), then relative ones.

    Raises
    ------
    ValueError
        No window to use.
    """
    keep = np.zeros(len(windows), bool)
    keep[np.arange(len(windows)) if index is None else np.asarray(index, np.int64)] = True
    if not keep.any():
        raise ValueError("a band-power profile needs at least one window")
    total = None
    for i in range(0, len(windows), batch_size):
        k = keep[i : i + batch_size]
        if not k.any():
            continue
        lp = band_power(np.asarray(windows[i : i + batch_size])[k], sfreq, PROFILE_BANDS).astype(np.float64)
        lp = lp.reshape(len(lp), -1, len(PROFILE_BANDS))  # (n, n_chans, n_bands)
        rel = lp - np.log10(np.sum(10.0**lp, axis=-1, keepdims=True))
        both = np.concatenate([lp.reshape(len(lp), -1), rel.reshape(len(lp), -1)], axis=1)
        total = both.sum(0) if total is None else total + both.sum(0)
    return (total / keep.sum()).astype(np.float32)

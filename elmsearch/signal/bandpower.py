"""Log band-power features of EEG windows: a classical baseline for evaluating embeddings.

Power per channel in the clinical bands (delta 1-4 Hz, theta 4-8, alpha 8-13, beta 13-30)
from Welch's periodogram, on the preprocessed windows ``make_windows`` returns
(20 TCP channels at 100 Hz). Numpy in, numpy out; no files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.signal import welch

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
        freqs, psd = welch(x, fs=sfreq, nperseg=nperseg, axis=-1)
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

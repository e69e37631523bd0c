"""Spectral features and profiles in numpy (torch-free: the compiled query path uses them).

``elmsearch.models.spectral_view.SpectralView`` computes the same features inside the EEG
encoder in torch; ``spectral_features`` here runs them from its exported arrays
(``spectral_view.spectral_arrays``).
"""

from __future__ import annotations

import numpy as np

BANDS: tuple[tuple[str, float, float], ...] = (
    ("delta", 1.0, 4.0), ("theta", 4.0, 8.0), ("alpha", 8.0, 13.0), ("beta", 13.0, 30.0), ("gamma", 30.0, 45.0),
)
"""``(name, low, high)`` in Hz, half-open ``[low, high)``."""

PDR_BAND = (6.0, 13.0)
EPS = 1e-10

SPECTRAL_ARRAYS = ("kernels", "scale", "band", "pdr_weights", "posterior", "mean", "std")
"""The ``SpectralView`` buffers that ``spectral_features`` needs (plus ``shape``)."""


def similar_representation(config: dict) -> str:
    """What prior-case search compares for a model config: ``"embedding"`` or ``"spectral"``.

    ``config["similar"]["representation"]`` as ``elmsearch train`` chose it on held-out
    patients; ``"spectral"`` only for an encoder with a spectral view.
    """
    rep = (config.get("similar") or {}).get("representation", "embedding")
    return "spectral" if rep == "spectral" and config["eeg"].get("spectral") else "embedding"


def spectral_features(windows: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """``SpectralView.forward`` in numpy: standardised features, shape (n_windows, n_features)."""
    n_chans, n_blocks, hop = (int(v) for v in arrays["shape"])
    x = np.asarray(windows, np.float32)
    blocks = x[..., : n_blocks * hop].reshape(len(x), n_chans, n_blocks, hop)
    spec = np.concatenate([blocks[:, :, :-1], blocks[:, :, 1:]], axis=-1) @ arrays["kernels"]
    half = arrays["kernels"].shape[1] // 2
    power = (spec[..., :half] ** 2 + spec[..., half:] ** 2).mean(2) * arrays["scale"]
    logbp = np.log10(power @ arrays["band"] + EPS).reshape(len(x), -1)
    moments = (power * arrays["posterior"]).sum(1) @ arrays["pdr_weights"]
    pdr = moments[:, 1:2] / (moments[:, 0:1] + EPS)
    return (np.concatenate([logbp, pdr], axis=1) - arrays["mean"]) / arrays["std"]


def spectral_profile(windows, arrays: dict[str, np.ndarray], dim: int, index: np.ndarray | None = None,
                     batch_size: int = 256) -> np.ndarray:
    """A recording's spectral profile for prior-case search, shape (dim,), float32, unit norm.

    The mean over windows of the standardised features, normalised and padded with zeros to
    the index dimension ``dim`` (padding leaves cosine similarities unchanged).

    Parameters
    ----------
    windows : array-like, shape (n_windows, n_chans, n_times)
        Anything that gives arrays for slices (e.g. windows spilled to disk).
    arrays : dict
        ``spectral_arrays`` of the model's view.
    dim : int
        Index dimension.
    index : array of int | None
        The windows to use (default: all).
    """
    keep = np.zeros(len(windows), bool)
    keep[np.arange(len(windows)) if index is None else np.asarray(index, np.int64)] = True
    if not keep.any():
        raise ValueError("a spectral profile needs at least one window")
    total = np.zeros(len(arrays["mean"]), np.float64)
    for i in range(0, len(windows), batch_size):
        k = keep[i : i + batch_size]
        if k.any():
            total += spectral_features(np.asarray(windows[i : i + batch_size])[k], arrays).sum(0, dtype=np.float64)
    mean = (total / keep.sum()).astype(np.float32)
    v = np.zeros(dim, np.float32)
    v[: len(mean)] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return v

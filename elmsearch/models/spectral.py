"""Spectral features and profiles in numpy (torch-free: the compiled query path uses them).

``elmsearch.models.spectral_view.SpectralView`` computes the same features inside the EEG
encoder in torch; ``spectral_features`` here runs them from its exported arrays
(``spectral_view.spectral_arrays``).
"""

from __future__ import annotations

import types

import numpy as np

from elmsearch.signal.channels import TCP_CH_NAMES

SPECTRAL_BANDS: tuple[tuple[str, float, float], ...] = (
    ("delta", 1.0, 4.0), ("theta", 4.0, 8.0), ("alpha", 8.0, 13.0), ("beta", 13.0, 30.0), ("gamma", 30.0, 45.0),
)
"""``(name, low, high)`` in Hz, half-open ``[low, high)``."""

PDR_BAND = (6.0, 13.0)
EPS = 1e-10

SPECTRAL_ARRAYS = ("kernels", "scale", "band", "pdr_weights", "posterior", "mirror", "mean", "std")
"""The ``SpectralView`` buffers that ``spectral_features`` needs (plus ``shape``)."""


def _mirror_electrode(e: str) -> str:
    """The homologous electrode of the other hemisphere (``F3`` -> ``F4``, ``Cz`` -> ``Cz``)."""
    digits = e.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    if not digits.isdigit():
        return e
    n = int(digits)
    return f"{e[: len(e) - len(digits)]}{n + 1 if n % 2 else n - 1}"


def design(n_chans: int, n_times: int, sfreq: float, bands=SPECTRAL_BANDS, segment_seconds: float = 2.0,
           pdr_band=PDR_BAND, ch_names=None) -> dict[str, np.ndarray]:
    """The fixed arrays of the spectral view (``SpectralView`` registers them as buffers).

    Parameters
    ----------
    n_chans, n_times : int
        Window shape.
    sfreq : float
        Sampling rate in Hz.
    bands : sequence of (name, low, high)
        Frequency bands in Hz.
    segment_seconds : float
        Welch segment length (shortened to the window when the window is shorter; even).
    pdr_band : (low, high)
        Band of the posterior dominant frequency in Hz.
    ch_names : sequence of str | None
        Bipolar derivations ``"A-B"`` (default: the TCP montage when ``n_chans`` is 20). The
        posterior rhythm is read from those with an O1/O2 electrode; homologous left/right
        derivations give the asymmetry features. Without names: all rows, no asymmetry.

    Returns
    -------
    dict
        ``shape`` (n_chans, n_blocks, hop), ``kernels`` (segment, 2 n_freqs), ``scale``
        (n_freqs,), ``band`` (n_freqs, n_bands), ``pdr_weights`` (n_freqs, 2), ``posterior``
        (n_chans, 1), ``mirror`` (n_pairs, n_chans).
    """
    if ch_names is None and n_chans == len(TCP_CH_NAMES):
        ch_names = TCP_CH_NAMES
    seg = max(2, min(int(n_times), int(round(segment_seconds * sfreq))))
    seg -= seg % 2  # an even segment: two half-segment blocks
    hop = seg // 2
    freqs = np.fft.rfftfreq(seg, 1.0 / sfreq)
    keep = freqs <= max(float(b[2]) for b in bands) + 1e-9
    keep[: np.argmax(freqs >= min(float(b[1]) for b in bands))] = False  # nothing below the lowest band
    keep |= (freqs >= pdr_band[0]) & (freqs < pdr_band[1])
    f = freqs[keep]
    n = np.arange(seg)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / seg)  # periodic Hann, as scipy's welch
    cos = hann[None] * np.cos(2 * np.pi * f[:, None] * n[None] / sfreq)
    sin = hann[None] * np.sin(2 * np.pi * f[:, None] * n[None] / sfreq)
    kernels = np.concatenate([cos - cos.mean(1, keepdims=True), sin - sin.mean(1, keepdims=True)])  # detrended
    # one-sided density (scipy's scaling), integrated over each bin: x df
    scale = np.where((f == 0) | (np.isclose(f, sfreq / 2) & (seg % 2 == 0)), 1.0, 2.0)
    scale = scale / (sfreq * (hann**2).sum()) * (sfreq / seg)
    band = np.zeros((len(f), len(bands)))
    for b, (name, lo, hi) in enumerate(bands):
        mask = (f >= lo) & (f < hi)
        if not mask.any():
            raise ValueError(f"band {name!r} ({lo:g}-{hi:g} Hz) holds no frequency bin at "
                             f"{sfreq / seg:g} Hz resolution")
        band[mask, b] = 1.0
    pdr = ((f >= pdr_band[0]) & (f < pdr_band[1])).astype(float)
    pairs = [tuple(c.upper().split("-", 1)) for c in ch_names] if ch_names is not None else []
    post = [i for i, p in enumerate(pairs) if {"O1", "O2"} & set(p)] or list(range(n_chans))
    posterior = np.zeros((n_chans, 1))  # weights the channels of (b, chans, n_freqs)
    posterior[post] = 1.0 / len(post)
    rows = []
    for i, (a, b) in enumerate(pairs):
        m = (_mirror_electrode(a), _mirror_electrode(b))
        j = next((j for j, p in enumerate(pairs) if p in (m, m[::-1])), None)
        if j is not None and j != i and (a[-1:].isdigit() and int(a[-1]) % 2 or b[-1:].isdigit() and int(b[-1]) % 2):
            row = np.zeros(n_chans)
            row[i], row[j] = 1.0, -1.0
            rows.append(row)
    mirror = np.array(rows) if rows else np.zeros((1, n_chans))
    out = {"shape": np.array([n_chans, int(n_times) // hop, hop], np.int64), "kernels": kernels.T, "scale": scale,
           "band": band, "pdr_weights": np.stack([pdr, pdr * f], 1), "posterior": posterior, "mirror": mirror}
    return {k: v if k == "shape" else v.astype(np.float32) for k, v in out.items()}


def n_features(n_chans: int, n_bands: int) -> int:
    """Length of the feature vector: band powers, PDR, and 3 region-free summaries per band."""
    return n_chans * n_bands + 1 + 3 * n_bands


def raw_features(x, a: dict, ops) -> object:
    """The unstandardised features, computed with ``ops`` (numpy's or torch's; the same code).

    ``x`` has shape (batch, n_chans, n_times); ``a`` holds ``design``'s arrays. Returns
    (batch, n_features): log10 band power per channel and band (channel-major); the posterior
    dominant frequency; per band the mean and the largest absolute left-right difference of
    homologous derivations' log power (focal asymmetry wherever it is); per band the spread
    of log power over channels.
    """
    n_chans, n_blocks, hop = (int(v) for v in a["shape"])
    # Welch segments from two views of the same half-segment blocks: segment i is blocks
    # i and i + 1 (50 % overlap), so the whole transform is slicing, reshapes and products.
    blocks = x[..., : n_blocks * hop].reshape(-1, n_chans, n_blocks, hop)
    spec = ops.cat([blocks[:, :, :-1], blocks[:, :, 1:]], -1) @ a["kernels"]  # (b, chans, n_seg, 2 n_freqs)
    half = a["kernels"].shape[1] // 2
    power = ops.mean(spec[..., :half] ** 2 + spec[..., half:] ** 2, 2) * a["scale"]  # (b, chans, n_freqs)
    logbp = ops.log10(power @ a["band"] + EPS)  # (b, chans, bands)
    moments = ops.sum(power * a["posterior"], 1) @ a["pdr_weights"]
    pdr = moments[:, 1:2] / (moments[:, 0:1] + EPS)
    asym = ops.abs(a["mirror"] @ logbp)  # (b, pairs, bands)
    spread = ops.sqrt(ops.mean((logbp - ops.mean(logbp, 1)[:, None]) ** 2, 1) + EPS)
    flat = logbp.reshape(logbp.shape[0], -1)
    return ops.cat([flat, pdr, ops.mean(asym, 1), ops.amax(asym, 1), spread], 1)


NUMPY_OPS = types.SimpleNamespace(
    cat=lambda xs, axis: np.concatenate(xs, axis=axis), mean=lambda x, axis: x.mean(axis=axis),
    sum=lambda x, axis: x.sum(axis=axis), amax=lambda x, axis: x.max(axis=axis),
    log10=np.log10, abs=np.abs, sqrt=np.sqrt)


def spectral_features(windows: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """``SpectralView.forward`` in numpy: standardised features, shape (n_windows, n_features)."""
    x = np.asarray(windows, np.float32)
    return (raw_features(x, arrays, NUMPY_OPS) - arrays["mean"]) / arrays["std"]


def spectral_profile(windows, arrays: dict[str, np.ndarray], dim: int, index: np.ndarray | None = None,
                     batch_size: int = 64) -> np.ndarray:
    """A recording's spectral profile for prior-case search, shape (dim,), float32, unit norm.

    The mean over windows of the standardised log band powers (channels x bands: the
    quantitative-EEG map), normalised and padded with zeros to the index dimension ``dim``
    (padding leaves cosine similarities unchanged). The other features (PDR, asymmetry,
    spread) are left out: on EEGMAT they lowered same-subject Recall@5 over 72 recordings
    from 0.917 to 0.889 (``bench/eval_eegmat.py``); they serve the text-aligned embedding.

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
    n_bp = int(arrays["shape"][0]) * arrays["band"].shape[1]
    total = np.zeros(n_bp, np.float64)
    for i in range(0, len(windows), batch_size):
        k = keep[i : i + batch_size]
        if k.any():
            feats = spectral_features(np.asarray(windows[i : i + batch_size])[k], arrays)[:, :n_bp]
            total += feats.sum(0, dtype=np.float64)
    mean = (total / keep.sum()).astype(np.float32)
    v = np.zeros(dim, np.float32)
    v[: len(mean)] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return v

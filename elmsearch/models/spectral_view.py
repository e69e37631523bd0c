"""A spectral view of EEG windows inside the EEG tower: log band power and the posterior rhythm.

Clinical EEG findings live largely in spectra: slowing (delta/theta up), the posterior
dominant rhythm (alpha peak frequency), focal asymmetry (one side's band power). The ELM
ResNet sees the raw trace; this module gives the projection head those numbers directly:

- log10 band power per channel in delta 1-4, theta 4-8, alpha 8-13, beta 13-30 and
  gamma 30-45 Hz (Welch: 2 s Hann segments, 50 % overlap, each segment's mean removed;
  the same numbers as ``elmsearch.bandpower.band_power`` with these bands);
- the posterior dominant frequency: the power-weighted mean frequency in 6-13 Hz over the
  derivations that end at O1/O2.

Every step is a fixed convolution or matrix product (the short-time Fourier transform is a
product of overlapping segments with Hann-tapered cosine and sine kernels), so the module exports to ONNX
and OpenVINO with the rest of the encoder. Features are standardised with a mean and
standard deviation fitted once on training windows (``fit``), stored with the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from elmsearch.models.spectral import BANDS, EPS, PDR_BAND, SPECTRAL_ARRAYS


class SpectralView(nn.Module):
    """Standardised log band power per channel and band, plus the posterior dominant frequency.

    Parameters
    ----------
    n_chans, n_times : int
        Window shape.
    sfreq : float
        Sampling rate in Hz.
    bands : sequence of (name, low, high)
        Frequency bands in Hz.
    segment_seconds : float
        Welch segment length (shortened to the window when the window is shorter).
    pdr_band : (low, high)
        Band of the posterior dominant frequency in Hz.
    posterior : sequence of int | None
        Rows of the derivations that end at an occipital electrode (default: the TCP
        montage's ``T5-O1, P3-O1, P4-O2, T6-O2`` when ``n_chans`` is 20, else all rows).

    Notes
    -----
    Output shape (batch, n_chans * n_bands + 1), channel-major band powers then the PDR.
    """

    def __init__(self, n_chans: int, n_times: int, sfreq: float, bands: Sequence = BANDS,
                 segment_seconds: float = 2.0, pdr_band: Sequence[float] = PDR_BAND,
                 posterior: Sequence[int] | None = None):
        super().__init__()
        self.n_chans, self.n_times, self.sfreq = int(n_chans), int(n_times), float(sfreq)
        self.band_names = [str(b[0]) for b in bands]
        seg = max(2, min(self.n_times, int(round(segment_seconds * sfreq))))
        seg -= seg % 2  # an even segment: two half-segment blocks
        self.segment, self.hop = seg, seg // 2
        self.n_blocks = self.n_times // self.hop  # n_blocks - 1 segments, as scipy's welch
        freqs = np.fft.rfftfreq(seg, 1.0 / sfreq)
        keep = freqs <= max(float(b[2]) for b in bands) + 1e-9
        keep[: np.argmax(freqs >= min(float(b[1]) for b in bands))] = False  # nothing below the lowest band
        keep |= (freqs >= pdr_band[0]) & (freqs < pdr_band[1])
        f = freqs[keep]
        n = np.arange(seg)
        hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / seg)  # periodic Hann, as scipy's welch
        cos = hann[None] * np.cos(2 * np.pi * f[:, None] * n[None] / sfreq)
        sin = hann[None] * np.sin(2 * np.pi * f[:, None] * n[None] / sfreq)
        kernels = np.concatenate([cos - cos.mean(1, keepdims=True), sin - sin.mean(1, keepdims=True)])
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
        post = list(posterior) if posterior is not None else ([4, 5, 8, 9] if self.n_chans == 20 else
                                                              list(range(self.n_chans)))
        chan = np.zeros((self.n_chans, 1))  # (chans, 1): weights the channels of (b, chans, n_freqs)
        chan[post] = 1.0 / len(post)
        self.register_buffer("kernels", torch.tensor(kernels.T, dtype=torch.float32), persistent=False)
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
        self.register_buffer("band", torch.tensor(band, dtype=torch.float32), persistent=False)
        self.register_buffer("pdr_weights", torch.tensor(np.stack([pdr, pdr * f], 1), dtype=torch.float32),
                             persistent=False)
        self.register_buffer("posterior", torch.tensor(chan, dtype=torch.float32), persistent=False)
        self.n_features = self.n_chans * len(bands) + 1
        self.register_buffer("mean", torch.zeros(self.n_features))
        self.register_buffer("std", torch.ones(self.n_features))
        self.register_buffer("n_fit", torch.zeros((), dtype=torch.int64))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Unstandardised features of windows (batch, n_chans, n_times), shape (batch, n_features)."""
        # Welch segments from two views of the same half-segment blocks: segment i is blocks
        # i and i + 1 (50 % overlap), so the whole transform is slicing, reshapes and products.
        blocks = x[..., : self.n_blocks * self.hop].reshape(-1, self.n_chans, self.n_blocks, self.hop)
        segments = torch.cat([blocks[:, :, :-1], blocks[:, :, 1:]], dim=-1)  # (b, chans, n_seg, segment)
        spec = segments @ self.kernels  # (b, chans, n_seg, 2 n_freqs)
        half = self.kernels.shape[1] // 2
        power = (spec[..., :half] ** 2 + spec[..., half:] ** 2).mean(2) * self.scale  # (b, chans, n_freqs)
        logbp = torch.log10(power @ self.band + EPS).flatten(1)
        psd = (power * self.posterior).sum(1)  # (b, n_freqs)
        moments = psd @ self.pdr_weights
        pdr = moments[:, 1:2] / (moments[:, 0:1] + EPS)
        return torch.cat([logbp, pdr], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised features, shape (batch, n_features)."""
        return (self.raw(x) - self.mean) / self.std

    @torch.no_grad()
    def fit(self, windows: Sequence[np.ndarray], batch_size: int = 256) -> None:
        """Set the standardisation from training windows (arrays of shape (n, n_chans, n_times))."""
        total = torch.zeros(self.n_features, dtype=torch.float64)
        sq = torch.zeros(self.n_features, dtype=torch.float64)
        count = 0
        for w in windows:
            for i in range(0, len(w), batch_size):
                f = self.raw(torch.as_tensor(np.asarray(w[i : i + batch_size], np.float32),
                                             device=self.mean.device)).double().cpu()
                total += f.sum(0)
                sq += (f**2).sum(0)
                count += len(f)
        if count == 0:
            return
        mean = total / count
        std = (sq / count - mean**2).clamp_min(0).sqrt()
        self.mean.copy_(mean.float())
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)).float())
        self.n_fit.fill_(count)

    def feature_names(self, ch_names: Sequence[str]) -> list[str]:
        """Names of the features, e.g. ``"FP1-F7 alpha"`` and ``"posterior dominant frequency"``."""
        return [f"{c} {b}" for c in ch_names for b in self.band_names] + ["posterior dominant frequency"]


def spectral_from_config(n_chans: int, n_times: int, sfreq: float, cfg: dict | None) -> SpectralView | None:
    """The spectral view a config block asks for (None: no spectral view)."""
    if not cfg:
        return None
    return SpectralView(n_chans, n_times, sfreq, [tuple(b) for b in cfg.get("bands", BANDS)],
                        float(cfg.get("segment_seconds", 2.0)), tuple(cfg.get("pdr_band", PDR_BAND)))



def spectral_arrays(view: SpectralView) -> dict[str, np.ndarray]:
    """The view's constants and statistics as float32 arrays (``spectral.*`` in ``heads.npz``)."""
    out = {k: getattr(view, k).detach().cpu().numpy().astype(np.float32) for k in SPECTRAL_ARRAYS}
    out["shape"] = np.array([view.n_chans, view.n_blocks, view.hop], np.int64)
    return out

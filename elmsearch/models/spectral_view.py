"""A spectral view of EEG windows inside the EEG tower: log band power and the posterior rhythm.

Clinical EEG findings live largely in spectra: slowing (delta/theta up), the posterior
dominant rhythm (alpha peak frequency), focal asymmetry (one side's band power). The ELM
ResNet sees the raw trace; this module gives the projection head those numbers directly:

- log10 band power per channel in delta 1-4, theta 4-8, alpha 8-13, beta 13-30 and
  gamma 30-45 Hz (Welch: 2 s Hann segments, 50 % overlap, each segment's mean removed;
  the same numbers as ``elmsearch.signal.bandpower.band_power`` with these bands);
- the posterior dominant frequency: the power-weighted mean frequency in 6-13 Hz over the
  derivations that end at O1/O2;
- per band, the mean and the largest absolute difference of log power between homologous
  left and right derivations (focal asymmetry, whichever region it is in), and the spread of
  log power over channels.

Every step is a fixed matrix product, slice or elementwise function (the short-time Fourier
transform is a product of overlapping segments with Hann-tapered cosine and sine kernels), so
the module exports to ONNX and OpenVINO with the rest of the encoder; the same code
(``elmsearch.models.spectral.raw_features``) runs in numpy on the torch-free query path.
Features are standardised with a mean and standard deviation fitted once on training windows
(``fit``), stored with the weights.
"""

from __future__ import annotations

import types
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from elmsearch.models.spectral import PDR_BAND, SPECTRAL_ARRAYS, SPECTRAL_BANDS, design, n_features, raw_features

MIN_STD = 0.01
"""Floor of a feature's standard deviation (log10 units, Hz): a feature that hardly varies in
training is not blown up into noise."""

TORCH_OPS = types.SimpleNamespace(
    cat=lambda xs, axis: torch.cat(xs, dim=axis), mean=lambda x, axis: x.mean(dim=axis),
    sum=lambda x, axis: x.sum(dim=axis), amax=lambda x, axis: torch.amax(x, dim=axis),
    log10=torch.log10, abs=torch.abs, sqrt=torch.sqrt)


class SpectralView(nn.Module):
    """The spectral view: standardised features of ``elmsearch.models.spectral.raw_features``.

    Parameters
    ----------
    n_chans, n_times, sfreq, bands, segment_seconds, pdr_band, ch_names
        As for ``elmsearch.models.spectral.design``.

    Notes
    -----
    Output shape (batch, n_features). The standardisation (``mean``, ``std``) is set by
    ``fit`` and saved with the weights; the design arrays are rebuilt from the config.
    """

    def __init__(self, n_chans: int, n_times: int, sfreq: float, bands: Sequence = SPECTRAL_BANDS,
                 segment_seconds: float = 2.0, pdr_band: Sequence[float] = PDR_BAND,
                 ch_names: Sequence[str] | None = None):
        super().__init__()
        self.n_chans, self.n_times, self.sfreq = int(n_chans), int(n_times), float(sfreq)
        arrays = design(n_chans, n_times, sfreq, bands, segment_seconds, pdr_band, ch_names)
        self.shape = arrays.pop("shape")
        self.n_blocks, self.hop = int(self.shape[1]), int(self.shape[2])
        for name, value in arrays.items():
            self.register_buffer(name, torch.from_numpy(value), persistent=False)
        self.n_features = n_features(self.n_chans, len(bands))
        self.register_buffer("mean", torch.zeros(self.n_features))
        self.register_buffer("std", torch.ones(self.n_features))
        self.register_buffer("n_fit", torch.zeros((), dtype=torch.int64))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Unstandardised features of windows (batch, n_chans, n_times), shape (batch, n_features)."""
        return raw_features(x, {"shape": self.shape, **dict(self.named_buffers())}, TORCH_OPS)

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
        self.std.copy_(std.clamp_min(MIN_STD).float())
        self.n_fit.fill_(count)


def spectral_from_config(n_chans: int, n_times: int, sfreq: float, cfg: dict | None) -> SpectralView | None:
    """The spectral view a config block asks for (None: no spectral view)."""
    if not cfg:
        return None
    return SpectralView(n_chans, n_times, sfreq, [tuple(b) for b in cfg.get("bands", SPECTRAL_BANDS)],
                        float(cfg.get("segment_seconds", 2.0)), tuple(cfg.get("pdr_band", PDR_BAND)))



def spectral_arrays(view: SpectralView) -> dict[str, np.ndarray]:
    """The view's constants and statistics as float32 arrays (``spectral.*`` in ``heads.npz``)."""
    out = {k: getattr(view, k).detach().cpu().numpy().astype(np.float32) for k in SPECTRAL_ARRAYS}
    out["shape"] = np.asarray(view.shape, np.int64)
    return out

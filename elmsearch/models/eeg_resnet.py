"""The ELM EEG encoder: a 1-D ResNet with parallel multi-scale convolutions.

Parameter names match the ELM authors' released checkpoints, so their state dicts
load strictly (``conv1_layers.K.1.weight``, ``res_blocks.N.stream_bn.*``, ``proj.3.weight``).
"""

from __future__ import annotations

import torch
from torch import nn

from elmsearch.models.spectral_view import spectral_from_config


def _multiscale(in_chans: int, params: list[list[int]], stride_one: bool = False) -> nn.ModuleList:
    """Parallel reflection-padded convolutions, one per (kernel, out_chans, stride)."""
    return nn.ModuleList(
        nn.Sequential(
            nn.ReflectionPad1d((k // 2, (k - 1) // 2)),
            nn.Conv1d(in_chans, out, kernel_size=k, stride=1 if stride_one else s),
        )
        for k, out, s in params
    )


class ResidualBlock(nn.Module):
    """Two multi-scale conv layers, a 1x1 skip path, a sum, then max-pooling.

    Parameters
    ----------
    width : int
        Input and output channels (sum of the branch widths).
    params : list of [kernel, out_chans, stride]
        One entry per parallel branch.
    pool_size : int
        Max-pool kernel and stride after the sum (0: none).
    """

    def __init__(self, width: int, params: list[list[int]], pool_size: int):
        super().__init__()
        self.conv1_layers = _multiscale(width, params)
        self.bn1 = nn.BatchNorm1d(width)
        self.elu1 = nn.ELU()
        self.conv2_layers = _multiscale(width, params, stride_one=True)
        self.bn2 = nn.BatchNorm1d(width)
        self.stream_conv_layers = nn.ModuleList(
            nn.Conv1d(width, out, kernel_size=1, stride=s) for _, out, s in params
        )
        self.stream_bn = nn.BatchNorm1d(width)
        self.pool = nn.MaxPool1d(pool_size, pool_size) if pool_size > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.elu1(self.bn1(torch.cat([conv(x) for conv in self.conv1_layers], dim=1)))
        out = self.bn2(torch.cat([conv(out) for conv in self.conv2_layers], dim=1))
        skip = self.stream_bn(torch.cat([conv(x) for conv in self.stream_conv_layers], dim=1))
        return self.pool(out + skip)


class EEGResNet(nn.Module):
    """ELM's EEG encoder.

    Parameters
    ----------
    n_chans : int
        Input channels (20 TCP derivations).
    n_times : int
        Samples per window (500 for 5 s, 6000 for 60 s at 100 Hz).
    sfreq : float
        Sampling rate the encoder was trained at (checked by ``check_input``).
    conv1_params, res_params : list of [kernel, out_chans, stride]
        Parallel branches of the stem and of every residual block.
    pool_sizes : list of int
        Max-pool size of each residual block (ELM 5 s: 3,2,2,2; 60 s: 4,4,4,4).
    proj_dims : list of int
        Projection head ``Linear(rep, d0)-BN-ELU-Linear(d0, d1, bias=False)``.
    spectral : dict | None
        Config of a spectral view (``elmsearch.models.spectral``) whose standardised band
        powers are concatenated to the ResNet features before the projection head; None
        (ELM's encoder): none.
    """

    def __init__(self, n_chans: int = 20, n_times: int = 500, sfreq: float = 100.0,
                 conv1_params=((4, 32, 1), (8, 32, 1), (16, 32, 1)),
                 res_params=((4, 32, 1), (8, 32, 1), (16, 32, 1)),
                 pool_sizes=(3, 2, 2, 2), proj_dims=(512, 256), spectral: dict | None = None):
        super().__init__()
        self.n_chans, self.n_times, self.sfreq = int(n_chans), int(n_times), float(sfreq)
        width = sum(p[1] for p in conv1_params)
        if width != sum(p[1] for p in res_params):
            raise ValueError("stem and residual widths must match")
        self.rep_dim = width
        self.conv1_layers = _multiscale(n_chans, [list(p) for p in conv1_params])
        self.bn1 = nn.BatchNorm1d(width)
        self.elu1 = nn.ELU()
        self.res_blocks = nn.Sequential(
            *(ResidualBlock(width, [list(p) for p in res_params], p) for p in pool_sizes)
        )
        self.spectral = spectral_from_config(n_chans, n_times, sfreq, spectral)
        self.feature_dim = width + (self.spectral.n_features if self.spectral is not None else 0)
        self.proj = nn.Sequential(
            nn.Linear(self.feature_dim, proj_dims[0]),
            nn.BatchNorm1d(proj_dims[0]),
            nn.ELU(),
            nn.Linear(proj_dims[0], proj_dims[1], bias=False),
        )
        self.out_dim = int(proj_dims[1])

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` has shape (batch, n_chans, n_times)."""
        if x.ndim != 3 or x.shape[1] != self.n_chans or x.shape[2] != self.n_times:
            raise ValueError(
                f"expected windows of shape (batch, {self.n_chans}, {self.n_times}) "
                f"({self.n_times / self.sfreq:g} s at {self.sfreq:g} Hz), got {tuple(x.shape)}"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Representation before the projection head, shape (batch, feature_dim).

        The ResNet's ``rep_dim`` features, then the spectral view's when there is one.
        """
        h = self.elu1(self.bn1(torch.cat([conv(x) for conv in self.conv1_layers], dim=1)))
        h = self.res_blocks(h).mean(dim=-1)
        return torch.cat([h, self.spectral(x)], dim=1) if self.spectral is not None else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project windows to the shared space, shape (batch, out_dim), not normalised."""
        self.check_input(x)
        return self.proj(self.features(x))

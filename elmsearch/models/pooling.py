"""Recording-level pooling of window embeddings: gated attention MIL, and the mean."""

from __future__ import annotations

import torch
from torch import nn


class AttentionPool(nn.Module):
    """Gated attention multiple-instance pooling (Ilse et al., ICML 2018).

    ``a_i = softmax_i(w^T (tanh(V z_i) * sigmoid(U z_i)))``, pooled ``sum_i a_i z_i``.

    Parameters
    ----------
    dim : int
        Embedding size of the instances.
    hidden : int
        Attention hidden size.
    """

    def __init__(self, dim: int = 256, hidden: int = 128):
        super().__init__()
        self.V = nn.Linear(dim, hidden)
        self.U = nn.Linear(dim, hidden)
        self.w = nn.Linear(hidden, 1, bias=False)

    def weights(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights, shape (..., n_instances), summing to one over instances.

        ``z`` has shape (..., n_instances, dim); ``mask`` (..., n_instances) marks real ones.
        """
        logits = self.w(torch.tanh(self.V(z)) * torch.sigmoid(self.U(z))).squeeze(-1)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pool instances (..., n_instances, dim) into (..., dim)."""
        return (self.weights(z, mask).unsqueeze(-1) * z).sum(-2)


def mean_pool(z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over instances (ELM's probe), optionally masked."""
    if mask is None:
        return z.mean(-2)
    m = mask.unsqueeze(-1).to(z.dtype)
    return (z * m).sum(-2) / m.sum(-2).clamp(min=1)

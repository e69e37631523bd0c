"""Contrastive objectives: ELM's multiple-instance InfoNCE and a pairwise CLIP loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mil_infonce(eeg_emb: torch.Tensor, text_emb: torch.Tensor, eeg_ids: torch.Tensor,
                text_ids: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """Symmetric multiple-instance InfoNCE (ELM's ``x,y`` alignment).

    Every EEG window and every report segment of the same recording is a positive
    pair; everything else in the batch is a negative. Each window's loss averages
    the log-probabilities of its positives among all segments, each segment's among
    all windows; the result is the mean of the two directions.

    Parameters
    ----------
    eeg_emb : tensor, shape (n_windows, dim)
    text_emb : tensor, shape (n_segments, dim)
    eeg_ids, text_ids : tensor of int, shapes (n_windows,), (n_segments,)
        Recording of each window / segment; every id must appear on both sides.
    temperature : float | tensor
        Softmax temperature (ELM: 0.3).

    Returns
    -------
    tensor, scalar
    """
    sim = F.normalize(eeg_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T / temperature
    pos = (eeg_ids[:, None] == text_ids[None, :]).to(sim.dtype)
    n_row, n_col = pos.sum(1), pos.sum(0)
    if (n_row == 0).any() or (n_col == 0).any():
        raise ValueError("every window and segment needs a positive on the other side")
    text_given_eeg = -(pos * F.log_softmax(sim, dim=1)).sum(1) / n_row
    eeg_given_text = -(pos * F.log_softmax(sim, dim=0)).sum(0) / n_col
    return (text_given_eeg.mean() + eeg_given_text.mean()) / 2


def clip_loss(a: torch.Tensor, b: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE over matched rows of ``a`` and ``b`` (shape (n, dim) each)."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

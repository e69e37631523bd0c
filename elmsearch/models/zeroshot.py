"""Zero-shot classification of recordings against free-text prompts."""

from __future__ import annotations

import numpy as np

from elmsearch.models.protocol import EmbeddingModel

# Prompt-template ensemble: each prompt is embedded in every template and averaged.
TEMPLATES: tuple[str, ...] = (
    "{}",
    "IMPRESSION: {}",
    "DESCRIPTION OF THE RECORD: {}",
    "The EEG shows {}.",
    "EEG findings: {}.",
)


def prompt_embeddings(model: EmbeddingModel, prompts: list[str],
                      templates: tuple[str, ...] = TEMPLATES) -> np.ndarray:
    """One normalised embedding per prompt, averaged over templates, shape (n_prompts, 256)."""
    texts = [t.format(p.strip().rstrip(".")) for p in prompts for t in templates]
    emb = model.encode_text(texts).reshape(len(prompts), len(templates), -1).mean(1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def zero_shot(model: EmbeddingModel, recording_emb: np.ndarray, prompts: list[str],
              templates: tuple[str, ...] = TEMPLATES) -> np.ndarray:
    """Probabilities of each prompt for each recording.

    Parameters
    ----------
    model : EmbeddingModel
        A model with a trained text side (torch or compiled).
    recording_emb : array, shape (n_recordings, 256) or (256,)
        Normalised recording embeddings (``model.pool_windows``).
    prompts : list of str
        Class descriptions, e.g. ``["normal EEG", "abnormal EEG with focal slowing"]``.
    templates : tuple of str
        Prompt templates for ensembling.

    Returns
    -------
    array, shape (n_recordings, n_prompts) (or (n_prompts,) for one recording)
        Softmax over prompt similarities at the model's temperature, in prompt order.
    """
    if len(prompts) < 2:
        raise ValueError("zero-shot classification needs at least two prompts")
    single = np.ndim(recording_emb) == 1
    rec = np.atleast_2d(recording_emb)
    logits = rec @ prompt_embeddings(model, prompts, templates).T / model.temperature
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return p[0] if single else p

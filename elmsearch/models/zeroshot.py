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


WINDOW_PERCENTILE = 100.0  # the window evidence of ``zero_shot_windows``: each prompt's best window
WINDOW_WEIGHT = 0.5  # its share beside the pooled recording's similarity


def zero_shot_windows(model: EmbeddingModel, window_emb: np.ndarray, prompts: list[str],
                      recording_emb: np.ndarray | None = None, percentile: float = WINDOW_PERCENTILE,
                      weight: float = WINDOW_WEIGHT, templates: tuple[str, ...] = TEMPLATES) -> np.ndarray:
    """Zero-shot from the minutes: each prompt scored by its similarity to the recording's windows.

    An intermittent finding (a few minutes of spike-and-wave in an hour) is diluted when the
    windows are pooled first. Here each prompt gets the ``percentile``-th percentile of its
    similarities to the windows (100: its best window), mixed with the pooled recording's
    similarity (``1 - weight`` of it) when ``recording_emb`` is given, then the softmax over the
    prompts at the model's temperature, as ``zero_shot``. Any number of prompts.

    Parameters
    ----------
    model : EmbeddingModel
        A model with a trained text side.
    window_emb : array, shape (n_windows, 256)
        The recording's normalised window embeddings.
    prompts : list of str
        Two or more class descriptions.
    recording_emb : array, shape (256,) | None
        The pooled recording embedding, mixed in when given.
    percentile : float
        Of each prompt's window similarities, 0-100.
    weight : float
        The windows' share of the score when ``recording_emb`` is given, 0-1.

    Returns
    -------
    array, shape (n_prompts,)
        Probabilities in prompt order.
    """
    if len(prompts) < 2:
        raise ValueError("zero-shot classification needs at least two prompts")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be within 0-100, got {percentile}")
    w = np.atleast_2d(np.asarray(window_emb, np.float32))
    if len(w) == 0:
        raise ValueError("zero-shot from the windows needs at least one window")
    p = prompt_embeddings(model, prompts, templates)
    score = np.percentile(w @ p.T, percentile, axis=0)
    if recording_emb is not None:
        score = weight * score + (1 - weight) * (np.asarray(recording_emb, np.float32) @ p.T)
    logits = score / model.temperature
    e = np.exp(logits - logits.max())
    return e / e.sum()

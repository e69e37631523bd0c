"""The one contract every embedding model keeps: ``EmbeddingModel``.

Two implementations: the torch model (``elmsearch.models.model.ELMModel``), which trains and
indexes, and the compiled query model (``elmsearch.models.compiled.QueryModel``: ONNX Runtime
and numpy, no torch), which answers queries. Call sites take an ``EmbeddingModel`` and never
ask which one they hold.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from elmsearch.errors import ElmsearchError
from elmsearch.models.config import ModelCfg


class NoTextModelError(ElmsearchError):
    """The model has EEG weights only (e.g. the ELM release), so text features are unavailable."""


@runtime_checkable
class EmbeddingModel(Protocol):
    """What a query needs of a model: one embedding space for EEG windows and report text.

    Attributes
    ----------
    config : ModelCfg
        The model config (``eeg``, ``text``, ``preprocessing``, ...) it was built from.
    has_text : bool
        Whether the text side is trained (an EEG-only model embeds EEG only).
    temperature : float
        The contrastive temperature (zero-shot probabilities are softmax(score / temperature)).
    """

    config: ModelCfg
    has_text: bool

    @property
    def temperature(self) -> float:
        """Contrastive temperature."""

    @property
    def window_seconds(self) -> float:
        """Window length the EEG encoder takes, seconds."""

    @property
    def similar_representation(self) -> str:
        """What prior cases compare: ``"spectral"`` profiles or the ``"embedding"``."""

    def encode_eeg(self, windows, normalize: bool = True, batch_size: int = 32) -> np.ndarray:
        """Window embeddings.

        Parameters
        ----------
        windows : array, shape (n_windows, n_chans, n_times)
            Preprocessed windows.

        Returns
        -------
        array, shape (n_windows, 256)
            float32, unit norm when ``normalize``.
        """

    def encode_text(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        """Text embeddings, array of shape (n_texts, 256), float32."""

    def encode_query(self, text: str) -> np.ndarray:
        """One query text's normalised embedding, shape (256,), float32, as fast as one text runs."""

    def pool_windows(self, window_emb: np.ndarray, pooling: str = "attention", normalize: bool = True) -> np.ndarray:
        """One recording embedding, shape (256,), from its window embeddings (n_windows, 256)."""

    def spectral_profile(self, windows, index: np.ndarray | None = None) -> np.ndarray:
        """The spectral profile of a recording (the prior-case representation of spectral models)."""


class ModelParts:
    """What both implementations derive from their ``config`` and ``has_text`` alike (one code for both)."""

    config: ModelCfg
    has_text: bool

    @property
    def window_seconds(self) -> float:
        """Window length the EEG encoder takes, seconds."""
        return float(self.config.eeg.window_seconds)

    @property
    def n_times(self) -> int:
        """Samples per window."""
        return self.config.eeg.n_times

    @property
    def similar_representation(self) -> str:
        """What prior-case search compares: ``"embedding"`` (the shared space) or ``"spectral"``.

        Chosen by ``elmsearch train`` on held-out patients (``config.similar``); ``spectral``
        needs a spectral view in the EEG encoder.
        """
        return self.config.similar_representation

    def encode_query(self, text: str) -> np.ndarray:
        """One query text's normalised embedding, shape (256,), float32 (``encode_text`` of one text)."""
        return self.encode_text([text])[0]

    def require_text(self) -> None:
        """Raise ``NoTextModelError`` (one line) unless the model has a trained text side."""
        if not self.has_text:
            raise NoTextModelError(
                "this model has EEG weights only (the ELM release); text features need a model "
                "trained with `elmsearch train`")

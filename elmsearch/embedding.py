"""Embed recordings with a model: read, preprocess, window, encode, pool."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from elmsearch.models.model import ELMModel
from elmsearch.preprocessing import PreprocessingParams
from elmsearch.recording import Recording, make_windows, read_recording


@dataclasses.dataclass
class EmbeddedRecording:
    """A recording and its embeddings.

    Attributes
    ----------
    recording : Recording
    window_emb : array of float32, shape (n_windows, 256)
        Normalised window embeddings, window ``i`` covering ``[i*s, (i+1)*s)`` seconds.
    recording_emb : array of float32, shape (256,)
        Attention-MIL pooled (mean for EEG-only models), normalised.
    """

    recording: Recording
    window_emb: np.ndarray
    recording_emb: np.ndarray


def model_params(model: ELMModel) -> PreprocessingParams:
    """The preprocessing a model was trained with (ELM's recipe when unrecorded)."""
    return PreprocessingParams.from_dict(model.config.get("preprocessing", {}))


def embed_recording(model: ELMModel, fname: str | os.PathLike, pooling: str = "attention"
                    ) -> EmbeddedRecording:
    """Read one EDF with the model's preprocessing and embed it.

    Raises
    ------
    RecordingError
        The file cannot be used (one-line reason).
    """
    rec = read_recording(fname, model_params(model), min_duration=model.window_seconds)
    window_emb = model.encode_eeg(make_windows(rec, model.window_seconds))
    return EmbeddedRecording(rec, window_emb, model.pool_windows(window_emb, pooling))

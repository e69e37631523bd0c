"""Embed recordings with a model: read, preprocess, window, encode, pool."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import TYPE_CHECKING

import numpy as np

from elmsearch.errors import CorruptFileError
from elmsearch.io.checks import usable_windows
from elmsearch.io.chunks import LONG_RECORDING_S
from elmsearch.io.windowed import WindowedRecording, WindowFile
from elmsearch.signal.bandpower import bandpower_profile
from elmsearch.signal.preprocessing import PreprocessingParams

if TYPE_CHECKING:  # torch is imported only where a torch model runs
    from elmsearch.models.model import ELMModel


@dataclasses.dataclass
class EmbeddedRecording:
    """A recording and its embeddings.

    Attributes
    ----------
    recording : WindowedRecording
        The recording read (``recording.meta``).
    window_emb : array of float32, shape (n_kept, 256)
        Normalised embeddings of the windows that carry signal.
    window_index : array of int, shape (n_kept,)
        Position of each embedded window: row ``j`` covers ``[i*s, (i+1)*s)`` seconds with
        ``i = window_index[j]`` (flat windows are left out, see ``usable_windows``).
    recording_emb : array of float32, shape (256,)
        Attention-MIL pooled (mean for EEG-only models), normalised.
    profile : array of float32, shape (256,) | None
        The spectral profile (``ELMModel.spectral_profile``) when the model's prior-case
        search uses it.
    bandpower : array of float32, shape (200,) | None
        The band-power map (``elmsearch.signal.bandpower.bandpower_profile``) of the same windows.
    """

    recording: WindowedRecording
    window_emb: np.ndarray
    recording_emb: np.ndarray
    window_index: np.ndarray | None = None
    profile: np.ndarray | None = None
    bandpower: np.ndarray | None = None

    @property
    def window_spans(self) -> list[tuple[float, float]]:
        """``(start_s, end_s)`` of each row of ``window_emb``."""
        step = float(self.recording.window_s)
        index = range(len(self.window_emb)) if self.window_index is None else self.window_index.tolist()
        return [(i * step, (i + 1) * step) for i in index]


def model_params(model: ELMModel) -> PreprocessingParams:
    """The preprocessing a model was trained with (ELM's recipe when unrecorded)."""
    return PreprocessingParams.from_dict(model.config.preprocessing or {})


def embed_windows(model: ELMModel, windows: np.ndarray, fname: str | os.PathLike = "<array>",
                  precision: str = "fp32", keep: np.ndarray | None = None, batch_size: int = 1024,
                  backend: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed the windows of one recording that carry signal.

    Parameters
    ----------
    model : ELMModel
    windows : array, shape (n_windows, 20, n_times)
        Preprocessed windows, or anything sliced ``windows[i:j]`` into such an array (read
        ``batch_size`` windows at a time).
    fname : path-like
        For error messages.
    precision : str
        See ``ELMModel.encode_eeg``.
    keep : array of bool, shape (n_windows,) | None
        Windows known to carry signal (``WindowedRecording.iter_windows``); by default those that
        ``usable_windows`` accepts.
    backend : str | None
        EEG inference engine, see ``ELMModel.encode_eeg``.

    Returns
    -------
    window_emb : array of float32, shape (n_kept, 256)
    window_index : array of int64, shape (n_kept,)

    Raises
    ------
    CorruptFileError
        No window carries signal, or an embedding is not finite (never stored).
    """
    embs, index = [], []
    for i in range(0, len(windows), batch_size):
        part = np.asarray(windows[i : i + batch_size])
        good = np.flatnonzero(usable_windows(part) if keep is None else keep[i : i + batch_size])
        if len(good):
            embs.append(model.encode_eeg(part[good], precision=precision, backend=backend))
            index.append(good + i)
    if not embs:
        raise CorruptFileError(fname, f"none of its {len(windows)} windows carries signal (all flat)")
    emb = np.concatenate(embs)
    if not np.isfinite(emb).all():
        raise CorruptFileError(fname, "the EEG encoder gave non-finite embeddings")
    return emb, np.concatenate(index).astype(np.int64)


def embed_recording(model: ELMModel, fname: str | os.PathLike, pooling: str = "attention",
                    precision: str = "fp32", backend: str | None = None) -> EmbeddedRecording:
    """Read one recording with the model's preprocessing and embed it (as the indexer does).

    A recording longer than ``chunks.LONG_RECORDING_S`` is read in chunks and its windows
    written to a private temporary folder, so memory stays bounded whatever its duration.
    ``precision`` and ``backend`` are those of ``ELMModel.encode_eeg``.

    Raises
    ------
    RecordingError
        The file cannot be used (one-line reason).
    """
    rec = WindowedRecording(fname, model_params(model), window_s=model.window_seconds)

    def embed(windows, keep: np.ndarray) -> EmbeddedRecording:
        window_emb, index = embed_windows(model, windows, fname, precision, keep, backend=backend)
        profile = model.spectral_profile(windows, index) if model.similar_representation == "spectral" else None
        bandpower = bandpower_profile(windows, model.config.eeg.sfreq, index)
        return EmbeddedRecording(rec, window_emb, model.pool_windows(window_emb, pooling), index, profile, bandpower)

    if rec.meta.duration <= LONG_RECORDING_S:
        return embed(*rec.windows())
    with tempfile.TemporaryDirectory(prefix="elmsearch-") as folder:
        path, keep = rec.spill(folder)
        return embed(WindowFile(path), keep)

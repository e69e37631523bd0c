"""The EEG-language model: EEG encoder, text projection, MIL pooling, temperature."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elmsearch.errors import ElmsearchError
from elmsearch.models.backends import BACKENDS, get_encoder
from elmsearch.models.config import ModelCfg
from elmsearch.models.eeg_resnet import EEGResNet
from elmsearch.models.pooling import AttentionPool, mean_pool
from elmsearch.models.protocol import ModelParts, NoTextModelError
from elmsearch.models.spectral import spectral_profile
from elmsearch.models.spectral_view import spectral_arrays
from elmsearch.models.text import FrozenTextEncoder, TextProjection

logger = logging.getLogger(__name__)

__all__ = ["ELMModel", "NoTextModelError"]


class ELMModel(nn.Module, ModelParts):
    """EEG and report text in one 256-d space.

    Parameters
    ----------
    config : ModelCfg | dict
        A model config (see ``elmsearch/model_configs/*.json``); a dict is read with
        ``ModelCfg.from_dict``.
    has_text : bool
        Whether the text projection carries trained weights. Models loaded from
        the ELM authors' EEG-only release have ``has_text=False``.
    """

    def __init__(self, config: ModelCfg | dict, has_text: bool = True):
        super().__init__()
        self.config = ModelCfg.from_dict(config)
        e = self.config.eeg
        self.eeg = EEGResNet(e.n_chans, e.n_times, e.sfreq, e.conv1_params,
                             e.res_params, e.pool_sizes, e.proj_dims, e.spectral)
        t = self.config.text
        self.text_dim = int(t.dim or 384)
        self.text_proj = TextProjection(self.text_dim, t.proj_dims[0], t.proj_dims[1])
        self.pool = AttentionPool(e.out_dim)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(float(self.config.temperature))),
                                            requires_grad=bool(self.config.learn_temperature))
        self.has_text = has_text
        self._text_encoder: FrozenTextEncoder | None = None
        self.cache_dir = None
        self.backend = "torch"

    def set_backend(self, name: str) -> ELMModel:
        """Default EEG inference engine of ``encode_eeg``: auto, torch, onnxruntime or openvino."""
        if name not in (*BACKENDS, "auto"):
            raise ValueError(f"backend must be auto, torch, onnxruntime or openvino, got {name!r}")
        self.backend = name
        return self

    # ---- properties ----------------------------------------------------------------------
    @property
    def temperature(self) -> float:
        """Softmax temperature of the contrastive objective."""
        return float(self.log_temperature.exp())

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    @property
    def text_encoder(self) -> FrozenTextEncoder:
        """The frozen language model (loaded on first use)."""
        if self._text_encoder is None:
            t = self.config.text
            self._text_encoder = FrozenTextEncoder(t.model, t.pooling, t.max_length,
                                                   cache_dir=self.cache_dir, device=str(self.device))
            if self._text_encoder.dim != self.text_dim:
                raise ElmsearchError(
                    f"text model {self._text_encoder.path} gives {self._text_encoder.dim}-d vectors, "
                    f"the projection expects {self.text_dim}")
        return self._text_encoder

    # ---- batched encoders (inference) ---------------------------------------------------
    @torch.no_grad()
    def encode_eeg(self, windows, normalize: bool = True, batch_size: int = 32,
                   precision: str = "fp32", backend: str | None = None) -> np.ndarray:
        """Embed EEG windows.

        Parameters
        ----------
        windows : array, shape (n_windows, 20, n_times)
            Preprocessed windows (``make_windows``).
        normalize : bool
            L2-normalise the embeddings.
        batch_size : int
            Windows per forward pass (32 keeps the activations in cache: twice the
            throughput of 512 on a 2-core CPU).
        precision : {"fp32", "bf16", "auto"}
            ``bf16`` runs the convolutions under bfloat16 autocast (about 1.5x faster on
            CPUs with AVX512-BF16 or AMX; cosine to fp32 > 0.9999); ``auto`` picks it where
            the CPU has such units.
        backend : {"torch", "onnxruntime", "openvino", "auto"} | None
            Inference engine (``elmsearch.models.backends``): a compiled backend is used
            when it is installed and matches torch fp32 on this machine (cosine >= 0.9999),
            else torch; ``auto`` is the fastest such. None: ``self.backend`` (``set_backend``).

        Returns
        -------
        array of float32, shape (n_windows, 256)
        """
        enc = get_encoder(self, backend or self.backend, precision)
        precision = enc.precision
        if enc.name != "torch":
            out = [enc(np.array(windows[i : i + batch_size], dtype=np.float32))
                   for i in range(0, len(windows), batch_size)]
            z = np.concatenate(out) if out else np.zeros((0, self.eeg.out_dim), np.float32)
            if normalize:
                z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
            return z.astype(np.float32, copy=False)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        was_training = self.training
        self.eval()
        out = []
        try:
            for i in range(0, len(windows), batch_size):
                x = torch.as_tensor(np.array(windows[i : i + batch_size], dtype=np.float32),
                                    device=self.device)
                with autocast:
                    z = self.eeg(x).float()
                out.append((F.normalize(z, dim=-1) if normalize else z).cpu().numpy())
        finally:
            self.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, self.eeg.out_dim), np.float32)

    def project_text(self, text_features: torch.Tensor) -> torch.Tensor:
        """Map frozen-LM features (n, text_dim) to the shared space (n, 256), not normalised."""
        return self.text_proj(text_features)

    @torch.no_grad()
    def encode_text(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        """Embed texts (report sentences, queries, prompts).

        Returns
        -------
        array of float32, shape (n_texts, 256)

        Raises
        ------
        NoTextModelError
            The model has no trained text projection.
        """
        self.require_text()
        if isinstance(texts, str):
            texts = [texts]
        feats = torch.as_tensor(self.text_encoder.embed(list(texts)), device=self.device)
        was_training = self.training
        self.eval()
        try:
            z = self.project_text(feats) if len(texts) else torch.zeros(0, self.eeg.out_dim)
        finally:
            self.train(was_training)
        return (F.normalize(z, dim=-1) if normalize else z).cpu().numpy()

    def encode_query(self, text: str) -> np.ndarray:
        """One query text's normalised embedding, shape (256,), on one intra-op thread.

        With torch's default (one thread per core) the text encoding of a query that also reads
        window embeddings from SQL took 2x longer on 2 cores (``bench/bench_query.py``: 41 vs
        24 ms p50); on its own it is ~2 ms faster.
        """
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.encode_text([text])[0]
        finally:
            torch.set_num_threads(threads)

    @torch.no_grad()
    def pool_windows(self, window_emb: np.ndarray, pooling: str = "attention",
                     normalize: bool = True) -> np.ndarray:
        """Recording embedding from its window embeddings.

        Parameters
        ----------
        window_emb : array, shape (n_windows, 256)
            Normalised window embeddings of one recording.
        pooling : str
            ``"attention"`` (trained MIL attention) or ``"mean"`` (ELM's probe).

        Returns
        -------
        array of float32, shape (256,)
        """
        z = torch.as_tensor(np.asarray(window_emb, np.float32), device=self.device)
        if pooling == "attention" and self.has_text:
            was_training = self.training
            self.eval()
            pooled = self.pool(z)
            self.train(was_training)
        elif pooling in {"attention", "mean"}:
            pooled = mean_pool(z)
        else:
            raise ValueError(f"pooling must be 'attention' or 'mean', got {pooling!r}")
        return (F.normalize(pooled, dim=-1) if normalize else pooled).cpu().numpy()

    def spectral_profile(self, windows, index: np.ndarray | None = None) -> np.ndarray:
        """The recording's spectral profile (``elmsearch.models.spectral.spectral_profile``), shape (256,).

        Raises
        ------
        ValueError
            The EEG encoder has no spectral view.
        """
        if self.eeg.spectral is None:
            raise ValueError("this model's EEG encoder has no spectral view")
        return spectral_profile(windows, spectral_arrays(self.eeg.spectral), self.eeg.out_dim, index)

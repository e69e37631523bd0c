"""Identity of a model and of the machine it runs on: ``config_hash``, devices, precisions.

Everything the model modules ask of each other about *which* model or machine they have,
with no import of them: ``model``, ``backends``, ``factory`` and ``compiled`` all import
this module and none of them needs another to answer these questions. torch is imported
only where a function needs it (``backends`` and ``compiled`` serve queries without it).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")


def config_hash(model) -> str:
    """Identity of the weights a model actually uses, stable across loads.

    Hashes the architecture and preprocessing of the EEG side and every EEG weight; for a
    model with a trained text side also its text config, projection, pooler and temperature.
    An EEG-only model (the ELM release) has randomly initialised text projection and
    attention pooler that never reach an embedding, so they are left out: loading the same
    folder twice gives the same hash. Free-text fields (``name``, ``description``) are
    left out too.

    Parameters
    ----------
    model : ELMModel
        The torch model (its ``config`` and ``state_dict()``).

    Returns
    -------
    str
        16 hexadecimal digits.
    """
    cfg = {k: v for k, v in model.config.to_dict().items() if k not in {"name", "description"}}
    if not model.has_text:
        cfg = {k: cfg[k] for k in ("eeg", "preprocessing") if k in cfg}
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
    for k, v in sorted(model.state_dict().items()):
        if not model.has_text and not k.startswith("eeg."):
            continue
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether the CPU has native bfloat16 units (AVX512-BF16 or AMX), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """``auto`` → ``bf16`` where the CPU has native bfloat16 units, else ``fp32``.

    Raises
    ------
    ValueError
        Not ``fp32``, ``bf16`` or ``auto``.
    """
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be fp32, bf16 or auto, got {precision!r}")
    return precision


def resolve_device(device: str = "auto"):
    """The torch device: ``"auto"`` is CUDA when present, else CPU.

    Returns
    -------
    torch.device
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)

"""Model registry and persistence: ``list_models``, ``create_model``, ``load_model``, ``save_model``.

Configs are JSON files in ``elmsearch/model_configs``, read once into a registry of dicts
(``get_config``); a model holds its config typed (``elmsearch.models.config.ModelCfg``). ``load_model`` reads either a
MODEL_DIR written by ``elmsearch train`` (``config.json`` + ``model.safetensors``) or
the ELM authors' release folder exactly as it ships (``config_xy.yaml`` +
``model_0_checkpoint.pt``, tensors saved on a GPU).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from importlib import resources
from pathlib import Path

import torch

from elmsearch.errors import ElmsearchError
from elmsearch.models.model import ELMModel
from elmsearch.models.text import resolve_text_model

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


_REGISTRY: dict[str, dict] = {}


def _registry() -> dict[str, dict]:
    """Name -> config: the package's ``model_configs/*.json``, read once, and ``add_model_config``'s."""
    if not _REGISTRY:
        for entry in (resources.files("elmsearch") / "model_configs").iterdir():
            if entry.name.endswith(".json"):
                cfg = json.loads(entry.read_text())
                _REGISTRY.setdefault(cfg["name"], cfg)
    return _REGISTRY


def add_model_config(path: str | os.PathLike) -> str:
    """Register a model config from a JSON file (as the package's own); returns its name.

    Raises
    ------
    ElmsearchError
        Not readable, not JSON, or without a ``name``.
    """
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
        name = cfg["name"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ElmsearchError(f"{path}: not a model config (JSON with a 'name'): {err}") from None
    _registry()[name] = cfg
    return name


def list_models() -> list[str]:
    """Names of the registered model configs."""
    return sorted(_registry())


def get_config(name: str) -> dict:
    """A copy of a registered config."""
    reg = _registry()
    if name not in reg:
        raise ElmsearchError(f"unknown model {name!r}; known: {', '.join(sorted(reg))}")
    return copy.deepcopy(reg[name])


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def create_model(name: str = "elm-5s", text_model: str | os.PathLike | None = None,
                 text_dim: int | None = None, **overrides) -> ELMModel:
    """Build a freshly initialised model from a registered config.

    Parameters
    ----------
    name : str
        A name from ``list_models()``.
    text_model : str | path-like | None
        Local Hugging Face folder for the frozen text encoder (default: the packaged MiniLM).
    text_dim : int | None
        Hidden size of that encoder (read from its config when None).
    **overrides
        Nested config overrides, e.g. ``mil={"max_eeg": 16}``.
    """
    cfg = _merge(get_config(name), overrides)
    if text_model is not None:
        cfg["text"]["model"] = str(text_model)
    if text_dim is None:
        path = resolve_text_model(cfg["text"]["model"])
        tcfg = json.loads((path / "config.json").read_text())
        text_dim = int(tcfg.get("hidden_size") or tcfg.get("d_model") or tcfg.get("dim"))
    cfg["text"]["dim"] = int(text_dim)
    return ELMModel(cfg)


def save_model(model: ELMModel, out_dir: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``out_dir`` (atomically per file)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dict(model.config.to_dict(), has_text=model.has_text)
    tmp = out / f".{CONFIG_NAME}.tmp"
    tmp.write_text(json.dumps(cfg, indent=2))
    os.replace(tmp, out / CONFIG_NAME)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = out / f".{WEIGHTS_NAME}.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, out / WEIGHTS_NAME)
    return out


def _elm_release_config(yaml_path: Path) -> dict:
    import yaml

    raw = yaml.safe_load(yaml_path.read_text())
    m = raw["model"]
    elm = m.get("ELM", {})
    sfreq = float(raw.get("dataset", {}).get("sfreq", 100))
    n_times = int(m["n_time_samples"])
    seconds = n_times / sfreq
    base = get_config("elm-5s" if seconds <= 10 else "elm-60s")
    base["name"] = f"elm-release-{seconds:g}s"
    base["description"] = f"ELM authors' released EEG encoder ({yaml_path.parent})"
    base["eeg"].pop("spectral", None)  # ELM's encoder: the ResNet alone
    base["eeg"].update(
        n_chans=int(m["in_channels"]), sfreq=sfreq, window_seconds=seconds,
        conv1_params=[list(p) for p in m["encoder_conv1_params"]],
        res_params=[list(p) for p in m["encoder_res_params"]],
        pool_sizes=[int(p) for p in m["encoder_pool_size"]],
        proj_dims=[int(p) for p in elm.get("eeg_proj_size", [512, 256])],
    )
    if "MIL_max_eeg_pairs" in elm:
        base["mil"] = {"max_eeg": int(elm["MIL_max_eeg_pairs"]), "max_text": int(elm["MIL_max_text_pairs"])}
    base["temperature"] = float(raw.get("training", {}).get("T", base["temperature"]))
    base["text"]["dim"] = 384
    return base


def load_model(path: str | os.PathLike, map_location: str = "cpu") -> ELMModel:
    """Load a trained MODEL_DIR or the ELM authors' released checkpoint folder.

    Parameters
    ----------
    path : path-like
        A folder with ``config.json`` + ``model.safetensors`` (from ``elmsearch train``),
        or with ``config_xy.yaml`` + ``model_0_checkpoint.pt`` (ELM release; EEG only).
    map_location : str
        Device for the weights.

    Returns
    -------
    ELMModel
        In eval mode. Loading is strict: every tensor must match the architecture.
    """
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        from safetensors.torch import load_file

        cfg = json.loads((path / CONFIG_NAME).read_text())
        has_text = bool(cfg.pop("has_text", True))
        model = ELMModel(cfg, has_text=has_text)
        if not (path / WEIGHTS_NAME).is_file():
            raise ElmsearchError(f"{path}: {WEIGHTS_NAME} missing")
        model.load_state_dict(load_file(str(path / WEIGHTS_NAME), device=map_location), strict=True)
    elif (path / "config_xy.yaml").is_file() and (path / "model_0_checkpoint.pt").is_file():
        cfg = _elm_release_config(path / "config_xy.yaml")
        model = ELMModel(cfg, has_text=False)
        state = torch.load(path / "model_0_checkpoint.pt", map_location=map_location, weights_only=True)
        if isinstance(state, dict) and "model_state_dict" in state:
            state = state["model_state_dict"]
        model.eeg.load_state_dict(state, strict=True)
    else:
        raise ElmsearchError(
            f"{path}: not a model folder (expected {CONFIG_NAME} + {WEIGHTS_NAME} from `elmsearch train`, "
            "or config_xy.yaml + model_0_checkpoint.pt from the ELM release)")
    model.source = str(path)
    return model.to(map_location).eval()

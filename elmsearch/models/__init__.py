"""Models: the ELM EEG encoder, the frozen text encoder with its projection, MIL pooling."""

from elmsearch.models.eeg_resnet import EEGResNet
from elmsearch.models.factory import (
    config_hash,
    create_model,
    get_config,
    list_models,
    load_model,
    save_model,
)
from elmsearch.models.model import ELMModel, NoTextModelError
from elmsearch.models.pooling import AttentionPool, mean_pool
from elmsearch.models.text import FrozenTextEncoder, TextProjection, resolve_text_model

__all__ = [
    "AttentionPool", "EEGResNet", "ELMModel", "FrozenTextEncoder", "NoTextModelError",
    "TextProjection", "config_hash", "create_model", "get_config", "list_models", "load_model",
    "mean_pool", "resolve_text_model", "save_model",
]

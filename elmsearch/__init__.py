"""elmsearch: search clinical EEG archives in a joint EEG-report embedding space.

The core library; it imports nothing from ``db``, ``indexer`` or ``cli``. Its sub-packages:

- ``io``: reading recordings (EDF/BDF memory-mapped, MNE for the rest) into checked windows;
- ``signal``: channel names, the TCP montage, ELM preprocessing, band power;
- ``text``: reports parsed into sections, sentences and training segments;
- ``archive``: finding recordings, reports and patients in a folder tree; label files;
- ``models``: the EEG and text towers, the model contract, compiled inference, embedding, zero-shot;
- ``train``: the contrastive loss, training recipes, retrieval metrics, linear probes;
- ``viz``: EEG traces, spectrograms and evaluation plots;
- ``datasets``: the seeded demo archive and EEGMAT laid out as a TUH archive.
"""

from elmsearch._lazy import lazy_exports

_MODULES = {
    "elmsearch.archive.discovery": ("ArchiveEntry", "discover"),
    "elmsearch.signal.channels": ("TCP_CH_NAMES", "TCP_ELECTRODES", "normalize_channel_name"),
    "elmsearch.errors": ("CorruptFileError", "ElmsearchError", "InputFileError", "MissingChannelError",
                         "RecordingError", "ReportError", "TooShortError", "UnsupportedFileError"),
    "elmsearch.signal.preprocessing": ("PreprocessingParams", "elm_reference", "preprocess"),
    "elmsearch.io.meta": ("RecordingMeta",),
    "elmsearch.io.recording": ("PreprocessedRecording", "make_windows"),
    "elmsearch.io.windowed": ("WindowedRecording", "read_recording"),
    "elmsearch.text.report": ("Report", "Section", "Sentence", "parse_report", "read_report"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__version__ = "0.1.0"

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

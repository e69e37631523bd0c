"""elmsearch: search clinical EEG archives in a joint EEG-report embedding space.

The core library: reading and preprocessing EEG the ELM way, parsing reports,
discovering archives, and the demo archive generator. It imports nothing from
``db``, ``indexer`` or ``cli``.
"""

from elmsearch._lazy import lazy_exports

_MODULES = {
    "elmsearch.archive": ("ArchiveEntry", "discover"),
    "elmsearch.channels": ("TCP_CH_NAMES", "TCP_ELECTRODES", "normalize_channel_name"),
    "elmsearch.errors": ("CorruptFileError", "ElmsearchError", "InputFileError", "MissingChannelError",
                         "RecordingError", "ReportError", "TooShortError", "UnsupportedFileError"),
    "elmsearch.preprocessing": ("PreprocessingParams", "elm_reference", "preprocess"),
    "elmsearch.io.meta": ("RecordingMeta",),
    "elmsearch.io.recording": ("PreprocessedRecording", "make_windows"),
    "elmsearch.io.windowed": ("WindowedRecording", "read_recording"),
    "elmsearch.report": ("Report", "Section", "Sentence", "parse_report", "read_report"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__version__ = "0.1.0"

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

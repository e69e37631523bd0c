"""elmsearch: search clinical EEG archives in a joint EEG-report embedding space.

The core library: reading and preprocessing EEG the ELM way, parsing reports,
discovering archives, and the demo archive generator. It imports nothing from
``db``, ``indexer`` or ``cli``.
"""

from elmsearch.archive import ArchiveEntry, discover
from elmsearch.channels import TCP_CH_NAMES, TCP_ELECTRODES, normalize_channel_name
from elmsearch.errors import (
    CorruptFileError,
    ElmsearchError,
    InputFileError,
    MissingChannelError,
    RecordingError,
    ReportError,
    TooShortError,
    UnsupportedFileError,
)
from elmsearch.preprocessing import PreprocessingParams, elm_reference, preprocess
from elmsearch.recording import Recording, RecordingMeta, make_windows, read_recording
from elmsearch.report import Report, Section, Sentence, parse_report, read_report

__version__ = "0.1.0"

__all__ = [
    "ArchiveEntry",
    "CorruptFileError",
    "ElmsearchError",
    "InputFileError",
    "MissingChannelError",
    "PreprocessingParams",
    "Recording",
    "RecordingError",
    "RecordingMeta",
    "Report",
    "ReportError",
    "Section",
    "Sentence",
    "TCP_CH_NAMES",
    "TCP_ELECTRODES",
    "TooShortError",
    "UnsupportedFileError",
    "discover",
    "elm_reference",
    "make_windows",
    "normalize_channel_name",
    "parse_report",
    "preprocess",
    "read_recording",
    "read_report",
]

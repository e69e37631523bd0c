"""Typed exceptions raised by the core library.

Every error that concerns one input file carries that file's name and a one-line
reason, so that callers scanning thousands of files can log ``str(err)`` and go on.
"""

from __future__ import annotations

from pathlib import Path


class ElmsearchError(Exception):
    """Base class of every error raised on purpose by elmsearch."""


class InputFileError(ElmsearchError):
    """An input file that cannot be used.

    Parameters
    ----------
    fname : str | Path
        The offending file.
    reason : str
        One line saying what is wrong with it.
    """

    def __init__(self, fname: str | Path, reason: str):
        self.fname = str(fname)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.fname}: {self.reason}")


class RecordingError(InputFileError):
    """An EEG recording that cannot be read or preprocessed."""


class UnsupportedFileError(RecordingError):
    """The file is not an EDF/BDF recording, or not EEG we can use."""


class CorruptFileError(RecordingError):
    """The file claims to be EDF but its header or data are damaged or inconsistent."""


class MissingChannelError(RecordingError):
    """Electrodes needed for the bipolar montage are absent.

    Attributes
    ----------
    missing : list of str
        The canonical names of the missing electrodes.
    """

    def __init__(self, fname: str | Path, missing: list[str], reason: str | None = None):
        self.missing = list(missing)
        super().__init__(
            fname, reason or f"missing electrode(s) {', '.join(self.missing)} for the TCP montage"
        )


class TooShortError(RecordingError):
    """The recording is shorter than the minimum usable duration."""


class ReportError(InputFileError):
    """A report file that cannot be read or decoded."""

"""Preprocessed windows on disk, written once per recording and preprocessing, read a batch at a time.

Training used to hold every window of every recording in memory (float16, 20 KB per 5 s window:
about 25 MB per hour of EEG, so 24 GB is full at roughly 900 h). A ``WindowStore`` keeps them in
a folder instead: one ``.npy`` file per recording, named by the SHA-256 of the file's bytes and of
the preprocessing (parameters and window length), so a recording read once is never read and
preprocessed again by later training runs, whatever its path. Readers get an
``elmsearch.io.windowed.WindowFile``: windows are read from the file when a batch asks for them
(plain reads, not a memory map, so nothing stays resident).

The store is bounded (``max_bytes``): a recording that would pass the limit is refused with one
line naming the store, its size and the limit, and the files already there stay.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from elmsearch.archive.discovery import file_hash
from elmsearch.errors import ElmsearchError
from elmsearch.io.windowed import WindowFile

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 200 * 2**30


class WindowStoreFull(ElmsearchError):
    """Writing a recording's windows would pass the store's size limit."""


class WindowStore:
    """A folder of preprocessed windows (see the module's docstring).

    Parameters
    ----------
    folder : path-like
        Created (0700) when missing.
    max_bytes : int
        The most the store's files may take.
    """

    def __init__(self, folder: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_bytes = int(max_bytes)
        self.hits = self.writes = 0

    def size(self) -> int:
        """Bytes the store's window files take now (files being written by another run included)."""
        total = 0
        for f in self.folder.iterdir():
            try:
                total += f.stat().st_size if f.suffix == ".npy" else 0
            except FileNotFoundError:  # renamed or removed by another writer meanwhile
                continue
        return total

    @staticmethod
    def key(fname: str | os.PathLike, preprocessing: dict, window_seconds: float) -> str:
        """The name of a recording's windows: SHA-256 of its bytes, its preprocessing and window length."""
        spec = json.dumps({"file": file_hash(fname), "preprocessing": preprocessing,
                           "window_seconds": float(window_seconds)}, sort_keys=True)
        return hashlib.sha256(spec.encode()).hexdigest()[:32]

    def windows(self, fname: str | os.PathLike, preprocessing: dict, window_seconds: float,
                make) -> WindowFile:
        """The stored windows of a recording, made by ``make()`` (array, shape (n, n_chans, n_times)) if absent.

        Raises
        ------
        WindowStoreFull
            The new file would pass ``max_bytes`` (nothing is written).
        """
        path = self.folder / f"{self.key(fname, preprocessing, window_seconds)}.npy"
        if path.is_file():
            self.hits += 1
            return WindowFile(path)
        data = np.ascontiguousarray(make(), np.float16)
        need, have = data.nbytes + 128, self.size()
        if have + need > self.max_bytes:
            raise WindowStoreFull(f"window store {self.folder}: {fname} needs {need / 2**20:.1f} MiB more, the "
                                  f"store holds {have / 2**30:.2f} GiB of its {self.max_bytes / 2**30:g} GiB limit; "
                                  "raise the limit (--window-store-gb) or point --window-store at a bigger disk")
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.lib.format.write_array(f, data, version=(1, 0))
            os.replace(tmp, path)  # whole or absent, also when two runs write the same recording
        finally:
            Path(tmp).unlink(missing_ok=True)
        self.writes += 1
        return WindowFile(path)

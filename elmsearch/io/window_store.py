"""Preprocessed windows on disk, written once per recording and preprocessing, read a batch at a time.

Training used to hold every window of every recording in memory (float16, 20 KB per 5 s window:
about 25 MB per hour of EEG, so 24 GB is full at roughly 900 h), and every re-embedding after a
model change read and preprocessed every EDF again. A ``WindowStore`` keeps the windows in a
folder instead: one float16 ``.npy`` file per recording and a ``.keep.npy`` beside it (which
windows carry EEG), named by the SHA-256 of the file's bytes and of the preprocessing (parameters
and window length). A recording read once is never read and preprocessed again, whatever its
path, by ``elmsearch index --window-store`` (which fills it), ``--reembed``, ``train`` and
``eval``. Readers get an ``elmsearch.io.windowed.WindowFile``: windows are read from the file
when a batch asks for them (plain reads, not a memory map, so nothing stays resident).

The frozen trunk's features of the ``heads`` recipe are kept beside the windows
(``features/KEY-TRUNK.npy``), so training's memory does not grow with the archive either.

The store is bounded (``max_bytes``): a recording that would pass the limit is refused with one
line naming the store, its size and the limit, and the files already there stay. The check counts
the folder's files at most every ``RESCAN_S`` seconds and adds this process's own writes in between
(listing a folder of 100 000 recordings for every write would make filling it quadratic), so
several writers at once may pass the limit by what the others wrote in that time. Files appear
whole or not at all (written under a temporary name, then renamed), also when two runs write
the same recording.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from elmsearch.archive.discovery import file_hash
from elmsearch.errors import ElmsearchError
from elmsearch.io.windowed import WindowFile

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 200 * 2**30
_CHUNK_ROWS = 256  # windows converted to float16 at a time when a store file is written
RESCAN_S = 30.0  # seconds the counted size of the folder is trusted (plus this process's writes)


class WindowStoreFull(ElmsearchError):
    """Writing a recording's windows would pass the store's size limit."""


def _write_npy(folder: Path, path: Path, shape: tuple, dtype, blocks) -> None:
    """Write ``blocks`` (arrays, in row order) as one ``.npy`` at ``path``, whole or not at all."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                     "fortran_order": False, "shape": tuple(shape)})
            for block in blocks:
                f.write(np.ascontiguousarray(block, dtype).tobytes())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


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
        self._counted: tuple[float, int] | None = None  # (when, bytes) of the last count, own writes added

    def size(self) -> int:
        """Bytes the store's files take now (windows, masks, features; also those another run is writing)."""
        total = 0
        for f in (*self.folder.iterdir(), *self.folder.glob("features/*")):
            try:
                total += f.stat().st_size if f.suffix == ".npy" else 0
            except FileNotFoundError:  # renamed or removed by another writer meanwhile
                continue
        return total

    @staticmethod
    def key(fname: str | os.PathLike | None, preprocessing: dict, window_seconds: float,
            digest: str | None = None) -> str:
        """The name of a recording's windows: SHA-256 of its bytes, its preprocessing and window length.

        ``digest`` is the file's ``file_hash`` when the caller has it already (the indexer does).
        """
        spec = json.dumps({"file": digest or file_hash(fname), "preprocessing": preprocessing,
                           "window_seconds": float(window_seconds)}, sort_keys=True)
        return hashlib.sha256(spec.encode()).hexdigest()[:32]

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.npy", self.folder / f"{key}.keep.npy"

    def get(self, key: str) -> tuple[WindowFile, np.ndarray] | None:
        """The stored windows of ``key`` and which carry EEG, or None when the store lacks them."""
        path, keep_path = self._paths(key)
        if not path.is_file():
            return None
        try:
            keep = np.load(keep_path)
        except (OSError, ValueError):  # written by a version without masks: count it as absent
            return None
        self.hits += 1
        return WindowFile(path), keep

    def __getstate__(self) -> dict:  # a worker process counts for itself
        return {**self.__dict__, "_counted": None}

    def _check_room(self, need: int, what: str) -> None:
        now = time.monotonic()
        if self._counted is None or now - self._counted[0] > RESCAN_S:
            self._counted = (now, self.size())
        have = self._counted[1]
        if have + need > self.max_bytes:
            raise WindowStoreFull(f"window store {self.folder}: {what} needs {need / 2**20:.1f} MiB more, the "
                                  f"store holds {have / 2**30:.2f} GiB of its {self.max_bytes / 2**30:g} GiB limit; "
                                  "raise the limit (--window-store-gb) or point --window-store at a bigger disk")

    def put(self, key: str, windows, keep: np.ndarray, what: str = "a recording") -> WindowFile:
        """Store a recording's windows (an array or a ``WindowFile``, converted 256 rows at a time).

        Raises
        ------
        WindowStoreFull
            The new files would pass ``max_bytes`` (nothing is written).
        """
        n, shape = len(windows), tuple(windows.shape[1:])
        self._check_room(n * int(np.prod(shape)) * 2 + len(keep) + 256, what)
        path, keep_path = self._paths(key)
        _write_npy(self.folder, keep_path, (len(keep),), np.bool_, [np.asarray(keep, bool)])
        _write_npy(self.folder, path, (n, *shape), np.float16,
                   (windows[i : i + _CHUNK_ROWS] for i in range(0, n, _CHUNK_ROWS)))
        self._added(path.stat().st_size + keep_path.stat().st_size)
        self.writes += 1
        return WindowFile(path)

    def windows(self, fname: str | os.PathLike, preprocessing: dict, window_seconds: float,
                make: Callable[[], tuple[np.ndarray, np.ndarray]]) -> WindowFile:
        """The stored windows of a recording, made by ``make()`` (windows, keep) if absent.

        Raises
        ------
        WindowStoreFull
            The new file would pass ``max_bytes`` (nothing is written).
        """
        key = self.key(fname, preprocessing, window_seconds)
        got = self.get(key)
        if got is not None:
            return got[0]
        windows, keep = make()
        return self.put(key, windows, keep, str(fname))

    # ---- frozen-trunk features (the heads recipe) ------------------------------------------
    def feature_path(self, windows: WindowFile, trunk: str) -> Path | None:
        """Where the features of ``windows`` (a file of this store) under trunk ``trunk`` are kept."""
        if Path(windows.fname).parent != self.folder:
            return None
        return self.folder / "features" / f"{Path(windows.fname).stem}-{trunk}.npy"

    def put_features(self, path: Path, feats: np.ndarray) -> WindowFile:
        """Write one recording's trunk features (float32) at ``path`` (from ``feature_path``)."""
        self._check_room(feats.nbytes + 128, f"trunk features {path.name}")
        path.parent.mkdir(exist_ok=True, mode=0o700)
        _write_npy(path.parent, path, feats.shape, np.float32, [feats])
        self._added(path.stat().st_size)
        return WindowFile(path)

    def _added(self, nbytes: int) -> None:
        if self._counted is not None:
            self._counted = (self._counted[0], self._counted[1] + nbytes)

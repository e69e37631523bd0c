"""Index folders hold patient data: owner-only permissions for every folder and file written.

Reports, patient ids, ages and dates live in the database, the FAISS files, the manifest,
the text cache, Parquet exports and evaluation outputs. Folders are created 0700 and files
0600, whatever the user's umask.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


@contextmanager
def private_umask() -> Iterator[None]:
    """Create files 0600 and folders 0700 inside the block (process umask 077, restored after)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def private_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and missing parents) 0700; a folder that already exists keeps its mode.

    elmsearch never changes the mode of a folder or file it did not create.
    """
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    for p in missing:  # mkdir's mode is filtered by the umask
        os.chmod(p, DIR_MODE)
    return path


class FolderInUseError(ValueError):
    """An output folder that holds files elmsearch did not write (it is never written into)."""


def output_dir(path: str | os.PathLike, marker: str, what: str) -> Path:
    """An output folder elmsearch may write into: new, empty, or one it made before (holds ``marker``).

    Parameters
    ----------
    path : path-like
    marker : str
        A file name that only elmsearch writes into such a folder (e.g. ``manifest.json``).
    what : str
        What the folder is for, for the error (``"export"``).

    Raises
    ------
    FolderInUseError
        ``path`` is a file, or a folder with other files in it: writing there would mix
        patient data with someone else's files (and elmsearch would have to change their modes).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FolderInUseError(f"{path}: not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / marker).exists():
        raise FolderInUseError(f"{path}: not empty and not an elmsearch {what} folder (no {marker}); "
                               "give a new or empty folder")
    return private_dir(path)

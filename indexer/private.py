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
    """Create ``path`` (and parents) if needed and make it 0700."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def secure_tree(path: str | os.PathLike) -> None:
    """Make ``path`` 0700 and every folder below it 0700, every file 0600 (symlinks untouched)."""
    path = Path(path)
    if not path.is_dir():
        return
    os.chmod(path, DIR_MODE)
    for dirpath, dirnames, filenames in os.walk(path):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                os.chmod(p, DIR_MODE)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                try:
                    os.chmod(p, FILE_MODE)
                except FileNotFoundError:  # a temporary file that went away meanwhile
                    pass

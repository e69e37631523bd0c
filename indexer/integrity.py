"""Checksums of an index's FAISS files and the checks that prove an index says what its database says.

Two costs, two checks (the brief's "cheap check on open, full one in a command"):

- ``sample_sha256``: SHA-256 of the file's size and of 64 blocks of 64 KiB spread evenly
  over it (the whole file below 8 MiB). Checked every time a query opens a FAISS file:
  milliseconds at any size. It catches a file replaced, truncated, extended, shuffled, or
  damaged in a block it reads; every file of the demo-sized indices is read whole.
- ``sha256``: the whole file, checked by ``elmsearch verify``.

Both are written into the manifest when the indexer writes the file (``describe``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

WHOLE_BELOW = 8 * 1024 * 1024
"""Files up to this size are hashed whole by the quick check too."""
SAMPLE_BLOCK = 64 * 1024
SAMPLE_BLOCKS = 64


def sample_sha256(fname: str | os.PathLike, size: int | None = None) -> str:
    """The quick checksum of a file: its size and evenly spaced blocks (the whole file when small).

    Parameters
    ----------
    fname : path-like
    size : int | None
        The file's size, when known.

    Returns
    -------
    str
        Hex digest.
    """
    size = os.path.getsize(fname) if size is None else size
    h = hashlib.sha256(str(size).encode())
    with open(fname, "rb") as f:
        if size <= WHOLE_BELOW:
            h.update(f.read())
        else:
            step = (size - SAMPLE_BLOCK) / (SAMPLE_BLOCKS - 1)
            for i in range(SAMPLE_BLOCKS):
                f.seek(round(i * step))
                h.update(f.read(SAMPLE_BLOCK))
    return h.hexdigest()


def full_sha256(fname: str | os.PathLike) -> str:
    """SHA-256 of the whole file (hex)."""
    with open(fname, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def describe(fname: str | os.PathLike) -> dict:
    """What the manifest records of one file: ``{"bytes", "sha256", "sample_sha256"}``."""
    size = os.path.getsize(fname)
    return {"bytes": size, "sha256": full_sha256(fname), "sample_sha256": sample_sha256(fname, size)}


def check_file(fname: str | os.PathLike, want: dict, full: bool = False) -> str | None:
    """Compare a file with its manifest entry; returns what is wrong (one phrase) or None.

    Parameters
    ----------
    fname : path-like
    want : dict
        From :func:`describe`, as the manifest holds it.
    full : bool
        Hash the whole file (else the quick checksum).
    """
    path = Path(fname)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if size != want.get("bytes"):
        return f"{size} bytes where the manifest says {want.get('bytes')} (changed or damaged since it was written)"
    try:
        ok = full_sha256(path) == want.get("sha256") if full else sample_sha256(path, size) == want.get(
            "sample_sha256")
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    return None if ok else "checksum differs from the manifest's (damaged or changed since it was written)"

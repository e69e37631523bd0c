"""The per-machine cache folder: compiled encoders, text-encoder traces, filter designs.

``$ELMSEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/elmsearch`` or ``~/.cache/elmsearch``.
Everything in it can be deleted; it is rebuilt when needed.
"""

from __future__ import annotations

import os
from pathlib import Path


def machine_cache_dir() -> Path:
    """The per-machine cache folder (see the module notes)."""
    if os.environ.get("ELMSEARCH_CACHE_DIR"):
        return Path(os.environ["ELMSEARCH_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "elmsearch"

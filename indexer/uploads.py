"""Uploads kept for the session that sent them: the file (private, never indexed) and its answers.

The page draws an uploaded EDF and links to its results (``/uploads/TOKEN``), so the file must
outlive the request that brought it. ``KeptUploads`` holds at most ``max_kept`` of them, each
for ``ttl_s`` seconds after it was last used, under a random token (the only way to name one:
it is not guessable and not listed anywhere). The file stays where the server put it (a ``0600``
file in its ``0700`` folder); an expired or evicted upload's file is deleted, and so are all
of them by ``close`` (the server's shutdown).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from pathlib import Path

from indexer.search import NotFoundError

logger = logging.getLogger(__name__)

MAX_KEPT = 8
TTL_S = 3600.0


@dataclasses.dataclass
class Kept:
    """One kept upload: its private file, the client's file name and its answers."""

    token: str
    path: Path
    filename: str
    doc: dict
    used: float


class KeptUploads:
    """At most ``max_kept`` uploads, each kept ``ttl_s`` seconds after its last use.

    Parameters
    ----------
    max_kept : int
        Uploads kept at once; the least recently used goes first.
    ttl_s : float
        Seconds an upload is kept after it was last asked for.
    """

    def __init__(self, max_kept: int = MAX_KEPT, ttl_s: float = TTL_S):
        self.max_kept, self.ttl_s = int(max_kept), float(ttl_s)
        self._kept: dict[str, Kept] = {}
        self._lock = threading.Lock()

    def keep(self, path: str | Path, filename: str, doc: dict) -> str:
        """Take over ``path`` (renamed beside itself) and its answers ``doc``; return the token."""
        token = secrets.token_urlsafe(16)
        path = Path(path)
        kept = path.with_name(f"kept-{token}{path.suffix}")
        path.rename(kept)  # the request's own clean-up no longer finds it
        with self._lock:
            self._kept[token] = Kept(token, kept, filename, doc, time.monotonic())
            self._expire()
        logger.info("upload %r kept as %s", filename, kept)
        return token

    def get(self, token: str) -> Kept:
        """The upload kept under ``token`` (its last use is now).

        Raises
        ------
        NotFoundError
            No such token, or the upload expired (one line that says so).
        """
        with self._lock:
            self._expire()
            kept = self._kept.get(str(token))
            if kept is None:
                raise NotFoundError(f"upload {token}: not kept here (uploads are kept {self.ttl_s / 60:g} min "
                                    f"after their last use, {self.max_kept} at most, and not after a restart); "
                                    "upload the file again")
            kept.used = time.monotonic()
            return kept

    def _expire(self) -> None:
        now = time.monotonic()
        by_age = sorted(self._kept.values(), key=lambda k: k.used)
        for i, kept in enumerate(by_age):
            if now - kept.used > self.ttl_s or i < len(by_age) - self.max_kept:
                del self._kept[kept.token]
                kept.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Delete every kept upload."""
        with self._lock:
            for kept in self._kept.values():
                kept.path.unlink(missing_ok=True)
            self._kept.clear()

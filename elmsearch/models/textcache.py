"""The on-disk cache of language-model text features: one SQLite file per text encoder.

Torch-free, so that the compiled query model (``elmsearch.models.compiled``) and the
torch text encoder (``elmsearch.models.text``) share one cache: a query text embedded
by either is never embedded again.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def cache_file(folder: str | Path, key: str) -> Path | None:
    """The cache of text encoder ``key`` in ``folder``, created if needed; None if it cannot be.

    A read-only index folder (a server's, a backup's) works without a cache.
    """
    path = Path(folder) / f"text-{key}.sqlite"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as con:
            con.execute("CREATE TABLE IF NOT EXISTS emb (h TEXT PRIMARY KEY, v BLOB NOT NULL)")
    except (OSError, sqlite3.Error) as err:
        logger.info("text feature cache %s unusable (%s); texts are embedded every time", path, err)
        return None
    return path


def cached_embed(texts: list[str], path: Path | None, encode: Callable[[list[str]], np.ndarray],
                 dim: int) -> np.ndarray:
    """Features of ``texts``, shape (n_texts, dim), float32: from the cache, the rest from ``encode``.

    Texts are keyed by the SHA-256 of their UTF-8 bytes; each distinct new text is encoded once.
    ``path`` None: no cache.
    """
    texts = list(texts)
    if path is None:
        return encode(texts)
    if not texts:
        return np.zeros((0, dim), np.float32)
    hashes = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    found: dict[str, np.ndarray] = {}
    with sqlite3.connect(path) as con:
        uniq = list(dict.fromkeys(hashes))
        for i in range(0, len(uniq), 500):
            chunk = uniq[i : i + 500]
            rows = con.execute(f"SELECT h, v FROM emb WHERE h IN ({','.join('?' * len(chunk))})", chunk)
            found.update((h, np.frombuffer(v, np.float32)) for h, v in rows)
        todo = list({h: i for i, h in enumerate(hashes) if h not in found}.values())
        if todo:
            vecs = encode([texts[i] for i in todo])
            try:
                con.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?)",
                                [(hashes[i], v.astype(np.float32).tobytes()) for i, v in zip(todo, vecs, strict=True)])
            except sqlite3.Error as err:  # read-only or busy: the vectors are right, just not kept
                logger.debug("text feature cache %s not written (%s)", path, err)
            found.update((hashes[i], v) for i, v in zip(todo, vecs, strict=True))
    return np.stack([found[h] for h in hashes]).astype(np.float32, copy=False)

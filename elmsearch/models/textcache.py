"""The cache of language-model text features: one SQLite file per text encoder, or memory.

Torch-free, so that the compiled query model (``elmsearch.models.compiled``) and the
torch text encoder (``elmsearch.models.text``) share one cache: a query text embedded
by either is never embedded again.

A ``cache_dir`` of ``MEMORY`` (``":memory:"``) keeps the features in a bounded in-process
LRU (``MemoryCache``) instead: nothing about the texts reaches the disk (what a server
answering clinicians' queries wants; ``elmsearch serve --disk-cache`` opts back in).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


MEMORY = ":memory:"  # a cache_dir meaning "an in-memory LRU, never a file"
MEMORY_ENTRIES = 4096


class MemoryCache:
    """A bounded, thread-safe LRU of text features (keyed, like the file, by the text's SHA-256).

    Parameters
    ----------
    maxsize : int
        Most texts kept; the least recently used goes first.
    """

    def __init__(self, maxsize: int = MEMORY_ENTRIES):
        self.maxsize = int(maxsize)
        self._d: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0  # texts answered from memory / handed to the encoder

    def __len__(self) -> int:
        return len(self._d)

    def get_many(self, hashes: list[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``hashes`` (each found one becomes the most recent)."""
        with self._lock:
            found = {}
            for h in hashes:
                if h in self._d:
                    self._d.move_to_end(h)
                    found[h] = self._d[h]
            return found

    def put_many(self, items: list[tuple[str, np.ndarray]]) -> None:
        """Keep vectors, dropping the least recently used beyond ``maxsize``."""
        with self._lock:
            for h, v in items:
                self._d[h] = np.asarray(v, np.float32).copy()
                self._d.move_to_end(h)
            while len(self._d) > self.maxsize:
                self._d.popitem(last=False)


def open_cache(cache_dir: str | Path | None, key: str) -> Path | MemoryCache | None:
    """The cache of text encoder ``key`` for a ``cache_dir``: None (no cache), ``MEMORY`` or a folder.

    Returns
    -------
    Path | MemoryCache | None
        The SQLite file (``cache_file``), a new ``MemoryCache``, or None (no cache).
    """
    if cache_dir is None:
        return None
    if str(cache_dir) == MEMORY:
        return MemoryCache()
    return cache_file(cache_dir, key)


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


def cached_embed(texts: list[str], path: Path | MemoryCache | None, encode: Callable[[list[str]], np.ndarray],
                 dim: int) -> np.ndarray:
    """Features of ``texts``, shape (n_texts, dim), float32: from the cache, the rest from ``encode``.

    Texts are keyed by the SHA-256 of their UTF-8 bytes; each distinct new text is encoded once.
    ``path``: the SQLite file, a ``MemoryCache``, or None (no cache).
    """
    texts = list(texts)
    if path is None:
        return encode(texts)
    if not texts:
        return np.zeros((0, dim), np.float32)
    hashes = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    if isinstance(path, MemoryCache):
        return _memory_embed(texts, hashes, path, encode)
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


def _memory_embed(texts: list[str], hashes: list[str], cache: MemoryCache,
                  encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    found = cache.get_many(hashes)
    todo = list({h: i for i, h in enumerate(hashes) if h not in found}.values())
    cache.hits += len(hashes) - len(todo)
    cache.misses += len(todo)
    if todo:
        vecs = np.asarray(encode([texts[i] for i in todo]), np.float32)
        pairs = [(hashes[i], v) for i, v in zip(todo, vecs, strict=True)]
        cache.put_many(pairs)
        found.update(pairs)
    return np.stack([found[h] for h in hashes]).astype(np.float32, copy=False)

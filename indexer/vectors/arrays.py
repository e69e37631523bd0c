"""Vectors and ids as FAISS takes them, and :data:`Chunks`, the one way vectors reach an index.

Vectors are float32, shape (n, d), L2-normalised; ids are int64 database row ids (never
positions; ``-1`` is FAISS's "no result"). Results have shape ``(n_queries, k)``, scores are
float32 inner products, best first, and slots without a result hold id ``-1`` and score ``-inf``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
"""A re-iterable source of vectors: each call yields ``(ids, vectors)`` chunks, the same each time."""


def as_vectors(vectors: np.ndarray, dim: int | None = None, check_norm: bool = True) -> np.ndarray:
    """C-contiguous float32 (n, d) array; checks the dimension and, optionally, unit norms.

    Parameters
    ----------
    vectors : array, shape (n, d)
    dim : int, optional
        The dimension they must have.
    check_norm : bool
        Require L2 norms of 1 (within 1e-3 on the squared norm).

    Returns
    -------
    array of float32, shape (n, d)
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n, d), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"vectors have dimension {x.shape[1]}, the index has {dim}")
    if check_norm and len(x):
        sq = np.einsum("ij,ij->i", x, x)
        bad = np.flatnonzero(np.abs(sq - 1.0) > 1e-3)
        if len(bad):
            raise ValueError(
                f"{len(bad)} of {len(x)} vectors are not L2-normalised (first: row {bad[0]}, "
                f"norm {np.sqrt(sq[bad[0]]):.4f})"
            )
    return x


def as_ids(ids: np.ndarray, n: int | None = None, unique: bool = True) -> np.ndarray:
    """C-contiguous int64 1-D array of non-negative (optionally unique) ids.

    Parameters
    ----------
    ids : array of int
    n : int, optional
        The number of ids there must be.
    unique : bool
        Refuse repeated ids.

    Returns
    -------
    array of int64, shape (n,)
    """
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {a.shape}")
    if len(a) and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"ids must be integers, got {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if n is not None and len(a) != n:
        raise ValueError(f"{len(a)} ids for {n} vectors")
    if len(a) and a.min() < 0:
        raise ValueError("ids must be >= 0 (-1 means 'no result' in FAISS)")
    if unique and len(np.unique(a)) != len(a):
        raise ValueError("ids must be unique")
    return a


def as_queries(queries: np.ndarray, dim: int | None) -> np.ndarray:
    """Queries as a float32 (n_queries, d) array (one query may be given as shape (d,))."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    return as_vectors(q, dim, check_norm=False)


def finish(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply the result conventions: float32 scores, int64 ids, ``-inf`` where the id is ``-1``."""
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    scores[labels < 0] = -np.inf
    return scores, labels


def empty_result(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` of ``nq`` queries that found nothing."""
    return np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)


def array_chunks(vectors: np.ndarray, ids: np.ndarray, chunk: int = 100_000) -> Chunks:
    """:data:`Chunks` over arrays already in memory (views, no copies).

    Parameters
    ----------
    vectors : array, shape (n, d)
    ids : array of int64, shape (n,)
    chunk : int
        Vectors per chunk.

    Returns
    -------
    Chunks
    """
    if len(vectors) != len(ids):
        raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(ids), chunk):
            yield ids[start : start + chunk], vectors[start : start + chunk]

    return chunks


def gather_chunks(chunks: Chunks, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Every vector of ``chunks`` in one array: ``(vectors, ids)``, shapes (n, dim) and (n,)."""
    ids, xs = [], []
    for i, x in chunks():
        ids.append(np.asarray(i, dtype=np.int64))
        xs.append(np.asarray(x, dtype=np.float32).reshape(len(i), dim))
    if not ids:
        return np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
    return np.concatenate(xs), np.concatenate(ids)

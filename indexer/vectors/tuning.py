"""Tuning an IVF index: its size (``nlist``), its tuning queries, their exact neighbours, its ``nprobe``.

One query generator (:func:`tuning_queries`), one exact top-k (:func:`exact_topk`, over
:data:`~indexer.vectors.arrays.Chunks` so that an index too large for memory gets its ground truth
chunk by chunk, accumulated in FAISS's own ``ResultHeap``), one tuner (:func:`tune_nprobe`: the
smallest power of two whose recall@10 against exact search reaches the target).
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from indexer.vectors.arrays import Chunks, as_ids, as_queries, as_vectors, empty_result, finish
from indexer.vectors.index_info import RECALL_K
from indexer.vectors.ops import ivf_search_params

logger = logging.getLogger(__name__)


def choose_nlist(n: int, min_nlist: int = 256, max_nlist: int = 65536, min_points_per_list: int = 39) -> int:
    """Number of IVF lists for ``n`` vectors: ``4 * sqrt(n)`` rounded to a power of two.

    The result is clipped to ``[min_nlist, max_nlist]`` and then, for small ``n``, lowered to
    the largest power of two that leaves at least ``min_points_per_list`` vectors per list
    (FAISS's own minimum for training k-means well).

    Parameters
    ----------
    n : int
        Number of vectors.
    min_nlist, max_nlist : int
        Bounds (powers of two).
    min_points_per_list : int
        Minimum average list length.

    Returns
    -------
    int
        A power of two, at least 1.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    nlist = 2 ** int(round(np.log2(4.0 * np.sqrt(n))))
    nlist = min(max(nlist, min_nlist), max_nlist)
    cap = n // min_points_per_list
    if cap < nlist:
        nlist = 2 ** int(np.floor(np.log2(cap))) if cap >= 1 else 1
    return int(nlist)


def recall_at_k(found_ids: np.ndarray, true_ids: np.ndarray) -> float:
    """Mean recall of ``found_ids`` against ``true_ids``, row by row.

    Parameters
    ----------
    found_ids, true_ids : array of int64, shape (n_queries, k)
        Ids returned by the approximate and the exact search; ``-1`` entries are ignored.

    Returns
    -------
    float
        Mean over queries with at least one true id of ``|found & true| / |true|``
        (1.0 when no query has a true id).
    """
    found_ids = np.asarray(found_ids)
    true_ids = np.asarray(true_ids)
    if found_ids.shape[0] != true_ids.shape[0]:
        raise ValueError("found_ids and true_ids have different numbers of rows")
    recalls = []
    for found, true in zip(found_ids, true_ids, strict=True):
        true = true[true >= 0]
        if len(true):
            recalls.append(len(np.intersect1d(found[found >= 0], true)) / len(true))
    return float(np.mean(recalls)) if recalls else 1.0


def tuning_queries(
    vectors: np.ndarray, n_queries: int | None = None, noise: float = 0.1, seed: int = 0
) -> np.ndarray:
    """Seeded tuning queries from the data: vectors perturbed (Gaussian, norm about ``noise``), renormalised.

    Parameters
    ----------
    vectors : array, shape (n, d)
        The indexed vectors, or vectors held out of an index's training sample.
    n_queries : int, optional
        Sample at most this many of ``vectors`` first (all of them, in order, by default).
    noise : float
        Expected L2 norm of the Gaussian perturbation added to each unit vector.
    seed : int
        Seed of the sample and of the noise.

    Returns
    -------
    array of float32, shape (min(n_queries, n), d)
    """
    rng = np.random.default_rng(seed)
    n, d = vectors.shape
    if n_queries is None:
        q = np.array(vectors, dtype=np.float32, copy=True)
    else:
        q = vectors[np.sort(rng.choice(n, size=min(n_queries, n), replace=False))].astype(np.float32, copy=True)
    q += rng.standard_normal(q.shape, dtype=np.float32) * np.float32(noise / np.sqrt(d))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q


class TopK:
    """Running exact top-``k`` (inner product) of fixed queries over chunks of vectors.

    Each chunk is searched by FAISS's brute force (``faiss.knn``) and its results merged into a
    ``faiss.ResultHeap``; only one chunk's vectors are in memory at a time.

    Parameters
    ----------
    queries : array, shape (n_queries, d) or (d,)
    k : int
    """

    def __init__(self, queries: np.ndarray, k: int):
        if k < 1:
            raise ValueError("k must be >= 1")
        self.q = as_queries(queries, None)
        self.k = k
        self._heap = faiss.ResultHeap(len(self.q), k, keep_max=True)

    def update(self, ids: np.ndarray, x: np.ndarray) -> None:
        """Merge the chunk ``(ids, x)`` into the running top-``k``."""
        x = as_vectors(x, self.q.shape[1], check_norm=False)
        ids = as_ids(ids, len(x), unique=False)
        if len(x) == 0 or len(self.q) == 0:
            return
        scores, pos = faiss.knn(self.q, x, min(self.k, len(x)), metric=faiss.METRIC_INNER_PRODUCT)
        self._heap.add_result(scores, np.where(pos >= 0, ids[np.maximum(pos, 0)], -1))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``, shape (n_queries, k), best first; ``-inf`` and ``-1`` where there is no result."""
        self._heap.finalize()
        return finish(self._heap.D.copy(), self._heap.I.copy())


def exact_topk(queries: np.ndarray, chunks: Chunks, k: int = RECALL_K) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products of queries over vectors read chunk by chunk.

    The ground truth of the ``nprobe`` tuning, and the exact search among the few rows a SQL
    filter leaves (pass them through :func:`~indexer.vectors.arrays.array_chunks`). Only one
    chunk's vectors and one ``(n_queries, chunk)`` score matrix are in memory at a time.

    Parameters
    ----------
    queries : array, shape (n_queries, d) or (d,)
    chunks : Chunks
        The vectors and their ids.
    k : int

    Returns
    -------
    scores : array of float32, shape (n_queries, k)
        Best first; ``-inf`` where there are fewer than ``k`` vectors.
    ids : array of int64, shape (n_queries, k)
        ``-1`` where there are fewer than ``k`` vectors.
    """
    top = TopK(queries, k)
    seen = False
    for ids, x in chunks():
        top.update(ids, x)
        seen = seen or len(ids) > 0
    return top.result() if seen else empty_result(len(top.q), k)


def tune_nprobe(
    index: faiss.Index, queries: np.ndarray, truth: np.ndarray, target_recall: float = 0.95, k: int = RECALL_K
) -> tuple[int, float]:
    """Set an IVF index's ``nprobe`` to the smallest power of two reaching a recall target.

    Candidates are ``1, 2, 4, ..., nlist``. The queries come from :func:`tuning_queries`, their
    exact neighbours from :func:`exact_topk`. When no candidate reaches the target
    (scalar-quantisation error limits recall even at ``nprobe = nlist``), ``nlist`` is kept and
    a warning is logged.

    Parameters
    ----------
    index : faiss.Index
        An IVF index.
    queries : array, shape (n_queries, d)
        Tuning queries.
    truth : array of int64, shape (n_queries, k)
        Their exact top-``k`` ids.
    target_recall : float
        Required mean recall@k.
    k : int
        Recall depth.

    Returns
    -------
    nprobe : int
        The chosen value, also set on the index.
    recall : float
        Mean recall@k measured at that value.
    """
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        raise ValueError("tune_nprobe needs an IVF index")
    queries = as_queries(queries, index.d)
    candidates = [1 << i for i in range(int(np.log2(ivf.nlist)) + 1) if (1 << i) < ivf.nlist] + [ivf.nlist]
    recall = 0.0
    for nprobe in candidates:
        found = index.search(queries, k, params=ivf_search_params(index, nprobe))[1]
        recall = recall_at_k(found, truth)
        logger.debug("nprobe %d: recall@%d %.4f", nprobe, k, recall)
        if recall >= target_recall:
            break
    else:
        logger.warning(
            "recall@%d %.4f at nprobe = nlist = %d stays below the target %.3f", k, recall, ivf.nlist, target_recall
        )
    ivf.nprobe = nprobe
    return nprobe, recall

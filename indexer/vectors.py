"""The FAISS layer of the index: build, tune, search, filter, edit, save and load vector indexes.

Vectors are 256-d float32, L2-normalised, and searched by inner product (cosine similarity).
A FAISS id is always the database row id (int64, never a position in an array), so that a hit
can be looked up in SQL directly; ``-1`` is reserved by FAISS for "no result" and therefore
cannot be a row id.

Three kinds of index, chosen by size:

- ``"flat_ip"`` (exact): ``IndexIDMap2(IndexFlatIP)``, below ``exact_below`` vectors;
- ``"ivf_sq8"`` (approximate): ``IndexIVFScalarQuantizer`` with 8-bit scalar quantisation and
  inner-product metric; ``nlist`` is about ``4 * sqrt(n)`` rounded to a power of two, and
  ``nprobe`` is tuned at build time as the smallest power of two whose recall@10 against exact
  search reaches a target (0.95 by default) on queries drawn from the data;
- ``"ivf_sq8_ondisk"`` (approximate, from a few million vectors): the same SQ8 codes with an HNSW
  coarse quantizer, built in shards and merged into one ``.ivfdata`` file next to the index file,
  which is memory-mapped (see :mod:`indexer.faiss_scale`).

The two IVF kinds can be updated in place of a rebuild (:func:`indexer.faiss_scale.update_index`);
``IndexInfo`` records when and on how much data their quantizers were trained.

Conventions shared by :func:`search` and :func:`exact_scores`: results have shape
``(n_queries, k)``, scores are float32 inner products, best first, and slots without a
result (``k`` larger than the number of candidates) hold id ``-1`` and score ``-inf``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import faiss
import numpy as np

logger = logging.getLogger(__name__)

DIM = 256
KIND_EXACT = "flat_ip"
KIND_IVF = "ivf_sq8"
KIND_ONDISK = "ivf_sq8_ondisk"
KINDS = (KIND_EXACT, KIND_IVF, KIND_ONDISK)
RECALL_K = 10
IVFDATA_SUFFIX = ".ivfdata"

# Indexes whose storage is a read-only memory map: FAISS aborts the process (it does not raise)
# when such an index is modified, so the editing helpers here refuse them first.
_READ_ONLY: weakref.WeakSet[faiss.Index] = weakref.WeakSet()


@dataclasses.dataclass
class IndexInfo:
    """How an index was built, and what its tuning measured.

    Attributes
    ----------
    kind : str
        ``"flat_ip"`` (exact), ``"ivf_sq8"`` (IVF with 8-bit scalar quantisation) or
        ``"ivf_sq8_ondisk"`` (the same, HNSW quantizer, lists in an ``.ivfdata`` file).
    n : int
        Number of vectors (at build time, then after each incremental update).
    dim : int
        Vector dimension.
    nlist : int
        Number of inverted lists (0 for the exact kind).
    nprobe : int
        Lists visited per query, as tuned (0 for the exact kind).
    recall_at_10 : float
        Mean recall@10 against exact search measured at ``nprobe`` (1.0 for the exact kind).
    target_recall : float
        The recall@10 the tuning aimed for.
    n_train : int
        Vectors used to train the IVF quantizers (0 for the exact kind).
    build_seconds : float
        Wall time of the last full build (training, adding, merging and tuning).
    seed : int
        Seed of the training sample and of the tuning queries.
    train_seconds, add_seconds, merge_seconds, tune_seconds : float
        Parts of ``build_seconds`` (``merge_seconds``: on-disk kind only).
    trained_at : str
        UTC time (ISO 8601) the quantizers were trained; kept by incremental updates.
    n_at_train : int
        Vectors in the index when it was trained.
    train_residual : float
        Mean squared distance of the indexed vectors to their nearest centroid at training
        (the reference of the drift rule, :func:`indexer.faiss_scale.retrain_reason`).
    n_added_since_train, n_removed_since_train : int
        Vectors added and removed by incremental updates since the training.
    added_residual : float
        Mean squared distance to the nearest centroid of the vectors added since the training.
    n_updates : int
        Incremental updates since the training.
    update_seconds : float
        Wall time of the last incremental update (0 after a full build).
    ivfdata : str
        Name of the inverted-list file next to the index file (on-disk kind), else ``""``.
    n_shards : int
        Shards the on-disk kind was built in (0 otherwise).
    """

    kind: str
    n: int
    dim: int = DIM
    nlist: int = 0
    nprobe: int = 0
    recall_at_10: float = 1.0
    target_recall: float = 0.95
    n_train: int = 0
    build_seconds: float = 0.0
    seed: int = 0
    train_seconds: float = 0.0
    add_seconds: float = 0.0
    merge_seconds: float = 0.0
    tune_seconds: float = 0.0
    trained_at: str = ""
    n_at_train: int = 0
    train_residual: float = 0.0
    n_added_since_train: int = 0
    n_removed_since_train: int = 0
    added_residual: float = 0.0
    n_updates: int = 0
    update_seconds: float = 0.0
    ivfdata: str = ""
    n_shards: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexInfo:
        """Inverse of :meth:`to_dict`; unknown keys (from newer versions) are ignored.

        Raises
        ------
        ValueError
            When a required field (``kind``, ``n``) is missing or the kind is unknown.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {key: value for key, value in d.items() if key in names}
        missing = [name for name in ("kind", "n") if name not in kwargs]
        if missing:
            raise ValueError(f"IndexInfo dict lacks {', '.join(missing)}")
        if kwargs["kind"] not in KINDS:
            raise ValueError(f"unknown index kind {kwargs['kind']!r}")
        return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Validation helpers


def _as_vectors(vectors: np.ndarray, dim: int | None = None, check_norm: bool = True) -> np.ndarray:
    """C-contiguous float32 (n, d) array; checks the dimension and, optionally, unit norms."""
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


def _as_ids(ids: np.ndarray, n: int | None = None, unique: bool = True) -> np.ndarray:
    """C-contiguous int64 1-D array of non-negative (optionally unique) ids."""
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


def _as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    return _as_vectors(q, dim, check_norm=False)


def _check_writable(index: faiss.Index) -> None:
    if index in _READ_ONLY:
        raise ValueError("this index was read memory-mapped (read-only); read it with mmap=False to modify it")


def _finish(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply the shared result conventions: float32 scores, int64 ids, -inf where id is -1."""
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    scores[labels < 0] = -np.inf
    return scores, labels


def _empty_result(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)


def ondisk_lists(index: faiss.Index) -> faiss.OnDiskInvertedLists | None:
    """The inverted lists of an on-disk IVF index (kept in an ``.ivfdata`` file), else None."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return None
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) and lists.filename else None


def index_kind(index: faiss.Index) -> str:
    """``"ivf_sq8_ondisk"``, ``"ivf_sq8"`` for another IVF index, ``"flat_ip"`` otherwise.

    Parameters
    ----------
    index : faiss.Index
        An index made by :func:`build_index` or :func:`indexer.faiss_scale.build_ondisk` (or
        read back by :func:`read_index`).

    Returns
    -------
    str
    """
    if faiss.try_extract_index_ivf(index) is None:
        return KIND_EXACT
    return KIND_ONDISK if ondisk_lists(index) is not None else KIND_IVF


# ---------------------------------------------------------------------------------------------
# Building and tuning


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


def tuning_queries(vectors: np.ndarray, n_queries: int = 200, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """Seeded queries taken from the data: sampled vectors, perturbed, renormalised.

    Parameters
    ----------
    vectors : array, shape (n, d)
        The indexed vectors.
    n_queries : int
        At most this many queries (fewer when ``n`` is smaller).
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
    rows = np.sort(rng.choice(n, size=min(n_queries, n), replace=False))
    q = vectors[rows].astype(np.float32, copy=True)
    q += rng.standard_normal(q.shape, dtype=np.float32) * np.float32(noise / np.sqrt(d))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q


def exact_neighbours(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-``k`` ids of each query among ``vectors`` (FAISS brute force, no index built).

    Parameters
    ----------
    vectors : array, shape (n, d)
    ids : array of int64, shape (n,)
    queries : array, shape (n_queries, d)
    k : int

    Returns
    -------
    array of int64, shape (n_queries, k)
        ``-1`` where there are fewer than ``k`` vectors.
    """
    return exact_scores(vectors, ids, queries, k)[1]


def tune_nprobe(
    index: faiss.Index,
    vectors: np.ndarray,
    ids: np.ndarray,
    target_recall: float = 0.95,
    n_queries: int = 200,
    seed: int = 0,
    k: int = RECALL_K,
) -> tuple[int, float]:
    """Set an IVF index's ``nprobe`` to the smallest power of two reaching a recall target.

    Candidates are ``1, 2, 4, ..., nlist``. Queries come from :func:`tuning_queries`; the
    reference is exact top-``k`` over the same vectors. When no candidate reaches the target
    (scalar-quantisation error limits recall even at ``nprobe = nlist``), ``nlist`` is kept and
    a warning is logged.

    Parameters
    ----------
    index : faiss.Index
        An IVF index holding ``vectors`` under ``ids``.
    vectors : array, shape (n, d)
        The vectors the index holds (exactly, not reconstructed).
    ids : array of int64, shape (n,)
        Their ids.
    target_recall : float
        Required mean recall@k.
    n_queries : int
        Number of tuning queries.
    seed : int
        Seed of the queries.
    k : int
        Recall depth.

    Returns
    -------
    (nprobe, recall)
        As :func:`tune_nprobe_on`.
    """
    if faiss.try_extract_index_ivf(index) is None:
        raise ValueError("tune_nprobe needs an IVF index")
    vectors = _as_vectors(vectors, index.d, check_norm=False)
    ids = _as_ids(ids, len(vectors), unique=False)
    queries = tuning_queries(vectors, n_queries=n_queries, seed=seed)
    truth = exact_neighbours(vectors, ids, queries, k)
    return tune_nprobe_on(index, queries, truth, target_recall=target_recall, k=k)


def tune_nprobe_on(
    index: faiss.Index, queries: np.ndarray, truth: np.ndarray, target_recall: float = 0.95, k: int = RECALL_K
) -> tuple[int, float]:
    """Set an IVF index's ``nprobe`` to the smallest power of two reaching a recall target.

    The part of :func:`tune_nprobe` that works from given queries and their exact neighbours
    (for indexes whose vectors are not all in memory, see :func:`indexer.faiss_scale.exact_topk`).

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
        raise ValueError("tune_nprobe_on needs an IVF index")
    queries = _as_queries(queries, index.d)
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


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    exact_below: int = 50_000,
    target_recall: float = 0.95,
    seed: int = 0,
    max_train: int = 100_000,
    n_tune_queries: int = 200,
) -> tuple[faiss.Index, IndexInfo]:
    """Build an index of the right kind for the number of vectors, and tune it.

    Below ``exact_below`` vectors the index is exact (``IndexIDMap2(IndexFlatIP)``). From there
    on it is an ``IndexIVFScalarQuantizer`` (SQ8, inner product) with ``nlist`` from
    :func:`choose_nlist`, trained on a seeded sample of at most ``min(50 * nlist, max_train)``
    vectors, and ``nprobe`` from :func:`tune_nprobe`.

    Parameters
    ----------
    vectors : array, shape (n, d)
        L2-normalised vectors (float32 or convertible).
    ids : array of int64, shape (n,)
        Database row ids: unique and non-negative.
    exact_below : int
        Size from which the IVF kind is used.
    target_recall : float
        Recall@10 the IVF tuning aims for.
    seed : int
        Seed of the training sample, of k-means and of the tuning queries.
    max_train : int
        Most vectors used to train the IVF (bounds the build time of large indexes).
    n_tune_queries : int
        Queries used to tune ``nprobe``.

    Returns
    -------
    index : faiss.Index
        The index holding every vector under its id.
    info : IndexInfo
        How it was built.

    Raises
    ------
    ValueError
        On mismatched shapes, non-unique or negative ids, or vectors that are not unit-norm.
    """
    t0 = time.perf_counter()
    x = _as_vectors(vectors)
    ids = _as_ids(ids, len(x))
    n, d = x.shape
    if n == 0 or n < exact_below:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        index.add_with_ids(x, ids)
        info = IndexInfo(kind=KIND_EXACT, n=n, dim=d, target_recall=target_recall, seed=seed)
    else:
        nlist = choose_nlist(n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.seed = seed
        # We sample deliberately (max_train); keep FAISS from printing its "too few points" warning.
        index.cp.min_points_per_centroid = 5
        n_train = min(n, 50 * nlist, max_train)
        rng = np.random.default_rng(seed)
        sample = x[np.sort(rng.choice(n, size=n_train, replace=False))]
        t_train = time.perf_counter()
        index.train(sample)
        del sample
        t_add = time.perf_counter()
        residual_sum = add_assigned(index, x, ids)
        t_tune = time.perf_counter()
        nprobe, recall = tune_nprobe(index, x, ids, target_recall=target_recall, n_queries=n_tune_queries, seed=seed)
        t_end = time.perf_counter()
        logger.info(
            "IVF index: n=%d nlist=%d train %.1f s (%d vectors), add %.1f s, tune %.1f s -> nprobe %d recall@10 %.3f",
            n,
            nlist,
            t_add - t_train,
            n_train,
            t_tune - t_add,
            t_end - t_tune,
            nprobe,
            recall,
        )
        info = IndexInfo(
            kind=KIND_IVF,
            n=n,
            dim=d,
            nlist=nlist,
            nprobe=nprobe,
            recall_at_10=recall,
            target_recall=target_recall,
            n_train=n_train,
            seed=seed,
            train_seconds=t_add - t_train,
            add_seconds=t_tune - t_add,
            tune_seconds=t_end - t_tune,
            trained_at=utc_now(),
            n_at_train=n,
            train_residual=residual_sum / n,
        )
    info.build_seconds = time.perf_counter() - t0
    logger.info("built %s index of %d vectors in %.2f s", info.kind, n, info.build_seconds)
    return index, info


def utc_now() -> str:
    """The current UTC time, ISO 8601 (as recorded in ``IndexInfo.trained_at``)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def centroid_sq_norms(index: faiss.Index) -> np.ndarray:
    """Squared norms of an IVF index's centroids, array of float32, shape (nlist,)."""
    ivf = faiss.extract_index_ivf(index)
    c = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    return np.einsum("ij,ij->i", c, c).astype(np.float32)


def assign(
    index: faiss.Index, vectors: np.ndarray, sq_norms: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest list of each vector in an IVF index, and the squared distance to its centroid.

    Parameters
    ----------
    index : faiss.Index
        A trained IVF index (inner-product quantizer).
    vectors : array, shape (n, d)
        Unit vectors.
    sq_norms : array, shape (nlist,), optional
        :func:`centroid_sq_norms` of the index, when the caller assigns many chunks.

    Returns
    -------
    lists : array of int64, shape (n,)
        List numbers (what FAISS itself would choose: the quantizer's best match).
    residuals : array of float32, shape (n,)
        ``||x - c||^2`` for the chosen centroid ``c`` (the drift statistic).
    """
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        raise ValueError("assign needs an IVF index")
    x = _as_vectors(vectors, index.d, check_norm=False)
    if sq_norms is None:
        sq_norms = centroid_sq_norms(index)
    if len(x) == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    scores, lists = ivf.quantizer.search(x, 1)
    lists = np.ascontiguousarray(lists[:, 0], dtype=np.int64)
    residuals = np.einsum("ij,ij->i", x, x) + sq_norms[lists] - 2 * scores[:, 0]
    return lists, np.maximum(residuals, 0).astype(np.float32)


def add_assigned(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, chunk: int = 65_536) -> float:
    """Add vectors to an IVF index through :func:`assign`; returns the sum of their residuals.

    The same lists FAISS's own ``add_with_ids`` would choose, with the distances to the
    centroids kept for the drift rule instead of thrown away.

    Parameters
    ----------
    index : faiss.Index
        A trained, writable IVF index.
    vectors : array, shape (n, d)
        Unit vectors.
    ids : array of int64, shape (n,)
        Their ids.
    chunk : int
        Vectors assigned and encoded at a time.

    Returns
    -------
    float
        Sum over the added vectors of the squared distance to their centroid.
    """
    _check_writable(index)
    ivf = faiss.extract_index_ivf(index)
    x = _as_vectors(vectors, index.d, check_norm=False)
    ids = _as_ids(ids, len(x), unique=False)
    sq_norms = centroid_sq_norms(index)
    total = 0.0
    for start in range(0, len(x), chunk):
        xs = np.ascontiguousarray(x[start : start + chunk])
        ks = np.ascontiguousarray(ids[start : start + chunk])
        lists, residuals = assign(index, xs, sq_norms)
        ivf.add_core(len(xs), faiss.swig_ptr(xs), faiss.swig_ptr(ks), faiss.swig_ptr(lists))
        total += float(residuals.sum(dtype=np.float64))
    if ivf is not index:
        index.ntotal = ivf.ntotal
    return total


# ---------------------------------------------------------------------------------------------
# Searching


def ivf_search_params(
    index: faiss.Index, nprobe: int, sel: faiss.IDSelector | None = None
) -> faiss.SearchParametersIVF:
    """Search parameters of an IVF index that visit ``nprobe`` lists.

    An HNSW quantizer (the on-disk kind) returns at most about ``efSearch`` good lists, however
    many are asked for: its breadth is raised to ``nprobe`` when that is larger.

    Parameters
    ----------
    index : faiss.Index
        An IVF index.
    nprobe : int
        Lists to visit.
    sel : faiss.IDSelector, optional
        Restrict the search to these ids (the caller keeps it alive during the search).

    Returns
    -------
    faiss.SearchParametersIVF
    """
    params = faiss.SearchParametersIVF(nprobe=int(nprobe))
    if sel is not None:
        params.sel = sel
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    if isinstance(quantizer, faiss.IndexHNSW) and nprobe > quantizer.hnsw.efSearch:
        hnsw = faiss.SearchParametersHNSW(efSearch=int(nprobe))
        params.quantizer_params = hnsw
        params.referenced_objects = [hnsw]  # keep it alive as long as params
    return params


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    allowed_ids: np.ndarray | None = None,
    nprobe: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` ids and inner-product scores, optionally restricted to a set of ids.

    Parameters
    ----------
    index : faiss.Index
        An index from :func:`build_index` or :func:`read_index`.
    queries : array, shape (n_queries, d) or (d,)
        Query vectors (L2-normalised for cosine scores).
    k : int
        Results per query.
    allowed_ids : array of int64, optional
        Only these ids may be returned (a FAISS ``IDSelectorBatch`` applied during the search).
        With an IVF index only the visited lists are searched (see ``nprobe``), so results are
        approximate; when a SQL filter leaves few rows, :func:`exact_scores` on those rows'
        vectors is exact and cheaper.
    nprobe : int, optional
        Lists visited per query (IVF only); by default the index's own value, i.e. the tuned
        ``IndexInfo.nprobe``, which is saved with the index. With ``allowed_ids`` and no explicit
        ``nprobe``, the default is divided by the fraction of the index allowed
        (``len(allowed_ids) / ntotal``, capped at ``nlist``): the best allowed vectors then lie
        deeper in the ranking, and the selector makes extra lists cheap to scan. Ignored by
        the exact kind.

    Returns
    -------
    scores : array of float32, shape (n_queries, k)
        Best first; ``-inf`` where there is no result.
    ids : array of int64, shape (n_queries, k)
        ``-1`` where there is no result.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    q = _as_queries(queries, index.d)
    ivf = faiss.try_extract_index_ivf(index)
    sel = None
    if allowed_ids is not None:
        allowed = _as_ids(allowed_ids, unique=False)
        if len(allowed) == 0:
            return _empty_result(len(q), k)
        sel = faiss.IDSelectorBatch(allowed)
    if ivf is not None:
        if nprobe is None:
            nprobe = ivf.nprobe
            if sel is not None and len(allowed) < index.ntotal:
                nprobe = int(np.ceil(nprobe * index.ntotal / len(allowed)))
        params: faiss.SearchParameters | None = ivf_search_params(index, min(max(nprobe, 1), ivf.nlist), sel)
    else:
        params = faiss.SearchParameters(sel=sel) if sel is not None else None
    scores, labels = index.search(q, k, params=params)
    if ivf is not None:
        # only the visited lists are searched: a query far from the data (a text query) can find
        # fewer than k there, so widen the search until each has its k (or every list is visited)
        want = min(k, index.ntotal if sel is None else len(allowed))
        while params.nprobe < ivf.nlist and (labels[:, :want] < 0).any():
            params = ivf_search_params(index, min(2 * params.nprobe, ivf.nlist), sel)
            scores, labels = index.search(q, k, params=params)
    del sel  # the selector must outlive the search call
    return _finish(scores, labels)


def exact_scores(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` among a given subset of vectors, without building an index.

    For the case where a SQL filter leaves few rows: pass those rows' vectors and ids. The
    brute-force search is FAISS's (``faiss.knn``, inner product).

    Parameters
    ----------
    vectors : array, shape (n, d)
        Candidate vectors.
    ids : array of int64, shape (n,)
        Their row ids.
    query : array, shape (n_queries, d) or (d,)
        Query vectors.
    k : int
        Results per query.

    Returns
    -------
    scores : array of float32, shape (n_queries, k)
        Best first; ``-inf`` where there is no result (``k > n``).
    ids : array of int64, shape (n_queries, k)
        ``-1`` where there is no result.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    x = _as_vectors(vectors, check_norm=False)
    ids = _as_ids(ids, len(x), unique=False)
    q = _as_queries(query, x.shape[1])
    if len(x) == 0 or len(q) == 0:
        return _empty_result(len(q), k)
    scores, pos = faiss.knn(q, x, k, metric=faiss.METRIC_INNER_PRODUCT)
    labels = np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)
    return _finish(scores, labels)


# ---------------------------------------------------------------------------------------------
# Editing


def index_ids(index: faiss.Index) -> np.ndarray:
    """Every id the index holds (unordered).

    Parameters
    ----------
    index : faiss.Index

    Returns
    -------
    array of int64, shape (ntotal,)
    """
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    invlists = ivf.invlists
    parts = []
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size:
            ptr = invlists.get_ids(list_no)
            parts.append(faiss.rev_swig_ptr(ptr, size).copy())
            invlists.release_ids(list_no, ptr)
    return np.concatenate(parts).astype(np.int64, copy=False) if parts else np.empty(0, dtype=np.int64)


def add_vectors(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Add vectors under new ids (an IVF index keeps its trained quantizers and ``nprobe``).

    Parameters
    ----------
    index : faiss.Index
        A writable index (not read with ``mmap=True``).
    vectors : array, shape (n, d)
        L2-normalised vectors.
    ids : array of int64, shape (n,)
        Unique, non-negative ids not already in the index.

    Raises
    ------
    ValueError
        On invalid input, an id already present, or a memory-mapped index.
    """
    _check_writable(index)
    x = _as_vectors(vectors, index.d)
    ids = _as_ids(ids, len(x))
    clash = np.intersect1d(ids, index_ids(index))
    if len(clash):
        raise ValueError(f"{len(clash)} ids already in the index (first: {clash[0]})")
    if len(x):
        index.add_with_ids(x, ids)


def remove_ids(index: faiss.Index, ids: np.ndarray) -> int:
    """Remove vectors by id; ids not in the index are ignored.

    Parameters
    ----------
    index : faiss.Index
        A writable index (not read with ``mmap=True``).
    ids : array of int64
        Ids to remove.

    Returns
    -------
    int
        Number of vectors removed.
    """
    _check_writable(index)
    ids = _as_ids(ids, unique=False)
    if len(ids) == 0:
        return 0
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and ivf.direct_map.type == faiss.DirectMap.Hashtable:
        # FAISS removes through a hash-table direct map only with an explicit list of ids.
        ids = np.unique(ids)
        sel = faiss.IDSelectorArray(ids)
    else:
        sel = faiss.IDSelectorBatch(ids)
    removed = int(index.remove_ids(sel))
    del sel, ids  # IDSelectorArray points into ids: both must outlive the call
    return removed


def reconstruct(index: faiss.Index, ids: np.ndarray) -> np.ndarray:
    """The stored vectors of the given ids.

    Exact for the flat kind; for the IVF kind the SQ8-decoded approximation (error about
    1e-3 per component), so a rebuild from these is slightly lossy: prefer the original
    vectors when they are kept elsewhere. For IVF a hash-table direct map (id -> list entry) is
    created on first use.

    Parameters
    ----------
    index : faiss.Index
    ids : array of int64, shape (n,)

    Returns
    -------
    array of float32, shape (n, d)

    Raises
    ------
    KeyError
        When an id is not in the index.
    """
    ids = _as_ids(ids, unique=False)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    out = np.empty((len(ids), index.d), dtype=np.float32)
    for row, key in enumerate(ids):
        try:
            out[row] = index.reconstruct(int(key))
        except RuntimeError as exc:
            raise KeyError(int(key)) from exc
    return out


# ---------------------------------------------------------------------------------------------
# Files


def write_index(index: faiss.Index, fname: str | os.PathLike[str]) -> None:
    """Write an index atomically: temporary file in the same folder, fsync, ``os.replace``.

    A reader never sees a partial file, and a crash leaves either the old or the new index.

    Parameters
    ----------
    index : faiss.Index
    fname : path
        Destination; its folder must exist.
    """
    path = Path(fname)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)  # patient data (mkstemp made it 0600 already; kept explicit)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def ondisk_data_name(fname: str | os.PathLike[str]) -> str | None:
    """Name of the ``.ivfdata`` file an on-disk index file refers to, or None for a self-contained file.

    FAISS writes an on-disk index's inverted lists last: ..., the data file's name (a uint64
    length, then the bytes), the data size (uint64). Only the file's last bytes are read.

    Parameters
    ----------
    fname : path
        An index file.

    Returns
    -------
    str or None
        The data file's base name (its folder is the index file's).
    """
    suffix = IVFDATA_SUFFIX.encode()
    with open(fname, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 4096))
        tail = f.read()
    body = tail[:-8]
    if not body.endswith(suffix):
        return None
    for length in range(len(suffix) + 1, len(body) - 7):
        if int.from_bytes(body[-length - 8 : -length], "little") == length:
            return Path(body[-length:].decode("utf-8", "replace")).name
    return None


def _read_ondisk(path: Path, data_name: str) -> faiss.Index:
    """Read an on-disk index: the header, then its ``.ivfdata`` file mapped read-only.

    The data file is looked up next to the index file, whatever folder it was written in (what
    ``IO_FLAG_ONDISK_SAME_DIR`` does, without the line FAISS then prints on stdout), and its
    size is checked first: mapping a truncated file would kill the process on first access.
    """
    data = path.parent / data_name
    if not data.is_file():
        raise FileNotFoundError(f"{path}: its data file {data} is missing")
    index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
    lists = ondisk_lists(index)
    if lists is None:
        raise ValueError(f"{path}: not an on-disk index")
    if data.stat().st_size < lists.totsize:
        raise ValueError(f"{data}: {data.stat().st_size} bytes, the index needs {lists.totsize} (truncated?)")
    lists.filename = str(data)
    lists.prefetch_nthread = 0  # no prefetch threads per query: the page cache does it
    if lists.totsize:
        lists.do_mmap()
    _READ_ONLY.add(index)
    return index


def read_index(fname: str | os.PathLike[str], mmap: bool = False) -> faiss.Index:
    """Read an index written by :func:`write_index` (or an on-disk one, see below).

    Parameters
    ----------
    fname : path
    mmap : bool
        Memory-map the vector data read-only instead of loading it (fast start, shared pages).
        Uses ``IO_FLAG_MMAP_IFC | IO_FLAG_READ_ONLY``, which maps both kinds (plain
        ``IO_FLAG_MMAP`` maps only IVF lists in faiss 1.15). Such an index can be searched
        and reconstructed, not modified: :func:`add_vectors` and :func:`remove_ids` refuse it.
        The on-disk kind (``"ivf_sq8_ondisk"``, an index file and the ``.ivfdata`` file it
        names) is always mapped read-only from the data file next to the index file; it is
        changed only by writing new files (:func:`indexer.faiss_scale.update_index`).

    Returns
    -------
    faiss.Index
    """
    path = Path(fname)
    if not path.is_file():
        raise FileNotFoundError(f"no index file {path}")
    data_name = ondisk_data_name(path)
    if data_name is not None:
        return _read_ondisk(path, data_name)
    if not mmap:
        return faiss.read_index(str(path))
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    _READ_ONLY.add(index)
    return index

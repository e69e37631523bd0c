"""Operations on a FAISS index in memory: search, list assignment, and edits by id.

Every function takes any of the three kinds (:mod:`indexer.vectors.kinds`): ``IndexIDMap2`` over
``IndexFlatIP``, or an ``IndexIVFScalarQuantizer`` with a flat or HNSW coarse quantizer. A FAISS id
is always a database row id. Results follow :mod:`indexer.vectors.arrays`: shape
``(n_queries, k)``, best first, id ``-1`` and score ``-inf`` where there is no result.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import faiss
import numpy as np

from indexer.vectors.arrays import as_ids, as_queries, as_vectors, empty_result, finish
from indexer.vectors.files import check_writable

logger = logging.getLogger(__name__)


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
    x = as_vectors(vectors, index.d, check_norm=False)
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
    check_writable(index)
    x = as_vectors(vectors, index.d, check_norm=False)
    ids = as_ids(ids, len(x), unique=False)
    sq_norms = centroid_sq_norms(index)
    total = 0.0
    for start in range(0, len(x), chunk):
        lists, residuals = assign(index, x[start : start + chunk], sq_norms)
        add_to_lists(index, x[start : start + chunk], ids[start : start + chunk], lists)
        total += float(residuals.sum(dtype=np.float64))
    return total


def add_to_lists(index: faiss.Index, x: np.ndarray, ids: np.ndarray, lists: np.ndarray) -> None:
    """Add vectors to given lists of an IVF index (``IndexIVF.add_core``), without assigning them again.

    Parameters
    ----------
    index : faiss.Index
        A trained, writable IVF index.
    x : array, shape (n, d)
    ids : array of int64, shape (n,)
    lists : array of int64, shape (n,)
        List numbers, e.g. from :func:`assign`.
    """
    ivf = faiss.extract_index_ivf(index)
    x = np.ascontiguousarray(x, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    lists = np.ascontiguousarray(lists, dtype=np.int64)
    if len(x):
        ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
        index.ntotal = ivf.ntotal


@contextmanager
def hnsw_ef(index: faiss.Index, ef: int) -> Iterator[None]:
    """Temporarily set the search breadth of an IVF index's HNSW quantizer (no-op for others)."""
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    if not isinstance(quantizer, faiss.IndexHNSW):
        yield
        return
    before = quantizer.hnsw.efSearch
    quantizer.hnsw.efSearch = ef
    try:
        yield
    finally:
        quantizer.hnsw.efSearch = before


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
        An index from :func:`indexer.vectors.kinds.build_index` or :func:`indexer.vectors.files.read_index`.
    queries : array, shape (n_queries, d) or (d,)
        Query vectors (L2-normalised for cosine scores).
    k : int
        Results per query.
    allowed_ids : array of int64, optional
        Only these ids may be returned (a FAISS ``IDSelectorBatch`` applied during the search).
        With an IVF index only the visited lists are searched (see ``nprobe``), so results are
        approximate; when a SQL filter leaves few rows, :func:`indexer.vectors.tuning.exact_topk` on those
        rows' vectors is exact and cheaper.
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
    q = as_queries(queries, index.d)
    ivf = faiss.try_extract_index_ivf(index)
    sel = None
    if allowed_ids is not None:
        allowed = as_ids(allowed_ids, unique=False)
        if len(allowed) == 0:
            return empty_result(len(q), k)
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
    return finish(scores, labels)


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
    check_writable(index)
    x = as_vectors(vectors, index.d)
    ids = as_ids(ids, len(x))
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
    check_writable(index)
    ids = as_ids(ids, unique=False)
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
    ids = as_ids(ids, unique=False)
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

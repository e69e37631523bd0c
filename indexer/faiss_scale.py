"""FAISS at scale: sharded on-disk builds, incremental updates and the rule that says when to retrain.

**The large kind** (``"ivf_sq8_ondisk"``; :class:`indexer.store.FaissPolicy` uses it from 2e6
vectors) keeps the SQ8 codes of the ``"ivf_sq8"`` kind (256 bytes and an 8-byte id per vector) and
changes how the index is trained, built and stored:

- ``nlist`` from :func:`indexer.vectors.choose_nlist` (16384 at 1e7); the centroids come from a
  seeded two-level spherical k-means (:func:`two_level_kmeans`: ``sqrt(nlist)`` coarse clusters,
  each split in proportion to its size) on a seeded sample of ``40 * nlist`` vectors at most,
  and are searched by an HNSW graph (``IndexHNSWFlat``, M = 32): assigning a vector to 16384 flat
  centroids took 320 us on two cores (an hour for 1e7 vectors), through the graph 25-50 us. The
  graph is searched with ``efSearch`` 128 when adding (centroids of clustered data are clustered
  too: at 16 the graph chose the nearest list for only 90 % of the vectors, at 128 for 99 %, and
  the first 1e7 build lost 5 points of recall to it) and with ``max(128, nprobe)`` when searching
  (:func:`indexer.vectors.ivf_search_params`: the graph returns about ``efSearch`` good lists
  however many are asked for);
- vectors are streamed in chunks (:data:`Chunks`), never all in memory, and added shard by shard
  (``shard_size`` vectors) to copies of the trained empty index; each shard is written to a
  staging folder, and the shards' lists are merged into one ``NAME.TOKEN.ivfdata`` file with
  ``OnDiskInvertedLists.merge_from_multiple`` (what ``faiss.contrib.ondisk.merge_ondisk`` does,
  except that the shards' mapped lists are freed afterwards instead of leaked);
- ``nprobe`` is tuned (:func:`indexer.vectors.tune_nprobe_on`) to recall@10 >= 0.95 against exact
  search on held-out queries: perturbed copies of sampled vectors that were not in the training
  sample, whose exact neighbours are computed chunk by chunk during the add pass
  (:func:`exact_topk`), so the vectors are never in memory at all;
- the index file holds the quantizer and the list offsets (about 20 MB at 1e7) and names its data
  file; :func:`indexer.vectors.read_index` maps the data file read-only.

Why SQ8 and not PQ codes with a refinement step: measured with ``bench/bench_faiss.py --compare
1e6`` (clustered 256-d vectors, nlist 4096, the same centroids and HNSW quantizer for all; recall@10
on held-out / text-like queries; single-query p50):

- IVF-SQ8: 264 bytes a vector, ``nprobe`` 4: recall 0.975 / 0.969, 0.29 ms;
- IVF-PQ32: 40 bytes, recall 0.25 / 0.32 even at ``nprobe`` 64: the neighbours of a query in a
  cluster are nearly equidistant, and PQ's error is larger than their differences;
- IVF-PQ32 refined on SQ8 codes (``IndexRefine``): 296 bytes, 0.87 / 0.92 at ``nprobe`` 64 and
  ``k_factor`` 16 (0.74 ms), short of the 0.95 target;
- IVF-PQ64 refined on SQ8 codes: 328 bytes, ``nprobe`` 8 and ``k_factor`` 8: 0.954 / 0.970, 0.29 ms.

The refined PQ64 index meets the target as fast, but is 24 % larger (the refinement needs the
SQ8 codes anyway), cannot remove ids (``IndexRefine`` addresses its codes by position) and its
refinement codes cannot go into an on-disk ``.ivfdata`` file; IVF-SQ8 alone is smaller and
simpler for the same recall and speed. At 1e7 (``bench/bench_faiss.py --sizes 1e6,1e7``) the
on-disk IVF-SQ8 index takes 2.66 GB and answers in 2.8 ms (p50) at recall@10 0.975.

**Incremental updates** (:func:`update_index`, both IVF kinds): the vectors of a run's new and
changed rows are assigned to the existing lists with the existing quantizer and added, the ids
of removed and changed rows are removed; nothing is retrained or re-tuned. The in-memory kind
is read, edited and written whole; the on-disk kind's data file is never edited in place
(readers map it): the old lists and a small shard of the new vectors (ids tagged with bit 62)
are merged into a new data file, the old ids are removed there, the tags cleared.

**Retraining** (:func:`retrain_reason`) happens instead when, since the last training,

- more than ``retrain_fraction`` (20 %) of the vectors the index was trained on have been added,
  or as many removed: the lists grow unevenly and ``nlist`` no longer suits the size; or
- the vectors added (once there are ``min_drift_count``, 1000, of them) lie on average more than
  ``drift_tolerance`` (25 %) farther from their nearest centroid (squared distance) than the
  indexed vectors did at training: the data moved away from the centroids (a new site, montage
  or model), and recall at the tuned ``nprobe`` would drop.

Fresh vectors from the training distribution measured 1.02 times the training mean (1.05 with
the re-added vectors of changed rows), vectors around new centres 2.9 times
(``tests/test_faiss_scale.py`` asserts 0.9 to 1.1 for the former), so the tolerance leaves room
for sampling noise and still catches data that is new.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from indexer import vectors as V
from indexer.vectors import KIND_IVF, KIND_ONDISK, RECALL_K, IndexInfo

logger = logging.getLogger(__name__)

Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
"""A re-iterable source of vectors: each call yields ``(ids, vectors)`` chunks, the same each time."""

TAG = 1 << 62  # marks the new vectors' ids while an on-disk update removes the old ones
HNSW_M = 32
EF_ADD = 128  # HNSW breadth when assigning vectors to lists: 99.1 % agree with exact (16: 90 %)
EF_SEARCH = 128  # HNSW breadth when searching (saved in the index file; raised to nprobe when larger)
TRAIN_PER_LIST = 40
MAX_TRAIN = 1_000_000


@dataclasses.dataclass
class Staged:
    """An index written under temporary names, made current by :meth:`commit` (or thrown away).

    Attributes
    ----------
    fname : Path
        The index file's final name.
    tmp : Path or None
        The index file as written (renamed to ``fname`` at commit); None when ``fname`` is to be
        kept as it is (``action="keep"``) or deleted (``action="delete"``).
    ivfdata : Path or None
        A new data file (on-disk kind), already under its final, unique name: nothing refers to
        it before the commit.
    info : IndexInfo or None
        How the index was built or updated.
    action : str
        ``"replace"``, ``"keep"`` or ``"delete"``.
    how : str
        ``"built"``, ``"updated"``, ``"unchanged"`` or ``"deleted"`` (for logs and the manifest).
    """

    fname: Path
    tmp: Path | None = None
    ivfdata: Path | None = None
    info: IndexInfo | None = None
    action: str = "replace"
    how: str = "built"

    def commit(self) -> None:
        """Make the new index current (one ``os.replace``); readers see the old or the new one."""
        if self.action == "replace":
            os.replace(self.tmp, self.fname)
            _fsync_dir(self.fname.parent)
        elif self.action == "delete":
            self.fname.unlink(missing_ok=True)

    def discard(self) -> None:
        """Delete what was written (before :meth:`commit`)."""
        for f in (self.tmp, self.ivfdata):
            if f is not None:
                f.unlink(missing_ok=True)

    def nbytes(self) -> int:
        """Bytes on disk of the committed index (index file and data file)."""
        size = self.fname.stat().st_size if self.fname.is_file() else 0
        if self.info is not None and self.info.ivfdata:
            data = self.fname.parent / self.info.ivfdata
            size += data.stat().st_size if data.is_file() else 0
        return size


# ---------------------------------------------------------------------------------------------
# Helpers


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(fname: Path) -> None:
    fd = os.open(fname, os.O_RDONLY)
    try:
        os.fsync(fd)  # also writes back the pages dirtied through a shared mapping
    finally:
        os.close(fd)


@contextmanager
def _c_stdout_to_stderr() -> Iterator[None]:
    """Send what FAISS prints on the C stdout to stderr (it announces on-disk resizes).

    The indexer's own stdout may carry JSON (``elmsearch index --json``).
    """
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


@contextmanager
def _omp_threads(n: int) -> Iterator[None]:
    """Run FAISS on ``n`` OpenMP threads inside the block (many tiny jobs: threads only spin)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


@contextmanager
def _hnsw_ef(index: faiss.Index, ef: int) -> Iterator[None]:
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


def _add_core(index: faiss.Index, x: np.ndarray, ids: np.ndarray, lists: np.ndarray) -> None:
    """Add vectors to the given lists (``IndexIVF.add_core``); the arrays must outlive the call."""
    ivf = faiss.extract_index_ivf(index)
    x = np.ascontiguousarray(x, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    lists = np.ascontiguousarray(lists, dtype=np.int64)
    if len(x):
        ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
        index.ntotal = ivf.ntotal


def _empty_copy(fname: Path) -> faiss.Index:
    """The trained, empty index of an on-disk index file (its quantizer, no vectors, in memory)."""
    index = faiss.read_index(str(fname), faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns it now
    ivf.ntotal = index.ntotal = 0
    return index


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


class _TopK:
    """Running exact top-k (inner product) of fixed queries over chunks of vectors."""

    def __init__(self, queries: np.ndarray, k: int):
        self.q = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = k
        self.scores = np.full((len(self.q), k), -np.inf, dtype=np.float32)
        self.ids = np.full((len(self.q), k), -1, dtype=np.int64)

    def update(self, ids: np.ndarray, x: np.ndarray) -> None:
        if len(ids) == 0 or len(self.q) == 0:
            return
        sims = self.q @ np.asarray(x, dtype=np.float32).T  # (n_queries, m): one BLAS call per chunk
        if sims.shape[1] > self.k:
            part = np.argpartition(-sims, self.k - 1, axis=1)[:, : self.k]
        else:
            part = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
        scores = np.hstack([self.scores, np.take_along_axis(sims, part, axis=1)])
        labels = np.hstack([self.ids, np.asarray(ids, dtype=np.int64)[part]])
        order = np.argsort(-scores, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(scores, order, axis=1)
        self.ids = np.take_along_axis(labels, order, axis=1)


def exact_topk(queries: np.ndarray, chunks: Chunks, k: int = RECALL_K) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products of queries over vectors read chunk by chunk.

    Only one chunk's vectors and one ``(n_queries, chunk)`` score matrix are in memory at a
    time: the ground truth of an index too large to hold twice (or at all).

    Parameters
    ----------
    queries : array, shape (n_queries, d)
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
    top = _TopK(np.atleast_2d(queries), k)
    for ids, x in chunks():
        top.update(ids, x)
    return top.scores, top.ids


# ---------------------------------------------------------------------------------------------
# Training


def two_level_kmeans(x: np.ndarray, nlist: int, seed: int = 0, niter: int = 10) -> np.ndarray:
    """Seeded spherical k-means in two levels: ``sqrt(nlist)`` clusters, each split by its size.

    Costs about ``2 * sqrt(nlist)`` distances per training vector and iteration instead of
    ``nlist`` (16384 lists: 256 against 16384).

    Parameters
    ----------
    x : array, shape (n, d)
        Training vectors (unit norm), ``n >= nlist``.
    nlist : int
        Number of centroids.
    seed : int
        Seed of both levels.
    niter : int
        k-means iterations per level.

    Returns
    -------
    array of float32, shape (nlist, d)
        Unit-norm centroids.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if n < nlist:
        raise ValueError(f"{n} training vectors for {nlist} centroids")

    def kmeans(data: np.ndarray, k: int, s: int) -> np.ndarray:
        km = faiss.Kmeans(d, k, niter=niter, seed=s, spherical=True, min_points_per_centroid=1,
                          max_points_per_centroid=max(1, len(data) // k + 1))  # fmt: skip
        km.train(data)
        return km.centroids

    nc1 = int(round(np.sqrt(nlist)))
    if nc1 <= 1 or nlist <= 256:
        centroids = kmeans(x, nlist, seed)
    else:
        coarse = kmeans(x, nc1, seed)
        index = faiss.IndexFlatIP(d)
        index.add(coarse)
        top = index.search(x, 1)[1][:, 0]
        sizes = np.bincount(top, minlength=nc1)
        share = sizes / n * nlist
        alloc = np.minimum(np.floor(share).astype(np.int64), sizes)
        alloc[(alloc == 0) & (sizes > 0)] = 1
        while alloc.sum() > nlist:
            alloc[np.argmax(alloc)] -= 1
        while alloc.sum() < nlist:
            alloc[np.argmax(np.where(sizes > alloc, share - alloc, -np.inf))] += 1
        parts = []
        with _omp_threads(1):  # small k-means: one thread each is 10x faster than all spinning
            for c in np.flatnonzero(alloc):
                sub = x[top == c]
                if alloc[c] == 1:
                    parts.append(sub.mean(axis=0, keepdims=True))
                else:
                    parts.append(kmeans(sub, int(alloc[c]), seed + 1 + int(c)))
        centroids = np.vstack(parts)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return centroids.astype(np.float32)


def train_ondisk_index(sample: np.ndarray, nlist: int, seed: int = 0) -> faiss.Index:
    """The trained, empty index of the on-disk kind: HNSW quantizer over the centroids, SQ8 codes.

    Parameters
    ----------
    sample : array, shape (n_train, d)
        Training vectors (unit norm), at least ``nlist``.
    nlist : int
        Number of lists.
    seed : int
        Seed of the k-means.

    Returns
    -------
    faiss.Index
        An ``IndexIVFScalarQuantizer`` (inner product, residual SQ8) holding no vector.
    """
    d = sample.shape[1]
    centroids = two_level_kmeans(sample, nlist, seed=seed)
    quantizer = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    quantizer.add(centroids)
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)  # fmt: skip
    with _hnsw_ef(index, EF_ADD):
        index.train(sample)  # the quantizer is full: this trains the SQ8 ranges on the residuals
    quantizer.hnsw.efSearch = EF_SEARCH
    return index


def _gather(chunks: Chunks, positions: list[np.ndarray], d: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The vectors (and ids) at sorted stream positions, in one pass over the chunks."""
    out = [(np.empty(len(p), np.int64), np.empty((len(p), d), np.float32)) for p in positions]
    filled = [0] * len(positions)
    start = 0
    for ids, x in chunks():
        stop = start + len(ids)
        for j, pos in enumerate(positions):
            lo, hi = np.searchsorted(pos, [start, stop])
            if hi > lo:
                rows = pos[lo:hi] - start
                out[j][0][filled[j] : filled[j] + len(rows)] = np.asarray(ids)[rows]
                out[j][1][filled[j] : filled[j] + len(rows)] = np.asarray(x, dtype=np.float32)[rows]
                filled[j] += len(rows)
        start = stop
    if any(f != len(p) for f, p in zip(filled, positions, strict=True)):
        raise ValueError(f"the chunks held {start} vectors, fewer than expected")
    return out


def held_out_queries(x: np.ndarray, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """Tuning queries from held-out vectors: each perturbed (Gaussian, norm about ``noise``), renormalised.

    Parameters
    ----------
    x : array, shape (n_queries, d)
        Vectors sampled from the data but not from the training sample.
    noise : float
    seed : int

    Returns
    -------
    array of float32, shape (n_queries, d)
    """
    rng = np.random.default_rng(seed + 1)
    q = np.array(x, dtype=np.float32, copy=True)
    q += rng.standard_normal(q.shape, dtype=np.float32) * np.float32(noise / np.sqrt(q.shape[1]))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q


# ---------------------------------------------------------------------------------------------
# Building


def _merge_shards(trained: bytes, shard_files: list[Path], ivfdata: Path) -> faiss.Index:
    """One index whose lists (all shards', in order) live in the new file ``ivfdata``."""
    shards = [faiss.read_index(str(f), faiss.IO_FLAG_MMAP) for f in shard_files]
    lists = faiss.InvertedListsPtrVector()
    for shard in shards:
        lists.push_back(faiss.extract_index_ivf(shard).invlists)
    index = faiss.deserialize_index(trained)
    _merge_into(index, lists, ivfdata)
    del lists, shards  # unmaps the shard files
    return index


def _merge_into(index, lists, ivfdata: Path) -> int:
    """Give ``index`` on-disk lists in the new file ``ivfdata`` holding ``lists`` merged in order; ntotal."""
    ivf = faiss.extract_index_ivf(index)
    ondisk = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(ivfdata))
    with _c_stdout_to_stderr():
        ntotal = ondisk.merge_from_multiple(lists.data(), lists.size(), False, False)
    ivf.replace_invlists(ondisk, True)
    ondisk.this.disown()
    ivf.ntotal = index.ntotal = ntotal
    return ntotal


def _finish_ondisk(index: faiss.Index, ivfdata: Path, tmp: Path) -> None:
    """Flush the data file, make the index file name it without a folder, write the index file."""
    lists = V.ondisk_lists(index)
    _fsync_file(ivfdata)
    lists.filename = ivfdata.name  # resolved next to the index file when read
    V.write_index(index, tmp)


def _new_names(fname: Path) -> tuple[Path, Path]:
    token = secrets.token_hex(6)
    return fname.parent / f"{fname.stem}.{token}{V.IVFDATA_SUFFIX}", fname.parent / f".{fname.name}.{token}.tmp"


def build_ondisk(
    chunks: Chunks,
    n: int,
    fname: str | os.PathLike[str],
    nlist: int | None = None,
    shard_size: int = 1_000_000,
    target_recall: float = 0.95,
    seed: int = 0,
    max_train: int = MAX_TRAIN,
    train_per_list: int = TRAIN_PER_LIST,
    n_tune_queries: int = 200,
    dim: int = V.DIM,
) -> Staged:
    """Build the on-disk kind from streamed vectors, in shards merged into one data file.

    Two passes over ``chunks``: one gathers the seeded training sample and the held-out tuning
    vectors, one adds every vector (shard by shard) and computes the tuning queries' exact
    neighbours. Nothing the current index uses is touched: the new data file has a new name,
    the index file is written under a temporary name, and :meth:`Staged.commit` renames it.
    On any error everything written is deleted.

    Parameters
    ----------
    chunks : Chunks
        The vectors (unit norm) and their ids (unique, non-negative, below 2**62).
    n : int
        Number of vectors ``chunks`` yields.
    fname : path
        The index file to (eventually) replace; its folder receives the data file.
    nlist : int, optional
        Lists; :func:`indexer.vectors.choose_nlist` by default.
    shard_size : int
        Vectors per shard (bounds the memory of the add pass: about 270 MB per 1e6).
    target_recall : float
        Recall@10 the ``nprobe`` tuning aims for.
    seed : int
        Seed of the samples, k-means and tuning queries.
    max_train, train_per_list : int
        The training sample has ``min(n, train_per_list * nlist, max_train)`` vectors.
    n_tune_queries : int
        Held-out tuning queries.
    dim : int
        Vector dimension.

    Returns
    -------
    Staged
        To commit (or discard).
    """
    t0 = time.perf_counter()
    fname = Path(fname)
    ivfdata, tmp = _new_names(fname)
    staging = Path(tempfile.mkdtemp(prefix=f".{fname.stem}.staging.", dir=fname.parent))
    try:
        nlist = nlist or V.choose_nlist(n)
        n_train = min(n, train_per_list * nlist, max_train)
        if n_train < nlist:
            raise ValueError(f"{n} vectors are too few for {nlist} lists")
        n_queries = min(n_tune_queries, n)
        rng = np.random.default_rng(seed)
        held_out = n - n_train >= n_queries
        if held_out:
            picked = rng.choice(n, size=n_train + n_queries, replace=False)
            train_pos, query_pos = np.sort(picked[:n_train]), np.sort(picked[n_train:])
        else:  # everything trains: the queries cannot be held out
            train_pos = np.arange(n) if n_train == n else np.sort(rng.choice(n, size=n_train, replace=False))
            query_pos = np.sort(rng.choice(n, size=n_queries, replace=False))
        d = dim
        (_, sample), (_, source) = _gather(chunks, [train_pos, query_pos], d)
        queries = held_out_queries(source, seed=seed)

        t_train = time.perf_counter()
        index = train_ondisk_index(V._as_vectors(sample, d), nlist, seed=seed)
        del sample
        trained = faiss.serialize_index(index)
        sq_norms = V.centroid_sq_norms(index)

        t_add = time.perf_counter()
        top = _TopK(queries, RECALL_K)
        shard_files: list[Path] = []
        residual_sum, seen, max_id = 0.0, 0, -1
        shard = faiss.deserialize_index(trained)

        def flush(full: faiss.Index) -> None:
            f = staging / f"shard{len(shard_files):04d}.faiss"
            faiss.write_index(full, str(f))
            shard_files.append(f)

        for ids, x in chunks():
            x = V._as_vectors(x, d)
            ids = V._as_ids(ids, len(x))
            if len(ids):
                max_id = max(max_id, int(ids.max()))
            top.update(ids, x)
            pos = 0
            while pos < len(x):
                take = min(len(x) - pos, shard_size - shard.ntotal)
                xs, ks = x[pos : pos + take], ids[pos : pos + take]
                with _hnsw_ef(shard, EF_ADD):
                    lists, residuals = V.assign(shard, xs, sq_norms)
                _add_core(shard, xs, ks, lists)
                residual_sum += float(residuals.sum(dtype=np.float64))
                pos += take
                if shard.ntotal >= shard_size:
                    flush(shard)
                    shard = faiss.deserialize_index(trained)
            seen += len(x)
        if shard.ntotal:
            flush(shard)
        del shard
        if seen != n:
            raise ValueError(f"the chunks held {seen} vectors, not {n}")
        if max_id >= TAG:
            raise ValueError(f"ids must be below 2**62 (found {max_id})")

        t_merge = time.perf_counter()
        index = _merge_shards(trained, shard_files, ivfdata)
        shutil.rmtree(staging, ignore_errors=True)
        all_ids = V.index_ids(index)
        if len(np.unique(all_ids)) != len(all_ids):
            raise ValueError("ids must be unique")
        del all_ids

        t_tune = time.perf_counter()
        nprobe, recall = V.tune_nprobe_on(index, queries, top.ids, target_recall=target_recall)
        t_end = time.perf_counter()
        info = IndexInfo(
            kind=KIND_ONDISK, n=n, dim=d, nlist=nlist, nprobe=nprobe, recall_at_10=recall,
            target_recall=target_recall, n_train=n_train, seed=seed, train_seconds=t_add - t_train,
            add_seconds=t_merge - t_add, merge_seconds=t_tune - t_merge, tune_seconds=t_end - t_tune,
            trained_at=V.utc_now(), n_at_train=n, train_residual=residual_sum / max(n, 1),
            ivfdata=ivfdata.name, n_shards=len(shard_files),
        )  # fmt: skip
        _finish_ondisk(index, ivfdata, tmp)
        del index
        info.build_seconds = time.perf_counter() - t0
        logger.info(
            "on-disk IVF index %s: n=%d nlist=%d shards=%d; sample+train %.1f s (%d vectors, %s queries), "
            "add %.1f s, merge %.1f s, tune %.1f s -> nprobe %d recall@10 %.3f",
            fname.name, n, nlist, len(shard_files), t_add - t0, n_train,
            "held-out" if held_out else "in-sample", t_merge - t_add, t_tune - t_merge, t_end - t_tune, nprobe, recall,
        )  # fmt: skip
        return Staged(fname, tmp, ivfdata, info)
    except BaseException:
        for f in (tmp, ivfdata):
            f.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Updating


def retrain_reason(
    info: IndexInfo,
    n_new: int,
    n_gone: int,
    new_residual_sum: float,
    retrain_fraction: float = 0.2,
    drift_tolerance: float = 0.25,
    min_drift_count: int = 1000,
) -> str | None:
    """Why an IVF index should be retrained rather than updated, or None when an update will do.

    The rule (module docstring): retrain when the vectors added since the training, or those
    removed, exceed ``retrain_fraction`` of the vectors it was trained on, or when the vectors
    added since the training (at least ``min_drift_count`` of them) are on average more than
    ``drift_tolerance`` farther (squared distance) from their nearest centroid than the indexed
    vectors were at training.

    Parameters
    ----------
    info : IndexInfo
        The index as it is.
    n_new, n_gone : int
        Vectors this update would add and remove (a changed vector counts in both).
    new_residual_sum : float
        Sum of the squared distances of the new vectors to their nearest centroid.
    retrain_fraction, drift_tolerance : float
    min_drift_count : int

    Returns
    -------
    str or None
        One line for the log.
    """
    base = max(info.n_at_train, 1)
    added = info.n_added_since_train + n_new
    removed = info.n_removed_since_train + n_gone
    if added > retrain_fraction * base:
        return f"{added} vectors added since the training, more than {retrain_fraction:.0%} of the {base} trained on"
    if removed > retrain_fraction * base:
        return f"{removed} vectors removed since the training, more than {retrain_fraction:.0%} of the {base}"
    if added >= min_drift_count and info.train_residual > 0:
        mean = (info.added_residual * info.n_added_since_train + new_residual_sum) / added
        if mean > (1 + drift_tolerance) * info.train_residual:
            return (f"the {added} vectors added since the training lie {mean / info.train_residual:.2f} times as far "
                    f"from their centroids as the training data (tolerance {1 + drift_tolerance:.2f})")  # fmt: skip
    return None


def update_index(
    fname: str | os.PathLike[str],
    info: IndexInfo,
    new_vectors: np.ndarray,
    new_ids: np.ndarray,
    gone_ids: np.ndarray,
    retrain_fraction: float = 0.2,
    drift_tolerance: float = 0.25,
    min_drift_count: int = 1000,
) -> Staged | None:
    """Update an IVF index file with the existing quantizer, or say that it needs retraining.

    Parameters
    ----------
    fname : path
        The current index file (``"ivf_sq8"`` or ``"ivf_sq8_ondisk"``); it is not modified.
    info : IndexInfo
        Its manifest entry.
    new_vectors : array, shape (n_new, d)
        Vectors to add: new rows and the new embeddings of changed rows (unit norm).
    new_ids : array of int64, shape (n_new,)
        Their ids.
    gone_ids : array of int64
        Ids to remove: removed rows and the old embeddings of changed rows (ids not in the
        index are ignored). Removal happens before addition, so an id may be in both.
    retrain_fraction, drift_tolerance : float
    min_drift_count : int
        The retraining rule, see :func:`retrain_reason`.

    Returns
    -------
    Staged or None
        The updated index, to commit; None when :func:`retrain_reason` says to rebuild.

    Raises
    ------
    ValueError
        For an index of another kind, or invalid vectors or ids.
    """
    t0 = time.perf_counter()
    fname = Path(fname)
    if info.kind not in (KIND_IVF, KIND_ONDISK):
        raise ValueError(f"update_index updates IVF indexes, not {info.kind!r}")
    x = V._as_vectors(new_vectors, info.dim)
    new_ids = V._as_ids(new_ids, len(x))
    gone = np.unique(V._as_ids(gone_ids, unique=False))
    ondisk = info.kind == KIND_ONDISK
    if ondisk and len(new_ids) and new_ids.max() >= TAG:
        logger.info("%s: ids of 2**62 or more; rebuilding", fname.name)
        return None
    old = V.read_index(fname, mmap=ondisk)
    with _hnsw_ef(old, EF_ADD):
        lists, residuals = V.assign(old, x)
    n_gone = int(np.isin(gone, V.index_ids(old)).sum()) if len(gone) else 0
    residual_sum = float(residuals.sum(dtype=np.float64))
    reason = retrain_reason(info, len(x), n_gone, residual_sum, retrain_fraction=retrain_fraction,
                            drift_tolerance=drift_tolerance, min_drift_count=min_drift_count)  # fmt: skip
    if reason is not None:
        logger.info("%s: retraining: %s", fname.name, reason)
        return None
    ivfdata, tmp = _new_names(fname)
    try:
        if not ondisk:
            index = old
            removed = V.remove_ids(index, gone)
            _add_core(index, x, new_ids, lists)
            ntotal = int(index.ntotal)
            V.write_index(index, tmp)
            ivfdata = None
        else:
            removed, ntotal = _update_ondisk(fname, old, x, new_ids, lists, gone, ivfdata, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if ivfdata is not None:
            ivfdata.unlink(missing_ok=True)
        raise
    added = info.n_added_since_train + len(x)
    new_info = dataclasses.replace(
        info, n=ntotal, n_added_since_train=added, n_removed_since_train=info.n_removed_since_train + removed,
        added_residual=(info.added_residual * info.n_added_since_train + residual_sum) / max(added, 1),
        n_updates=info.n_updates + 1, update_seconds=time.perf_counter() - t0,
        ivfdata=ivfdata.name if ivfdata is not None else "",
    )  # fmt: skip
    logger.info("%s: updated in %.2f s without retraining: +%d -%d vectors (%d now; %d added, %d removed since "
                "the training of %s)", fname.name, new_info.update_seconds, len(x), removed, ntotal, added,
                new_info.n_removed_since_train, info.trained_at)  # fmt: skip
    return Staged(fname, tmp, ivfdata, new_info, how="updated")


def _update_ondisk(
    fname: Path,
    old: faiss.Index,
    x: np.ndarray,
    ids: np.ndarray,
    lists: np.ndarray,
    gone: np.ndarray,
    ivfdata: Path,
    tmp: Path,
) -> tuple[int, int]:
    """Write a new data file: the old lists and the new vectors, less ``gone``.

    Returns the number of vectors removed and the number the index now holds.
    """
    delta = _empty_copy(fname)
    _add_core(delta, x, ids + TAG, lists)  # tagged: removing ``gone`` must not remove these
    merged = _empty_copy(fname)
    sources = faiss.InvertedListsPtrVector()
    sources.push_back(faiss.extract_index_ivf(old).invlists)
    sources.push_back(faiss.extract_index_ivf(delta).invlists)
    _merge_into(merged, sources, ivfdata)
    del sources, delta
    with _c_stdout_to_stderr():
        removed = V.remove_ids(merged, gone)
    lists_ = V.ondisk_lists(merged)
    for list_no in np.unique(lists).tolist():
        size = lists_.list_size(list_no)
        if size:
            stored = faiss.rev_swig_ptr(lists_.get_ids(list_no), size)
            tagged = stored >= TAG
            stored[tagged] -= TAG  # in the mapped file
    ntotal = int(merged.ntotal)
    _finish_ondisk(merged, ivfdata, tmp)
    del merged
    return removed, ntotal


# ---------------------------------------------------------------------------------------------
# Files


def referenced_data(folder: str | os.PathLike[str]) -> set[str]:
    """Names of the ``.ivfdata`` files the index files in ``folder`` refer to."""
    names = set()
    for f in Path(folder).glob("*.faiss"):
        try:
            name = V.ondisk_data_name(f)
        except OSError:
            continue
        if name is not None:
            names.add(name)
    return names


def collect_garbage(folder: str | os.PathLike[str]) -> list[str]:
    """Delete data files no index file refers to, and what interrupted builds left.

    Call it after the new index files and the manifest are in place (a reader that opened an
    old data file keeps its mapping).

    Parameters
    ----------
    folder : path
        The ``faiss`` folder of an index.

    Returns
    -------
    list of str
        The names deleted.
    """
    folder = Path(folder)
    keep = referenced_data(folder)
    deleted = []
    for f in folder.iterdir():
        if f.name.endswith(V.IVFDATA_SUFFIX) and f.name not in keep:
            f.unlink(missing_ok=True)
        elif f.name.startswith(".") and ".staging." in f.name and f.is_dir():
            shutil.rmtree(f, ignore_errors=True)
        elif f.name.startswith(".") and f.name.endswith(".tmp") and f.is_file():
            f.unlink(missing_ok=True)
        else:
            continue
        deleted.append(f.name)
    if deleted:
        logger.info("%s: deleted %s", folder, ", ".join(sorted(deleted)))
    return deleted

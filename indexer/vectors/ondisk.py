"""The parts of the on-disk kind (``"ivf_sq8_ondisk"``): training, shards, merged ``.ivfdata`` files.

The on-disk kind (:class:`indexer.vectors.kinds.OnDiskIndex`; :class:`~indexer.vectors.policy.FaissPolicy`
uses it from 2e6 vectors) keeps the SQ8 codes of the ``"ivf_sq8"`` kind (256 bytes and an 8-byte
id per vector) and changes how the index is trained, built and stored:

- ``nlist`` from :func:`indexer.vectors.tuning.choose_nlist` (16384 at 1e7); the centroids come
  from a seeded two-level spherical k-means (:func:`two_level_kmeans`: ``sqrt(nlist)`` coarse
  clusters, each split in proportion to its size) on a seeded sample of ``40 * nlist`` vectors at
  most, and are searched by an HNSW graph (``IndexHNSWFlat``, M = 32): assigning a vector to 16384
  flat centroids took 320 us on two cores (an hour for 1e7 vectors), through the graph 25-50 us.
  The graph is searched with ``efSearch`` 128 when adding (centroids of clustered data are
  clustered too: at 16 the graph chose the nearest list for only 90 % of the vectors, at 128 for
  99 %, and the first 1e7 build lost 5 points of recall to it) and with ``max(128, nprobe)`` when
  searching (:func:`indexer.vectors.ops.ivf_search_params`: the graph returns about ``efSearch``
  good lists however many are asked for);
- vectors are streamed in chunks (:data:`~indexer.vectors.arrays.Chunks`), never all in memory,
  and added shard by shard (``shard_size`` vectors) to copies of the trained empty index; each
  shard is written to a staging folder, and the shards' lists are merged into one
  ``NAME.TOKEN.ivfdata`` file with ``OnDiskInvertedLists.merge_from_multiple`` (what
  ``faiss.contrib.ondisk.merge_ondisk`` does, except that the shards' mapped lists are freed
  afterwards instead of leaked);
- ``nprobe`` is tuned (:func:`indexer.vectors.tuning.tune_nprobe`) to recall@10 >= 0.95 against
  exact search on held-out queries: perturbed copies of sampled vectors that were not in the
  training sample, whose exact neighbours are computed chunk by chunk during the add pass
  (:class:`indexer.vectors.tuning.TopK`), so the vectors are never in memory at all;
- the index file holds the quantizer and the list offsets (about 20 MB at 1e7) and names its data
  file; :func:`indexer.vectors.files.read_index` maps the data file read-only.

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

**Updates** of the on-disk kind never edit its data file in place (readers map it): the old lists
and a small shard of the new vectors (ids tagged with bit 62) are merged into a new data file,
the old ids are removed there, the tags cleared (:func:`update_ondisk`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from indexer.vectors.arrays import Chunks
from indexer.vectors.files import c_stdout_to_stderr, fsync_file, ondisk_lists, write_index
from indexer.vectors.ops import add_to_lists, hnsw_ef, remove_ids

logger = logging.getLogger(__name__)

TAG = 1 << 62  # marks the new vectors' ids while an on-disk update removes the old ones
HNSW_M = 32
EF_ADD = 128  # HNSW breadth when assigning vectors to lists: 99.1 % agree with exact (16: 90 %)
EF_SEARCH = 128  # HNSW breadth when searching (saved in the index file; raised to nprobe when larger)
TRAIN_PER_LIST = 40
MAX_TRAIN = 1_000_000


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
    with hnsw_ef(index, EF_ADD):
        index.train(sample)  # the quantizer is full: this trains the SQ8 ranges on the residuals
    quantizer.hnsw.efSearch = EF_SEARCH
    return index


def gather(chunks: Chunks, positions: list[np.ndarray], d: int) -> list[tuple[np.ndarray, np.ndarray]]:
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


@contextmanager
def _omp_threads(n: int) -> Iterator[None]:
    """Run FAISS on ``n`` OpenMP threads inside the block (many tiny jobs: threads only spin)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def empty_copy(fname: Path) -> faiss.Index:
    """The trained, empty index of an on-disk index file (its quantizer, no vectors, in memory)."""
    index = faiss.read_index(str(fname), faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns it now
    ivf.ntotal = index.ntotal = 0
    return index


def merge_shards(trained: bytes, shard_files: list[Path], ivfdata: Path) -> faiss.Index:
    """One index whose lists (all shards', in order) live in the new file ``ivfdata``."""
    shards = [faiss.read_index(str(f), faiss.IO_FLAG_MMAP) for f in shard_files]
    lists = faiss.InvertedListsPtrVector()
    for shard in shards:
        lists.push_back(faiss.extract_index_ivf(shard).invlists)
    index = faiss.deserialize_index(trained)
    merge_into(index, lists, ivfdata)
    del lists, shards  # unmaps the shard files
    return index


def merge_into(index, lists, ivfdata: Path) -> int:
    """Give ``index`` on-disk lists in the new file ``ivfdata`` holding ``lists`` merged in order; ntotal."""
    ivf = faiss.extract_index_ivf(index)
    ondisk = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(ivfdata))
    with c_stdout_to_stderr():
        ntotal = ondisk.merge_from_multiple(lists.data(), lists.size(), False, False)
    ivf.replace_invlists(ondisk, True)
    ondisk.this.disown()
    ivf.ntotal = index.ntotal = ntotal
    return ntotal


def finish_ondisk(index: faiss.Index, ivfdata: Path, tmp: Path) -> None:
    """Flush the data file, make the index file name it without a folder, write the index file."""
    lists = ondisk_lists(index)
    fsync_file(ivfdata)
    lists.filename = ivfdata.name  # resolved next to the index file when read
    write_index(index, tmp)


def update_ondisk(
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
    delta = empty_copy(fname)
    add_to_lists(delta, x, ids + TAG, lists)  # tagged: removing ``gone`` must not remove these
    merged = empty_copy(fname)
    sources = faiss.InvertedListsPtrVector()
    sources.push_back(faiss.extract_index_ivf(old).invlists)
    sources.push_back(faiss.extract_index_ivf(delta).invlists)
    merge_into(merged, sources, ivfdata)
    del sources, delta
    with c_stdout_to_stderr():
        removed = remove_ids(merged, gone)
    lists_ = ondisk_lists(merged)
    for list_no in np.unique(lists).tolist():
        size = lists_.list_size(list_no)
        if size:
            stored = faiss.rev_swig_ptr(lists_.get_ids(list_no), size)
            tagged = stored >= TAG
            stored[tagged] -= TAG  # in the mapped file
    ntotal = int(merged.ntotal)
    finish_ondisk(merged, ivfdata, tmp)
    del merged
    return removed, ntotal

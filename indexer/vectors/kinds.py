"""The three kinds of vector index behind one interface, :class:`VectorIndex`.

Vectors are 256-d float32, L2-normalised, and searched by inner product (cosine similarity).
A FAISS id is always the database row id. Three kinds, chosen by size
(:meth:`indexer.vectors.policy.FaissPolicy.kind`):

- ``"flat_ip"`` (:class:`ExactIndex`): ``IndexIDMap2(IndexFlatIP)``, below ``exact_below``
  vectors; rebuilt whenever its rows change;
- ``"ivf_sq8"`` (:class:`IVFIndex`): ``IndexIVFScalarQuantizer`` with 8-bit scalar quantisation
  and inner-product metric, built in memory; ``nlist`` is about ``4 * sqrt(n)`` rounded to a power
  of two, and ``nprobe`` is tuned at build time as the smallest power of two whose recall@10
  against exact search reaches a target (0.95 by default) on queries drawn from the data;
- ``"ivf_sq8_ondisk"`` (:class:`OnDiskIndex`, from a few million vectors): the same SQ8 codes with
  an HNSW coarse quantizer, built in shards from streamed chunks and merged into one
  ``.ivfdata`` file next to the index file, which is memory-mapped (:mod:`indexer.vectors.ondisk`).

Each kind builds from :data:`~indexer.vectors.arrays.Chunks` into staged files
(:class:`~indexer.vectors.files.Staged`, made current by one rename); the two IVF kinds can also be
updated with the vectors added and the ids removed since their training, with the existing
quantizer, unless :meth:`~indexer.vectors.policy.FaissPolicy.retrain_reason` asks for a rebuild.
Every kind is searched by :func:`indexer.vectors.ops.search`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import ClassVar

import faiss
import numpy as np

from indexer.vectors import ondisk, ops
from indexer.vectors.arrays import Chunks, array_chunks, as_ids, as_vectors, gather_chunks
from indexer.vectors.files import Staged, new_names, read_index, write_index
from indexer.vectors.index_info import DIM, KIND_EXACT, KIND_IVF, KIND_ONDISK, RECALL_K, IndexInfo, utc_now
from indexer.vectors.policy import FaissPolicy
from indexer.vectors.tuning import TopK, choose_nlist, exact_topk, tune_nprobe, tuning_queries

logger = logging.getLogger(__name__)


class VectorIndex:
    """One kind of FAISS index: built from chunks into staged files, updated, searched.

    Parameters
    ----------
    policy : FaissPolicy, optional
        Recall target, seed, shard size and retraining rule (the defaults by default).
    max_train : int, optional
        Most vectors used to train the quantizers (bounds the build time of large indexes);
        the kind's own default when None.
    n_tune_queries : int
        Queries used to tune ``nprobe``.
    nlist : int, optional
        Inverted lists of the IVF kinds (:func:`~indexer.vectors.tuning.choose_nlist` by default).
    """

    kind: ClassVar[str]
    updatable: ClassVar[bool] = False
    """Whether :meth:`update` can update an index of this kind (else it is always rebuilt)."""
    default_max_train: ClassVar[int] = 100_000

    def __init__(self, policy: FaissPolicy | None = None, max_train: int | None = None, n_tune_queries: int = 200,
                 nlist: int | None = None):
        self.policy = policy or FaissPolicy()
        self.max_train = self.default_max_train if max_train is None else max_train
        self.n_tune_queries = n_tune_queries
        self.nlist = nlist

    def make(self, vectors: np.ndarray, ids: np.ndarray) -> tuple[faiss.Index, IndexInfo]:
        """Build the index in memory from arrays (the in-memory kinds).

        Parameters
        ----------
        vectors : array, shape (n, d)
            L2-normalised vectors.
        ids : array of int64, shape (n,)
            Database row ids: unique and non-negative.

        Returns
        -------
        index : faiss.Index
        info : IndexInfo
        """
        raise NotImplementedError(f"the {self.kind} kind is built from chunks into files (build)")

    def build(self, chunks: Chunks, n: int, fname: str | os.PathLike[str]) -> Staged:
        """Build the index of the ``n`` vectors ``chunks`` yields, written under temporary names.

        Nothing the current index file ``fname`` uses is touched before :meth:`Staged.commit`;
        on any error everything written is deleted.

        Parameters
        ----------
        chunks : Chunks
            The vectors (unit norm) and their ids (unique, non-negative).
        n : int
            Number of vectors ``chunks`` yields.
        fname : path
            The index file to (eventually) replace.

        Returns
        -------
        Staged
            To commit (or discard).
        """
        fname = Path(fname)
        x, ids = gather_chunks(chunks, DIM)
        if len(ids) != n:
            raise ValueError(f"the chunks held {len(ids)} vectors, not {n}")
        index, info = self.make(x, ids)
        del x
        _, tmp = new_names(fname)
        write_index(index, tmp)
        return Staged(fname, tmp, None, info)

    def update(self, fname: str | os.PathLike[str], info: IndexInfo, new_vectors: np.ndarray, new_ids: np.ndarray,
               gone_ids: np.ndarray) -> Staged | None:
        """Update the index file with the existing quantizer, or None when it must be rebuilt.

        Parameters
        ----------
        fname : path
            The current index file; it is not modified.
        info : IndexInfo
            Its manifest entry.
        new_vectors : array, shape (n_new, d)
            Vectors to add: new rows and the new embeddings of changed rows (unit norm).
        new_ids : array of int64, shape (n_new,)
            Their ids.
        gone_ids : array of int64
            Ids to remove: removed rows and the old embeddings of changed rows (ids not in the
            index are ignored). Removal happens before addition, so an id may be in both.

        Returns
        -------
        Staged or None
            The updated index, to commit; None when the kind is rebuilt instead (always for the
            exact kind; for the IVF kinds when the retraining rule says so).
        """
        return None


class ExactIndex(VectorIndex):
    """``"flat_ip"``: exact inner-product search, ``IndexIDMap2(IndexFlatIP)``; rebuilt, never updated."""

    kind = KIND_EXACT

    def make(self, vectors: np.ndarray, ids: np.ndarray) -> tuple[faiss.Index, IndexInfo]:  # noqa: D102
        t0 = time.perf_counter()
        x = as_vectors(vectors)
        ids = as_ids(ids, len(x))
        n, d = x.shape
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        index.add_with_ids(x, ids)
        info = IndexInfo(kind=KIND_EXACT, n=n, dim=d, target_recall=self.policy.target_recall, seed=self.policy.seed)
        info.build_seconds = time.perf_counter() - t0
        logger.info("built %s index of %d vectors in %.2f s", info.kind, n, info.build_seconds)
        return index, info


class IVFIndex(VectorIndex):
    """``"ivf_sq8"``: IVF with SQ8 codes and a flat quantizer, built in memory, updated in place of rebuilds.

    ``nlist`` from :func:`~indexer.vectors.tuning.choose_nlist`, trained on a seeded sample of at
    most ``min(50 * nlist, max_train)`` vectors, ``nprobe`` from
    :func:`~indexer.vectors.tuning.tune_nprobe` on :func:`~indexer.vectors.tuning.tuning_queries`.
    """

    kind = KIND_IVF
    updatable = True
    mmap: ClassVar[bool] = False
    """Whether :meth:`update` reads the old index memory-mapped (it edits a copy in memory otherwise)."""

    def make(self, vectors: np.ndarray, ids: np.ndarray) -> tuple[faiss.Index, IndexInfo]:  # noqa: D102
        t0 = time.perf_counter()
        x = as_vectors(vectors)
        ids = as_ids(ids, len(x))
        n, d = x.shape
        seed, target_recall = self.policy.seed, self.policy.target_recall
        nlist = self.nlist or choose_nlist(n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)  # fmt: skip
        index.cp.seed = seed
        # We sample deliberately (max_train); keep FAISS from printing its "too few points" warning.
        index.cp.min_points_per_centroid = 5
        n_train = min(n, 50 * nlist, self.max_train)
        rng = np.random.default_rng(seed)
        sample = x[np.sort(rng.choice(n, size=n_train, replace=False))]
        t_train = time.perf_counter()
        index.train(sample)
        del sample
        t_add = time.perf_counter()
        residual_sum = ops.add_assigned(index, x, ids)
        t_tune = time.perf_counter()
        queries = tuning_queries(x, self.n_tune_queries, seed=seed)
        truth = exact_topk(queries, array_chunks(x, ids), RECALL_K)[1]
        nprobe, recall = tune_nprobe(index, queries, truth, target_recall=target_recall)
        t_end = time.perf_counter()
        logger.info("IVF index: n=%d nlist=%d train %.1f s (%d vectors), add %.1f s, tune %.1f s -> nprobe %d "
                    "recall@10 %.3f", n, nlist, t_add - t_train, n_train, t_tune - t_add, t_end - t_tune, nprobe,
                    recall)  # fmt: skip
        info = IndexInfo(
            kind=KIND_IVF, n=n, dim=d, nlist=nlist, nprobe=nprobe, recall_at_10=recall, target_recall=target_recall,
            n_train=n_train, seed=seed, train_seconds=t_add - t_train, add_seconds=t_tune - t_add,
            tune_seconds=t_end - t_tune, trained_at=utc_now(), n_at_train=n, train_residual=residual_sum / n,
        )  # fmt: skip
        info.build_seconds = time.perf_counter() - t0
        logger.info("built %s index of %d vectors in %.2f s", info.kind, n, info.build_seconds)
        return index, info

    def update(self, fname: str | os.PathLike[str], info: IndexInfo, new_vectors: np.ndarray, new_ids: np.ndarray,
               gone_ids: np.ndarray) -> Staged | None:
        """Add the new vectors to the existing lists and remove ``gone_ids`` (:meth:`VectorIndex.update`).

        Nothing is retrained or re-tuned; None when :meth:`FaissPolicy.retrain_reason` asks for a
        rebuild (or, for the on-disk kind, when a new id reaches 2**62).
        """
        t0 = time.perf_counter()
        fname = Path(fname)
        if info.kind != self.kind:
            raise ValueError(f"{type(self).__name__} updates {self.kind!r} indexes, not {info.kind!r}")
        x = as_vectors(new_vectors, info.dim)
        new_ids = as_ids(new_ids, len(x))
        gone = np.unique(as_ids(gone_ids, unique=False))
        if self.mmap and len(new_ids) and new_ids.max() >= ondisk.TAG:
            logger.info("%s: ids of 2**62 or more; rebuilding", fname.name)
            return None
        old = read_index(fname, mmap=self.mmap)
        with ops.hnsw_ef(old, ondisk.EF_ADD):
            lists, residuals = ops.assign(old, x)
        n_gone = int(np.isin(gone, ops.index_ids(old)).sum()) if len(gone) else 0
        residual_sum = float(residuals.sum(dtype=np.float64))
        reason = self.policy.retrain_reason(info, len(x), n_gone, residual_sum)
        if reason is not None:
            logger.info("%s: retraining: %s", fname.name, reason)
            return None
        ivfdata, tmp = new_names(fname)
        try:
            removed, ntotal, ivfdata = self._write_update(fname, old, x, new_ids, lists, gone, ivfdata, tmp)
        except BaseException:
            for f in (tmp, ivfdata):
                f.unlink(missing_ok=True)
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

    def _write_update(self, fname: Path, old: faiss.Index, x: np.ndarray, ids: np.ndarray, lists: np.ndarray,
                      gone: np.ndarray, ivfdata: Path, tmp: Path) -> tuple[int, int, Path | None]:
        """Edit the index read whole and write it to ``tmp``: ``(removed, ntotal, data file or None)``."""
        removed = ops.remove_ids(old, gone)
        ops.add_to_lists(old, x, ids, lists)
        write_index(old, tmp)
        return removed, int(old.ntotal), None


class OnDiskIndex(IVFIndex):
    """``"ivf_sq8_ondisk"``: the SQ8 codes in a memory-mapped ``.ivfdata`` file, built in shards.

    See :mod:`indexer.vectors.ondisk` for the training, the shards and the update of the data file.
    """

    kind = KIND_ONDISK
    mmap = True
    default_max_train = ondisk.MAX_TRAIN
    train_per_list: ClassVar[int] = ondisk.TRAIN_PER_LIST

    def make(self, vectors: np.ndarray, ids: np.ndarray) -> tuple[faiss.Index, IndexInfo]:  # noqa: D102
        return VectorIndex.make(self, vectors, ids)

    def build(self, chunks: Chunks, n: int, fname: str | os.PathLike[str]) -> Staged:
        """Build from streamed vectors, in shards merged into one data file (see :meth:`VectorIndex.build`).

        Two passes over ``chunks``: one gathers the seeded training sample and the held-out tuning
        vectors, one adds every vector (shard by shard) and computes the tuning queries' exact
        neighbours. The new data file has a new name, the index file is written under a
        temporary name. Ids must be below 2**62.
        """
        t0 = time.perf_counter()
        fname = Path(fname)
        seed, target_recall, shard_size = self.policy.seed, self.policy.target_recall, self.policy.shard_size
        ivfdata, tmp = new_names(fname)
        staging = Path(tempfile.mkdtemp(prefix=f".{fname.stem}.staging.", dir=fname.parent))
        try:
            nlist = self.nlist or choose_nlist(n)
            n_train = min(n, self.train_per_list * nlist, self.max_train)
            if n_train < nlist:
                raise ValueError(f"{n} vectors are too few for {nlist} lists")
            n_queries = min(self.n_tune_queries, n)
            rng = np.random.default_rng(seed)
            held_out = n - n_train >= n_queries
            if held_out:
                picked = rng.choice(n, size=n_train + n_queries, replace=False)
                train_pos, query_pos = np.sort(picked[:n_train]), np.sort(picked[n_train:])
            else:  # everything trains: the queries cannot be held out
                train_pos = np.arange(n) if n_train == n else np.sort(rng.choice(n, size=n_train, replace=False))
                query_pos = np.sort(rng.choice(n, size=n_queries, replace=False))
            d = DIM
            (_, sample), (_, source) = ondisk.gather(chunks, [train_pos, query_pos], d)
            queries = tuning_queries(source, seed=seed + 1)

            t_train = time.perf_counter()
            index = ondisk.train_ondisk_index(as_vectors(sample, d), nlist, seed=seed)
            del sample
            trained = faiss.serialize_index(index)
            sq_norms = ops.centroid_sq_norms(index)

            t_add = time.perf_counter()
            top = TopK(queries, RECALL_K)
            shard_files: list[Path] = []
            residual_sum, seen, max_id = 0.0, 0, -1
            shard = faiss.deserialize_index(trained)

            def flush(full: faiss.Index) -> None:
                f = staging / f"shard{len(shard_files):04d}.faiss"
                faiss.write_index(full, str(f))
                shard_files.append(f)

            for ids, x in chunks():
                x = as_vectors(x, d)
                ids = as_ids(ids, len(x))
                if len(ids):
                    max_id = max(max_id, int(ids.max()))
                top.update(ids, x)
                pos = 0
                while pos < len(x):
                    take = min(len(x) - pos, shard_size - shard.ntotal)
                    xs, ks = x[pos : pos + take], ids[pos : pos + take]
                    with ops.hnsw_ef(shard, ondisk.EF_ADD):
                        lists, residuals = ops.assign(shard, xs, sq_norms)
                    ops.add_to_lists(shard, xs, ks, lists)
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
            if max_id >= ondisk.TAG:
                raise ValueError(f"ids must be below 2**62 (found {max_id})")

            t_merge = time.perf_counter()
            index = ondisk.merge_shards(trained, shard_files, ivfdata)
            shutil.rmtree(staging, ignore_errors=True)
            all_ids = ops.index_ids(index)
            if len(np.unique(all_ids)) != len(all_ids):
                raise ValueError("ids must be unique")
            del all_ids

            t_tune = time.perf_counter()
            nprobe, recall = tune_nprobe(index, queries, top.result()[1], target_recall=target_recall)
            t_end = time.perf_counter()
            info = IndexInfo(
                kind=KIND_ONDISK, n=n, dim=d, nlist=nlist, nprobe=nprobe, recall_at_10=recall,
                target_recall=target_recall, n_train=n_train, seed=seed, train_seconds=t_add - t_train,
                add_seconds=t_merge - t_add, merge_seconds=t_tune - t_merge, tune_seconds=t_end - t_tune,
                trained_at=utc_now(), n_at_train=n, train_residual=residual_sum / max(n, 1),
                ivfdata=ivfdata.name, n_shards=len(shard_files),
            )  # fmt: skip
            ondisk.finish_ondisk(index, ivfdata, tmp)
            del index
            info.build_seconds = time.perf_counter() - t0
            logger.info(
                "on-disk IVF index %s: n=%d nlist=%d shards=%d; sample+train %.1f s (%d vectors, %s queries), "
                "add %.1f s, merge %.1f s, tune %.1f s -> nprobe %d recall@10 %.3f",
                fname.name, n, nlist, len(shard_files), t_add - t0, n_train, "held-out" if held_out else "in-sample",
                t_merge - t_add, t_tune - t_merge, t_end - t_tune, nprobe, recall,
            )  # fmt: skip
            return Staged(fname, tmp, ivfdata, info)
        except BaseException:
            for f in (tmp, ivfdata):
                f.unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _write_update(self, fname: Path, old: faiss.Index, x: np.ndarray, ids: np.ndarray, lists: np.ndarray,
                      gone: np.ndarray, ivfdata: Path, tmp: Path) -> tuple[int, int, Path | None]:
        """A new data file holding the old lists and ``x``, less ``gone`` (:func:`ondisk.update_ondisk`)."""
        removed, ntotal = ondisk.update_ondisk(fname, old, x, ids, lists, gone, ivfdata, tmp)
        return removed, ntotal, ivfdata


VECTOR_INDEXES: dict[str, type[VectorIndex]] = {cls.kind: cls for cls in (ExactIndex, IVFIndex, OnDiskIndex)}
"""Each index kind's implementation, by the kind's name (``IndexInfo.kind``)."""


def vector_index(kind: str, policy: FaissPolicy | None = None, **options) -> VectorIndex:
    """The implementation of index kind ``kind`` (``"flat_ip"``, ``"ivf_sq8"``, ``"ivf_sq8_ondisk"``).

    Parameters
    ----------
    kind : str
    policy : FaissPolicy, optional
    **options
        ``max_train``, ``n_tune_queries``, ``nlist`` (see :class:`VectorIndex`).

    Returns
    -------
    VectorIndex
    """
    try:
        return VECTOR_INDEXES[kind](policy, **options)
    except KeyError:
        raise ValueError(f"unknown index kind {kind!r}") from None


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    exact_below: int = 50_000,
    target_recall: float = 0.95,
    seed: int = 0,
    max_train: int = 100_000,
    n_tune_queries: int = 200,
) -> tuple[faiss.Index, IndexInfo]:
    """Build an in-memory index of the right kind for the number of vectors, and tune it.

    Below ``exact_below`` vectors (or with none) :class:`ExactIndex`, from there on
    :class:`IVFIndex`.

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
        Most vectors used to train the IVF.
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
    n = len(vectors)
    kind = KIND_EXACT if n == 0 or n < exact_below else KIND_IVF
    policy = FaissPolicy(exact_below=exact_below, target_recall=target_recall, seed=seed)
    return vector_index(kind, policy, max_train=max_train, n_tune_queries=n_tune_queries).make(vectors, ids)

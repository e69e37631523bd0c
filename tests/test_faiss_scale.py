"""FAISS at scale: sharded on-disk builds, the store's incremental updates, retraining and crashes.

The large kind runs on small data here through low thresholds (``FaissPolicy.large_from``,
``shard_size``): the code paths are those of 1e7 vectors, the sizes those of a unit test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os

import faiss
import numpy as np
import pytest
from sqlalchemy import delete, insert, update

from db import Recording
from indexer.store import IndexStore
from indexer.vectors import arrays, files, index_info, kinds, ondisk, ops, tuning
from indexer.vectors.policy import FaissPolicy

D = 256
MODEL = "m" * 32
CONFIG = {"eeg": {"window_seconds": 5.0}}


def centres(n_clusters: int = 50, seed: int = 0) -> np.ndarray:
    c = np.random.default_rng(seed).standard_normal((n_clusters, D)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def clustered(n: int, seed: int = 0, centre_seed: int = 0, spread: float = 1.0) -> np.ndarray:
    """Unit vectors around ``centres(seed=centre_seed)`` (noise norm about ``spread``)."""
    c = centres(seed=centre_seed)
    rng = np.random.default_rng(seed)
    x = c[rng.integers(0, len(c), n)] + rng.standard_normal((n, D), dtype=np.float32) * np.float32(spread / 16)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def row_ids(n: int, seed: int = 0) -> np.ndarray:
    """Increasing, sparse int64 ids (database row ids after deletions), not positions."""
    gaps = np.random.default_rng(seed).integers(1, 5, n)
    return (10**9 + np.cumsum(gaps)).astype(np.int64)


def exact(x: np.ndarray, ids: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Exact top-10 ids of the queries ``q`` among ``x`` (in one chunk)."""
    return tuning.exact_topk(q, arrays.array_chunks(x, ids), 10)[1]


def held_out(n: int = 200, seed: int = 99) -> np.ndarray:
    """Queries that are not indexed vectors: fresh draws around the same centres."""
    return clustered(n, seed=seed)


# ---------------------------------------------------------------------------------------------
# Sharded build and on-disk merge


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """60 000 vectors built in 3 shards into one on-disk index (committed)."""
    folder = tmp_path_factory.mktemp("ondisk")
    x, ids = clustered(60_000, seed=1), row_ids(60_000, seed=1)
    staged = kinds.OnDiskIndex(FaissPolicy(shard_size=25_000)).build(arrays.array_chunks(x, ids, chunk=7_000), len(x),
                                                                   folder / "v.faiss")
    staged.commit()
    return folder, x, ids, staged.info


def test_sharded_ondisk_build_matches_a_single_in_memory_build(big):
    folder, x, ids, info = big
    assert info.kind == index_info.KIND_ONDISK and info.n_shards == 3 and info.n == len(x)
    assert sorted(os.listdir(folder)) == sorted(["v.faiss", info.ivfdata])  # no shard or temporary file left
    mapped = files.read_index(folder / "v.faiss", mmap=True)
    assert files.ondisk_lists(mapped) is not None and mapped.ntotal == len(x)
    # the same trained quantizer, every vector added at once in memory
    single = ondisk.empty_copy(folder / "v.faiss")
    with ops.hnsw_ef(single, ondisk.EF_ADD):
        lists, _ = ops.assign(single, x)
    ops.add_to_lists(single, x, ids, lists)
    assert faiss.downcast_InvertedLists(faiss.extract_index_ivf(single).invlists).__class__ is faiss.ArrayInvertedLists
    q = held_out(100)
    for nprobe in (info.nprobe, 4 * info.nprobe):
        want = ops.search(single, q, 10, nprobe=nprobe)
        got = ops.search(mapped, q, 10, nprobe=nprobe)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(np.sort(ops.index_ids(mapped)), np.sort(ids))


def test_tuned_nprobe_reaches_the_recall_target_on_held_out_queries(big):
    folder, x, ids, info = big
    assert info.recall_at_10 >= 0.95 and info.nprobe & (info.nprobe - 1) == 0 and info.nprobe < info.nlist
    assert 0 < info.n_train < info.n and info.trained_at and info.train_residual > 0
    index = files.read_index(folder / "v.faiss", mmap=True)
    assert faiss.extract_index_ivf(index).nprobe == info.nprobe  # saved in the index file
    q = held_out(200, seed=7)  # independent of the tuning queries
    truth = tuning.exact_topk(q, arrays.array_chunks(x, ids, chunk=9_000), 10)[1]
    np.testing.assert_array_equal(truth, exact(x, ids, q))  # chunked = in one piece
    assert tuning.recall_at_k(ops.search(index, q, 10)[1], truth) >= 0.95
    # the HNSW quantizer is asked for as many lists as are probed (it returns about efSearch)
    assert ops.ivf_search_params(index, 16).quantizer_params is None
    assert ops.ivf_search_params(index, 512).referenced_objects[0].efSearch == 512


def test_ondisk_index_names_its_data_file_without_a_folder(big, tmp_path):
    folder, x, ids, info = big
    assert files.ondisk_data_name(folder / "v.faiss") == info.ivfdata
    # the index and data file still work together after a move to another folder
    for f in ("v.faiss", info.ivfdata):
        (tmp_path / f).write_bytes((folder / f).read_bytes())
    moved = files.read_index(tmp_path / "v.faiss")
    assert moved.ntotal == len(x)
    assert ops.search(moved, x[:5], 1)[1][:, 0].tolist() == ids[:5].tolist()
    (tmp_path / info.ivfdata).write_bytes(b"")  # truncated: refused, not mapped
    with pytest.raises(ValueError, match="truncated"):
        files.read_index(tmp_path / "v.faiss")
    (tmp_path / info.ivfdata).unlink()
    with pytest.raises(FileNotFoundError):
        files.read_index(tmp_path / "v.faiss")


# ---------------------------------------------------------------------------------------------
# Incremental updates of index files (both IVF kinds)


def _write_kind(kind, x, ids, fname):
    """Write an index of ``kind`` (in-memory IVF, or on-disk in 5 000-vector shards); its info."""
    if kind == index_info.KIND_IVF:
        index, info = kinds.build_index(x, ids, exact_below=1000)
        files.write_index(index, fname)
        return info
    staged = kinds.OnDiskIndex(FaissPolicy(shard_size=5_000)).build(arrays.array_chunks(x, ids, 5_000), len(x), fname)
    staged.commit()
    return staged.info


@pytest.mark.parametrize("kind", [index_info.KIND_IVF, index_info.KIND_ONDISK])
def test_update_adds_removes_and_changes_without_retraining(kind, tmp_path):
    n = 12_000
    x, ids = clustered(n, seed=2), row_ids(n, seed=2)
    fname = tmp_path / "v.faiss"
    info = _write_kind(kind, x, ids, fname)
    first = files.read_index(fname, mmap=True)
    centroids = faiss.extract_index_ivf(first).quantizer.reconstruct_n(0, info.nlist)
    q = held_out(200, seed=8)
    recall_before = tuning.recall_at_k(ops.search(first, q, 10)[1], exact(x, ids, q))
    del first
    new_x, new_ids = clustered(120, seed=3), ids.max() + 1 + np.arange(120)  # 1 %
    gone = ids[:60]
    changed = ids[100:110]
    changed_x = clustered(10, seed=4)
    staged = kinds.vector_index(info.kind).update(fname, info, np.vstack([new_x, changed_x]),
                                                  np.concatenate([new_ids, changed]), np.concatenate([gone, changed]))
    assert staged is not None and staged.how == "updated"
    staged.commit()
    files.collect_garbage(tmp_path)
    up = staged.info
    assert (up.trained_at, up.train_seconds, up.n_at_train, up.nprobe) == (
        info.trained_at, info.train_seconds, info.n_at_train, info.nprobe)  # not retrained, not re-tuned
    assert up.n == n - 60 + 120 and up.n_updates == 1
    assert (up.n_added_since_train, up.n_removed_since_train) == (130, 70)
    assert 0.9 < up.added_residual / up.train_residual < 1.1  # same distribution: no drift
    index = files.read_index(fname, mmap=True)
    after = faiss.extract_index_ivf(index).quantizer.reconstruct_n(0, info.nlist)
    np.testing.assert_array_equal(after, centroids)
    held = ops.index_ids(index)
    assert index.ntotal == up.n == len(held) == len(np.unique(held))
    assert not np.isin(gone, held).any() and np.isin(new_ids, held).all() and held.max() < ondisk.TAG
    # a changed vector is found under its id, its old version is gone
    assert ops.search(index, changed_x, 1, nprobe=info.nlist)[1][:, 0].tolist() == changed.tolist()
    assert not np.isin(changed, ops.search(index, x[100:110], 1)[1][:, 0]).any()
    # recall on held-out queries against exact search over what the index should hold
    keep = ~np.isin(ids, np.concatenate([gone, changed]))
    all_x = np.vstack([x[keep], new_x, changed_x])
    all_ids = np.concatenate([ids[keep], new_ids, changed])
    recall = tuning.recall_at_k(ops.search(index, q, 10)[1], exact(all_x, all_ids, q))
    assert recall >= min(0.95, recall_before - 0.01)
    if kind == index_info.KIND_ONDISK:
        assert sorted(os.listdir(tmp_path)) == sorted(["v.faiss", up.ivfdata]) and up.ivfdata != info.ivfdata


def test_retrain_rule():
    info = index_info.IndexInfo(kind=index_info.KIND_IVF, n=10_000, n_at_train=10_000, train_residual=0.5)
    assert FaissPolicy().retrain_reason(info, 100, 100, 100 * 0.52) is None  # 1 %, same distance
    assert "added" in FaissPolicy().retrain_reason(info, 2_001, 0, 2_001 * 0.5)  # more than 20 % added
    assert "removed" in FaissPolicy().retrain_reason(info, 0, 2_001, 0.0)
    assert "1.40 times as far" in FaissPolicy().retrain_reason(info, 1_000, 0, 1_000 * 0.7)  # drift
    assert FaissPolicy().retrain_reason(info, 999, 0, 999 * 0.7) is None  # too few to judge drift
    later = dataclasses.replace(info, n_added_since_train=1_500, added_residual=0.5)
    assert "added" in FaissPolicy().retrain_reason(later, 600, 0, 600 * 0.5)  # cumulative since the training
    assert FaissPolicy().retrain_reason(later, 400, 0, 400 * 0.5) is None


@pytest.mark.parametrize("kind", [index_info.KIND_IVF, index_info.KIND_ONDISK])
def test_update_refuses_when_retraining_is_due(kind, tmp_path):
    n = 8_000
    x, ids = clustered(n, seed=5), row_ids(n, seed=5)
    fname = tmp_path / "v.faiss"
    info = _write_kind(kind, x, ids, fname)
    before = sorted(os.listdir(tmp_path))
    drifted = clustered(1_200, seed=6, centre_seed=42)  # 15 % (under the size rule), elsewhere
    assert kinds.vector_index(info.kind).update(fname, info, drifted, ids.max() + 1 + np.arange(1_200), []) is None
    big_add = clustered(2_000, seed=7)  # 25 %, same distribution
    assert kinds.vector_index(info.kind).update(fname, info, big_add, ids.max() + 1 + np.arange(2_000), []) is None
    assert sorted(os.listdir(tmp_path)) == before  # nothing written


# ---------------------------------------------------------------------------------------------
# The store: rebuild = build or update, load_index, crashes


def _insert(store: IndexStore, x: np.ndarray, first: int) -> np.ndarray:
    now = dt.datetime.now(dt.UTC)
    rows = [{"id": first + i, "path": f"/a/r{first + i}.edf", "key": f"r{first + i}", "layout": "flat",
             "size": 1, "mtime": 0.0, "status": "indexed", "model_hash": MODEL, "emb": x[i].tobytes(),
             "indexed_at": now} for i in range(len(x))]  # fmt: skip
    with store.session() as s, s.begin():
        s.execute(insert(Recording), rows)
    return first + np.arange(len(x), dtype=np.int64)


def _db(store: IndexStore) -> tuple[np.ndarray, np.ndarray]:
    return arrays.gather_chunks(store._vector_chunks("eeg_recording", MODEL), index_info.DIM)


def _rebuild(store: IndexStore) -> dict:
    return store.rebuild(MODEL, "/models/m", CONFIG, force=True, run_id=None)


def _files(store: IndexStore) -> dict:
    return {f.name: f.read_bytes() for f in (store.folder / "faiss").iterdir()} | {
        "manifest.json": (store.folder / "manifest.json").read_bytes()}


@pytest.fixture()
def store(tmp_path):
    s = IndexStore.create(tmp_path / "idx")
    s.faiss_policy = FaissPolicy(exact_below=1_000, large_from=10_000, shard_size=6_000)
    _insert(s, clustered(15_000, seed=10), first=5)
    assert _rebuild(s)["eeg_recording"] == 15_000
    return s


def test_store_builds_the_ondisk_kind_and_load_index_answers(store):
    info = store.manifest["indices"]["eeg_recording"]
    assert info["kind"] == index_info.KIND_ONDISK and info["n_shards"] == 3 and info["last_sync"] == "built"
    assert info["bytes"] > 15_000 * (D + 8)  # index file + data file
    assert store.verify(MODEL) == store.manifest["counts"]
    index = store.load_index("eeg_recording")
    assert files.ondisk_lists(index) is not None and index.ntotal == 15_000
    x, ids = _db(store)
    assert ops.search(index, x[:20], 1)[1][:, 0].tolist() == ids[:20].tolist()
    with pytest.raises(ValueError, match="read-only"):
        ops.remove_ids(index, ids[:1])
    assert store.load_index("eeg_window") is None


def test_store_updates_incrementally_then_retrains(store):
    before = store.manifest["indices"]["eeg_recording"]
    first = store.load_index("eeg_recording")
    centroids = faiss.extract_index_ivf(first).quantizer.reconstruct_n(0, before["nlist"])
    del first
    # a run: 1 % new recordings, 50 re-embedded, 100 removed
    new = _insert(store, clustered(150, seed=11), first=100_000)
    changed = np.arange(1_005, 1_055)
    changed_x = clustered(50, seed=12)
    gone = np.arange(2_005, 2_105)
    with store.session() as s, s.begin():
        for i, key in enumerate(changed.tolist()):
            s.execute(update(Recording).where(Recording.id == key).values(
                emb=changed_x[i].tobytes(), indexed_at=dt.datetime.now(dt.UTC)))
        s.execute(delete(Recording).where(Recording.id.in_(gone.tolist())))
    assert _rebuild(store)["eeg_recording"] == 15_050
    info = store.manifest["indices"]["eeg_recording"]
    assert info["last_sync"] == "updated" and info["n_updates"] == 1
    assert (info["trained_at"], info["train_seconds"], info["n_at_train"]) == (
        before["trained_at"], before["train_seconds"], before["n_at_train"])
    assert info["ivfdata"] != before["ivfdata"] and not (store.folder / "faiss" / before["ivfdata"]).exists()
    index = store.load_index("eeg_recording")
    np.testing.assert_array_equal(
        faiss.extract_index_ivf(index).quantizer.reconstruct_n(0, info["nlist"]), centroids)
    held = np.sort(ops.index_ids(index))
    x, ids = _db(store)
    np.testing.assert_array_equal(held, ids)
    assert np.isin(new, held).all() and not np.isin(gone, held).any()
    assert ops.search(index, changed_x, 1, nprobe=info["nlist"])[1][:, 0].tolist() == changed.tolist()
    q = held_out(200, seed=13)
    assert tuning.recall_at_k(ops.search(index, q, 10)[1], exact(x, ids, q)) >= 0.95

    # a run that changes nothing in this index keeps its files
    mtimes = {f.name: f.stat().st_mtime_ns for f in (store.folder / "faiss").iterdir()}
    _rebuild(store)
    assert store.manifest["indices"]["eeg_recording"]["last_sync"] == "unchanged"
    assert {f.name: f.stat().st_mtime_ns for f in (store.folder / "faiss").iterdir()} == mtimes

    # a run that adds 25 %: retrained from scratch
    _insert(store, clustered(3_750, seed=14), first=200_000)
    assert _rebuild(store)["eeg_recording"] == 18_800
    info = store.manifest["indices"]["eeg_recording"]
    assert info["last_sync"] == "built" and info["n_updates"] == 0 and info["n_at_train"] == 18_800
    assert info["trained_at"] >= before["trained_at"] and info["n_added_since_train"] == 0
    held = ops.index_ids(store.load_index("eeg_recording"))
    assert len(held) == 18_800 and not np.isin(gone, held).any()  # removed ids never come back


@pytest.mark.parametrize("where", ["merge_shards", "update_ondisk"])
def test_a_crash_mid_build_leaves_the_previous_index_usable(store, monkeypatch, where):
    before = _files(store)
    x, ids = _db(store)
    want = ops.search(store.load_index("eeg_recording"), x[:10], 5)

    def crash(*args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(ondisk, where, crash)
    if where == "merge_shards":
        store.faiss_policy = dataclasses.replace(store.faiss_policy, incremental=False)  # a full build
    _insert(store, clustered(100, seed=15), first=300_000)
    with pytest.raises(RuntimeError, match="power cut"):
        _rebuild(store)
    assert _files(store) == before  # same files, same bytes; no shard, temporary or new data file left
    reopened = IndexStore.open(store.folder)
    got = ops.search(reopened.load_index("eeg_recording"), x[:10], 5)
    np.testing.assert_array_equal(got[1], want[1])
    monkeypatch.undo()
    assert _rebuild(store)["eeg_recording"] == 15_100  # the next run completes
    assert len(ops.index_ids(store.load_index("eeg_recording"))) == 15_100

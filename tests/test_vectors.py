"""The FAISS layer: ids are row ids, exact and IVF kinds, tuning, filtering, editing, files."""

from __future__ import annotations

import json
import os

import faiss
import numpy as np
import pytest

from indexer.vectors import arrays, files, index_info, kinds, ops, tuning

D = 256
BASE_ID = 10**12 + 7  # row ids are large and sparse, never positions


def clustered(n: int, n_clusters: int = 50, spread: float = 1.0, seed: int = 0) -> np.ndarray:
    """Unit vectors around random unit centres (noise norm about ``spread``)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, D)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, n_clusters, n)]
    x = x + rng.standard_normal((n, D), dtype=np.float32) * np.float32(spread / np.sqrt(D))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def sparse_ids(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = BASE_ID + np.sort(rng.choice(10**9, size=n, replace=False)) * 13
    return rng.permutation(ids).astype(np.int64)


def perturbed(x: np.ndarray, noise: float = 0.1, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(noise / np.sqrt(D))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(5000), sparse_ids(5000)


def build(kind: str, x: np.ndarray, ids: np.ndarray):
    # IVF: exact_below low so that 5000 vectors get an IVF index
    return kinds.build_index(x, ids, exact_below=1000 if kind == index_info.KIND_IVF else 50_000)


KINDS = [index_info.KIND_EXACT, index_info.KIND_IVF]


def _kind(index: faiss.Index) -> str:
    """The kind of an in-memory or read-back index, from its FAISS structure."""
    return index_info.KIND_EXACT if faiss.try_extract_index_ivf(index) is None else index_info.KIND_IVF


@pytest.fixture(scope="module", params=KINDS)
def built(request, data):
    x, ids = data
    index, info = build(request.param, x, ids)
    return request.param, index, info


def test_kind_follows_size(built, data):
    kind, index, info = built
    assert info.kind == kind == _kind(index)
    assert info.n == index.ntotal == len(data[0])
    assert info.dim == D


def test_ids_are_row_ids_not_positions(built, data):
    kind, index, _ = built
    x, ids = data
    assert set(ops.index_ids(index).tolist()) == set(ids.tolist())
    rows = np.arange(0, len(x), 97)
    scores, found = ops.search(index, x[rows], 1)
    assert found.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(found[:, 0], ids[rows])
    assert found.min() > 10**12


def test_exact_returns_true_nearest_neighbour(data):
    x, ids = data
    index, info = kinds.build_index(x, ids)
    assert info.kind == index_info.KIND_EXACT and info.recall_at_10 == 1.0
    q = clustered(20, seed=5)
    sims = q @ x.T
    scores, found = ops.search(index, q, 5)
    order = np.argsort(-sims, axis=1)[:, :5]
    np.testing.assert_array_equal(found, ids[order])
    np.testing.assert_allclose(scores, np.take_along_axis(sims, order, axis=1), atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_single_query_vector_gives_one_row(built, data):
    _, index, _ = built
    x, ids = data
    scores, found = ops.search(index, x[7], 3)
    assert scores.shape == found.shape == (1, 3)
    assert found[0, 0] == ids[7]


def test_ivf_reaches_recall_target_with_smallest_nprobe(data):
    x, ids = data
    index, info = kinds.build_index(x, ids, exact_below=1000, target_recall=0.95)
    assert info.kind == index_info.KIND_IVF
    ivf = faiss.extract_index_ivf(index)
    assert info.nlist == ivf.nlist and info.nlist & (info.nlist - 1) == 0  # a power of two
    assert info.nprobe == ivf.nprobe and 1 <= info.nprobe < info.nlist
    assert info.nprobe & (info.nprobe - 1) == 0
    assert info.recall_at_10 >= 0.95
    assert 0 < info.n_train <= 5000 and info.build_seconds > 0
    # Independent queries (other seed): IVF top-10 against exact top-10.
    q = perturbed(x[np.random.default_rng(9).choice(len(x), 200, replace=False)], seed=9)
    exact = tuning.exact_topk(q, arrays.array_chunks(x, ids), 10)[1]
    assert tuning.recall_at_k(ops.search(index, q, 10)[1], exact) >= 0.93
    # The smallest such nprobe: half of it misses the target on the tuning queries.
    if info.nprobe > 1:
        tq = tuning.tuning_queries(x, 200, seed=info.seed)
        truth = tuning.exact_topk(tq, arrays.array_chunks(x, ids), 10)[1]
        lower = tuning.recall_at_k(ops.search(index, tq, 10, nprobe=info.nprobe // 2)[1], truth)
        assert lower < 0.95
    # Exhaustive probing is near exact (only SQ8 error left).
    assert tuning.recall_at_k(ops.search(index, q, 10, nprobe=info.nlist)[1], exact) >= 0.97


def test_ivf_widens_its_search_until_it_has_k_results(data):
    """A query far from every cluster must still get k hits, not the few in one visited list."""
    x, ids = data
    index, info = kinds.build_index(x, ids, exact_below=1000)
    far = np.random.default_rng(3).standard_normal((20, D)).astype(np.float32)
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    k = 200  # more than a list holds on average (5000 / nlist)
    assert 5000 / info.nlist < k
    plain = index.search(far, k, params=faiss.SearchParametersIVF(nprobe=1))[1]
    assert (plain < 0).any()  # what FAISS alone returns with one list visited
    _, found = ops.search(index, far, k, nprobe=1)
    assert (found >= 0).all()
    allowed = ids[:150]
    _, found = ops.search(index, far, k, allowed_ids=allowed, nprobe=1)
    assert all(set(row[row >= 0]) == set(allowed) for row in found)  # every allowed one, found by widening


def test_choose_nlist():
    assert tuning.choose_nlist(10**6) == 4096
    assert tuning.choose_nlist(10**5) == 1024
    assert tuning.choose_nlist(10**9) == 65536
    assert tuning.choose_nlist(50_000) == 1024
    assert tuning.choose_nlist(5000) == 128  # capped so that lists keep >= 39 vectors
    assert tuning.choose_nlist(10) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_filter_returns_only_allowed_and_the_best_allowed(kind, data):
    x, ids = data
    index, _ = build(kind, x, ids)
    rng = np.random.default_rng(3)
    allowed_rows = rng.choice(len(x), 60, replace=False)
    allowed = np.concatenate([ids[allowed_rows], [5, 10**15]])  # ids absent from the index are harmless
    # Queries next to vectors that are NOT allowed: the unfiltered best is excluded.
    other_rows = np.setdiff1d(np.arange(len(x)), allowed_rows)[:30]
    q = perturbed(x[other_rows])
    assert np.all(np.isin(ops.search(index, q, 1)[1][:, 0], ids[other_rows]))
    scores, found = ops.search(index, q, 5, allowed_ids=allowed)
    assert np.all(np.isin(found, ids[allowed_rows]))
    sims = q @ x[allowed_rows].T
    best = allowed_rows[np.argmax(sims, axis=1)]
    if kind == index_info.KIND_EXACT:
        np.testing.assert_array_equal(found[:, 0], ids[best])
    else:  # up to SQ8 error: the returned one is as good as the best allowed
        pos = {int(i): r for r, i in enumerate(ids)}
        got = np.array([q[j] @ x[pos[int(i)]] for j, i in enumerate(found[:, 0])])
        assert np.all(got >= sims.max(axis=1) - 0.01)
        assert np.mean(found[:, 0] == ids[best]) >= 0.9


@pytest.mark.parametrize("kind", KINDS)
def test_filter_smaller_than_k_pads_and_empty_filter_finds_nothing(kind, data):
    x, ids = data
    index, _ = build(kind, x, ids)
    scores, found = ops.search(index, x[:2], 5, allowed_ids=ids[:3])
    assert np.all(found[:, 3:] == -1) and np.all(np.isneginf(scores[:, 3:]))
    assert set(found[0, :3].tolist()) == set(ids[:3].tolist())
    scores, found = ops.search(index, x[:2], 4, allowed_ids=np.array([], dtype=np.int64))
    assert found.shape == (2, 4) and np.all(found == -1) and np.all(np.isneginf(scores))


@pytest.mark.parametrize("exact_below", [50_000, 0])
def test_k_larger_than_n_pads_with_minus_one(exact_below):
    x, ids = clustered(100, seed=2), sparse_ids(100, seed=2)
    index, info = kinds.build_index(x, ids, exact_below=exact_below)
    assert info.kind == (index_info.KIND_EXACT if exact_below else index_info.KIND_IVF)
    scores, found = ops.search(index, x[:3], 150, nprobe=info.nlist or None)
    assert found.shape == scores.shape == (3, 150)
    assert np.all(found[:, 100:] == -1) and np.all(np.isneginf(scores[:, 100:]))
    assert np.all(found[:, :100] >= 0) and np.all(np.isfinite(scores[:, :100]))
    assert set(found[0, :100].tolist()) == set(ids.tolist())


def test_exact_scores_on_a_subset():
    x, ids = clustered(300, seed=4), sparse_ids(300, seed=4)
    rows = np.arange(0, 300, 3)
    q = perturbed(x[[0, 1, 2]])
    scores, found = tuning.exact_topk(q, arrays.array_chunks(x[rows], ids[rows]), 5)
    sims = q @ x[rows].T
    order = np.argsort(-sims, axis=1)[:, :5]
    np.testing.assert_array_equal(found, ids[rows][order])
    np.testing.assert_allclose(scores, np.take_along_axis(sims, order, axis=1), atol=1e-5)
    assert found[0, 0] == ids[0]  # row 0 is in the subset
    assert ids[1] not in found  # row 1 is not
    scores, found = tuning.exact_topk(q[0], arrays.array_chunks(x[:2], ids[:2]), 4)
    assert found.shape == (1, 4) and list(found[0, 2:]) == [-1, -1] and np.all(np.isneginf(scores[0, 2:]))
    scores, found = tuning.exact_topk(q, arrays.array_chunks(np.empty((0, D), np.float32), np.empty(0, np.int64)), 2)
    assert np.all(found == -1) and np.all(np.isneginf(scores))


@pytest.mark.parametrize("kind", KINDS)
def test_atomic_write_and_identical_read_back(kind, data, tmp_path):
    x, ids = data
    index, _ = build(kind, x, ids)
    fname = tmp_path / "files.faiss"
    files.write_index(index, fname)
    assert os.listdir(tmp_path) == ["files.faiss"]  # no temporary file left
    q = perturbed(x[:50], seed=11)
    want = ops.search(index, q, 10)
    for mmap in (False, True):
        back = files.read_index(fname, mmap=mmap)
        assert back.ntotal == index.ntotal and _kind(back) == kind
        got = ops.search(back, q, 10)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
        if kind == index_info.KIND_IVF:  # the tuned nprobe is saved with the index
            assert faiss.extract_index_ivf(back).nprobe == faiss.extract_index_ivf(index).nprobe


def test_failed_write_keeps_old_file_and_leaves_no_temp(data, tmp_path, monkeypatch):
    x, ids = data
    index, _ = kinds.build_index(x[:100], ids[:100])
    fname = tmp_path / "files.faiss"
    files.write_index(index, fname)
    before = fname.read_bytes()

    def broken(idx, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(files.faiss, "write_index", broken)
    bigger, _ = kinds.build_index(x[:200], ids[:200])
    with pytest.raises(RuntimeError, match="disk full"):
        files.write_index(bigger, fname)
    assert os.listdir(tmp_path) == ["files.faiss"]
    assert fname.read_bytes() == before


def test_read_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        files.read_index(tmp_path / "nope.faiss")


@pytest.mark.parametrize("kind", KINDS)
def test_mmapped_index_refuses_edits_instead_of_crashing(kind, data, tmp_path):
    x, ids = data
    index, _ = build(kind, x, ids)
    files.write_index(index, tmp_path / "v.faiss")
    ro = files.read_index(tmp_path / "v.faiss", mmap=True)
    with pytest.raises(ValueError, match="read-only"):
        ops.remove_ids(ro, ids[:2])
    with pytest.raises(ValueError, match="read-only"):
        ops.add_vectors(ro, clustered(2, seed=8), np.array([1, 2]))
    assert ro.ntotal == len(x)
    np.testing.assert_allclose(ops.reconstruct(ro, ids[:2]), x[:2], atol=0.02)


@pytest.mark.parametrize("kind", KINDS)
def test_remove_ids(kind, data):
    x, ids = data
    index, _ = build(kind, x, ids)
    gone = ids[:10]
    assert ops.remove_ids(index, np.concatenate([gone, [3]])) == 10  # unknown id ignored
    assert index.ntotal == len(x) - 10
    assert not np.isin(gone, ops.index_ids(index)).any()
    found = ops.search(index, x[:10], 5)[1]
    assert not np.isin(found, gone).any()
    assert ops.remove_ids(index, gone) == 0
    with pytest.raises(KeyError):
        ops.reconstruct(index, gone[:1])
    # After reconstruct (IVF: hash-table direct map) removal still works.
    ops.reconstruct(index, ids[10:12])
    assert ops.remove_ids(index, ids[10:12]) == 2
    assert index.ntotal == len(x) - 12


@pytest.mark.parametrize("kind", KINDS)
def test_reconstruct_and_incremental_rebuild(kind, data):
    x, ids = data
    index, _ = build(kind, x, ids)
    rows = np.array([5, 4000, 17])
    rec = ops.reconstruct(index, ids[rows])
    assert rec.shape == (3, D) and rec.dtype == np.float32
    if kind == index_info.KIND_EXACT:
        np.testing.assert_array_equal(rec, x[rows])
    else:
        np.testing.assert_allclose(rec, x[rows], atol=0.02)
    # Replace one vector: remove, then add the new one under the same id.
    new = clustered(1, seed=77)
    ops.remove_ids(index, ids[rows[:1]])
    ops.add_vectors(index, new, ids[rows[:1]])
    assert ops.search(index, new, 1, nprobe=1024)[1][0, 0] == ids[rows[0]]
    assert index.ntotal == len(x)
    with pytest.raises(ValueError, match="already in the index"):
        ops.add_vectors(index, new, ids[rows[1:2]])


def test_build_index_validates_input(data):
    x, ids = data
    with pytest.raises(ValueError, match="unique"):
        kinds.build_index(x[:3], np.array([1, 1, 2]))
    with pytest.raises(ValueError, match=">= 0"):
        kinds.build_index(x[:3], np.array([1, -1, 2]))
    with pytest.raises(ValueError, match="normalised"):
        kinds.build_index(x[:3] * 2, ids[:3])
    with pytest.raises(ValueError, match="3 ids for 2"):
        kinds.build_index(x[:2], ids[:3])
    index, info = kinds.build_index(np.empty((0, D), np.float32), np.empty(0, np.int64), exact_below=0)
    assert info.kind == index_info.KIND_EXACT and index.ntotal == 0
    assert np.all(ops.search(index, x[:1], 2)[1] == -1)


def test_index_info_round_trip(data):
    x, ids = data
    _, info = kinds.build_index(x, ids, exact_below=1000, seed=3)
    back = index_info.IndexInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert back == info and back.seed == 3
    assert index_info.IndexInfo.from_dict({**info.to_dict(), "future_field": 1}) == info
    with pytest.raises(ValueError):
        index_info.IndexInfo.from_dict({"kind": "hnsw", "n": 3})
    with pytest.raises(ValueError):
        index_info.IndexInfo.from_dict({"n": 3})


def test_build_is_deterministic_for_a_seed(data):
    x, ids = data
    a, ia = kinds.build_index(x, ids, exact_below=1000, seed=1)
    b, ib = kinds.build_index(x, ids, exact_below=1000, seed=1)
    assert (ia.nlist, ia.nprobe, ia.recall_at_10) == (ib.nlist, ib.nprobe, ib.recall_at_10)
    q = perturbed(x[:20], seed=12)
    np.testing.assert_array_equal(ops.search(a, q, 10)[1], ops.search(b, q, 10)[1])


def test_ivf_build_records_its_training_for_the_retrain_rule(data, tmp_path):
    x, ids = data
    index, info = kinds.build_index(x, ids, exact_below=1000)
    assert info.train_seconds > 0 and info.add_seconds > 0 and info.trained_at.endswith("+00:00")
    assert info.n_at_train == len(x) and (info.n_added_since_train, info.n_updates) == (0, 0)
    # train_residual: the mean squared distance to the nearest centroid, as assign() measures it
    lists, residuals = ops.assign(index, x)
    assert info.train_residual == pytest.approx(float(residuals.mean()), rel=1e-4)
    # add_assigned puts vectors in the lists FAISS's own add chooses
    plain = faiss.read_index(_written(index, tmp_path))
    plain.reset()
    plain.add_with_ids(x, ids)
    mine = faiss.clone_index(plain)
    mine.reset()
    ops.add_assigned(mine, x, ids)
    q = perturbed(x[:30], seed=13)
    for a, b in zip(ops.search(plain, q, 10, nprobe=8), ops.search(mine, q, 10, nprobe=8), strict=True):
        np.testing.assert_array_equal(a, b)
    assert files.ondisk_data_name(tmp_path / "w.faiss") is None  # a self-contained file
    exact, _ = kinds.build_index(x[:10], ids[:10])
    with pytest.raises(ValueError, match="IVF"):
        ops.assign(exact, x[:2])


def _written(index, tmp_path) -> str:
    files.write_index(index, tmp_path / "w.faiss")
    return str(tmp_path / "w.faiss")

"""The compiled query model: ONNX Runtime + numpy answers as the torch model does (issue 12)."""

import os
import stat

import numpy as np
import pytest

from elmsearch.models.backends import row_cosine, verify_windows
from elmsearch.models.compiled import QueryModel, query_folder, write_query_model
from elmsearch.models.factory import load_model
from elmsearch.models.identity import config_hash
from indexer.pipeline import index_archive
from indexer.search import Index

TEXTS = ["generalized 3 Hz spike-and-wave discharges", "Normal awake and asleep EEG.",
         "IMPRESSION: abnormal EEG due to intermittent left temporal slowing " * 3, "", "ß µV ŝpike"]


@pytest.fixture(scope="module")
def written(demo_model_dir):
    model = load_model(demo_model_dir)
    folder = write_query_model(model, demo_model_dir)
    return model, folder


def test_written_once_private_and_loadable(written, demo_model_dir):
    model, folder = written
    assert folder == query_folder(config_hash(model)) and (folder / "meta.json").is_file()
    for p in folder.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    before = (folder / "meta.json").stat().st_mtime_ns
    assert write_query_model(model, demo_model_dir) == folder  # already there: not rewritten
    assert (folder / "meta.json").stat().st_mtime_ns == before
    assert isinstance(QueryModel.load(config_hash(model), demo_model_dir), QueryModel)


def test_text_eeg_and_pooling_match_torch(written, demo_model_dir):
    from elmsearch.models.protocol import EmbeddingModel

    model, _ = written
    qm = QueryModel.load(config_hash(model), demo_model_dir)
    assert isinstance(model, EmbeddingModel) and isinstance(qm, EmbeddingModel)  # one contract, two models
    assert not isinstance(object(), EmbeddingModel)
    assert qm.similar_representation == model.similar_representation and qm.has_text == model.has_text
    assert row_cosine(model.encode_text(TEXTS), qm.encode_text(TEXTS)).min() >= 0.9999
    x = verify_windows(20, model.n_times, n=8, seed=5)
    want = model.encode_eeg(x, backend="torch")
    got = qm.encode_eeg(x)
    assert got.shape == want.shape == (8, 256) and got.dtype == np.float32
    assert row_cosine(want, got).min() >= 0.9999
    for pooling in ("attention", "mean"):
        assert row_cosine(model.pool_windows(want, pooling)[None], qm.pool_windows(want, pooling)[None])[0] >= 0.9999
    assert qm.window_seconds == model.window_seconds and qm.temperature == pytest.approx(model.temperature)
    with pytest.raises(ValueError, match="pooling"):
        qm.pool_windows(want, "max")


def test_shares_the_text_feature_cache(written, demo_model_dir, tmp_path):
    model, _ = written
    qm = QueryModel.load(config_hash(model), demo_model_dir, cache_dir=tmp_path)
    first = qm.encode_text(["a query never seen before"])
    calls = []
    qm._features = lambda texts: calls.append(texts)  # a second call must come from the cache
    np.testing.assert_array_equal(qm.encode_text(["a query never seen before"]), first)
    assert calls == []
    model.cache_dir = tmp_path  # the torch model reads the same cache file
    model._text_encoder = None
    assert row_cosine(model.encode_text(["a query never seen before"]), first)[0] >= 0.9999


def test_a_changed_file_or_model_folder_means_torch(written, demo_model_dir, tmp_path):
    model, folder = written
    key = config_hash(model)
    import json

    meta = json.loads((folder / "meta.json").read_text())
    heads = folder / "heads.npz"
    st = heads.stat()
    os.utime(heads, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert QueryModel.load(key, demo_model_dir) is None
    finally:
        os.utime(heads, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert QueryModel.load(key, tmp_path) is None  # another (empty) model folder
    assert QueryModel.load("0" * 16) is None
    assert meta["model_hash"] == key


def test_missing_onnxruntime_means_torch(written, demo_model_dir, monkeypatch):
    import elmsearch.models.compiled as compiled

    model, _ = written
    monkeypatch.setattr(compiled, "_ort_installed", lambda: False)
    assert QueryModel.load(config_hash(model), demo_model_dir) is None
    assert write_query_model(model, demo_model_dir) is None


def test_a_query_model_that_disagrees_is_discarded(demo_model_dir, monkeypatch, tmp_path, caplog):
    import elmsearch.models.compiled as compiled

    monkeypatch.setenv("ELMSEARCH_CACHE_DIR", str(tmp_path))
    model = load_model(demo_model_dir)
    real = compiled._heads
    monkeypatch.setattr(compiled, "_heads", lambda m: {k: (v * 1.5 if k == "proj_w2" else v)
                                                       for k, v in real(m).items()})
    assert write_query_model(model, demo_model_dir) is None
    assert "discarded" in caplog.text
    assert not query_folder(config_hash(model)).exists()


def test_index_queries_use_it_and_rank_like_torch(demo_archive, demo_model_dir, tmp_path):
    db = tmp_path / "idx"
    index_archive(demo_archive.root, db, demo_model_dir)  # the indexer writes the query model
    fast = Index.open(db)
    assert isinstance(fast.query_model, QueryModel)
    slow = Index.open(db)
    slow.backend = "torch"
    assert not isinstance(slow.query_model, QueryModel)
    for text in ("focal slowing left temporal", "normal EEG"):
        a, b = fast.search_text(text, k=6), slow.search_text(text, k=6)
        assert [h.recording_id for h in a] == [h.recording_id for h in b]
        assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-4)
    edf = sorted(demo_archive.root.rglob("*.edf"))[0]
    new = tmp_path / "new.edf"
    new.write_bytes(edf.read_bytes())
    qa, qb = fast.resolve(fname=new), slow.resolve(fname=new)
    assert qa.recording_id is None and row_cosine(qa.emb[None], qb.emb[None])[0] >= 0.9999
    pa = fast.classify(["normal EEG", "abnormal EEG with slowing"], recording_id=1)
    pb = slow.classify(["normal EEG", "abnormal EEG with slowing"], recording_id=1)
    np.testing.assert_allclose(pa.probabilities, pb.probabilities, atol=1e-4)
    np.testing.assert_allclose(pa.minutes, pb.minutes, atol=1e-4)

"""Compiled EEG encoder backends (ONNX Runtime, OpenVINO) against torch fp32."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from elmsearch.models import backends as B
from elmsearch.models import create_model, load_model
from elmsearch.models.identity import cpu_has_bf16

ELM_5S = SHARED_DATA / "elm_pretrained" / "5s"
EEGMAT = SHARED_DATA / "eegmat" / "Subject00_1.edf"


def _cases():
    out = []
    for name, pkg in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")):
        missing = importlib.util.find_spec(pkg) is None
        mark = pytest.mark.skipif(missing, reason=f"{pkg} is not installed (pip install elmsearch[fast])")
        out.append(pytest.param(name, "fp32", marks=mark, id=f"{name}-fp32"))
    out.append(pytest.param("openvino", "bf16", id="openvino-bf16", marks=[
        pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed"),
        pytest.mark.skipif(not cpu_has_bf16(), reason="no native bfloat16 on this CPU (avx512_bf16/amx)")]))
    return out


@pytest.fixture(scope="module")
def fresh_model():
    torch.manual_seed(0)
    return create_model("elm-5s").eval()


@pytest.fixture(scope="module")
def release_model():
    if not ELM_5S.is_dir():
        pytest.skip(f"ELM release weights absent: {ELM_5S}")
    return load_model(ELM_5S)


@pytest.fixture(scope="module")
def eegmat_windows(release_model):
    if not EEGMAT.is_file():
        pytest.skip(f"shared data absent: {EEGMAT}")
    from elmsearch import read_recording
    from elmsearch.io.recording import make_windows
    from elmsearch.models.embedding import model_params

    rec = read_recording(EEGMAT, model_params(release_model), min_duration=release_model.window_seconds)
    return make_windows(rec, release_model.window_seconds).astype(np.float32)


def _random(model, n=48, seed=11):
    x = np.random.default_rng(seed).standard_normal((n, 20, model.n_times)) * 3.0
    x[:, :, :5] = 200.0  # saturated artefact samples, as after the preprocessing's clip
    return np.clip(x, -80, 80).astype(np.float32)


def _assert_close(model, name, precision, x):
    enc = B.build(model, name, precision)
    assert enc is not None, f"{name}/{precision} did not build or verify"
    assert enc.name == name and enc.precision == precision
    ref = model.encode_eeg(x, backend="torch")
    got = model.encode_eeg(x, backend=name, precision=precision)
    cos = B.row_cosine(ref, got)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert cos.min() >= B.MIN_COSINE, (name, precision, cos.min())
    return cos.min()


@pytest.mark.parametrize(("name", "precision"), _cases())
def test_fresh_model_matches_torch(fresh_model, name, precision):
    _assert_close(fresh_model, name, precision, _random(fresh_model))


@pytest.mark.parametrize(("name", "precision"), _cases())
def test_release_weights_random_and_eegmat(release_model, eegmat_windows, name, precision):
    _assert_close(release_model, name, precision, _random(release_model))
    _assert_close(release_model, name, precision, eegmat_windows)


@pytest.mark.parametrize(("name", "precision"), _cases())
def test_cache_reused_on_second_load(fresh_model, name, precision, tmp_path, monkeypatch):
    monkeypatch.setenv("ELMSEARCH_CACHE_DIR", str(tmp_path))
    assert B.build(fresh_model, name, precision) is not None
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "eeg-backends").iterdir()}
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in files)
    counts = dict(B._counters)
    again = create_model("elm-5s")
    again.load_state_dict(fresh_model.state_dict())
    enc = B.build(again.eval(), name, precision)
    assert enc is not None and enc.min_cosine >= B.MIN_COSINE
    assert B._counters == counts  # no export, no build
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "eeg-backends").iterdir()} == files


@pytest.mark.parametrize(("name", "precision"), _cases())
def test_corrupted_cache_is_rebuilt(fresh_model, name, precision, tmp_path, monkeypatch):
    for damage in ("garbage", "flipped"):
        _corrupt_and_rebuild(fresh_model, name, precision, damage, tmp_path, monkeypatch)


def _corrupt_and_rebuild(fresh_model, name, precision, damage, tmp_path, monkeypatch):
    monkeypatch.setenv("ELMSEARCH_CACHE_DIR", str(tmp_path))
    assert B.build(fresh_model, name, precision) is not None
    folder = tmp_path / "eeg-backends"
    target = next(p for p in folder.iterdir() if f"-{name}" in p.name and p.suffix in {".onnx", ".bin"})
    data = target.read_bytes()
    target.write_bytes({"garbage": b"not a model", "flipped": data[:-64] + bytes(64)}[damage])
    builds = B._counters["build"]
    x = _random(fresh_model, 8)
    enc = B.build(fresh_model, name, precision)
    assert enc is not None and B._counters["build"] == builds + 1  # rebuilt, then verified
    assert B.row_cosine(fresh_model.encode_eeg(x, backend="torch", normalize=False), enc(x)).min() >= B.MIN_COSINE


def test_corrupted_record_and_failed_check_fall_back_to_torch(fresh_model, tmp_path, monkeypatch, caplog):
    if "onnxruntime" not in B.installed():
        pytest.skip("onnxruntime is not installed")
    monkeypatch.setenv("ELMSEARCH_CACHE_DIR", str(tmp_path))
    folder = tmp_path / "eeg-backends"
    folder.mkdir()
    from elmsearch.models.identity import config_hash

    (folder / f"{config_hash(fresh_model)}.json").write_text("{not json")
    assert B.build(fresh_model, "onnxruntime") is not None  # an unreadable record: built afresh
    monkeypatch.setattr(B, "MIN_COSINE", 1.5)  # nothing can pass: discarded with a warning
    monkeypatch.setenv("ELMSEARCH_CACHE_DIR", str(tmp_path / "other"))
    with caplog.at_level(logging.WARNING, logger="elmsearch.models.backends"):
        assert B.build(fresh_model, "onnxruntime") is None
    assert sum("discarded" in r.getMessage() for r in caplog.records) == 1
    B._memo.pop(fresh_model, None)
    x = _random(fresh_model, 8)
    assert B.get_encoder(fresh_model, "onnxruntime").name == "torch"
    np.testing.assert_array_equal(fresh_model.encode_eeg(x, backend="onnxruntime"),
                                  fresh_model.encode_eeg(x, backend="torch"))
    B._memo.pop(fresh_model, None)


def test_auto_returns_a_verified_backend_and_records_it(fresh_model, tmp_path, monkeypatch):
    monkeypatch.setenv("ELMSEARCH_CACHE_DIR", str(tmp_path))
    B._memo.pop(fresh_model, None)
    enc = B.get_encoder(fresh_model, "auto", "fp32")
    assert enc.name in B.installed()
    assert enc.name == "torch" or enc.min_cosine >= B.MIN_COSINE
    import json

    from elmsearch.models.identity import config_hash

    rec = json.loads((tmp_path / "eeg-backends" / f"{config_hash(fresh_model)}.json").read_text())
    slot = f"fp32-{torch.get_num_threads()}t-{B.engines_key()}"
    assert rec["auto"][slot] == f"{enc.name}/{enc.precision}"
    assert set(rec["speed"][slot]) >= {"torch/fp32"}
    B._memo.pop(fresh_model, None)
    real = B.throughput
    monkeypatch.setattr(B, "throughput", lambda *a, **k: pytest.fail("auto measured twice"))
    assert B.get_encoder(fresh_model, "auto", "fp32").name == enc.name
    B._memo.pop(fresh_model, None)
    # another engine version installed: measured again, in interleaved rounds that keep each one's best
    monkeypatch.setattr(B, "engines_key", lambda: "torch=9.9,onnxruntime=9.9")
    seen = []

    def timed(enc_, x, *a, **k):
        seen.append(enc_.name)
        return real(enc_, x[:32], *a, **k)

    monkeypatch.setattr(B, "throughput", timed)
    B.get_encoder(fresh_model, "auto", "fp32")
    n = len(set(seen))
    assert len(seen) == B.AUTO_ROUNDS * n and seen[:n] == seen[n : 2 * n]  # engine after engine, round after round
    B._memo.pop(fresh_model, None)


def test_unknown_backend_is_refused(fresh_model):
    with pytest.raises(ValueError, match="backend must be"):
        fresh_model.encode_eeg(_random(fresh_model, 2), backend="tensorrt")
    with pytest.raises(ValueError, match="backend must be"):
        fresh_model.set_backend("tensorrt")


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_index_with_onnxruntime_gives_torch_top_k(archive, demo_model_dir, tmp_path):
    from sqlalchemy import select

    from db import IndexRun
    from indexer.pipeline import index_archive
    from indexer.search import Index

    runs, hits = {}, {}
    for backend in ("torch", "onnxruntime"):
        db = tmp_path / f"db-{backend}"
        summary = index_archive(archive, db, demo_model_dir, n_jobs=0, backend=backend)
        assert summary.failed == 0 and summary.added > 0
        index = Index.open(db)
        index.backend = backend
        with index.store.session() as s:
            runs[backend] = s.scalars(select(IndexRun.precision)).all()
        files = sorted(archive.rglob("*.edf"))[:3]
        hits[backend] = ([[h.recording_id for h in index.similar(f, k=5, include_same_patient=True)]
                          for f in files]
                         + [[h.recording_id for h in index.search_text("focal slowing", k=5)]])
    assert runs == {"torch": ["fp32"], "onnxruntime": ["ort-fp32"]}
    assert hits["onnxruntime"] == hits["torch"]

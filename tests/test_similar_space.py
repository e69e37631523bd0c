"""The prior-case space an index fits on its own archive (``indexer.similar_space``, issue 25)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from indexer.similar_space import DEFAULT, MIN_PATIENTS, SimilarSpace, fit, same_patient_recall


def _archive(signal_in: str, n_patients: int = 12, per_patient: int = 3, seed: int = 0):
    """Embeddings and band-power maps where only ``signal_in`` ("emb" or "bp") tells patients apart."""
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i}" for i in range(n_patients)], per_patient)
    n = len(patients)
    centre_e, centre_b = rng.normal(size=(n_patients, 256)), rng.normal(size=(n_patients, 200))
    who = np.repeat(np.arange(n_patients), per_patient)
    emb = rng.normal(size=(n, 256)) + (3 * centre_e[who] if signal_in == "emb" else 0)
    bp = rng.normal(size=(n, 200)) * 0.5 - 10 + (2 * centre_b[who] if signal_in == "bp" else 0)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb, bp, patients


@pytest.mark.parametrize(("signal_in", "expected"), [("emb", {"embedding", "fusion"}), ("bp", {"bandpower", "fusion"})])
def test_the_kind_that_finds_a_patients_recordings_is_chosen(signal_in, expected):
    emb, bp, patients = _archive(signal_in)
    space = fit(emb, bp, patients)
    recall = space.measured["recall_at_5"]
    assert space.kind in expected and recall[space.kind] == max(recall.values())
    assert space.measured["n_patients"] == 12 and space.measured["n_queries"] == len(patients)
    wrong = "bandpower" if signal_in == "emb" else "embedding"
    assert recall[wrong] < 0.6 < recall[space.kind]  # the other part alone is near chance


def test_without_patients_with_several_recordings_the_default_holds():
    emb, bp, _ = _archive("emb")
    space = fit(emb, bp, np.array([f"x{i}" for i in range(len(emb))]))
    assert space.kind == DEFAULT and space.measured == {}
    few = np.array([f"p{i // 2}" if i < 2 * (MIN_PATIENTS - 1) else f"x{i}" for i in range(len(emb))])
    assert fit(emb, bp, few).measured == {}


def test_a_trained_models_choice_stands_whatever_the_archive_measures():
    emb, bp, patients = _archive("bp")  # band power finds the patients, the embedding does not
    assert fit(emb, bp, patients).kind in {"bandpower", "fusion"}
    space = fit(emb, bp, patients, default="embedding", measure=False)
    assert space.kind == "embedding" and space.measured == {}


def test_an_index_keeps_the_choice_train_made(demo_archive, demo_model_dir, tmp_path, monkeypatch):
    import json

    import indexer.similar_space

    monkeypatch.setattr(indexer.similar_space, "MIN_PATIENTS", 1)  # this small archive could measure

    import shutil

    from indexer.pipeline import index_archive

    model = shutil.copytree(demo_model_dir, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    assert config["similar"]["measured"]  # train measured its choice on held-out patients
    config["similar"]["representation"] = "embedding"  # what the archive would not choose: it stands
    (model / "config.json").write_text(json.dumps(config))
    index_archive(demo_archive.root, tmp_path / "idx", model, n_jobs=0)
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["similar_representation"] == "embedding"
    assert manifest["similar_space"]["kind"] == "embedding" and not manifest["similar_space"]["measured"]


def test_transform_is_unit_padded_and_survives_the_manifest():
    emb, bp, patients = _archive("bp")
    space = fit(emb, bp, patients)
    v = space.transform(emb, bp)
    assert v.shape == (len(emb), 256) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    again = SimilarSpace.from_dict(space.to_dict())
    np.testing.assert_allclose(again.transform(emb[:3], bp[:3]), v[:3], atol=1e-5)
    assert again.kind == space.kind and again.measured == space.measured
    one = space.transform(emb[0], bp[0])  # a single query recording
    np.testing.assert_allclose(one[0], v[0], atol=1e-5)


def test_same_patient_recall_counts_only_others():
    v = np.eye(4, dtype=np.float32)
    v[1] = v[0]  # recordings 0 and 1 are the same patient and identical
    patients = np.array([0, 0, 1, 2])
    assert same_patient_recall(v, patients, np.array([0, 1]), k=1) == 1.0
    assert same_patient_recall(v, patients, np.array([2]), k=3) == 0.0  # never itself


def test_release_weights_find_eegmat_subjects(shared_data, tmp_path):
    """Target of issue 25: same-subject R@5 >= 0.90 with the release weights, never below band power."""
    from sqlalchemy import select

    from db import Patient, Recording, Status
    from elmsearch.archive.discovery import discovery_options
    from elmsearch.datasets.eegmat import build_eegmat_archive
    from elmsearch.io.recording import make_windows
    from elmsearch.io.windowed import read_recording
    from elmsearch.signal.bandpower import band_power
    from indexer.evaluate import _band_power_vectors
    from indexer.pipeline import index_archive
    from indexer.search import Index

    release = shared_data / "elm_pretrained" / "5s"
    root = build_eegmat_archive(shared_data / "eegmat", tmp_path / "archive", seed=0)["root"]
    with discovery_options(follow_outside=True):
        index_archive(root, tmp_path / "idx", release)
    index = Index.open(tmp_path / "idx")
    assert index.similar_representation == "fusion"
    measured = index.manifest["similar_space"]["measured"]
    assert measured["n_patients"] == 36 and measured["recall_at_5"]["fusion"] >= 0.9
    with index.store.session() as s:
        rows = s.execute(select(Recording.id, Patient.key, Recording.path, Recording.emb)
                         .join(Patient, Recording.patient_id == Patient.id)
                         .where(Recording.status == Status.INDEXED).order_by(Recording.id)).all()
    assert len(rows) == 72
    found = [any(h.patient == p for h in index.similar(recording_id=i, k=5, include_same_patient=True,
                                                        one_per_patient=False)) for i, p, _, _ in rows]
    recall = float(np.mean(found))
    pp = index.model.config.preprocessing
    from elmsearch.signal.preprocessing import PreprocessingParams

    params = PreprocessingParams.from_dict(pp or {})
    bp = [band_power(make_windows(r, 5.0), r.sfreq) for r in (read_recording(x[2], params, min_duration=5.0)
                                                            for x in rows)]
    _, inverse = np.unique([r[1] for r in rows], return_inverse=True)
    baseline = same_patient_recall(_band_power_vectors(bp), inverse, np.arange(len(rows)))
    assert recall >= 0.9 and recall >= baseline, (recall, baseline)
    # a new file gets the archive's transform: the copy of an indexed recording lands on its vector
    copy = tmp_path / "new.edf"
    shutil.copy(rows[0][2], copy)
    q = index.resolve(fname=copy)
    stored = index.resolve(recording_id=rows[0][0])
    assert q.recording_id is None and float(q.profile @ stored.profile) > 0.999


def test_the_readers_band_power_map_is_the_one_of_the_embedded_windows(demo_archive, demo_model_dir, tmp_path):
    """The reader process makes each recording's band-power map; it equals the map of the windows the encoder kept."""
    from db import Recording, from_blob
    from elmsearch.io.windowed import WindowedRecording
    from elmsearch.models.embedding import model_params
    from elmsearch.models.factory import load_model
    from elmsearch.signal.bandpower import bandpower_profile
    from indexer.pipeline import index_archive
    from indexer.store import IndexStore

    index_archive(demo_archive.root, tmp_path / "idx", demo_model_dir, n_jobs=1)
    model = load_model(demo_model_dir)
    with IndexStore.open(tmp_path / "idx").session() as s:
        rows = [(r.path, from_blob(r.bandpower), r.n_windows) for r in s.query(Recording).limit(4)]
    for path, stored, n_windows in rows:
        windows, keep = WindowedRecording(path, model_params(model), window_s=model.window_seconds).windows()
        assert keep.sum() == n_windows
        np.testing.assert_allclose(stored, bandpower_profile(windows, model_params(model).sfreq, np.flatnonzero(keep)),
                                   rtol=1e-5, atol=1e-5)

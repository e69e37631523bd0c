"""The spectral view of the EEG tower, spectral profiles for prior cases, and reproducible training."""

import json
import shutil
import sqlite3

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.app import app
from db import make_engine, sqlite_url
from elmsearch.models.config import ModelCfg
from elmsearch.models.factory import load_model
from elmsearch.models.spectral import SPECTRAL_BANDS, spectral_features, spectral_profile
from elmsearch.models.spectral_view import SpectralView, spectral_arrays
from elmsearch.signal.bandpower import band_power
from elmsearch.train.trainer import TrainItem, build_model, choose_similar, load_eeg_weights
from indexer.pipeline import index_archive
from indexer.search import Index
from indexer.store import IndexStore

SFREQ = 100.0


def _windows(rng, n, alpha_hz, n_times=500, amp=20.0):
    t = np.arange(n_times) / SFREQ
    x = rng.standard_normal((n, 20, n_times)) * 2.0
    return (x + amp * np.sin(2 * np.pi * alpha_hz * t)[None, None]).astype(np.float32)


@pytest.mark.parametrize("n_times", [500, 6000, 350])
def test_band_powers_equal_welch(n_times):
    rng = np.random.default_rng(0)
    x = _windows(rng, 3, 10.0, n_times)
    view = SpectralView(20, n_times, SFREQ)
    got = view.raw(torch.from_numpy(x)).numpy()
    want = band_power(x, SFREQ, {name: (lo, hi) for name, lo, hi in SPECTRAL_BANDS})
    np.testing.assert_allclose(got[:, :100], want, atol=1e-4)
    assert got.shape == (3, 20 * len(SPECTRAL_BANDS) + 1 + 3 * len(SPECTRAL_BANDS)) == (3, view.n_features)


def test_asymmetry_features_see_a_focal_change_in_any_region():
    from elmsearch.signal.channels import TCP_CH_NAMES

    rng = np.random.default_rng(4)
    view = SpectralView(20, 500, SFREQ)
    base = rng.standard_normal((1, 20, 500)).astype(np.float32) * 5
    n_b = len(SPECTRAL_BANDS)
    delta = slice(20 * n_b + 1 + n_b, 20 * n_b + 1 + 2 * n_b)  # the per-band largest asymmetry
    plain = view.raw(torch.from_numpy(base))[0, delta][0].item()
    t = np.arange(500) / SFREQ
    for name in ("F7-T3", "C4-P4", "T6-O2"):  # left temporal, right central, right occipital
        x = base.copy()
        x[0, TCP_CH_NAMES.index(name)] += 60 * np.sin(2 * np.pi * 2.0 * t)  # regional 2 Hz delta
        assert view.raw(torch.from_numpy(x))[0, delta][0].item() > plain + 1.0  # log10: > 10x


def test_posterior_dominant_frequency_follows_the_rhythm():
    rng = np.random.default_rng(1)
    view = SpectralView(20, 500, SFREQ)
    for hz in (8.0, 9.5, 11.0):
        pdr = view.raw(torch.from_numpy(_windows(rng, 2, hz)))[:, 20 * len(SPECTRAL_BANDS)].numpy()
        np.testing.assert_allclose(pdr, hz, atol=0.35)


def test_fit_standardises_and_numpy_matches_torch():
    rng = np.random.default_rng(2)
    windows = [_windows(rng, 6, hz) for hz in (8.0, 10.0, 12.0)]
    view = SpectralView(20, 500, SFREQ)
    view.fit(windows)
    assert int(view.n_fit) == 18
    z = view(torch.from_numpy(np.concatenate(windows))).numpy()
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-3)
    varies = view.raw(torch.from_numpy(np.concatenate(windows))).numpy().std(0) > 0.02  # above the floor
    assert varies.sum() > 100
    np.testing.assert_allclose(z.std(0)[varies], 1, atol=1e-2)
    arrays = spectral_arrays(view)
    np.testing.assert_allclose(spectral_features(windows[0], arrays), view(torch.from_numpy(windows[0])).numpy(),
                               atol=1e-3)
    prof = spectral_profile(windows[0], arrays, 256)
    assert prof.shape == (256,) and prof.dtype == np.float32
    assert np.isclose(np.linalg.norm(prof), 1, atol=1e-5) and not prof[20 * len(SPECTRAL_BANDS):].any()
    mean = spectral_features(windows[0][[1, 3]], arrays)[:, :20 * len(SPECTRAL_BANDS)].mean(0)  # band powers
    np.testing.assert_allclose(spectral_profile(windows[0], arrays, 256, index=np.array([1, 3]))[:len(mean)],
                               mean / np.linalg.norm(mean), atol=1e-5)
    with pytest.raises(ValueError, match="at least one window"):
        spectral_profile(windows[0], arrays, 256, index=np.array([], np.int64))


def _items(rng, recordings_per_patient):
    items = []
    for p, n in enumerate(recordings_per_patient):
        hz = 7.5 + 0.5 * p  # each patient has their own alpha frequency
        for r in range(n):
            items.append(TrainItem(f"p{p}/s{r}", f"p{p}", _windows(rng, 4, hz).astype(np.float16),
                                   ["normal EEG."], f"p{p}_{r}.edf"))
    return items


def test_choose_similar_takes_the_profile_only_when_it_finds_the_patient_earlier(monkeypatch):
    import elmsearch.train.trainer as training

    rng = np.random.default_rng(3)
    model = build_model("elm-5s", seed=0)
    items = _items(rng, [2] * 6)
    model.eeg.spectral.fit([it.windows for it in items])
    # an embedding that knows nothing of the patients
    noise = rng.standard_normal((len(items), 256)).astype(np.float32)
    monkeypatch.setattr(training, "recording_vectors", lambda m, its, *a: noise[: len(its)])
    out = choose_similar(model, items, max_windows=4)
    assert out["representation"] == "spectral" and model.config.similar is out
    assert out["measured"]["spectral"]["MRR"] > out["measured"]["embedding"]["MRR"]
    assert model.similar_representation == "spectral"
    # an embedding that finds the patient as early: the shared-space embedding stays
    same = np.stack([model.spectral_profile(it.windows) for it in items])
    monkeypatch.setattr(training, "recording_vectors", lambda m, its, *a: same)
    assert choose_similar(model, items, max_windows=4)["representation"] == "embedding"
    # nothing to measure (one recording per patient): the shared-space embedding stays
    monkeypatch.setattr(training, "recording_vectors", lambda m, its, *a: noise[: len(its)])
    assert choose_similar(model, _items(rng, [1] * 4), max_windows=4)["representation"] == "embedding"
    # a model without a spectral view never compares spectra
    cfg = json.loads(json.dumps(model.config.to_dict()))
    cfg["eeg"].pop("spectral")
    assert ModelCfg.from_dict(cfg).similar_representation == "embedding"


def test_same_seed_same_weights_and_metrics(demo_archive, tmp_path):
    """Two `elmsearch train` runs with the same seed give the same bytes (the issue's reproducibility)."""
    runner = CliRunner()
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        res = runner.invoke(app, ["train", str(demo_archive.root), "--out", str(out), "--epochs", "2",
                                  "--batch-size", "4", "--max-windows", "4", "--max-segments", "4",
                                  "--freeze-eeg", "--seed", "3", "--device", "cpu"])
        assert res.exit_code == 0, res.output
        outs.append(out)
    a, b = ((o / "model.safetensors").read_bytes() for o in outs)
    assert a == b
    ma, mb = (json.loads((o / "metrics.json").read_text()) for o in outs)
    assert ma == mb  # untrained baseline, best epoch, validation metrics, the prior-case choice
    other = tmp_path / "c"
    res = runner.invoke(app, ["train", str(demo_archive.root), "--out", str(other), "--epochs", "2",
                              "--batch-size", "4", "--max-windows", "4", "--max-segments", "4",
                              "--freeze-eeg", "--seed", "4", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (other / "model.safetensors").read_bytes() != a


@pytest.fixture(scope="module")
def spectral_index(demo_archive, demo_model_dir, tmp_path_factory):
    """The demo model with prior cases set to compare spectral profiles, and its index."""
    model_dir = tmp_path_factory.mktemp("spectral_model")
    for f in ("config.json", "model.safetensors"):
        shutil.copy(demo_model_dir / f, model_dir / f)
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["similar"] = {"representation": "spectral"}
    (model_dir / "config.json").write_text(json.dumps(cfg))
    db = tmp_path_factory.mktemp("spectral") / "idx"
    index_archive(demo_archive.root, db, model_dir)
    return db, model_dir


def test_similar_ranks_by_profile(spectral_index, demo_archive, tmp_path):
    db, model_dir = spectral_index
    index = Index.open(db)
    assert index.manifest["similar_representation"] == "spectral" == index.similar_representation
    counts = index.manifest["counts"]
    assert counts["eeg_profile"] == counts["eeg_recording"] > 0
    con = sqlite3.connect(db / "elmsearch.sqlite")
    rows = con.execute("select r.id, r.profile, p.key from recordings r join patients p on p.id = r.patient_id "
                       "where r.status = 'indexed' order by r.id").fetchall()
    ids = np.array([r[0] for r in rows])
    prof = np.stack([np.frombuffer(r[1], np.float32) for r in rows])
    patients = np.array([r[2] for r in rows])
    q = 0
    hits = index.similar(recording_id=int(ids[q]), k=3, include_same_patient=True, one_per_patient=False)
    sim = prof @ prof[q]
    sim[q] = -np.inf
    want = ids[np.argsort(-sim)[:3]]
    assert [h.recording_id for h in hits] == want.tolist()
    np.testing.assert_allclose([h.score for h in hits], np.sort(sim)[::-1][:3], atol=1e-4)
    assert patients[q] not in {patients[ids == h.recording_id][0] for h in index.similar(recording_id=int(ids[q]))}
    # a file outside the index gets the same profile on the fly (compiled and torch query paths)
    path = con.execute("select path from recordings where id = ?", (int(ids[q]),)).fetchone()[0]
    src = demo_archive.root / path if not path.startswith("/") else path
    copy = tmp_path / "new.edf"
    shutil.copy(src, copy)
    for backend in ("auto", "torch"):
        fresh = Index.open(db)
        fresh.backend = backend
        query = fresh.resolve(copy)
        assert query.recording_id is None
        np.testing.assert_allclose(query.profile, prof[q], atol=1e-4)
        # the copy's bytes are the recording's: it is left out, its nearest others come back
        assert [h.recording_id for h in fresh.similar(copy, k=3, include_same_patient=True,
                                                      one_per_patient=False)] == want.tolist()


def test_an_older_database_gets_the_profile_column(tmp_path):
    url = sqlite_url(tmp_path)
    make_engine(url, create=True).dispose()
    con = sqlite3.connect(tmp_path / "elmsearch.sqlite")
    con.execute("ALTER TABLE recordings DROP COLUMN profile")
    con.commit()
    con.close()
    store = IndexStore(tmp_path, url, create=False)  # a reader: no column, no error
    assert store.db_counts("x")["eeg_profile"] == 0
    make_engine(url, create=True).dispose()  # the next writer adds it
    cols = [r[1] for r in sqlite3.connect(tmp_path / "elmsearch.sqlite").execute("PRAGMA table_info(recordings)")]
    assert "profile" in cols


def test_release_weights_in_a_spectral_model_start_as_the_release(shared_data):
    release = shared_data / "elm_pretrained" / "5s"
    model = build_model("elm-5s", init=release)
    ref = load_model(release)
    assert model.eeg.spectral is not None and ref.eeg.spectral is None
    x = np.random.default_rng(0).standard_normal((2, 20, 500)).astype(np.float32)
    np.testing.assert_allclose(model.encode_eeg(x, backend="torch"), ref.encode_eeg(x, backend="torch"), atol=1e-6)
    with pytest.raises(Exception, match="has a spectral view"):
        load_eeg_weights(ref, model, "spectral model")

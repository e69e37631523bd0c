"""Must-show: on held-out patients of a demo archive, training beats the untrained model and chance."""

import numpy as np
import pytest
import torch

from elmsearch.datasets.demo import generate_archive
from elmsearch.models import load_model
from elmsearch.train.metrics import chance_recall
from elmsearch.train.trainer import TrainConfig, build_model, evaluate, load_items, split_by_patient, train


@pytest.mark.parametrize("seed", [21])
def test_trained_model_beats_untrained_and_chance_on_held_out_patients(tmp_path, seed):
    archive = generate_archive(tmp_path / "archive", n_recordings=96, seed=seed, min_minutes=0.5, max_minutes=1.0)
    items = load_items(archive.root, 5.0, "sentence")
    trainval, test = split_by_patient(items, 0.3, seed=seed + 1)  # test patients never seen in training
    assert len(test) >= 20
    torch.manual_seed(seed)
    untrained = build_model("elm-5s")
    torch.manual_seed(seed)
    model = build_model("elm-5s")
    # CPU budget: the trunk stays at its (random) initialisation and is run once; heads train.
    cfg = TrainConfig(epochs=40, batch_size=8, max_eeg=16, lr=2e-3, val_fraction=0.25, patience=10,
                      seed=seed, freeze_eeg=True)
    train(model, trainval, tmp_path / "model", cfg, resume=False)
    best = load_model(tmp_path / "model")
    before = evaluate(untrained, test, max_windows=64)["text_to_eeg"]
    after = evaluate(best, test, max_windows=64)["text_to_eeg"]
    chance = chance_recall(len(test), 10)
    print(f"held-out n={len(test)} chance R@10 {chance:.3f}: untrained {before}, trained {after}")
    assert after["R@10"] >= before["R@10"] + 0.15
    assert after["R@10"] >= chance + 0.15
    assert after["MRR"] >= before["MRR"] + 0.05
    assert np.isfinite(after["MRR"])


def test_spectral_profile_finds_the_same_subject_on_real_eeg(shared_data, tmp_path):
    """EEGMAT (real 19-channel EEG, 36 subjects): prior cases by spectral profile find a subject's
    other recording (rest vs arithmetic) far more often than the text-aligned embedding, and
    ``train`` chooses the profile on its own validation subjects."""
    import json
    from pathlib import Path

    from elmsearch.archive.discovery import discovery_options
    from elmsearch.datasets.eegmat import build_eegmat_archive
    from elmsearch.train.metrics import same_patient_recall
    from elmsearch.train.trainer import recipe_config, recording_vectors

    root = Path(build_eegmat_archive(shared_data / "eegmat", tmp_path / "eegmat", seed=0)["root"])
    train_subjects = set(json.loads((root / "splits.json").read_text())["train"])
    with discovery_options(follow_outside=True):  # the archive links to the files in ../shared
        items = load_items(root, 5.0, "sentence")
    assert len(items) == 72
    model = build_model("elm-5s", init=shared_data / "elm_pretrained" / "5s", seed=0)
    train(model, [it for it in items if it.patient in train_subjects], tmp_path / "model",
          recipe_config("heads", 0, "cpu", val_fraction=0.25), resume=False)
    assert model.similar_representation == "spectral"
    patients = np.array([it.patient for it in items])
    profile = np.stack([model.spectral_profile(it.windows) for it in items])
    embedding = recording_vectors(model, items, 64)
    r_profile = same_patient_recall(profile, patients)["R@5"]
    r_embedding = same_patient_recall(embedding, patients)["R@5"]
    print(f"EEGMAT same-subject R@5 over 72: profile {r_profile:.3f}, embedding {r_embedding:.3f}")
    assert r_profile >= 0.85 and r_profile >= r_embedding + 0.2

"""Must-show: on held-out patients of a demo archive, training beats the untrained model and chance."""

import numpy as np
import pytest
import torch

from elmsearch.metrics import chance_recall
from elmsearch.models import load_model
from elmsearch.synthetic import generate_archive
from elmsearch.training import TrainConfig, build_model, evaluate, load_items, split_by_patient, train


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

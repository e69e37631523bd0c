import numpy as np
import pytest
import torch

from elmsearch.train.loss import clip_loss, mil_infonce
from elmsearch.train.metrics import chance_recall, retrieval_metrics


def test_mil_infonce_prefers_aligned_bags():
    torch.manual_seed(0)
    centers = torch.randn(3, 16)
    eeg = torch.cat([centers[i] + 0.05 * torch.randn(4, 16) for i in range(3)])
    text = torch.cat([centers[i] + 0.05 * torch.randn(2, 16) for i in range(3)])
    eid = torch.arange(3).repeat_interleave(4)
    tid = torch.arange(3).repeat_interleave(2)
    aligned = mil_infonce(eeg, text, eid, tid, 0.1)
    shuffled = mil_infonce(eeg, text, eid, tid[torch.tensor([2, 3, 4, 5, 0, 1])], 0.1)
    assert aligned < shuffled
    assert aligned < np.log(6)  # better than uniform over the 6 segments


def test_mil_infonce_matches_hand_computation():
    eeg = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    eid, tid = torch.tensor([0, 1]), torch.tensor([0, 1, 1])
    t = 0.5
    sim = torch.nn.functional.normalize(eeg, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T / t
    row = torch.log_softmax(sim, 1)
    col = torch.log_softmax(sim, 0)
    r = (-(row[0, 0]) + -(row[1, 1] + row[1, 2]) / 2) / 2
    c = (-(col[0, 0]) - col[1, 1] - col[1, 2]) / 3
    torch.testing.assert_close(mil_infonce(eeg, text, eid, tid, t), (r + c) / 2)


def test_mil_infonce_needs_positives_on_both_sides():
    with pytest.raises(ValueError, match="positive"):
        mil_infonce(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, 1]), torch.tensor([0, 0]), 0.3)


def test_clip_loss_is_low_for_matched_pairs():
    torch.manual_seed(0)
    a = torch.randn(8, 16)
    assert clip_loss(a, a, 0.1) < clip_loss(a, a.roll(1, 0), 0.1)


def test_retrieval_metrics():
    sim = np.array([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.1, 0.2, 0.3]])
    m = retrieval_metrics(sim, ks=(1, 2))
    assert m["R@1"] == pytest.approx(2 / 3)
    assert m["R@2"] == pytest.approx(1.0)
    assert m["MRR"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert chance_recall(20, 10) == 0.5 and chance_recall(5, 10) == 1.0


def test_ties_are_broken_at_random():
    sim = np.ones((4, 4))  # every item equally similar: a random ranking
    m = retrieval_metrics(sim, ks=(1, 2))
    assert m["R@1"] == pytest.approx(0.25) and m["R@2"] == pytest.approx(0.5)
    assert m["MRR"] == pytest.approx(np.mean(1 / np.arange(1, 5)))

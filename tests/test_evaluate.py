"""Evaluation: retrieval, same-patient prior cases, zero-shot, probes with baselines, report files."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from indexer.evaluate import _same_patient_recall, evaluate_index, write_report
from indexer.pipeline import index_archive
from indexer.search import Index


@pytest.fixture(scope="module")
def built(demo_archive, demo_model_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("eval") / "idx"
    index_archive(demo_archive.root, db, demo_model_dir)
    return db


def test_same_patient_recall_counts_the_other_recording():
    emb = np.eye(4, dtype=np.float32)
    emb[1] = emb[0] * 0.9 + emb[1] * 0.1
    emb[3] = emb[2] * 0.9 + emb[3] * 0.1
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    out = _same_patient_recall(emb, np.array(["a", "a", "b", "b"]), k=1)
    assert out["n"] == 4 and out["R@1"] == 1.0
    out = _same_patient_recall(emb, np.array(["a", "b", "a", "c"]), k=1)
    assert out["R@1"] == 0.0 and 0 < out["chance"] < 1


def test_evaluate_index_on_the_demo_labels(built, demo_archive, tmp_path, shared_data):
    result = evaluate_index(Index.open(built), demo_archive.labels_path, demo_archive.root, columns=["abnormal"],
                            fractions=(0.5, 1.0), seeds=(0, 1), elm_weights=shared_data / "elm_pretrained" / "5s")
    assert result["n_recordings"] == demo_archive.n_recordings
    for direction in ("text_to_eeg", "eeg_to_report"):
        m = result["retrieval"][direction]
        assert 0 <= m["R@1"] <= m["R@5"] <= m["R@10"] <= 1 and m["n"] > 0
    zs = result["zero_shot"]["abnormal"]
    assert 0 <= zs["auroc"] <= 1 and zs["prompts"] == ["normal EEG", "abnormal EEG"]
    assert set(result["probe"]["abnormal"]) == {"ours", "band_power", "elm_weights"}
    assert all(len(rows) == 2 for rows in result["probe"]["abnormal"].values())
    assert set(result["same_patient"]) == {"ours", "elm_weights"}
    written = write_report(result, tmp_path / "out")
    assert (tmp_path / "out" / "probe_abnormal.png").stat().st_size > 1000
    assert json.loads(written[0].read_text())["n_recordings"] == demo_archive.n_recordings


def test_eval_command(built, demo_archive, tmp_path):
    res = CliRunner().invoke(app, ["eval", "--db", str(built), "--labels", str(demo_archive.labels_path),
                                   "--columns", "abnormal", "--seeds", "1", "--out", str(tmp_path / "e"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert "abnormal" in doc["probe"] and (tmp_path / "e" / "eval.json").is_file()
    res = CliRunner().invoke(app, ["eval", "--db", str(built), "--labels", str(demo_archive.labels_path),
                                   "--root", str(tmp_path)])
    assert res.exit_code == 1 and "no row matches" in res.output

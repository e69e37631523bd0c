"""Evaluation: retrieval, same-patient prior cases, zero-shot, probes with baselines, report files."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from elmsearch.train.metrics import same_patient_recall
from indexer.evaluate import (
    _band_power_vectors,
    _finding_precision,
    _main_findings,
    evaluate_index,
    write_report,
)
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
    out = same_patient_recall(emb, np.array(["a", "a", "b", "b"]), k=1)
    assert out["n"] == 4 and out["R@1"] == 1.0
    out = same_patient_recall(emb, np.array(["a", "b", "a", "c"]), k=1)
    assert out["R@1"] == 0.0 and 0 < out["chance"] < 1


def _on_circle(degrees):
    a = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(a), np.sin(a)], axis=1)  # cosine falls with the angle between two rows


def test_finding_precision_one_per_patient_never_the_same_patient():
    # angle, patient, main finding; k=2
    emb = _on_circle([0, 1, 5, 6, 30, 90])
    patients = np.array(["A", "A", "B", "B", "C", "D"])
    findings = np.array(["x", "x", "x", "x", "normal", "x"])
    out = _finding_precision(emb, patients, findings, k=2)
    # 0 and 1 (A): B's best (one of B's two), then C -> 1/2 (A's twin and B's second never count)
    # 2 and 3 (B): A's best, C -> 1/2;  4 (C, normal): B, A -> 0;  5 (D): C, B -> 1/2
    assert out["n"] == 6
    assert out["P@2"] == pytest.approx(2.5 / 6)
    # other-patient recordings sharing the finding: 3/4 for A and B's, 0/5 for C, 4/5 for D
    assert out["chance"] == pytest.approx((4 * 0.75 + 0 + 0.8) / 6)
    assert out["by_finding"] == {"normal": {"P@2": 0.0, "n": 1}, "x": {"P@2": pytest.approx(0.5), "n": 5}}


def test_finding_precision_normal_is_shared_and_short_lists():
    emb = _on_circle([0, 2, 120, 121])
    patients = np.array(["a", "b", "c", "c"])
    findings = np.array(["normal", "normal", "x", "normal"])
    out = _finding_precision(emb, patients, findings, k=1)
    # 0 -> 1 and 1 -> 0 share "normal"; 2 -> 0 or 1 (normal != x); 3 -> 1 (normal)
    assert out["P@1"] == pytest.approx(3 / 4)
    assert out["by_finding"]["normal"] == {"P@1": 1.0, "n": 3}
    # k=5 with only 2 other patients: precision over the 2 prior cases there are
    out = _finding_precision(emb, patients, findings, k=5)
    assert out["P@5"] == pytest.approx((1 / 2 + 1 / 2 + 0 + 1) / 4)
    # a patient alone is no query
    out = _finding_precision(emb, np.array(["a", "a", "a", "a"]), findings, k=5)
    assert out["n"] == 0 and np.isnan(out["P@5"]) and out["by_finding"] == {}


def test_main_findings_first_positive_column_in_file_order():
    labels = {"focal": np.array([0, 1, 0, 0, -1]), "abnormal": np.array([1, 1, 0, 1, 1]),
              "spike": np.array([1, 1, 0, 0, 1])}
    order = ["path", "abnormal", "spike", "focal"]
    # abnormal is the aggregate: no finding of its own next to spike/focal
    assert _main_findings(labels, order).tolist() == ["spike", "spike", "normal", "normal", "spike"]
    assert _main_findings({"abnormal": labels["abnormal"]}, order).tolist() == ["abnormal"] * 2 + ["normal"] + [
        "abnormal"] * 2
    assert _main_findings({}, order) is None


def test_band_power_vectors_are_z_scored_per_feature():
    # feature 1 is 1000x larger: without the z-score it alone would decide every cosine
    bp = [np.array([[1.0, 1000.0], [3.0, 1000.0]]), np.array([[0.0, 3000.0]]), np.array([[4.0, 2000.0]])]
    v = _band_power_vectors(bp)
    # window means (2, 1000), (0, 3000), (4, 2000) -> z (0, -1), (-1, 1), (1, 0) times 1/sqrt(2/3) -> L2
    assert np.allclose(v, [[0.0, -1.0], [-np.sqrt(0.5), np.sqrt(0.5)], [1.0, 0.0]])


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
    assert set(result["same_patient"]) == {"ours", "band_power", "elm_weights"}
    assert all(0 <= m["R@5"] <= 1 for m in result["same_patient"].values())
    fp = result["finding_precision"]
    assert set(fp) == {"ours", "band_power", "elm_weights"}
    for m in fp.values():
        assert 0 <= m["P@5"] <= 1 and 0 < m["chance"] < 1 and m["n"] == demo_archive.n_recordings
        assert set(m["by_finding"]) == {"abnormal", "normal"}  # only column: abnormal is the finding
        assert sum(b["n"] for b in m["by_finding"].values()) == m["n"]
    cohort = result["cohort"]  # the demo's reports state its findings: they find the abnormal recordings
    assert cohort["queries"] == {"abnormal": "abnormal EEG"} and cohort["n"] == demo_archive.n_recordings
    assert cohort["reports@0"]["MAP"] >= 0.95 and cohort["hybrid@0"]["MAP"] >= 0.95
    assert cohort["hybrid@0"]["MAP"] >= cohort["eeg@0"]["MAP"]
    assert cohort["hybrid@1"]["MAP"] == pytest.approx(cohort["eeg@1"]["MAP"])  # no report read: the EEG's order
    written = write_report(result, tmp_path / "out")
    assert (tmp_path / "out" / "probe_abnormal.png").stat().st_size > 1000
    assert json.loads(written[0].read_text())["n_recordings"] == demo_archive.n_recordings


def test_eval_command(built, demo_archive, tmp_path):
    res = CliRunner().invoke(app, ["eval", "--db", str(built), "--labels", str(demo_archive.labels_path),
                                   "--columns", "abnormal", "--seeds", "1", "--out", str(tmp_path / "e"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert "abnormal" in doc["probe"] and (tmp_path / "e" / "eval.json").is_file()
    assert set(doc["finding_precision"]) == {"ours", "band_power"}  # no --elm-weights
    # the demo archive's events.csv (beside the labels) measures which minutes a query finds
    ev = doc["events"]
    assert set(ev["queries"]) >= {"sharp_wave", "spindle", "eye_blink"} and ev["k"] == 10
    for source in ("eeg", "hybrid"):
        assert 0 <= ev[source]["P@10"] <= 1 and set(ev[source]["by"]) == set(ev["queries"])
    # the index holds the marks: windows inside them come first
    assert ev["hybrid"]["by"]["spindle"] == 1.0 and ev["hybrid"]["P@10"] >= ev["eeg"]["P@10"]
    res = CliRunner().invoke(app, ["eval", "--db", str(built), "--labels", str(demo_archive.labels_path),
                                   "--columns", "abnormal", "--seeds", "1", "--out", str(tmp_path / "t")],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "prior cases" in res.output and "cohort retrieval by finding" in res.output
    assert "which minutes" in res.output and "sleep spindle" in res.output
    assert any(line.split("│")[1].strip() == "band_power" and "chance" in line
               for line in res.output.splitlines() if line.count("│") > 2)
    res = CliRunner().invoke(app, ["eval", "--db", str(built), "--labels", str(demo_archive.labels_path),
                                   "--root", str(tmp_path)])
    assert res.exit_code == 1 and "no row matches" in res.output


def test_baselines_read_the_windows_an_index_run_kept(demo_archive, demo_model_dir, tmp_path, monkeypatch):
    """With a window store recorded in the manifest the band-power baseline reads no EDF, and gives the same."""
    import indexer.evaluate as evaluate

    index_archive(demo_archive.root, tmp_path / "plain", demo_model_dir, n_jobs=0)
    plain = evaluate_index(Index.open(tmp_path / "plain"), demo_archive.labels_path, demo_archive.root,
                           columns=["abnormal"], fractions=(1.0,), seeds=(0,), cohort=False)
    index_archive(demo_archive.root, tmp_path / "kept", demo_model_dir, n_jobs=0, window_store=tmp_path / "w")

    def no_read(*_a, **_k):
        raise AssertionError("an EDF was read again")

    monkeypatch.setattr(evaluate, "read_recording", no_read)
    kept = evaluate_index(Index.open(tmp_path / "kept"), demo_archive.labels_path, demo_archive.root,
                          columns=["abnormal"], fractions=(1.0,), seeds=(0,), cohort=False)
    assert kept["same_patient"]["band_power"]["R@5"] == pytest.approx(plain["same_patient"]["band_power"]["R@5"])
    assert kept["n_recordings"] == plain["n_recordings"] == demo_archive.n_recordings

"""Hybrid text search: reports read with their assertion status, the EEG calibrated on them, every
hit explained; recordings of one visit grouped; sources on the CLI and the API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fuzz_corpus import synthetic_edf
from typer.testing import CliRunner

from cli.app import app
from indexer.hybrid import platt

HISTORY = "CLINICAL HISTORY: {age} year old {who} with {why}.\n\nMEDICATIONS: Keppra\n\n"
INTRO = ("INTRODUCTION: Digital video EEG was performed using the standard 10-20 system of electrode "
         "placement with one channel of EKG.\n\n")

# Reports in the style of real ones: the finding stated, denied, or left uncertain.
AFFIRMED = {
    "aff1": "DESCRIPTION OF THE RECORD: Focal sharp waves are seen over the left temporal region, "
            "with phase reversal at T3.\n\nIMPRESSION: Abnormal EEG due to left temporal sharp waves.",
    "aff2": "DESCRIPTION OF THE RECORD: The background is 9 Hz. Frequent sharp waves are recorded in the "
            "right temporal region.\n\nIMPRESSION: Abnormal EEG: focal sharp waves, right temporal.",
    "aff3": "DESCRIPTION OF THE RECORD: Intermittent focal sharp waves are noted in the left frontal "
            "region during drowsiness.\n\nIMPRESSION: Abnormal EEG.",
}
NEGATED = {
    "neg1": "DESCRIPTION OF THE RECORD: The posterior dominant rhythm is 10 Hz. There are no focal sharp "
            "waves.\n\nIMPRESSION: Normal EEG. No epileptiform discharges were seen.",
    "neg2": "DESCRIPTION OF THE RECORD: Well-organized background. No focal slowing and no sharp waves "
            "are present.\n\nIMPRESSION: Normal EEG without epileptiform discharges.",
    "neg3": "DESCRIPTION OF THE RECORD: A 10 Hz posterior dominant rhythm. There is no evidence of focal "
            "sharp waves or spikes.\n\nIMPRESSION: Normal awake EEG.",
}
UNCERTAIN = {
    "unc1": "DESCRIPTION OF THE RECORD: Possible sharp waves in the right temporal region, not clearly "
            "epileptiform.\n\nIMPRESSION: Borderline EEG.",
}
REPORTS = {**AFFIRMED, **NEGATED, **UNCERTAIN}


def _write(root: Path, subject: str, text: str, seed: int, montages=("01_tcp_ar",)) -> None:
    session = root / "edf" / "000" / subject / "s001_2015_03_04"
    for t, montage in enumerate(montages):
        (session / montage).mkdir(parents=True, exist_ok=True)
        (session / montage / f"{subject}_s001_t00{t}.edf").write_bytes(synthetic_edf(seed=seed, duration=20))
    who = "woman" if seed % 2 else "man"
    (session / f"{subject}_s001.txt").write_text(HISTORY.format(age=30 + seed, who=who, why="seizures")
                                                 + INTRO + text + "\n")


@pytest.fixture(scope="module")
def negation_index(tmp_path_factory, demo_model_dir):
    root = tmp_path_factory.mktemp("negation") / "archive"
    for seed, (subject, text) in enumerate(REPORTS.items()):
        # the first affirmed visit is recorded in two montage folders: one result group
        _write(root, subject, text, seed, ("01_tcp_ar", "02_tcp_le") if subject == "aff1" else ("01_tcp_ar",))
    for seed in range(3):  # recordings without a report: the EEG alone speaks for them
        s = root / "edf" / "000" / f"none{seed}" / "s001_2015_03_04" / "01_tcp_ar"
        s.mkdir(parents=True)
        (s / f"none{seed}_s001_t000.edf").write_bytes(synthetic_edf(seed=100 + seed, duration=20))
    db = root.parent / "idx"
    res = CliRunner().invoke(app, ["-q", "index", str(root), "--db", str(db), "--model", str(demo_model_dir),
                                   "-j", "0"])
    assert res.exit_code == 0, res.output
    return db


def _search(db: Path, text: str, *extra: str) -> dict:
    res = CliRunner().invoke(app, ["search", text, "--db", str(db), "--json", "-k", "20", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _subject(hit: dict) -> str:
    return Path(hit["path"]).parts[-4]


def test_negated_reports_never_rank_above_affirmed_ones(negation_index):
    doc = _search(negation_index, "focal sharp waves")
    assert doc["source"] == "hybrid"
    order = [_subject(h) for h in doc["hits"]]
    assert set(order[:3]) == set(AFFIRMED), order
    worst_affirmed = max(order.index(s) for s in AFFIRMED)
    assert all(order.index(s) > worst_affirmed for s in NEGATED), order
    top = doc["hits"][0]
    assert top["sources"]["report"] > 0.5 and top["evidence"][0]["status"] == "affirmed"
    assert top["evidence"][0]["agrees"] and "sharp waves" in top["evidence"][0]["text"].lower()
    for h in doc["hits"]:
        if _subject(h) in NEGATED:  # denied: no report evidence, and the denial is shown
            assert h["sources"]["report"] == 0.0
            assert any(e["status"] == "negated" for e in h["evidence"])
        if _subject(h).startswith("none"):  # no report: ranked by the EEG, never above an affirmed report
            assert h["sources"]["report"] is None and "evidence" not in h


def test_a_negated_query_finds_the_denials(negation_index):
    order = [_subject(h) for h in _search(negation_index, "no epileptiform discharges")["hits"]]
    assert set(order[:2]) == {"neg1", "neg2"}, order
    assert order.index("aff1") > 1


def test_the_table_says_why(negation_index):
    res = CliRunner().invoke(app, ["search", "no epileptiform discharges", "--db", str(negation_index), "-k", "3"],
                             env={"COLUMNS": "220"})
    assert res.exit_code == 0, res.output
    assert "[negated]" in res.output and "report 1.00" in res.output
    assert all(line.startswith("     why: ") for line in res.output.splitlines() if "[negated]" in line)


def test_reports_source_and_eeg_source(negation_index):
    reports = _search(negation_index, "focal sharp waves", "--source", "reports")
    assert reports["source"] == "reports"
    assert {_subject(h) for h in reports["hits"][:3]} == set(AFFIRMED)
    eeg = _search(negation_index, "focal sharp waves", "--source", "eeg")
    assert eeg["source"] == "eeg" and all("evidence" not in h for h in eeg["hits"])
    assert all(h["sources"]["report"] is None for h in eeg["hits"])
    res = CliRunner().invoke(app, ["search", "x", "--db", str(negation_index), "--source", "bm25"])
    assert res.exit_code == 2 and "bm25" in res.output


def test_one_visit_is_one_hit(negation_index):
    hits = _search(negation_index, "focal sharp waves")["hits"]
    aff1 = [h for h in hits if _subject(h) == "aff1"]
    assert len(aff1) == 1 and len(aff1[0]["also"]) == 1  # the second montage folder of the same visit
    assert len({h["recording_id"] for h in hits} | {i for h in hits for i in h.get("also", [])}) == \
        sum(1 + len(h.get("also", [])) for h in hits)


def test_withheld_reports_are_not_read(negation_index):
    from indexer.search import Filters, Index

    index = Index.open(negation_index)
    with index.store.session() as s:
        from sqlalchemy import select

        from db import Recording

        reports = {Path(p).parts[-4]: r for p, r in s.execute(select(Recording.path, Recording.report_id))}
    from indexer.hybrid import rank

    q = index._text_query("focal sharp waves")
    with index.store.session() as s:
        ranked = rank(index, s, "focal sharp waves", q, 20, Filters(), "hybrid", {reports["aff2"]})
    by_report = {c.report_id: c for c in ranked}
    assert by_report[reports["aff2"]].p_report is None and not by_report[reports["aff2"]].readable
    assert by_report[reports["aff1"]].p_report > 0.5


def test_the_page_api_takes_the_source(negation_index):
    from fastapi.testclient import TestClient

    from cli.web.app import create_app
    from indexer.service import SearchService

    with TestClient(create_app(SearchService.open(negation_index)), base_url="http://127.0.0.1") as client:
        doc = client.get("/api/search", params={"q": "focal sharp waves", "source": "reports"}).json()
        assert doc["source"] == "reports" and doc["hits"][0]["evidence"][0]["agrees"]
        assert client.get("/api/search", params={"q": "x", "source": "nope"}).status_code == 422


def test_the_probe_is_scikit_learns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    from indexer.hybrid import logistic_regression

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 16))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=300) > 1.0).astype(float)  # unbalanced classes
    coef, intercept = logistic_regression(X, y, C=1.0)
    ref = LogisticRegression(C=1.0, class_weight="balanced", tol=1e-10, max_iter=10_000).fit(X, y)
    assert np.allclose(coef, ref.coef_[0], atol=1e-4) and intercept == pytest.approx(ref.intercept_[0], abs=1e-4)


def test_platt_scaling_recovers_a_logistic_curve():
    rng = np.random.default_rng(0)
    x = rng.normal(size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-(3 * x - 1)))).astype(float)
    a, b = platt(x, y)
    assert a == pytest.approx(3, rel=0.15) and b == pytest.approx(-1, abs=0.2)
    a, b = platt(np.array([0.0, 0.1, 0.9, 1.0]), np.array([0, 0, 1, 1.0]))  # separable: finite
    assert np.isfinite(a) and a > 0


def test_real_reports_negations(shared_data, tmp_path, demo_model_dir):
    """The real reports of ../shared: a query for a finding never ranks a report that denies it first."""
    folder = shared_data / "eeg_reports_mtsamples"
    if not folder.is_dir():
        pytest.skip(f"{folder} absent")
    root = tmp_path / "archive"
    texts = sorted(folder.glob("*.txt"))
    for seed, f in enumerate(texts):
        _write(root, f"real{seed:02d}", f.read_text(errors="replace"), seed)
    db = tmp_path / "idx"
    res = CliRunner().invoke(app, ["-q", "index", str(root), "--db", str(db), "--model", str(demo_model_dir),
                                   "-j", "0"])
    assert res.exit_code == 0, res.output
    for query in ("focal slowing", "epileptiform activity", "spike and wave"):
        hits = _search(db, query, "--source", "reports")["hits"]
        statuses = [(h["sources"]["report"], [e["status"] for e in h.get("evidence", []) if e["lexical"] > 0])
                    for h in hits]
        seen_denial = False
        for p_report, st in statuses:
            if p_report and p_report > 0:
                assert not seen_denial, (query, statuses)
            elif st and all(s != "affirmed" for s in st):
                seen_denial = True
    shutil.rmtree(db)

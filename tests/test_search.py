"""Queries: text→EEG, EEG→report, prior cases, filters, show, errors, and their commands."""

import datetime as dt
import json
import os
import shutil

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cli.app import app
from db import Patient, Recording, Segment
from elmsearch.models.model import NoTextModelError
from indexer import search as search_mod
from indexer.pipeline import index_archive
from indexer.search import Filters, Index, QueryError

HIT_KEYS = {"rank", "score", "recording_id", "patient", "session", "date", "age", "sex", "montage", "path",
            "start_s", "end_s", "impression", "percentile"}


@pytest.fixture(scope="module")
def built(demo_archive, demo_model_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("search") / "idx"
    index_archive(demo_archive.root, db, demo_model_dir)
    return db


@pytest.fixture(scope="module")
def index(built):
    return Index.open(built)


def _recordings(index):
    with index.store.session() as s:
        return {r.id: (r, s.get(Patient, r.patient_id).key) for r in s.scalars(select(Recording))}


def _eeg_scores(index, text: str) -> dict[int, float]:
    """The EEG score of every recording, brute force, as ``indexer.hybrid`` documents it: the pooled
    and the best-window cosine along the query minus the reference finding, averaged."""
    from db import Window
    from indexer.hybrid import eeg_direction

    d = eeg_direction(index, text, index._text_query(text))
    with index.store.session() as s:
        wins: dict[int, list[float]] = {}
        for rid, e in s.execute(select(Window.recording_id, Window.emb)):
            wins.setdefault(rid, []).append(float(np.frombuffer(e, np.float32) @ d))
    out = {}
    for i, (r, _) in _recordings(index).items():
        if r.emb:
            pooled = float(np.frombuffer(r.emb, np.float32) @ d)
            out[i] = 0.5 * (pooled + max(max(wins.get(i, [pooled])), pooled))
    return out


def _by_visit(index, scores: dict[int, float], k: int) -> list[int]:
    """The best recording of each visit, best first: what a text search returns."""
    recs, seen, out = _recordings(index), set(), []
    for i in sorted(scores, key=scores.get, reverse=True):
        visit = recs[i][0].visit_id
        if visit is None or visit not in seen:
            out.append(i)
        seen.add(visit)
    return out[:k]


def test_search_text_hits_are_ranked_with_metadata_and_best_window(index):
    text = "generalized 3 Hz spike and wave"
    hits = index.search_text(text, k=5, source="eeg")
    assert len(hits) == 5 and [h.rank for h in hits] == [1, 2, 3, 4, 5]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    recs = _recordings(index)
    eeg = _eeg_scores(index, text)
    for h in hits:
        r, patient = recs[h.recording_id]
        assert h.patient == patient and h.path == r.path
        assert HIT_KEYS | {"report_id", "sources"} <= set(h.to_dict()) <= HIT_KEYS | {"report_id", "sources", "also"}
        assert 0 <= h.start_s < h.end_s <= r.duration + 1e-6 and h.end_s - h.start_s == 5.0
        assert h.score == pytest.approx(eeg[h.recording_id], abs=1e-5)
        assert h.sources["report"] is None  # the EEG alone was asked for
    # exhaustive check: the best recording of each visit, in order, and nothing better left out
    assert [h.recording_id for h in hits] == _by_visit(index, eeg, 5)
    hybrid = index.search_text(text, k=5)
    assert all(h.sources["report"] is not None and h.evidence is not None for h in hybrid)


def test_window_level_ranks_windows(index):
    hits = index.search_text("eye blink artifacts", k=8, level="window")
    assert len(hits) == 8 and all(h.start_s is not None for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len({(h.recording_id, h.start_s) for h in hits}) == 8


@pytest.mark.parametrize("path", ["post-filter", "exact", "faiss-selector"])
def test_filters_agree_with_brute_force_on_every_path(index, monkeypatch, path):
    recs = _recordings(index)
    cut = max(r.date for r, _ in recs.values() if r.sex == "F").date()  # the last woman's is excluded
    f = Filters(sex="F", before=cut, min_duration=17)
    if path != "post-filter":
        monkeypatch.setattr(search_mod, "POSTFILTER_FETCH", 0)  # SQL lists every survivor first
    if path == "faiss-selector":
        monkeypatch.setattr(search_mod, "EXACT_BELOW", 0)
    eeg = _eeg_scores(index, "focal slowing")
    passing = {i: eeg[i] for i, (r, _) in recs.items()
               if r.emb and r.sex == "F" and r.date.date() < cut and r.duration >= 17}
    assert 3 < len(passing) < len(recs) - 3
    hits = index.search_text("focal slowing", k=3, filters=f, source="eeg")
    assert [h.recording_id for h in hits] == _by_visit(index, passing, 3)
    for source in ("hybrid", "reports"):  # every source keeps to the filters
        assert {h.recording_id for h in index.search_text("focal slowing", k=10, filters=f, source=source)} <= \
            set(passing)
    # the machinery under them: the filtered top 3 by the pooled embedding, on this path
    q = index._text_query("focal slowing")
    pooled = {i: float(np.frombuffer(recs[i][0].emb, np.float32) @ q) for i in passing}
    with index.store.session() as s:
        _, ids = index._rank(s, "eeg_recording", q, 3, f)
    assert ids.tolist() == sorted(pooled, key=pooled.get, reverse=True)[:3]
    windows = index.search_text("focal slowing", k=6, level="window", filters=f)
    assert len(windows) == 6 and {h.recording_id for h in windows} <= set(passing)
    reports = index.search_reports(recording_id=next(iter(passing)), k=3, filters=f)
    assert reports and {h.recording_id for h in reports} <= set(passing)


def test_filter_on_an_ivf_index_falls_back_when_the_visited_lists_hold_too_few(built):
    """An IVF search sees only the visited lists: too few passing hits there is no proof of absence."""
    import faiss

    index = Index.open(built)
    recs = _recordings(index)
    ids = np.array([i for i, (r, _) in recs.items() if r.emb], np.int64)
    vecs = np.stack([np.frombuffer(recs[i][0].emb, np.float32) for i in ids])
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(vecs.shape[1]), vecs.shape[1], len(ids), faiss.METRIC_INNER_PRODUCT)
    ivf.cp.min_points_per_centroid = 1
    ivf.train(vecs)
    ivf.add_with_ids(vecs, ids)
    ivf.nprobe = 1  # about one vector visited per query
    index._faiss["eeg_recording"] = ivf
    cut = max(r.date for r, _ in recs.values() if r.sex == "F").date()
    f = Filters(sex="F", before=cut, min_duration=17)
    q = index._text_query("focal slowing")
    pooled = {i: float(np.frombuffer(r.emb, np.float32) @ q) for i, (r, _) in recs.items()
              if r.emb and r.sex == "F" and r.date.date() < cut and r.duration >= 17}
    with index.store.session() as s:
        _, found = index._rank(s, "eeg_recording", q, 3, f)
    assert found.tolist() == sorted(pooled, key=pooled.get, reverse=True)[:3]
    eeg = _eeg_scores(index, "focal slowing")
    hits = index.search_text("focal slowing", k=3, filters=f, source="eeg")
    assert [h.recording_id for h in hits] == _by_visit(index, {i: eeg[i] for i in pooled}, 3)


def test_filters_by_age_and_montage(index):
    recs = _recordings(index)
    ages = [r.age for r, _ in recs.values()]
    lo = sorted(ages)[len(ages) // 2]
    assert all(recs[h.recording_id][0].age >= lo for h in index.search_text("normal EEG", k=20,
                                                                              filters=Filters(age_min=lo)))
    assert index.search_text("normal", k=3, filters=Filters(montage="no_such_montage")) == []


def test_similar_never_returns_itself_or_its_patient_and_one_per_patient(index):
    recs = _recordings(index)
    rid, (rec, patient) = next((i, v) for i, v in recs.items() if sum(p == v[1] for _, p in recs.values()) > 1)
    hits = index.similar(recording_id=rid, k=5)
    assert hits and all(h.recording_id != rid and h.patient != patient for h in hits)
    assert len({h.patient for h in hits}) == len(hits)
    same = index.similar(recording_id=rid, k=20, include_same_patient=True, one_per_patient=False)
    assert rid not in [h.recording_id for h in same]
    assert any(h.patient == patient for h in same)
    # the query by file is the same as the query by id (it is looked up, not re-embedded)
    by_file = index.similar(rec.path, k=5)
    assert [h.recording_id for h in by_file] == [h.recording_id for h in hits]
    first = min(r.date for r, _ in recs.values() if r.date).date() + dt.timedelta(days=1)
    early = index.similar(recording_id=rid, k=5, filters=Filters(before=first))
    assert all(recs[h.recording_id][0].date.date() < first for h in early)


def test_a_new_file_is_embedded_on_the_fly(index, tmp_path):
    recs = _recordings(index)
    rid, (rec, patient) = next(iter(recs.items()))
    new = tmp_path / "new_visit.edf"
    shutil.copy(rec.path, new)
    query = index.resolve(new)
    assert query.recording_id is None  # embedded now, not looked up
    assert float(query.emb @ np.frombuffer(rec.emb, np.float32)) == pytest.approx(1.0, abs=1e-3)
    hits = index.similar(new, k=3, include_same_patient=True)
    assert len(hits) == 3 and rid not in {h.recording_id for h in hits}  # a copy is never its own prior case
    reports = index.search_reports(new, k=2)
    assert len(reports) == 2 and reports[0].sentence


def test_reports_hits_carry_their_best_sentence(index):
    recs = _recordings(index)
    rid = next(iter(recs))
    hits = index.search_reports(recording_id=rid, k=3)
    assert len(hits) == 3
    q = np.frombuffer(recs[rid][0].emb, np.float32)
    with index.store.session() as s:
        for h in hits:
            segs = s.execute(select(Segment.section, Segment.text, Segment.emb).where(
                Segment.report_id == h.report_id)).all()
            best = max(segs, key=lambda g: float(np.frombuffer(g.emb, np.float32) @ q))
            expected = f"{best.section}: {best.text}" if best.section else best.text
            assert h.sentence == expected
            assert recs[h.recording_id][0].report_id == h.report_id


def test_show_and_errors(index, built):
    recs = _recordings(index)
    rid, (rec, _) = next(iter(recs.items()))
    doc = index.show(rid)
    assert doc["path"] == rec.path and len(doc["windows"]) == rec.n_windows
    assert doc["report"] and any(sec["heading"] == "IMPRESSION" for sec in doc["report"]["sections"])
    with pytest.raises(QueryError, match="no such id"):
        index.show(10**9)
    with pytest.raises(QueryError, match="not in the index"):
        index.similar(recording_id=10**9)
    with pytest.raises(QueryError, match="no such file"):
        index.similar(built / "missing.edf")
    with pytest.raises(QueryError, match="a folder, not a recording file"):
        index.similar(built)
    os.mkfifo(built.parent / "pipe.edf")
    try:  # never opened: opening a FIFO blocks until a writer comes
        with pytest.raises(QueryError, match=r"pipe\.edf: a named pipe \(FIFO\), not a recording file"):
            index.similar(built.parent / "pipe.edf")
    finally:
        (built.parent / "pipe.edf").unlink()


def test_text_query_against_an_eeg_only_index(demo_archive, shared_data, tmp_path):
    release = shared_data / "elm_pretrained" / "5s"
    files = sorted(demo_archive.root.rglob("*.edf"))[:3]
    arch = tmp_path / "a"
    for f in files:
        dest = arch / f.relative_to(demo_archive.root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    index_archive(arch, tmp_path / "idx", release)
    idx = Index.open(tmp_path / "idx")
    with pytest.raises(NoTextModelError, match="EEG-only"):
        idx.search_text("spike and wave")
    query = arch / files[0].relative_to(demo_archive.root)
    assert len(idx.similar(query, k=2, include_same_patient=True, one_per_patient=False)) == 2
    res = CliRunner().invoke(app, ["search", "spike", "--db", str(tmp_path / "idx")])
    assert res.exit_code == 1 and "EEG-only" in res.output


def test_query_commands_json(built, demo_archive):
    runner = CliRunner()
    res = runner.invoke(app, ["search", "normal EEG", "--db", str(built), "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["query"] == "normal EEG" and len(doc["hits"]) == 3 and HIT_KEYS <= set(doc["hits"][0])
    f = sorted(demo_archive.root.rglob("*.edf"))[0]
    res = runner.invoke(app, ["reports", str(f), "--db", str(built), "-k", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert "sentence" in json.loads(res.stdout)["hits"][0]
    res = runner.invoke(app, ["similar", "--recording", "1", "--db", str(built), "--json", "--before", "2100-01-01"])
    assert res.exit_code == 0 and all(h["recording_id"] != 1 for h in json.loads(res.stdout)["hits"])
    res = runner.invoke(app, ["classify", str(f), "-p", "normal EEG", "-p", "abnormal EEG", "--db", str(built),
                              "--json"])
    assert res.exit_code == 0, res.output
    probs = [s["probability"] for s in json.loads(res.stdout)["scores"]]
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    res = runner.invoke(app, ["show", "999999", "--db", str(built)])
    assert res.exit_code == 1 and "no such id" in res.output
    res = runner.invoke(app, ["search", "x", "--db", str(built / "nope")])
    assert res.exit_code == 1 and "no elmsearch index" in res.output

"""Indexer: SQL rows + FAISS indices, incremental, prune, failures, kill -9 resume, export, stats."""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from cli.app import app
from db import IndexRun, Recording, Report, Segment, Status, Window, from_blob
from indexer.pipeline import index_archive
from indexer.search import Index
from indexer.store import IndexStateError, IndexStore
from indexer.vectors import ops

ROOT = Path(__file__).resolve().parents[1]


def _edfs(root):
    return sorted(root.rglob("*.edf"))


def _ids(store, name):
    index = store.load_index(name)
    return np.sort(ops.index_ids(index)) if index is not None else np.zeros(0, np.int64)


def _db_state(store):
    with store.session() as s:
        recs = {r.path: (r.status, r.content_hash, r.n_windows) for r in s.scalars(select(Recording))}
        n_windows = s.scalar(select(func.count()).select_from(Window))
    return recs, n_windows


def test_index_writes_rows_and_faiss_ids_are_row_ids(archive, demo_model_dir, tmp_path):
    summary = index_archive(archive, tmp_path / "idx", demo_model_dir)
    n = len(_edfs(archive))
    assert summary.added == n and summary.failed == 0
    store = IndexStore.open(tmp_path / "idx")
    counts = store.verify()
    with store.session() as s:
        rec_ids = np.sort(np.array(s.scalars(select(Recording.id).where(Recording.status == Status.INDEXED)).all()))
        win_ids = np.sort(np.array(s.scalars(select(Window.id)).all()))
        seg_ids = np.sort(np.array(s.scalars(select(Segment.id)).all()))
        rep_ids = np.sort(np.array(s.scalars(select(Report.id)).all()))
        rec = s.scalars(select(Recording)).first()
        windows = s.scalars(select(Window).where(Window.recording_id == rec.id).order_by(Window.ordinal)).all()
        assert rec.duration > 0 and rec.native_sfreq == 250 and rec.content_hash and rec.date is not None
        assert [w.start_s for w in windows] == [5.0 * i for i in range(len(windows))]
        assert len(windows) == rec.n_windows == int(rec.duration // 5)
        # the stored window embeddings are what FAISS holds for those ids
        index = store.load_index("eeg_window")
        got = ops.reconstruct(index, np.array([windows[0].id]))[0]
        np.testing.assert_allclose(got, from_blob(windows[0].emb), atol=1e-6)
    np.testing.assert_array_equal(_ids(store, "eeg_recording"), rec_ids)
    np.testing.assert_array_equal(_ids(store, "eeg_window"), win_ids)
    np.testing.assert_array_equal(_ids(store, "segment"), seg_ids)
    np.testing.assert_array_equal(_ids(store, "report"), rep_ids)
    assert counts["eeg_recording"] == n and counts["segment"] == len(seg_ids) > 0
    # a recording's nearest neighbour in its own index is itself
    q = ops.reconstruct(store.load_index("eeg_recording"), rec_ids[:3])
    _, found = ops.search(store.load_index("eeg_recording"), q, 1)
    np.testing.assert_array_equal(found[:, 0], rec_ids[:3])
    # the planner has statistics: a filter check of a few ids looks them up by primary key
    with store.engine.connect() as con:
        assert con.exec_driver_sql("SELECT COUNT(*) FROM sqlite_stat1 WHERE tbl = 'recordings'").scalar() > 0


def test_rerun_is_incremental(archive, demo_model_dir, tmp_path):
    db = tmp_path / "idx"
    index_archive(archive, db, demo_model_dir)
    store = IndexStore.open(db)
    before, n_win = _db_state(store)
    again = index_archive(archive, db, demo_model_dir)
    assert (again.added, again.updated, again.skipped) == (0, 0, len(before))
    files = _edfs(archive)
    # touched, same bytes: the hash says unchanged, nothing re-embedded
    os.utime(files[0], (time.time() + 10, time.time() + 10))
    # changed bytes: re-embedded in place (same row id)
    with store.session() as s:
        old_id = s.scalar(select(Recording.id).where(Recording.path == str(files[1].resolve())))
    shutil.copyfile(files[2], files[1])
    third = index_archive(archive, db, demo_model_dir)
    assert third.updated == 1 and third.skipped == len(files) - 1 and third.added == 0
    after, n_win_after = _db_state(store)
    assert after[str(files[1].resolve())][1] == after[str(files[2].resolve())][1] != before[str(files[1].resolve())][1]
    with store.session() as s:
        assert s.scalar(select(Recording.id).where(Recording.path == str(files[1].resolve()))) == old_id
    store.verify()
    assert index_archive(archive, db, demo_model_dir).skipped == len(files)


def test_prune_removes_gone_files_only_when_asked(archive, demo_model_dir, tmp_path):
    db = tmp_path / "idx"
    index_archive(archive, db, demo_model_dir)
    gone = _edfs(archive)[0]
    gone.unlink()
    kept = index_archive(archive, db, demo_model_dir)
    assert kept.removed == 0
    store = IndexStore.open(db)
    assert str(gone.resolve()) in _db_state(store)[0]
    pruned = index_archive(archive, db, demo_model_dir, prune=True)
    assert pruned.removed == 1
    recs, _ = _db_state(store)
    assert str(gone.resolve()) not in recs and len(recs) == len(_edfs(archive))
    with store.session() as s:
        orphans = s.scalar(select(func.count()).select_from(Window).where(~Window.recording_id.in_(
            select(Recording.id))))
        assert orphans == 0
    store.verify()


def test_bad_files_are_recorded_and_never_stop_the_run(archive, demo_model_dir, tmp_path, shared_data):
    good = _edfs(archive)[0]
    bad = archive / "bad"
    bad.mkdir()
    (bad / "notes.edf").write_text("this is not an EDF file\n" * 20)
    (bad / "truncated.edf").write_bytes(good.read_bytes()[:5000])
    for f in sorted((shared_data / "mne_edf_cases").iterdir()):
        if f.suffix.lower() in {".edf", ".bdf"}:
            shutil.copy(f, bad / f.name)
    summary = index_archive(archive, tmp_path / "idx", demo_model_dir)
    reasons = {Path(f["path"]).name: f["reason"] for f in summary.failures}
    assert "notes.edf" in reasons and "truncated.edf" in reasons
    assert all(r and "\n" not in r for r in reasons.values())
    assert "truncated" in reasons["truncated.edf"] or "header" in reasons["truncated.edf"]
    n_files = len(_edfs(archive)) + len(list(archive.rglob("*.bdf")))
    assert summary.added == n_files - summary.failed and summary.added >= 12
    doc = IndexStore.open(tmp_path / "idx").stats()
    assert doc["failed"] == summary.failed and {Path(f["path"]).name for f in doc["failures"]} == set(reasons)
    # a failed file is not retried until it changes
    assert index_archive(archive, tmp_path / "idx", demo_model_dir).failed == 0


def test_changing_the_model_is_refused_unless_reembed(archive, demo_model_dir, tmp_path, shared_data):
    db = tmp_path / "idx"
    index_archive(archive, db, demo_model_dir)
    release = shared_data / "elm_pretrained" / "5s"
    before = json.loads((db / "manifest.json").read_text())
    with pytest.raises(IndexStateError, match="one index holds one model") as err:
        index_archive(archive, db, release)
    assert before["model_hash"] in str(err.value) and str(release.resolve()) in str(err.value)
    assert json.loads((db / "manifest.json").read_text()) == before  # nothing written
    summary = index_archive(archive, db, release, reembed=True)
    n = len(_edfs(archive))
    assert summary.updated == n and summary.skipped == 0
    store = IndexStore.open(db)
    counts = store.verify()
    # the ELM release has EEG weights only: EEG indexes, report vectors say they need a text model
    assert counts["eeg_recording"] == n and counts["report"] == 0 and counts["segment"] == 0
    assert store.manifest["has_text"] is False and store.manifest["generation"] == "1"
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Segment)) > 0  # report text is still stored
        assert {r.model_hash for r in s.scalars(select(Recording))} == {store.manifest["model_hash"]}


def test_verify_names_what_is_inconsistent(archive, demo_model_dir, tmp_path):
    db = tmp_path / "idx"
    index_archive(archive, db, demo_model_dir)
    store = IndexStore.open(db)
    manifest = json.loads((db / "manifest.json").read_text())
    with pytest.raises(IndexStateError, match="built with model"):
        store.verify("0" * 16)
    manifest["counts"]["eeg_window"] -= 1
    (db / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexStateError, match="eeg_window index holds .* database has"):
        store.verify()
    assert "eeg_window index holds" in store.stats()["consistency"]
    with pytest.raises(IndexStateError, match="no elmsearch index"):
        IndexStore.open(tmp_path / "nothing")


def test_queries_answer_from_the_last_complete_index_while_a_run_is_unfinished(archive, demo_model_dir, tmp_path,
                                                                                caplog):
    """Queries check the manifest's run against the newest run (O(1)) and keep answering."""
    from indexer.lock import IndexLock

    db = tmp_path / "idx"
    index_archive(archive, db, demo_model_dir)
    index_archive(archive, db, demo_model_dir)  # nothing changed: no rebuild, but the manifest moves on
    store = IndexStore.open(db)
    with store.session() as s:
        newest = s.scalar(select(func.max(IndexRun.id)))
    assert store.manifest["run_id"] == newest == 2
    assert store.verify(full=False) == store.verify(full=True)
    assert Index.open(db).stale is False
    before = [h.recording_id for h in Index.open(db).search_text("spike and wave", k=5)]
    with store.session() as s, s.begin():  # what a run killed before its end leaves behind
        s.add(IndexRun(archive=str(archive), model_hash="x", model_path="x", preprocessing={}, versions={}))
    with caplog.at_level("WARNING"):
        index = Index.open(db)
    assert index.stale and index.store.pending_run["run"] == 3 and not index.store.pending_run["running"]
    assert "index run 3" in caplog.text and "did not finish" in caplog.text
    assert [h.recording_id for h in index.search_text("spike and wave", k=5)] == before
    with IndexLock(db):  # a live writer: the same answers, said as "still writing"
        index = Index.open(db)
        assert index.store.pending_run["running"]
        assert [h.recording_id for h in index.search_text("spike and wave", k=5)] == before
    store.verify(full=True)  # the rows still agree
    index_archive(archive, db, demo_model_dir)
    assert Index.open(db).stale is False


def test_export_parquet(archive, demo_model_dir, tmp_path):
    index_archive(archive, tmp_path / "idx", demo_model_dir)
    runner = CliRunner()
    res = runner.invoke(app, ["export", "--db", str(tmp_path / "idx"), "--out", str(tmp_path / "pq")])
    assert res.exit_code == 0, res.output
    recs = pq.read_table(tmp_path / "pq" / "recordings.parquet")
    wins = pq.read_table(tmp_path / "pq" / "windows.parquet")
    segs = pq.read_table(tmp_path / "pq" / "segments.parquet")
    assert recs.num_rows == len(_edfs(archive))
    emb = np.array(wins.column("emb").to_pylist(), np.float32)
    assert emb.shape == (wins.num_rows, 256)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert set(wins.column("recording_id").to_pylist()) <= set(recs.column("recording_id").to_pylist())
    assert segs.num_rows > 0 and "section" in segs.column_names


def test_index_and_stats_commands(archive, demo_model_dir, tmp_path):
    runner = CliRunner()
    db = tmp_path / "idx"
    res = runner.invoke(app, ["index", str(archive), "--db", str(db), "--model", str(demo_model_dir), "-j", "2",
                              "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == len(_edfs(archive))
    res = runner.invoke(app, ["stats", "--db", str(db), "--json"])
    doc = json.loads(res.stdout)
    assert {"recordings", "failed", "reports", "windows", "failures"} <= set(doc)
    assert doc["recordings"] == len(_edfs(archive)) and doc["failed"] == 0 and doc["windows"] > 0
    assert doc["indices"]["eeg_window"]["kind"] == "flat_ip" and doc["consistency"] == "ok"
    # second run without --model takes the index's model
    res = runner.invoke(app, ["index", str(archive), "--db", str(db), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["skipped"] == len(_edfs(archive))
    res = runner.invoke(app, ["stats", "--db", str(tmp_path / "none")])
    assert res.exit_code == 1 and "no elmsearch index" in res.output

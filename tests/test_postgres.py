"""The indexer against a real PostgreSQL server (``--db-url``); skipped unless ELMSEARCH_TEST_PG_URL is set.

Example::

    ELMSEARCH_TEST_PG_URL=postgresql+psycopg://postgres@localhost/elmsearch_test pytest tests/test_postgres.py

The tests drop and re-create every elmsearch table in that database.
"""

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from db import Recording, RecordingEvent, Report, Segment, Status, Window, from_blob
from indexer.export import export_parquet
from indexer.pipeline import index_archive
from indexer.store import INDEX_NAMES, IndexStateError, IndexStore
from indexer.vectors import ops

PG_URL = os.environ.get("ELMSEARCH_TEST_PG_URL")

pytestmark = pytest.mark.skipif(
    not PG_URL, reason="set ELMSEARCH_TEST_PG_URL=postgresql+psycopg://... to run the PostgreSQL tests")


def _edfs(root):
    return sorted(root.rglob("*.edf"))


def _ids(store, name):
    index = store.load_index(name)
    return np.sort(ops.index_ids(index)) if index is not None else np.zeros(0, np.int64)


def test_postgres_index_rerun_prune_stats(pg_url, archive, demo_model_dir, tmp_path):
    db = tmp_path / "idx"
    n = len(_edfs(archive))
    first = index_archive(archive, db, demo_model_dir, db_url=pg_url)
    assert first.added == n and first.failed == 0 and first.failures == []
    assert not (db / "elmsearch.sqlite").exists()  # the rows went to PostgreSQL

    # the manifest remembers the URL: opening the folder alone finds the database
    from sqlalchemy.engine import make_url

    stored = make_url(json.loads((db / "manifest.json").read_text())["db_url"])
    assert stored == make_url(pg_url).set(password=None) and stored.password is None
    store = IndexStore.open(db)
    assert store.engine.dialect.name == "postgresql"
    counts = store.verify()
    assert counts["eeg_recording"] == n and counts["segment"] > 0 and counts["report"] > 0
    with store.session() as s:
        rec_ids = np.sort(np.array(s.scalars(select(Recording.id).where(Recording.status == Status.INDEXED)).all()))
        assert np.array_equal(_ids(store, "eeg_recording"), rec_ids)
        assert np.array_equal(_ids(store, "eeg_window"), np.sort(np.array(s.scalars(select(Window.id)).all())))
        assert np.array_equal(_ids(store, "segment"), np.sort(np.array(s.scalars(select(Segment.id)).all())))
        assert np.array_equal(_ids(store, "report"), np.sort(np.array(s.scalars(select(Report.id)).all())))
        rec = s.scalars(select(Recording).order_by(Recording.id)).first()
        assert rec.status == Status.INDEXED and rec.duration > 0 and rec.date is not None and rec.content_hash
        windows = s.scalars(select(Window).where(Window.recording_id == rec.id).order_by(Window.ordinal)).all()
        assert len(windows) == rec.n_windows == int(rec.duration // 5)
        got = ops.reconstruct(store.load_index("eeg_window"), np.array([windows[0].id]))[0]
        np.testing.assert_allclose(got, from_blob(windows[0].emb), atol=1e-6)

    # unchanged files are skipped (size and mtime survive the round trip exactly)
    again = index_archive(archive, db, demo_model_dir, db_url=pg_url)
    assert (again.added, again.updated, again.failed, again.skipped) == (0, 0, 0, n)
    # without --db-url the manifest's URL is used
    assert index_archive(archive, db, demo_model_dir).skipped == n

    # a deleted file stays until --prune, which removes it with its windows (ON DELETE CASCADE)
    gone = _edfs(archive)[0]
    gone.unlink()
    assert index_archive(archive, db, demo_model_dir, db_url=pg_url).removed == 0
    pruned = index_archive(archive, db, demo_model_dir, db_url=pg_url, prune=True)
    assert pruned.removed == 1 and pruned.added == 0 and pruned.skipped == n - 1
    store = IndexStore.open(db)
    counts = store.verify()
    assert counts["eeg_recording"] == n - 1
    with store.session() as s:
        paths = set(s.scalars(select(Recording.path)))
        assert str(gone.resolve()) not in paths and len(paths) == n - 1
        assert s.scalar(select(func.count()).select_from(Window).where(
            ~Window.recording_id.in_(select(Recording.id)))) == 0
        n_windows = s.scalar(select(func.count()).select_from(Window))
        n_reports = s.scalar(select(func.count()).select_from(Report))
        n_segments = s.scalar(select(func.count()).select_from(Segment))

    doc = store.stats()
    assert doc["recordings"] == n - 1 and doc["failed"] == 0 and doc["failures"] == []
    assert (doc["windows"], doc["reports"], doc["segments"]) == (n_windows, n_reports, n_segments)
    assert doc["windows"] == counts["eeg_window"] and doc["patients"] > 0 and doc["hours"] > 0
    assert doc["db"].startswith("postgresql") and doc["db_bytes"] is None
    assert doc["last_run"]["removed"] == 1 and doc["last_run"]["finished"] is not None
    json.dumps(doc)  # the --json output of `elmsearch stats`

    written = export_parquet(store, tmp_path / "pq")
    assert written["recordings"] == n - 1 and written["windows"] == n_windows
    # the demo archive's events (generator v2), stored on PostgreSQL, exported, filtered and searched
    with store.session() as s:
        n_events = s.scalar(select(func.count()).select_from(RecordingEvent))
        spindle_recs = set(s.scalars(select(RecordingEvent.recording_id).where(
            RecordingEvent.label == "sleep spindle")))
    assert n_events > 0 and written["events"] == n_events
    from indexer.search import Filters, Index

    index = Index.open(db)
    hits = index.search_text("normal EEG", k=n, filters=Filters(has_event="SLEEP spindle"))
    assert {h.recording_id for h in hits} <= spindle_recs and hits
    windows = index.search_text("sleep spindle", k=3, level="window")
    assert windows[0].recording_id in spindle_recs and windows[0].evidence[0]["event"]["label"] == "sleep spindle"
    emb = np.array(pq.read_table(tmp_path / "pq" / "windows.parquet").column("emb").to_pylist(), np.float32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    for name in INDEX_NAMES:
        assert len(_ids(store, name)) == store.manifest["counts"][name]
    store.engine.dispose()


def test_postgres_bad_files_are_recorded(pg_url, archive, demo_model_dir, tmp_path, shared_data):
    good = _edfs(archive)[0]
    bad = archive / "bad"
    bad.mkdir()
    (bad / "notes.edf").write_text("this is not an EDF file\n" * 20)
    (bad / "truncated.edf").write_bytes(good.read_bytes()[:5000])
    (bad / "zeros.edf").write_bytes(b"\0" * 4096)
    for f in sorted((shared_data / "mne_edf_cases").iterdir()):
        if f.suffix.lower() in {".edf", ".bdf"}:
            shutil.copy(f, bad / f.name)
    # a UTF-16 report holding a NUL character: PostgreSQL text cannot store NUL, SQLite can
    nul_report = sorted(archive.rglob("*.txt"))[0]
    text = nul_report.read_text()
    nul_report.write_text(text[:20] + "\x00" + text[20:], encoding="utf-16")
    summary = index_archive(archive, tmp_path / "idx", demo_model_dir, db_url=pg_url)
    reasons = {os.path.basename(f["path"]): f["reason"] for f in summary.failures}
    assert {"notes.edf", "truncated.edf", "zeros.edf"} <= set(reasons)
    n_files = len(_edfs(archive)) + len(list(archive.rglob("*.bdf")))
    assert summary.added == n_files - summary.failed and summary.added >= 12
    store = IndexStore.open(tmp_path / "idx")
    store.verify()
    doc = store.stats()
    assert doc["failed"] == summary.failed
    assert {os.path.basename(f["path"]): f["reason"] for f in doc["failures"]} == reasons
    with store.session() as s:
        stored = s.scalar(select(Report).where(Report.source == str(nul_report.resolve())))
        assert stored is not None and stored.text == text and stored.emb is not None
        assert all(stored.text[g.start:g.end] == g.text for g in stored.segments)
    # a failed file is not retried until it changes
    again = index_archive(archive, tmp_path / "idx", demo_model_dir)
    assert again.failed == 0 and again.skipped == n_files
    store.engine.dispose()


def test_postgres_changing_the_model_is_refused(pg_url, archive, demo_model_dir, tmp_path, shared_data):
    db = tmp_path / "idx"
    index_archive(archive, db, demo_model_dir, db_url=pg_url)
    with pytest.raises(IndexStateError, match="one index holds one model"):
        index_archive(archive, db, shared_data / "elm_pretrained" / "5s")
    # re-embedding keeps the old index answering through generations of the folder's own database
    with pytest.raises(IndexStateError, match="new --db folder"):
        index_archive(archive, db, shared_data / "elm_pretrained" / "5s", reembed=True)
    store = IndexStore.open(db)
    assert store.verify()["eeg_recording"] == len(_edfs(archive))
    store.engine.dispose()


def test_postgres_cli_with_workers(pg_url, archive, demo_model_dir, tmp_path):
    from typer.testing import CliRunner

    from cli.app import app

    runner = CliRunner()
    db = tmp_path / "idx"
    n = len(_edfs(archive))
    res = runner.invoke(app, ["index", str(archive), "--db", str(db), "--model", str(demo_model_dir),
                              "--db-url", pg_url, "-j", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == n
    res = runner.invoke(app, ["stats", "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["recordings"] == n and doc["windows"] > 0 and doc["db"].startswith("postgresql")
    res = runner.invoke(app, ["index", str(archive), "--db", str(db), "-j", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["skipped"] == n
    res = runner.invoke(app, ["export", "--db", str(db), "--out", str(tmp_path / "pq")])
    assert res.exit_code == 0, res.output
    assert pq.read_table(tmp_path / "pq" / "recordings.parquet").num_rows == n

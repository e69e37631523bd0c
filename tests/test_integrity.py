"""An index that never lies: one model per index, checksums, `elmsearch verify`, read-only copies, file modes."""

import json
import os
import shutil
import stat
from pathlib import Path

import faiss
import numpy as np
import pytest
from conftest import read_only_view
from sqlalchemy import select, update
from typer.testing import CliRunner

from cli.app import app
from db import Recording
from indexer.pipeline import index_archive
from indexer.search import Index
from indexer.store import IndexStateError, IndexStore
from indexer.vectors import files, ops

runner = CliRunner()


@pytest.fixture(scope="module")
def built(demo_archive, demo_model_dir, tmp_path_factory):
    """One index of the demo archive; tests copy it before damaging it."""
    db = tmp_path_factory.mktemp("integrity") / "idx"
    index_archive(demo_archive.root, db, demo_model_dir, n_jobs=0)
    return db


@pytest.fixture
def idx(built, tmp_path):
    dest = tmp_path / "idx"
    shutil.copytree(built, dest)
    return dest


def _manifest(db):
    return json.loads((db / "manifest.json").read_text())


def _faiss(db, name):
    m = _manifest(db)
    data = db / "generations" / m["generation"] if m.get("generation") else db
    return data / "faiss" / f"{name}.faiss"


# ---- checksums and verify ----------------------------------------------------------------------


def test_a_clean_index_verifies(idx):
    m = _manifest(idx)
    for name, info in m["indices"].items():
        assert f"{name}.faiss" in info["files"]
        entry = info["files"][f"{name}.faiss"]
        assert entry["bytes"] == _faiss(idx, name).stat().st_size and len(entry["sha256"]) == 64
    res = runner.invoke(app, ["verify", "--db", str(idx), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["ok"] and doc["problems"] == []
    assert doc["checked"]["eeg_recording"]["sampled"] == m["counts"]["eeg_recording"]
    assert runner.invoke(app, ["stats", "--db", str(idx), "--json"]).stdout.count('"consistency": "ok"') == 1


def _flip(fname, n, seed=0):
    data = bytearray(fname.read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(data), min(n, len(data)), replace=False):
        data[i] ^= 0xFF
    fname.write_bytes(bytes(data))


def test_flipped_bytes_in_a_faiss_file_are_caught_by_name(idx):
    fname = _faiss(idx, "eeg_recording")
    _flip(fname, 3000)
    with pytest.raises(IndexStateError, match="eeg_recording.faiss: checksum differs"):
        Index.open(idx).similar(recording_id=1, k=3)
    res = runner.invoke(app, ["similar", "--db", str(idx), "--recording", "1"])
    assert res.exit_code == 1 and "eeg_recording.faiss" in res.stderr and "--rebuild-faiss" in res.stderr
    assert "Traceback" not in res.output
    stats = json.loads(runner.invoke(app, ["stats", "--db", str(idx), "--json"]).stdout)
    assert "eeg_recording.faiss" in stats["consistency"]
    res = runner.invoke(app, ["verify", "--db", str(idx)])
    assert res.exit_code == 1 and "eeg_recording.faiss" in res.stderr
    # the fix the message names
    res = runner.invoke(app, ["index", "--rebuild-faiss", "--db", str(idx)])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["verify", "--db", str(idx)]).exit_code == 0
    hits = Index.open(idx).similar(recording_id=1, k=3)
    assert hits and all(-1.0001 <= h.score <= 1.0001 for h in hits)


def _rewrite_shuffled(fname):
    index = files.read_index(fname)
    ids = ops.index_ids(index)
    vecs = ops.reconstruct(index, ids)
    shuffled = faiss.IndexIDMap2(faiss.IndexFlatIP(index.d))
    shuffled.add_with_ids(vecs[::-1].copy(), ids)
    files.write_index(shuffled, fname)


def test_vectors_shuffled_between_ids_are_caught(idx):
    fname = _faiss(idx, "eeg_recording")
    _rewrite_shuffled(fname)
    with pytest.raises(IndexStateError, match="eeg_recording.faiss"):
        Index.open(idx).similar(recording_id=1, k=3)
    # a manifest rewritten to match the shuffled file: the vectors themselves give it away
    from indexer import integrity

    m = _manifest(idx)
    m["indices"]["eeg_recording"]["files"]["eeg_recording.faiss"] = integrity.describe(fname)
    (idx / "manifest.json").write_text(json.dumps(m))
    doc = json.loads(runner.invoke(app, ["verify", "--db", str(idx), "--json"]).stdout)
    assert not doc["ok"]
    assert any("eeg_recording.faiss" in p and "differ from their database embeddings" in p for p in doc["problems"])


def test_random_bytes_in_database_embeddings_are_caught(idx):
    store = IndexStore.open(idx)
    rng = np.random.default_rng(1)
    with store.session() as s, s.begin():
        for rid in s.scalars(select(Recording.id)):
            s.execute(update(Recording).where(Recording.id == rid).values(emb=rng.bytes(1024)))
    store.engine.dispose()
    doc = json.loads(runner.invoke(app, ["verify", "--db", str(idx), "--json"]).stdout)
    assert not doc["ok"]
    assert any("eeg_recording embeddings are not finite unit vectors" in p for p in doc["problems"])
    stats = json.loads(runner.invoke(app, ["stats", "--db", str(idx), "--json"]).stdout)
    assert stats["consistency"] != "ok"


def test_a_truncated_embedding_is_caught(idx):
    store = IndexStore.open(idx)
    with store.session() as s, s.begin():
        s.execute(update(Recording).where(Recording.id == 1).values(emb=b"\0" * 100))
    store.engine.dispose()
    stats = json.loads(runner.invoke(app, ["stats", "--db", str(idx), "--json"]).stdout)
    assert "not 256 float32 values" in stats["consistency"] and "elmsearch.sqlite" in stats["consistency"]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_an_unreadable_faiss_file_names_itself(idx, damage):
    fname = _faiss(idx, "eeg_recording")
    if damage == "garbage":
        fname.write_bytes(b"not a faiss index at all" * 10)
    else:
        fname.write_bytes(fname.read_bytes()[:50])
    # the checksum says so before FAISS tries to read it
    res = runner.invoke(app, ["search", "--db", str(idx), "spike and wave"])
    assert res.exit_code == 1 and "eeg_recording.faiss" in res.stderr, res.output
    assert "Traceback" not in res.output and "faiss::" not in res.output
    # and with the checksums gone (an older manifest), FAISS's own refusal names the file
    m = _manifest(idx)
    for info in m["indices"].values():
        info.pop("files")
    (idx / "manifest.json").write_text(json.dumps(m))
    store = IndexStore.open(idx)
    with pytest.raises(IndexStateError, match=r"eeg_recording.faiss: not a readable FAISS index"):
        store.load_index("eeg_recording")
    doc = store.audit()
    assert any("eeg_recording.faiss: not a readable FAISS index" in p for p in doc["problems"])
    assert any("no checksum in the manifest" in p for p in doc["problems"])


def test_a_damaged_manifest_names_itself_and_is_rebuilt(idx):
    (idx / "manifest.json").write_text('{"model_hash": "abc", "unterminated')
    res = runner.invoke(app, ["stats", "--db", str(idx)])
    assert res.exit_code == 1 and "manifest.json: cannot be read" in res.stderr
    assert "JSONDecodeError" not in res.output
    res = runner.invoke(app, ["index", "--rebuild-faiss", "--db", str(idx)])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["verify", "--db", str(idx)]).exit_code == 0


def test_rows_of_another_model_are_reported(idx):
    store = IndexStore.open(idx)
    with store.session() as s, s.begin():
        s.execute(update(Recording).where(Recording.id == 2).values(model_hash="0123456789abcdef"))
    store.engine.dispose()
    stats = json.loads(runner.invoke(app, ["stats", "--db", str(idx), "--json"]).stdout)
    assert "embedded with model 0123456789abcdef" in stats["consistency"] and "--reembed" in stats["consistency"]


# ---- one index, one model ----------------------------------------------------------------------


def test_model_change_refused_in_one_line_and_reembed_switches_with_readers_answering(
        demo_archive, demo_model_dir, shared_data, tmp_path):
    db = tmp_path / "idx"
    archive = tmp_path / "archive"
    shutil.copytree(demo_archive.root, archive)
    index_archive(archive, db, demo_model_dir, n_jobs=0)
    old = _manifest(db)
    release = shared_data / "elm_pretrained" / "5s"
    res = runner.invoke(app, ["index", str(archive), "--db", str(db), "--model", str(release)])
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1
    assert old["model_hash"] in res.stderr and "--reembed" in res.stderr
    assert _manifest(db) == old

    from indexer.service import SearchService

    server = SearchService.open(db)  # what `elmsearch serve` holds: follows the manifest without a restart
    reader = Index.open(db)  # opened before: must keep answering from the old generation
    before = [(h.recording_id, round(h.score, 5)) for h in reader.similar(recording_id=1, k=3)]
    text_before = [h.recording_id for h in reader.search_text("generalized spike and wave", k=3)]
    seen = []

    def during(path, outcome, hours):
        # a reader opened now still sees the old model's index, text search included
        fresh = Index.open(db)
        assert fresh.manifest["model_hash"] == old["model_hash"]
        assert [h.recording_id for h in fresh.search_text("generalized spike and wave", k=3)] == text_before
        assert [(h.recording_id, round(h.score, 5)) for h in reader.similar(recording_id=1, k=3)] == before
        served = server.similar(recording_id=1, k=3)["hits"]
        assert [h["recording_id"] for h in served] == [rid for rid, _ in before]
        assert [h["score"] for h in served] == pytest.approx([sc for _, sc in before], abs=1e-4)
        seen.append(outcome)

    summary = index_archive(archive, db, release, n_jobs=0, reembed=True, on_item=during)
    assert seen and set(seen) == {"updated"} and summary.failed == 0
    new = _manifest(db)
    assert new["model_hash"] != old["model_hash"] and new["generation"] == "1"
    assert runner.invoke(app, ["verify", "--db", str(db)]).exit_code == 0
    # the old reader still answers (the previous generation is kept) ...
    assert [(h.recording_id, round(h.score, 5)) for h in reader.similar(recording_id=1, k=3)] == before
    # ... and a new one sees the new model only
    hits = Index.open(db).similar(recording_id=1, k=3)
    assert hits and [(h.recording_id, round(h.score, 5)) for h in hits] != before
    assert server.index.manifest["model_hash"] == new["model_hash"]
    served = server.similar(recording_id=1, k=3)["hits"]
    assert [h["recording_id"] for h in served] == [h.recording_id for h in hits]
    assert [h["score"] for h in served] == pytest.approx([h.score for h in hits], abs=1e-4)
    # back to the first model: generation 2; generation 0 (the folder itself) is deleted
    index_archive(archive, db, demo_model_dir, n_jobs=0, reembed=True)
    assert _manifest(db)["generation"] == "2"
    assert not (db / "elmsearch.sqlite").exists() and not (db / "faiss").exists()
    assert (db / "generations" / "1").is_dir()
    assert runner.invoke(app, ["verify", "--db", str(db)]).exit_code == 0
    assert [h.recording_id for h in Index.open(db).search_text("generalized spike and wave", k=3)] == text_before


def test_reembed_keeps_recordings_of_earlier_roots_and_fails_the_gone(demo_archive, demo_model_dir, shared_data,
                                                                      tmp_path):
    db = tmp_path / "idx"
    a, b = tmp_path / "a", tmp_path / "b"
    files = sorted(demo_archive.root.rglob("*.edf"))
    for root, part in ((a, files[:2]), (b, files[2:4])):
        for f in part:
            dest = root / f.relative_to(demo_archive.root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest)
    index_archive(a, db, demo_model_dir, n_jobs=0)
    index_archive(b, db, demo_model_dir, n_jobs=0)
    gone = sorted(b.rglob("*.edf"))[0]
    gone.unlink()
    summary = index_archive(a, db, shared_data / "elm_pretrained" / "5s", n_jobs=0, reembed=True)
    assert summary.updated == 3 and summary.failed == 1
    assert summary.failures[0]["path"] == str(gone) and "not re-embedded" in summary.failures[0]["reason"]
    assert runner.invoke(app, ["verify", "--db", str(db)]).exit_code == 0


# ---- read-only copies ----------------------------------------------------------------------------


@pytest.fixture
def read_only(idx, tmp_path):
    """The index, read-only (``conftest.read_only_view``)."""
    with read_only_view(idx, tmp_path) as view:
        yield view


def test_a_read_only_index_answers_queries(read_only):
    with pytest.raises(OSError):
        (read_only / "probe").write_text("x")
    for args in (["stats", "--json"], ["show", "1", "--json"], ["similar", "--recording", "1", "--json"],
                 ["search", "generalized spike and wave", "--json"], ["verify"]):
        res = runner.invoke(app, [args[0], "--db", str(read_only), *args[1:]])
        assert res.exit_code == 0, (args, res.output)
    doc = json.loads(runner.invoke(app, ["stats", "--db", str(read_only), "--json"]).stdout)
    assert doc["read_only"] is True and doc["consistency"] == "ok"


# ---- file modes --------------------------------------------------------------------------------


def test_export_never_changes_modes_of_files_it_did_not_write(idx, tmp_path):
    project = tmp_path / "project"
    (project / "bin").mkdir(parents=True)
    tool = project / "bin" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    res = runner.invoke(app, ["export", "--db", str(idx), "--out", str(project)])
    assert res.exit_code == 1 and "not empty and not an elmsearch export folder" in res.stderr
    assert stat.S_IMODE(tool.stat().st_mode) == 0o755 and not (project / "recordings.parquet").exists()
    res = runner.invoke(app, ["eval", "--db", str(idx), "--labels", str(tool), "--out", str(project)])
    assert stat.S_IMODE(tool.stat().st_mode) == 0o755
    out = tmp_path / "new" / "export"
    assert runner.invoke(app, ["export", "--db", str(idx), "--out", str(out)]).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in out.iterdir()} == {0o600}
    assert runner.invoke(app, ["export", "--db", str(idx), "--out", str(out)]).exit_code == 0  # an earlier export
    res = runner.invoke(app, ["export", "--db", str(idx)])
    assert res.exit_code != 0 and not Path("elmsearch-export").exists()  # --out is required


def test_index_refuses_a_folder_that_is_not_an_index(demo_archive, demo_model_dir, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    hook = project / "pre-commit"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    res = runner.invoke(app, ["index", str(demo_archive.root), "--db", str(project), "--model", str(demo_model_dir)])
    assert res.exit_code == 1 and "not empty and not an elmsearch index" in res.stderr
    assert stat.S_IMODE(hook.stat().st_mode) == 0o755 and sorted(os.listdir(project)) == ["pre-commit"]


def test_index_files_are_private_and_the_folder_mode_of_an_existing_index_is_kept(built):
    for dirpath, _dirnames, filenames in os.walk(built):
        for n in filenames:
            assert stat.S_IMODE(os.stat(os.path.join(dirpath, n)).st_mode) & 0o077 == 0, n


# ---- secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize("password_at", ["argument", "equals"])
def test_a_password_on_the_command_line_never_reaches_the_lock_stats_or_the_api(idx, monkeypatch, password_at):
    from fastapi.testclient import TestClient

    from cli.web.app import create_app
    from indexer.lock import LOCK_NAME, IndexLock
    from indexer.service import SearchService

    url = "postgresql+psycopg://clinic:S3cret-PASSWORD@db.example.org/eeg"
    db_url = ["--db-url", url] if password_at == "argument" else [f"--db-url={url}"]
    monkeypatch.setattr("sys.argv", ["/usr/bin/elmsearch", "index", "/archive/patient-names", *db_url,
                                     "--patients", "/private/map.csv"])
    svc = SearchService.open(idx)
    with IndexLock(idx), TestClient(create_app(svc, threads=2), base_url="http://127.0.0.1") as client:
        lock_text = (idx / LOCK_NAME).read_text()
        stats = runner.invoke(app, ["stats", "--db", str(idx), "--json"]).stdout
        api = client.get("/api/stats").text
    for shown in (lock_text, stats, api):
        assert "S3cret-PASSWORD" not in shown and "patient-names" not in shown and "map.csv" not in shown
        assert "elmsearch index --db-url postgresql+psycopg://clinic:***@db.example.org/eeg" in shown
    assert json.loads(stats)["writer"]["command"].startswith("elmsearch index")


def test_a_lock_written_with_the_whole_command_line_is_shown_redacted(idx):
    """A lock file from an older version holds the whole argv: its URL password is never shown."""
    import fcntl

    from indexer.lock import LOCK_NAME, lock_holder

    old = {"pid": os.getpid(), "host": "h", "started": "2026-01-01T00:00:00+00:00",
           "command": "elmsearch index /a --db-url postgresql://u:hunter2@host/db"}
    fd = os.open(idx / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, json.dumps(old).encode())
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder = lock_holder(idx)
    finally:
        os.close(fd)
    assert holder["command"] == "elmsearch index /a --db-url postgresql://u:***@host/db"

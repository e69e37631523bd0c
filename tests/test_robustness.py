"""A real archive: locks, queries during a run, isolation of bad files, symlinks, permissions, privacy."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from db import Recording, Report, Segment, Status, Window
from indexer.lock import IndexLock, IndexLockedError, lock_holder
from indexer.pipeline import index_archive
from indexer.search import Index
from indexer.store import IndexStore

ROOT = Path(__file__).resolve().parents[1]


def _edfs(root):
    return sorted(root.rglob("*.edf"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request):
    """The concurrency tests run on SQLite and, where ELMSEARCH_TEST_PG_URL is set, on PostgreSQL."""
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


def _rows(db):
    store = IndexStore.open(db)
    with store.session() as s:
        return {r.path: (r.status, r.error, r.content_hash, r.n_windows)
                for r in s.scalars(select(Recording))}


def _ids_of(db):
    with IndexStore.open(db).session() as s:
        return s.scalars(select(Recording.id)).all()


# ---- one writer, many readers ---------------------------------------------------------------
def test_a_second_writer_is_refused_and_names_the_holder(archive, demo_model_dir, tmp_path):
    db = tmp_path / "idx"
    db.mkdir()
    with IndexLock(db):
        holder = lock_holder(db)
        assert holder["pid"] == os.getpid() and holder["host"]
        with pytest.raises(IndexLockedError, match=rf"another `elmsearch index` is writing.*pid {os.getpid()}"):
            index_archive(archive, db, demo_model_dir)
    assert lock_holder(db) is None
    assert index_archive(archive, db, demo_model_dir).added == len(_edfs(archive))


def test_a_stale_lock_of_a_dead_process_is_taken_over(archive, demo_model_dir, tmp_path, caplog):
    db = tmp_path / "idx"
    db.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (db / "index.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": "ward-7", "started": "2026-01-01"}))
    assert lock_holder(db) is None  # nobody holds the flock: the file is stale
    with caplog.at_level("WARNING"):
        summary = index_archive(archive, db, demo_model_dir)
    assert summary.added == len(_edfs(archive))
    assert "stale lock" in caplog.text and f"pid {int(dead.stdout)} on ward-7" in caplog.text


def test_queries_during_a_run_answer_from_the_last_complete_index(archive, demo_model_dir, tmp_path, db_url):
    db = tmp_path / "idx"
    files = _edfs(archive)
    later = tmp_path / "later"
    for f in files[6:]:  # the first run sees half the archive
        dest = later / f.relative_to(archive)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(f, dest)
    index_archive(archive, db, demo_model_dir, db_url=db_url)
    before = Index.open(db).search_text("generalized spike and wave", k=3)
    old_ids = set(_ids_of(db))
    shutil.copytree(later, archive, dirs_exist_ok=True)
    seen = []

    def during(path, outcome, hours):
        if seen:
            return
        index = Index.open(db)  # a reader while the writer holds the lock and has added rows
        assert index.stale and index.store.pending_run["running"]
        hits = index.search_text("generalized spike and wave", k=3)
        similar = index.similar(recording_id=before[0].recording_id, k=3, include_same_patient=True,
                                one_per_patient=False)
        seen.append(([h.recording_id for h in hits], [h.recording_id for h in similar]))
        # a second writer, as another process, is refused with one line
        r = subprocess.run([sys.executable, "-m", "cli", "index", str(archive), "--db", str(db), "--model",
                            str(demo_model_dir)], capture_output=True, text=True, cwd=ROOT)
        seen.append(r)

    summary = index_archive(archive, db, demo_model_dir, on_item=during, db_url=db_url)
    assert summary.added == len(files) - 6
    (hit_ids, similar_ids), second = seen
    assert hit_ids == [h.recording_id for h in before] and set(similar_ids) <= old_ids
    assert len(hit_ids) == 3 and len(similar_ids) == 3
    assert second.returncode == 1 and "another `elmsearch index` is writing" in second.stderr
    assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) <= 2
    after = Index.open(db)
    assert not after.stale and after.manifest["counts"]["eeg_recording"] == len(files)


# ---- kill -9 at several points --------------------------------------------------------------
@pytest.mark.parametrize("kill_after", [1, 6, "all"])
def test_sigkill_at_several_points_then_resume_gives_the_rows_of_a_clean_run(archive, demo_model_dir, tmp_path,
                                                                             kill_after, db_url):
    if db_url and kill_after != 6:
        pytest.skip("on PostgreSQL one kill point (mid-run) is enough")
    n = len(_edfs(archive))
    target = n if kill_after == "all" else kill_after
    db = tmp_path / "idx"
    code = ("import sys; from indexer.pipeline import index_archive; "
            "index_archive(sys.argv[1], sys.argv[2], sys.argv[3], db_url=sys.argv[4] or None)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(archive), str(db), str(demo_model_dir), db_url or ""],
                            cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if db_url or (db / "elmsearch.sqlite").is_file():
            try:
                store = IndexStore(db, db_url)
                with store.session() as s:
                    count = s.scalar(select(func.count()).select_from(Recording))
                store.engine.dispose()
            except Exception:
                count = 0
            if count >= target:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the indexer finished before it could be killed"
    assert lock_holder(db) is None  # the kernel dropped the lock with the process (and its workers)
    resumed = index_archive(archive, db, demo_model_dir, db_url=db_url)
    assert resumed.added + resumed.skipped == n
    clean = tmp_path / "clean"  # in SQLite: the rows must not depend on the database either
    index_archive(archive, clean, demo_model_dir)
    assert _rows(db) == _rows(clean)
    store = IndexStore.open(db)
    assert store.verify() == IndexStore.open(clean).verify()


# ---- isolation: crashes and hangs cost one file ------------------------------------------------
def test_a_worker_that_dies_or_hangs_fails_that_file_alone(archive, demo_model_dir, tmp_path, monkeypatch):
    import indexer.pipeline as pipeline

    files = _edfs(archive)
    crash, hang = files[1].name, files[2].name
    real = pipeline.WindowedRecording

    def reader(fname, *args, **kwargs):  # inherited by the forked workers
        if Path(fname).name == crash:
            os.kill(os.getpid(), signal.SIGKILL)
        if Path(fname).name == hang:
            time.sleep(600)
        if Path(fname).name == files[3].name:
            raise ZeroDivisionError("a bug in some reader")
        return real(fname, *args, **kwargs)

    monkeypatch.setattr(pipeline, "WindowedRecording", reader)
    summary = index_archive(archive, tmp_path / "idx", demo_model_dir, n_jobs=1, timeout=20)
    reasons = {Path(f["path"]).name: f["reason"] for f in summary.failures}
    assert set(reasons) == {crash, hang, files[3].name}
    assert "died (signal SIGKILL)" in reasons[crash]
    assert "per-file time limit of 20 s" in reasons[hang]
    assert reasons[files[3].name] == "unexpected ZeroDivisionError: a bug in some reader"
    assert summary.added == len(files) - 3
    rows = _rows(tmp_path / "idx")
    assert sum(r[0] == Status.FAILED for r in rows.values()) == 3
    # unchanged failed files are not retried, unless asked
    monkeypatch.setattr(pipeline, "WindowedRecording", real)
    assert index_archive(archive, tmp_path / "idx", demo_model_dir).failed == 0
    again = index_archive(archive, tmp_path / "idx", demo_model_dir, retry_failed=True)
    assert again.added == 0 and again.updated == 3 and again.failed == 0


# ---- model identity -------------------------------------------------------------------------
def test_an_eeg_only_model_hashes_the_same_on_every_load(shared_data):
    from elmsearch.models import config_hash, load_model

    release = shared_data / "elm_pretrained" / "5s"
    assert config_hash(load_model(release)) == config_hash(load_model(release))


def test_rerun_with_the_elm_release_embeds_nothing_and_new_files_find_prior_cases(shared_data, tmp_path):
    archive = tmp_path / "eegmat"
    archive.mkdir()
    for name in ("Subject00_1.edf", "Subject00_2.edf", "Subject01_1.edf", "Subject01_2.edf"):
        os.symlink(shared_data / "eegmat" / name, archive / name)  # DataLad style: every file a symlink
    release = shared_data / "elm_pretrained" / "5s"
    db = tmp_path / "idx"
    from elmsearch.archive.discovery import discovery_options

    with discovery_options(follow_outside=True):  # the links lead out of the archive root
        first = index_archive(archive, db, release)
    assert first.added == 4 and first.failed == 0
    rows = _rows(db)
    assert set(rows) == {str(archive / n) for n in os.listdir(archive)}  # archive paths, links not resolved
    with discovery_options(follow_outside=True):
        second = index_archive(archive, db, release)
    assert second.added == second.updated == 0 and second.skipped == 4
    assert second.timings["embed_eeg_s"] == 0
    hits = Index.open(db).similar(shared_data / "eegmat" / "Subject02_1.edf", k=2)
    assert len(hits) == 2


# ---- archive walking ------------------------------------------------------------------------
def test_symlinks_duplicates_loops_and_dangling_links(archive, demo_model_dir, tmp_path):
    files = _edfs(archive)
    extra = archive / "links"
    extra.mkdir()
    os.symlink(files[0], extra / "same_a.edf")
    os.symlink(files[0], extra / "same_b.edf")
    os.symlink(tmp_path / "not-fetched.edf", extra / "annexed.edf")
    os.symlink(archive, extra / "loop")  # a folder link back up the tree
    (extra / "session.edf").mkdir()  # a folder, whatever its name, is walked into
    os.symlink(files[1], extra / "session.edf" / "inside.edf")
    (extra / "scan.dcm").write_bytes(b"DICM")
    (extra / "old.gdf").write_bytes(b"GDF 2.20")
    summary = index_archive(archive, tmp_path / "idx", demo_model_dir)
    reasons = {Path(f["path"]).name: f["reason"] for f in summary.failures}
    assert "not there" in reasons["annexed.edf"] and str(extra / "session.edf" / "inside.edf") in _rows(
        tmp_path / "idx")
    rows = _rows(tmp_path / "idx")
    a, b = rows[str(extra / "same_a.edf")], rows[str(extra / "same_b.edf")]
    assert a[0] == b[0] == Status.INDEXED and a[2] == b[2] == rows[str(files[0])][2]
    skipped = {Path(s["path"]).name: s["reason"] for s in summary.skipped_files}
    assert "symlink loop" in skipped["loop"] and ".gdf" in skipped["old.gdf"]
    assert "unknown file type .dcm" in skipped["scan.dcm"]
    assert summary.added == len(files) + 3


def test_prune_keeps_rows_when_the_archive_is_missing(archive, demo_model_dir, tmp_path):
    db = tmp_path / "idx"
    index_archive(archive, db, demo_model_dir)
    moved = tmp_path / "unmounted"
    archive.rename(moved)
    archive.mkdir()  # an empty mount point
    summary = index_archive(archive, db, demo_model_dir, prune=True)
    assert summary.removed == 0 and len(_rows(db)) == len(_edfs(moved))


# ---- patient data ---------------------------------------------------------------------------
def test_index_folder_and_files_are_private(archive, demo_model_dir, tmp_path):
    from indexer.export import export_parquet

    old = os.umask(0o022)
    try:
        db = tmp_path / "idx"
        index_archive(archive, db, demo_model_dir)
        out = tmp_path / "export"
        export_parquet(IndexStore.open(db), out)
    finally:
        os.umask(old)
    for folder in (db, out):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        for p in folder.rglob("*"):
            if p.is_file() and not p.is_symlink():
                assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
            elif p.is_dir():
                assert stat.S_IMODE(p.stat().st_mode) == 0o700, p


def test_the_manifest_never_holds_a_password():
    from indexer.store import public_url

    assert public_url("postgresql+psycopg://eeg:s3cret@db.local:5432/archive") == \
        "postgresql+psycopg://eeg@db.local:5432/archive"


def test_no_report_text_keeps_embeddings_and_offsets_but_no_text(archive, demo_model_dir, tmp_path):
    db = tmp_path / "idx"
    index_archive(archive, db, demo_model_dir, report_text=False)
    store = IndexStore.open(db)
    with store.session() as s:
        reports = s.scalars(select(Report)).all()
        segments = s.scalars(select(Segment)).all()
        assert reports and segments
        assert all(r.text == "" and r.impression is None and r.emb is not None for r in reports)
        assert all(g.text == "" and g.emb is not None and g.end > g.start for g in segments)
    raw = (db / "elmsearch.sqlite").read_bytes()
    first_report = next(p for p in archive.rglob("*.txt"))
    sentence = first_report.read_text().split(".")[0].strip()[-30:]
    assert sentence and sentence.encode() not in raw
    hits = Index.open(db).search_reports(recording_id=1, k=2)
    assert len(hits) == 2
    assert store.manifest["report_text"] is False
    # the setting sticks: a later run without the flag stores no text either
    index_archive(archive, db, demo_model_dir)
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Report).where(Report.text != "")) == 0


def test_flat_windows_are_not_embedded(write_edf, demo_model_dir, tmp_path):
    from conftest import TUH_LABELS, synthetic_uv

    sig = synthetic_uv(len(TUH_LABELS), 250, 30, seed=3)
    sig[:, 7 * 250 : 23 * 250] = 0.0  # a 16 s gap the recorder filled with zeros
    write_edf("arch/gap.edf", signals=sig)
    db = tmp_path / "idx"
    summary = index_archive(tmp_path / "arch", db, demo_model_dir)
    assert summary.added == 1
    store = IndexStore.open(db)
    with store.session() as s:
        starts = [w.start_s for w in s.scalars(select(Window).order_by(Window.ordinal))]
        embs = [np.frombuffer(w.emb, np.float32) for w in s.scalars(select(Window))]
    assert 10.0 not in starts and 15.0 not in starts and 0.0 in starts and 25.0 in starts and len(starts) < 6
    assert all(np.isfinite(e).all() for e in embs)


# ---- other formats BIDS EEG allows -----------------------------------------------------------
def _write_brainvision(folder: Path, name: str, data_uv: np.ndarray, labels: list[str], sfreq: float) -> Path:
    """A minimal BrainVision triplet (.vhdr, .vmrk, .eeg; int16, 0.1 uV resolution) as recorders write it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.eeg").write_bytes(np.round(data_uv.T * 10).astype("<i2").tobytes())
    (folder / f"{name}.vmrk").write_text(
        "Brain Vision Data Exchange Marker File, Version 1.0\n[Common Infos]\nCodepage=UTF-8\n"
        f"DataFile={name}.eeg\n[Marker Infos]\nMk1=New Segment,,1,1,0,20200101120000000000\n")
    chans = "".join(f"Ch{i + 1}={lab},,0.1,µV\n" for i, lab in enumerate(labels))
    vhdr = folder / f"{name}.vhdr"
    vhdr.write_text(
        "Brain Vision Data Exchange Header File Version 1.0\n[Common Infos]\nCodepage=UTF-8\n"
        f"DataFile={name}.eeg\nMarkerFile={name}.vmrk\nDataFormat=BINARY\nDataOrientation=MULTIPLEXED\n"
        f"NumberOfChannels={len(labels)}\nSamplingInterval={1e6 / sfreq:g}\n[Binary Infos]\nBinaryFormat=INT_16\n"
        f"[Channel Infos]\n{chans}")
    return vhdr


def test_brainvision_recordings_are_discovered_and_read(tmp_path):
    from conftest import synthetic_uv

    from elmsearch.archive.discovery import Walk, discover
    from elmsearch.io.windowed import read_recording
    from elmsearch.signal.channels import STANDARD_1020

    labels = [e if e not in {"T3", "T4", "T5", "T6"} else {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}[e]
              for e in STANDARD_1020]
    root = tmp_path / "bids" / "sub-01" / "eeg"
    vhdr = _write_brainvision(root, "sub-01_task-rest_eeg", synthetic_uv(len(labels), 250, 20, seed=1), labels, 250)
    (root / "stray.eeg").write_bytes(b"\0" * 64)  # a data file whose header is missing
    walk = Walk()
    entries = discover(tmp_path / "bids", walk=walk)
    assert [e.path for e in entries] == [vhdr] and entries[0].info.subject == "01"
    assert [Path(s["path"]).name for s in walk.skipped] == ["stray.eeg"]
    assert "without its .vhdr header" in walk.skipped[0]["reason"]
    rec = read_recording(vhdr)
    assert rec.data.shape == (20, 2000) and rec.meta.native_sfreq == 250 and np.isfinite(rec.data).all()
    assert rec.meta.start is not None and rec.meta.start.year == 2020

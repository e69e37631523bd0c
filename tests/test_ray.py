"""The Ray runner (``elmsearch index --runner ray``) against the local one, on Ray in local mode.

One Ray session serves the module (Ray takes seconds to start). Both runners index the demo
archive plus a few hostile files; the databases must hold the same rows (embeddings to
1e-6) and answer queries with the same hits.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cli.app import app
from db import Recording, Report, from_blob
from indexer.pipeline import index_archive, make_indexer
from indexer.search import Index

HAVE_RAY = importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.data") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed: pip install -e '.[ray]'")
PARTITION = 3  # small partitions: several per run, so order, resume and reuse are exercised


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI's root callback reconfigures logging onto the runner's (closed) streams."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def ray_session():
    from indexer.ray_runner import init_ray

    started = init_ray()
    yield
    if started:
        import ray

        ray.shutdown()


@pytest.fixture(scope="module")
def hostile_archive(demo_archive, tmp_path_factory) -> Path:
    """The demo archive plus files that must be refused, each with its one-line reason."""
    from fuzz_corpus import set_fixed, synthetic_edf, truncate

    root = tmp_path_factory.mktemp("ray") / "archive"
    shutil.copytree(demo_archive.root, root)
    bad = root / "edf" / "zzz" / "hostile"
    bad.mkdir(parents=True)
    good = synthetic_edf(duration=20, seed=3)
    (bad / "garbage.edf").write_bytes(np.random.default_rng(0).integers(0, 256, 8000, dtype=np.uint8).tobytes())
    (bad / "truncated.edf").write_bytes(truncate(good, 3000))
    (bad / "empty.edf").write_bytes(b"")
    (bad / "bad_duration.edf").write_bytes(set_fixed(good, "record_duration", "abc"))
    (bad / "flat.edf").write_bytes(synthetic_edf(duration=20, signals=np.zeros((22, 5000))))
    return root


def _edfs(root: Path) -> list[Path]:
    return sorted(root.rglob("*.edf"))


@pytest.fixture(scope="module")
def local_index(hostile_archive, demo_model_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("ray") / "local"
    # in this process: files are stored in archive order, so row ids can be compared too
    summary = index_archive(hostile_archive, db, demo_model_dir, n_jobs=0)
    return db, summary


@pytest.fixture(scope="module")
def ray_index(ray_session, hostile_archive, demo_model_dir, tmp_path_factory):
    from indexer.ray_runner import RayRunner

    db = tmp_path_factory.mktemp("ray") / "ray"
    runner = RayRunner(make_indexer(db, demo_model_dir), partition_size=PARTITION)
    summary = runner.run(hostile_archive)
    return db, summary, runner


def _dump(db: Path) -> tuple[dict, dict]:
    """Every stored fact of an index, embeddings as arrays."""
    index = Index.open(db)
    with index.store.session() as s:
        recs = {}
        for r in s.scalars(select(Recording)):
            recs[r.path] = {
                "id": r.id, "key": r.key, "layout": r.layout, "montage": r.montage, "status": str(r.status),
                "error": r.error, "n_windows": r.n_windows, "size": r.size, "mtime": r.mtime,
                "content_hash": r.content_hash, "model_hash": r.model_hash, "duration": r.duration,
                "native_sfreq": r.native_sfreq, "age": r.age, "sex": r.sex, "date": r.date,
                "date_suspect": r.date_suspect, "patient": (r.patient_id, r.patient.key if r.patient else None),
                "session": (r.visit_id, r.visit.key if r.visit else None),
                "report": (r.report_id, r.report.source if r.report else None),
                "emb": None if r.emb is None else from_blob(r.emb),
                "windows": [(w.id, w.ordinal, w.start_s, w.end_s, from_blob(w.emb)) for w in r.windows]}
        reports = {}
        for x in s.scalars(select(Report)):
            reports[x.source] = {
                "id": x.id, "text_hash": x.text_hash, "text": x.text, "impression": x.impression,
                "model_hash": x.model_hash, "emb": None if x.emb is None else from_blob(x.emb),
                "segments": [(g.id, g.ordinal, g.section, g.start, g.end, g.text, g.finding,
                              None if g.emb is None else from_blob(g.emb)) for g in x.segments]}
    return recs, reports


def _assert_same_index(a: Path, b: Path) -> None:
    _assert_same_dump(_dump(a), _dump(b))


def _assert_same_dump(dump_a: tuple[dict, dict], dump_b: tuple[dict, dict]) -> None:
    def same_vec(u, v, what):
        assert (u is None) == (v is None), what
        if u is not None:
            np.testing.assert_allclose(u, v, atol=1e-6, rtol=0, err_msg=what)

    (recs_a, reports_a), (recs_b, reports_b) = dump_a, dump_b
    assert recs_a.keys() == recs_b.keys()
    for path, ra in recs_a.items():
        rb = recs_b[path]
        for k, v in ra.items():
            if k not in {"emb", "windows"}:
                assert v == rb[k], (path, k)
        same_vec(ra["emb"], rb["emb"], path)
        assert [w[:4] for w in ra["windows"]] == [w[:4] for w in rb["windows"]], path
        for wa, wb in zip(ra["windows"], rb["windows"], strict=True):
            same_vec(wa[4], wb[4], f"{path} window {wa[1]}")
    assert reports_a.keys() == reports_b.keys()
    for source, xa in reports_a.items():
        xb = reports_b[source]
        for k, v in xa.items():
            if k not in {"emb", "segments"}:
                assert v == xb[k], (source, k)
        same_vec(xa["emb"], xb["emb"], source)
        assert [g[:7] for g in xa["segments"]] == [g[:7] for g in xb["segments"]], source
        for ga, gb in zip(xa["segments"], xb["segments"], strict=True):
            same_vec(ga[7], gb[7], f"{source} sentence {ga[1]}")


# ---- the same index from both runners ----------------------------------------------------------
@needs_ray
def test_ray_and_local_runners_store_the_same_index(local_index, ray_index, hostile_archive):
    (local_db, local), (ray_db, ray_summary, runner) = local_index, ray_index
    # boundaries hash the absolute paths (a new temporary folder each run); the size cap alone
    # guarantees several partitions: 17 files, at most MAX_PARTITION_FACTOR * PARTITION = 12 in one
    assert runner.stats["partitions"] >= 2 and runner.stats["computed"] == runner.stats["partitions"]
    for k in ("added", "updated", "skipped", "failed", "removed"):
        assert getattr(ray_summary, k) == getattr(local, k), k
    assert local.failed == 5 and local.added == len(_edfs(hostile_archive)) - 5
    assert sorted(map(json.dumps, ray_summary.failures)) == sorted(map(json.dumps, local.failures))
    _assert_same_index(local_db, ray_db)
    assert not (ray_db / "staging").exists()  # the shards are gone once stored


@needs_ray
def test_ray_and_local_indexes_answer_queries_alike(local_index, ray_index, hostile_archive):
    a, b = Index.open(local_index[0]), Index.open(ray_index[0])
    for text in ("spike and wave", "normal awake EEG", "focal slowing"):
        for level in ("recording", "window"):
            ha, hb = a.search_text(text, k=5, level=level), b.search_text(text, k=5, level=level)
            assert [(h.recording_id, h.path, h.start_s) for h in ha] == [(h.recording_id, h.path, h.start_s)
                                                                          for h in hb]
            np.testing.assert_allclose([h.score for h in ha], [h.score for h in hb], atol=1e-5)
    query = _edfs(hostile_archive)[0]
    assert [h.recording_id for h in a.similar(query, k=5)] == [h.recording_id for h in b.similar(query, k=5)]
    assert [h.recording_id for h in a.similar(recording_id=2, k=5)] == \
        [h.recording_id for h in b.similar(recording_id=2, k=5)]


@needs_ray
def test_a_second_ray_run_skips_every_unchanged_file(ray_index, hostile_archive, demo_model_dir):
    db = ray_index[0]
    before = _dump(db)
    result = CliRunner().invoke(app, ["-q", "index", str(hostile_archive), "--db", str(db), "--model",
                                      str(demo_model_dir), "--runner", "ray", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["skipped"] == len(_edfs(hostile_archive))
    assert summary["added"] == summary["updated"] == summary["failed"] == 0
    assert "ray_s" not in summary["timings"]  # nothing to do: no Ray work at all
    _assert_same_dump(before, _dump(db))


@needs_ray
def test_a_shard_left_by_a_killed_run_is_reused(ray_session, hostile_archive, demo_model_dir, local_index,
                                                 tmp_path, monkeypatch):
    import indexer.ray_runner as rr

    db = tmp_path / "idx"
    real = rr.write_shard
    written = []

    def write_then_die(staging, pid, table):
        written.append(real(staging, pid, table))
        raise KeyboardInterrupt("killed after its first shard")

    monkeypatch.setattr(rr, "write_shard", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        rr.RayRunner(make_indexer(db, demo_model_dir), partition_size=PARTITION).run(hostile_archive)
    assert len(written) == 1 and written[0].is_file()
    assert written[0].with_name(written[0].name.replace(".parquet", rr.MARKER)).is_file()
    monkeypatch.setattr(rr, "write_shard", real)

    runner = rr.RayRunner(make_indexer(db, demo_model_dir), partition_size=PARTITION)
    summary = runner.run(hostile_archive)
    assert runner.stats["reused"] == 1
    assert runner.stats["computed"] == runner.stats["partitions"] - 1
    assert summary.added + summary.failed == len(_edfs(hostile_archive))
    assert not (db / "staging").exists()
    _assert_same_index(local_index[0], db)


# ---- pieces that need no Ray cluster ---------------------------------------------------------------
@needs_ray
def test_a_reader_that_dies_or_hangs_costs_its_file_not_the_actor(ray_session, demo_archive, demo_model_dir,
                                                                    monkeypatch):
    import indexer.pipeline as pipeline
    from elmsearch.archive.discovery import Walk, discover
    from elmsearch.models.factory import load_model
    from elmsearch.models.identity import config_hash
    from indexer.ray_runner import PartitionEmbedder

    entries = discover(demo_archive.root, None, Walk())[:4]
    crash, hang = entries[1].path.name, entries[2].path.name
    real = pipeline.WindowedRecording

    def reader(fname, *args, **kwargs):  # inherited by the forked reader processes
        if Path(fname).name == crash:
            os.kill(os.getpid(), signal.SIGKILL)
        if Path(fname).name == hang:
            import time

            time.sleep(600)
        return real(fname, *args, **kwargs)

    monkeypatch.setattr(pipeline, "WindowedRecording", reader)
    actor = PartitionEmbedder(str(demo_model_dir), config_hash(load_model(demo_model_dir)), "fp32", "torch",
                              timeout=5, n_jobs=1, threads=1)
    rows = actor.embed_partition("p", [(e, None) for e in entries])
    assert [r["ordinal"] for r in rows] == [0, 1, 2, 3]
    assert "died (signal SIGKILL)" in rows[1]["error"]
    assert "per-file time limit of 5 s" in rows[2]["error"]
    for r in (rows[0], rows[3]):
        assert r["error"] is None and r["recording_emb"] is not None and r["text_embedded"]


def test_partitions_keep_their_ids_when_earlier_files_are_done(tmp_path):
    from elmsearch.archive.discovery import Walk, archive_path, discover
    from indexer.ray_runner import _boundary, make_partitions

    for i in range(60):
        (tmp_path / f"r{i:02d}.edf").write_bytes(b"x" * i)
    todo = [(e, None) for e in discover(tmp_path, None, Walk())]
    parts = make_partitions(todo, lambda ex: None, size=4, salt="m")
    assert sum(len(p.items) for p in parts) == 60 and len(parts) > 3
    assert all(len(p.items) <= 16 for p in parts)
    # a crashed run stored the partitions before the j-th and one file of it; the j-th ends at a
    # content-defined boundary (not at the size cap, after which the cut resynchronises one boundary later)
    j = next(j for j in range(1, len(parts) - 1) if len(parts[j].items) >= 2
             and _boundary(archive_path(parts[j].items[-1][0].path), 4))
    rest = todo[sum(len(p.items) for p in parts[:j]) + 1:]
    again = make_partitions(rest, lambda ex: None, size=4, salt="m")
    assert [p.pid for p in again[1:]] == [p.pid for p in parts[j + 1:]]
    assert [e for e, _, _ in again[0].items] == [e for e, _, _ in parts[j].items[1:]]
    assert again[0].pid != parts[j].pid
    # another model: other ids
    assert make_partitions(todo, lambda ex: None, size=4, salt="other")[0].pid != parts[0].pid


def test_runner_ray_without_ray_fails_with_one_line(demo_archive, demo_model_dir, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = CliRunner().invoke(app, ["-q", "index", str(demo_archive.root), "--db", str(tmp_path / "idx"),
                                      "--model", str(demo_model_dir), "--runner", "ray"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: ray is not installed: pip install -e '.[ray]'"]
    assert not (tmp_path / "idx").exists()

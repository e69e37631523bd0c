"""Cold starts: commands that need no model never import torch (issue 12).

Each command runs in a fresh interpreter, which reports at exit which heavy modules it
imported. Importing torch alone takes about a second; `show` and `stats` must not pay it.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from db import Recording, Status
from indexer.pipeline import index_archive
from indexer.store import IndexStore

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "mne", "scipy", "scipy.signal", "faiss", "pyarrow", "sqlalchemy", "onnxruntime",
         "numpy", "pydantic", "rich.progress")
MARK = "cold-imports: "

# Runs `elmsearch ARGS` as the console script does, then prints the heavy modules imported and how
# many objects the exit left out of its garbage collections (`_leave`).
PROBE = f"""
import atexit, gc, json, sys
atexit.register(lambda: print({MARK!r} + json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)),
                              file=sys.stderr))
atexit.register(lambda: print("frozen objects: %d" % gc.get_freeze_count(), file=sys.stderr))
sys.argv = ["elmsearch", *json.loads(sys.argv[1])]
from cli.app import main
main()
"""


@pytest.fixture(scope="module")
def built(demo_archive, demo_model_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("cold") / "idx"
    index_archive(demo_archive.root, db, demo_model_dir)
    with IndexStore.open(db).session() as s:
        rec_id = s.scalar(select(Recording.id).where(Recording.status == Status.INDEXED).order_by(Recording.id))
    return db, rec_id


def _run(args: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(MARK)]
    assert lines, proc.stderr
    return proc, set(json.loads(lines[-1][len(MARK):]))


@pytest.mark.parametrize("command", ["show", "stats", "export", "--help", "show --help"])
def test_commands_without_a_model_never_import_torch(built, tmp_path, command):
    db, rec_id = built
    args = {"show": ["show", str(rec_id), "--db", str(db)],
            "stats": ["stats", "--db", str(db)],
            "export": ["export", "--db", str(db), "--out", str(tmp_path / "export")],
            }.get(command, command.split())
    proc, imported = _run(args)
    assert proc.returncode == 0, proc.stderr
    assert not imported & {"torch", "transformers", "mne", "scipy"}, imported
    if "--help" in args:
        assert "Usage" in proc.stdout
        assert not imported & {"faiss", "sqlalchemy", "pyarrow"}, imported
    else:  # the probe sees what a command does import
        assert "sqlalchemy" in imported
        assert "faiss" not in imported  # counts and metadata come from SQL and the manifest
    if command in {"show", "--help", "show --help"}:  # numpy is 50 ms of a cold `show`, pydantic 70 (issue 25)
        assert not imported & {"numpy", "pydantic", "rich.progress"}, imported
    if command == "export":
        assert "pyarrow" in imported and (tmp_path / "export" / "recordings.parquet").is_file()


@pytest.mark.parametrize("command", ["similar", "reports"])
def test_queries_by_recording_id_use_stored_embeddings_without_torch(built, command):
    db, rec_id = built
    proc, imported = _run([command, "--recording", str(rec_id), "--db", str(db), "--json"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hits"]
    assert "faiss" in imported
    assert not imported & {"torch", "transformers", "mne", "scipy"}, imported


def test_a_text_query_runs_the_compiled_query_model_without_torch(built):
    db, _ = built
    proc, imported = _run(["search", "generalized spike and wave", "--db", str(db), "--json", "-k", "3"])
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["hits"]) == 3
    assert {"faiss", "onnxruntime"} <= imported
    assert not imported & {"torch", "transformers", "mne", "scipy"}, imported


def test_backend_torch_answers_the_same_with_torch(built):
    db, _ = built
    args = ["search", "generalized spike and wave", "--db", str(db), "--json", "-k", "5"]
    fast, _ = _run(args)
    proc, imported = _run([*args, "--backend", "torch"])
    assert proc.returncode == 0, proc.stderr
    assert "torch" in imported and "onnxruntime" not in imported
    got = [(h["recording_id"], h["score"]) for h in json.loads(proc.stdout)["hits"]]
    want = [(h["recording_id"], h["score"]) for h in json.loads(fast.stdout)["hits"]]
    assert [i for i, _ in got] == [i for i, _ in want]
    assert max(abs(a - b) for (_, a), (_, b) in zip(got, want, strict=True)) < 1e-4


def test_similar_to_a_new_file_reads_and_embeds_it_without_torch(built, demo_archive, tmp_path):
    import shutil

    db, _ = built
    new = tmp_path / "new.edf"  # not in the index: read, preprocessed and embedded now
    shutil.copy(sorted(demo_archive.root.rglob("*.edf"))[0], new)
    proc, imported = _run(["similar", str(new), "--db", str(db), "--json", "-k", "3"])
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)["hits"]
    # its twin in the archive has the same bytes: never its own prior case (score 1.0)
    assert len(hits) == 3 and max(h["score"] for h in hits) < 0.999
    assert "onnxruntime" in imported
    assert not imported & {"torch", "transformers", "scipy.signal"}, imported


@pytest.mark.parametrize("case", ["show", "show --json", "missing id", "bad id", "stats", "--help", "index"])
def test_read_only_commands_leave_without_collecting_and_lose_no_output(built, tmp_path, case):
    db, rec_id = built
    args, code, fast = {
        "show": (["show", str(rec_id), "--db", str(db)], 0, True),
        "show --json": (["-q", "show", str(rec_id), "--db", str(db), "--json"], 0, True),
        "missing id": (["show", "999999", "--db", str(db)], 1, True),
        "bad id": (["show", "abc", "--db", str(db)], 2, True),
        "stats": (["stats", "--db", str(db), "--json"], 0, True),
        "--help": (["--help"], 0, False),
        "index": (["index", str(tmp_path / "none"), "--db", str(tmp_path / "idx")], 1, False),  # writes: never
    }[case]
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    frozen = int(proc.stderr.rsplit("frozen objects: ", 1)[1].split()[0])  # atexit handlers still ran
    assert (frozen > 10_000) == fast, frozen
    if case == "show --json":  # the whole document reached the pipe
        assert json.loads(proc.stdout)["recording_id"] == rec_id
    if case == "stats":
        assert json.loads(proc.stdout)
    if case == "show":
        assert f"recording {rec_id}" in proc.stdout and "windows" in proc.stdout
    if code:
        assert proc.stderr.startswith("error: ") and proc.stderr.count("error: ") == 1, proc.stderr


def test_in_process_commands_keep_nothing_open(built):
    from typer.testing import CliRunner

    from cli.app import _OPEN, app

    db, rec_id = built
    for _ in range(3):  # a test process or a notebook runs many: none of their stores is kept
        assert CliRunner().invoke(app, ["show", str(rec_id), "--db", str(db)]).exit_code == 0
    assert _OPEN["things"] is None


def test_the_command_name_follows_the_root_flags():
    from cli.app import READ_ONLY, _command_name

    assert _command_name(["-q", "--verbose", "show", "3", "--db", "x"]) == "show"
    assert _command_name(["--help"]) is None and _command_name([]) is None
    assert READ_ONLY >= {"show", "search", "similar", "reports", "stats"}
    assert not READ_ONLY & {"index", "train", "demo", "export", "serve", "eval"}


def test_a_read_only_command_closes_the_database_before_it_leaves(built, tmp_path):
    import shutil

    db, rec_id = built
    copy = tmp_path / "idx"  # a copy no other process has open (this one holds the original)
    shutil.copytree(db, copy)
    for args in (["show", str(rec_id)], ["stats"], ["verify"]):
        proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps([*args, "--db", str(copy)])],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        # SQLite removes its write-ahead log and shared-memory files when the last connection closes
        assert not sorted(copy.rglob("*-wal")) + sorted(copy.rglob("*-shm")), args

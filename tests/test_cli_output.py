"""The query commands as people read them: 80 columns, pipes, TSV, hints (issue 26)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from indexer.pipeline import index_archive

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")

pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture(scope="module")
def db(demo_archive, demo_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-out") / "idx"
    index_archive(demo_archive.root, folder, demo_model_dir)
    return folder


def _in_terminal(args: list[str], columns: int = 80) -> str:
    """Run ``elmsearch ARGS`` on a pseudo-terminal ``columns`` wide; its output without colour codes."""
    import fcntl
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=REPO, stdin=follower, stdout=follower,
                            stderr=subprocess.DEVNULL, env=env)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(60)
    os.close(leader)
    assert proc.returncode == 0
    return ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n")


def _piped(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _json(args: list[str]) -> dict:
    result = CliRunner().invoke(app, ["-q", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _words(text: str) -> list[str]:
    return " ".join(text.split()).split(" ")


QUERIES = [["search", "focal slowing", "-k", "5"], ["similar", "--recording", "2", "-k", "4"],
           ["reports", "--recording", "2", "-k", "3"]]


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: q[0])
def test_hits_at_80_columns_keep_each_hit_readable(db, query):
    doc = _json([*query, "--db", str(db)])
    text = _in_terminal(["-q", *query, "--db", str(db)])
    lines = [line for line in text.splitlines() if line.strip()]
    assert doc["hits"] and all(len(line) <= 80 for line in lines), max(lines, key=len)
    impressions = {w for h in doc["hits"] for w in _words(h["impression"] or "")}
    single = [line for line in lines if len(line.split()) == 1 and line.strip() in impressions]
    assert not single, single  # never one word of an impression on a line of its own
    flat = " ".join(" ".join(lines).split())
    for h in doc["hits"]:
        assert f"#{h['rank']} {h['score']:.3f}" in flat and f"recording {h['recording_id']}" in flat
        for field in (h["patient"], (h["date"] or "")[:10], h["montage"]):
            assert field and field in flat
        if h["impression"]:
            assert " ".join(_words(h["impression"])) in flat  # whole, in order, only wrapped


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: q[0])
def test_hits_in_a_pipe_are_plain_unwrapped_lines(db, query):
    doc = _json([*query, "--db", str(db)])
    text = _piped(["-q", *query, "--db", str(db)])
    assert "\x1b[" not in text and "│" not in text  # no colour, no table
    lines = text.splitlines()
    for h in doc["hits"]:
        head = next(line for line in lines if line.startswith(f"#{h['rank']} "))
        assert f"recording {h['recording_id']}" in head and h["patient"] in head
        if h["impression"]:
            assert any(" ".join(_words(h["impression"])) in line for line in lines)  # on one line
        if h.get("percentile") is not None:
            assert "pct)" in head
    assert not any(h["path"] in text for h in doc["hits"])
    with_paths = _piped(["-q", *query, "--db", str(db), "--paths"])
    assert all(f"path: {h['path']}" in with_paths for h in doc["hits"])


def test_tsv_has_a_header_and_a_line_per_hit(db):
    doc = _json(["search", "focal slowing", "-k", "5", "--db", str(db)])
    text = _piped(["-q", "search", "focal slowing", "-k", "5", "--db", str(db), "--format", "tsv"])
    rows = [line.split("\t") for line in text.splitlines()]
    assert rows[0][:4] == ["rank", "score", "percentile", "recording_id"]
    assert len(rows) == len(doc["hits"]) + 1 and all(len(r) == len(rows[0]) for r in rows)
    assert [int(r[3]) for r in rows[1:]] == [h["recording_id"] for h in doc["hits"]]
    assert _piped(["-q", "search", "focal slowing", "-k", "5", "--db", str(db), "--format", "json"]).startswith("{")


def test_verbose_after_the_command_says_where_it_goes(db):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=120)

    late = run("search", "x", "--db", str(db), "-v")
    assert late.returncode == 2 and len(late.stderr.strip().splitlines()) == 1
    assert "-v goes before the command: elmsearch -v search" in late.stderr
    quiet = run("similar", "--recording", "1", "--quiet")
    assert "--quiet goes before the command: elmsearch --quiet similar" in quiet.stderr
    other = run("search", "x", "--bogus")
    assert "see 'elmsearch search --help'" in other.stderr  # other unknown options keep the usual pointer


def test_an_index_folder_under_db_is_found_and_the_demos_is_named(db, tmp_path, monkeypatch):
    parent = tmp_path / "demo-like"
    parent.mkdir()
    (parent / "index").symlink_to(db, target_is_directory=True)
    assert _json(["search", "focal slowing", "-k", "2", "--db", str(parent)])["hits"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elmsearch-demo").mkdir()
    (tmp_path / "elmsearch-demo" / "index").symlink_to(db, target_is_directory=True)
    result = CliRunner().invoke(app, ["-q", "search", "focal slowing"])  # no --db: ./elmsearch-index is absent
    assert result.exit_code == 1
    assert "add --db elmsearch-demo/index" in result.output and len(result.output.strip().splitlines()) == 1
    assert _json(["search", "focal slowing", "-k", "2", "--db", "elmsearch-demo"])["hits"]


def test_the_demo_ends_with_the_commands_to_try(tmp_path):
    from indexer.demo import demo_next_steps

    lines = demo_next_steps(Path("elmsearch-demo/index"), Path("elmsearch-demo/archive/a b.edf"))
    assert lines[0] == 'elmsearch search "focal slowing" --db elmsearch-demo/index'
    assert "elmsearch similar 'elmsearch-demo/archive/a b.edf' --db elmsearch-demo/index" in lines
    assert any(line.startswith("elmsearch serve --db elmsearch-demo/index") for line in lines)


def test_top_level_help_and_show_are_not_cut_at_80_columns(db):
    helped = _in_terminal(["--help"])
    commands = helped.split("Commands:")[1]
    assert "..." not in commands and "…" not in commands
    assert all(len(line) <= 80 for line in commands.splitlines())
    shown = _in_terminal(["show", "1", "--db", str(db)])
    assert "…" not in shown  # a long path is folded onto the next line, never cut
    path = _json(["show", "1", "--db", str(db)])["path"]
    cells = "".join(line.split("│")[2].strip() for line in shown.splitlines() if line.count("│") >= 3)
    assert path in cells


def test_a_refused_file_is_counted_as_refused_on_a_rerun(demo_model_dir, tmp_path, write_edf):
    write_edf("arch/ok.edf", duration=30, seed=1)
    (tmp_path / "arch" / "bad.edf").write_text("not an edf\n")
    first = index_archive(tmp_path / "arch", tmp_path / "idx", demo_model_dir)
    again = index_archive(tmp_path / "arch", tmp_path / "idx", demo_model_dir)
    assert (first.failed, again.skipped, again.still_refused, again.failed) == (1, 2, 1, 0)


def test_the_demo_ends_with_the_commands_to_try_and_they_run(tmp_path):
    """`elmsearch demo` (8 recordings) closes with the commands to try next, and the first of them runs."""
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "cli", "demo", "--n-recordings", "8"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tail = proc.stderr.split("Next, try:")[1].strip().splitlines()
    assert tail[0].strip() == 'elmsearch search "focal slowing" --db elmsearch-demo/index'
    assert any(line.strip().startswith("elmsearch similar elmsearch-demo/archive/") for line in tail)
    assert any(line.strip().startswith("elmsearch serve --db elmsearch-demo/index") for line in tail)
    stray = [line for line in proc.stderr.splitlines() if line.startswith("[") or "loss_type" in line]
    assert not stray, stray  # no library chatter at the default verbosity
    assert "paths: " not in proc.stdout and "…" not in proc.stdout
    again = subprocess.run([sys.executable, "-m", "cli", "-q", "search", "focal slowing", "--db", "elmsearch-demo"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and again.stdout.startswith("text → EEG: focal slowing")

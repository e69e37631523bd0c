"""Every user error of the real console entry point is one line on stderr, never a traceback.

``CliRunner`` goes through Click's standalone mode, so these tests run ``python -m cli`` (the same
``cli.app:main`` as the ``elmsearch`` script) in subprocesses: usage errors (bad option, argument or
value) exit with 2, runtime errors with 1. The cases run in parallel, once, in a module fixture.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
USAGE, RUNTIME = 2, 1

# (id, arguments, exit code, text the error line must hold). Run in a workspace folder holding:
# arch/ (3 recordings + labels.csv), eeg_model/ (an untrained EEG-only MODEL_DIR), idx/ (arch indexed
# with it), empty/ (an empty folder), notes.txt, bad.json (not JSON), wrong.json ([1, 2]).
# Names starting with "missing" do not exist. {edf} is one recording of arch, {labels} its labels.csv.
CASES: list[tuple[str, list[str], int, str]] = [
    ("root-unknown-option", ["--bogus"], USAGE, "--bogus"),
    ("root-unknown-command", ["nocommand"], USAGE, "nocommand"),
    # index
    ("index-no-archive", ["index"], USAGE, "archive"),
    ("index-unknown-option", ["index", "arch", "--bogus"], USAGE, "--bogus"),
    ("index-bad-precision", ["index", "arch", "--model", "eeg_model", "--precision", "bogus"], USAGE, "--precision"),
    ("index-missing-model", ["index", "arch", "--model", "missing_model"], USAGE, "missing_model"),
    ("index-missing-reports", ["index", "arch", "--model", "eeg_model", "--reports", "missing.jsonl"], USAGE,
     "missing.jsonl"),
    ("index-negative-workers", ["index", "arch", "--model", "eeg_model", "-j", "-1"], USAGE, "--workers"),
    ("index-missing-archive", ["index", "missing_arch", "--model", "eeg_model", "--db", "new_idx"], RUNTIME,
     "missing_arch"),
    ("index-no-model-no-index", ["index", "arch", "--db", "empty"], RUNTIME, "--model"),
    # stats
    ("stats-missing-db", ["stats", "--db", "missing_idx"], RUNTIME, "no elmsearch index"),
    ("stats-extra-argument", ["stats", "extra"], USAGE, "extra"),
    ("stats-bad-db-url", ["stats", "--db", "idx", "--db-url", "notaurl"], RUNTIME, "URL"),
    # export
    ("export-missing-db", ["export", "--db", "missing_idx", "--out", "new_export"], RUNTIME, "no elmsearch index"),
    ("export-no-out", ["export", "--db", "idx"], USAGE, "--out"),
    ("verify-missing-db", ["verify", "--db", "missing_idx"], RUNTIME, "no elmsearch index"),
    ("export-unknown-option", ["export", "--format", "csv"], USAGE, "--format"),
    ("export-out-is-a-file", ["export", "--db", "idx", "--out", "notes.txt"], RUNTIME, "notes.txt: not a folder"),
    # search
    ("search-no-text", ["search"], USAGE, "text"),
    ("search-missing-db", ["search", "x", "--db", "missing_idx"], RUNTIME, "no elmsearch index"),
    ("search-bad-level", ["search", "x", "--level", "bogus"], USAGE, "--level"),
    ("search-zero-k", ["search", "x", "-k", "0"], USAGE, "-k"),
    ("search-bad-sex", ["search", "x", "--sex", "Q"], USAGE, "--sex"),
    ("search-bad-date", ["search", "x", "--after", "2020-13-45"], USAGE, "--after"),
    ("search-bad-age", ["search", "x", "--age-min", "old"], USAGE, "--age-min"),
    # reports
    ("reports-bad-recording", ["reports", "--recording", "abc"], USAGE, "--recording"),
    ("reports-eeg-only-index", ["reports", "{edf}", "--db", "idx"], RUNTIME, "EEG-only"),
    # similar
    ("similar-unknown-id", ["similar", "--recording", "999999", "--db", "idx"], RUNTIME, "999999"),
    ("similar-bad-k", ["similar", "--recording", "1", "-k", "x"], USAGE, "-k"),
    # show
    ("show-no-id", ["show"], USAGE, "recording_id"),
    ("show-not-an-int", ["show", "abc"], USAGE, "recording_id"),
    ("show-unknown-id", ["show", "999999", "--db", "idx"], RUNTIME, "no such id"),
    ("show-missing-db", ["show", "1", "--db", "missing_idx"], RUNTIME, "no elmsearch index"),
    # eval
    ("eval-no-labels", ["eval"], USAGE, "--labels"),
    ("eval-missing-labels", ["eval", "--labels", "missing.csv"], USAGE, "missing.csv"),
    ("eval-missing-prompts", ["eval", "--labels", "{labels}", "--prompts", "missing.json"], USAGE, "missing.json"),
    ("eval-bad-json-prompts", ["eval", "--labels", "{labels}", "--prompts", "bad.json", "--db", "idx"], RUNTIME,
     "bad.json: not valid JSON"),
    ("eval-wrong-prompts", ["eval", "--labels", "{labels}", "--prompts", "wrong.json", "--db", "idx"], RUNTIME,
     "wrong.json"),
    ("eval-missing-root", ["eval", "--labels", "{labels}", "--root", "missing_root"], USAGE, "missing_root"),
    ("eval-zero-seeds", ["eval", "--labels", "{labels}", "--seeds", "0"], USAGE, "--seeds"),
    # scan
    ("scan-no-archive", ["scan"], USAGE, "archive"),
    ("scan-missing-archive", ["scan", "missing_arch"], RUNTIME, "missing_arch"),
    ("scan-zero-window", ["scan", "arch", "--window", "0"], USAGE, "--window"),
    ("scan-missing-reports", ["scan", "arch", "--reports", "missing.jsonl"], USAGE, "missing.jsonl"),
    ("scan-reports-is-a-folder", ["scan", "arch", "--reports", "arch"], USAGE, "--reports"),
    # inspect
    ("inspect-unknown-option", ["inspect", "{edf}", "--yaml"], USAGE, "--yaml"),
    ("inspect-missing-file", ["inspect", "missing.edf"], RUNTIME, "missing.edf"),
    ("inspect-not-an-edf", ["inspect", "notes.txt"], RUNTIME, "not an EDF/BDF file"),
    # train
    ("train-no-out", ["train", "arch"], USAGE, "--out"),
    ("train-missing-archive", ["train", "missing_arch", "--out", "m"], RUNTIME, "missing_arch"),
    ("train-bad-device", ["train", "arch", "--out", "m", "--device", "gpu7"], USAGE, "--device"),
    ("train-missing-init", ["train", "arch", "--out", "m", "--init", "missing_init"], USAGE, "missing_init"),
    ("train-missing-text-model", ["train", "arch", "--out", "m", "--text-model", "missing_lm"], USAGE, "missing_lm"),
    ("train-bad-pooling", ["train", "arch", "--out", "m", "--text-pooling", "max"], USAGE, "--text-pooling"),
    ("train-zero-epochs", ["train", "arch", "--out", "m", "--epochs", "0"], USAGE, "--epochs"),
    ("train-out-is-a-file", ["train", "arch", "--out", "notes.txt"], RUNTIME, "notes.txt"),
    # classify
    ("classify-no-prompt", ["classify", "{edf}", "--model", "eeg_model"], USAGE, "--prompt"),
    ("classify-one-prompt", ["classify", "{edf}", "-p", "a", "--model", "eeg_model"], USAGE, "two"),
    ("classify-missing-model", ["classify", "{edf}", "-p", "a", "-p", "b", "--model", "missing_model"], USAGE,
     "missing_model"),
    ("classify-no-index", ["classify", "{edf}", "-p", "a", "-p", "b", "--db", "empty"], RUNTIME, "no elmsearch index"),
    # serve
    ("serve-no-index", ["serve", "--db", "empty"], RUNTIME, "no elmsearch index"),
    ("serve-bad-port", ["serve", "--db", "empty", "--port", "70000"], USAGE, "--port"),
    ("serve-bad-upload-limit", ["serve", "--db", "empty", "--max-upload-mb", "0"], USAGE, "--max-upload-mb"),
    ("classify-missing-file", ["classify", "missing.edf", "-p", "a", "-p", "b", "--model", "eeg_model"], RUNTIME,
     "missing.edf"),
    # probe
    ("probe-missing-labels", ["probe", "arch", "--labels", "missing.csv", "--model", "eeg_model"], USAGE,
     "missing.csv"),
    ("probe-no-model", ["probe", "arch", "--labels", "{labels}"], USAGE, "--model"),
    ("probe-bad-fractions", ["probe", "arch", "--labels", "{labels}", "--model", "eeg_model", "--fractions", "a,b"],
     USAGE, "--fractions"),
    ("probe-fraction-above-one", ["probe", "arch", "--labels", "{labels}", "--model", "eeg_model",
                                  "--fractions", "0.5,2"], USAGE, "--fractions"),
    ("probe-missing-archive", ["probe", "missing_arch", "--labels", "{labels}", "--model", "eeg_model"], RUNTIME,
     "missing_arch"),
    ("probe-unknown-column", ["probe", "arch", "--labels", "{labels}", "--model", "eeg_model", "--column", "nope"],
     RUNTIME, "nope"),
    # demo
    ("demo-too-few-recordings", ["demo", "--n-recordings", "2"], USAGE, "--n-recordings"),
    ("demo-unknown-option", ["demo", "--bogus"], USAGE, "--bogus"),
]

# Not errors, or not one line on purpose: run alongside the cases.
OTHER: dict[str, list[str]] = {
    "help": ["--help"],
    "index-help": ["index", "--help"],
    "no-arguments": [],
    "verbose-traceback": ["--verbose", "export", "--db", "idx", "--out", "notes.txt/sub"],  # an unexpected error
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, str]:
    """The files the cases name; returns the folder and the placeholders."""
    from elmsearch.datasets.demo import generate_archive
    from elmsearch.models.factory import create_model, save_model
    from indexer.pipeline import index_archive

    root = tmp_path_factory.mktemp("cli_errors")
    made = generate_archive(root / "arch", n_recordings=3, seed=1, min_minutes=0.2, max_minutes=0.25)
    model = create_model("elm-5s")
    model.has_text = False  # EEG-only: indexing needs no text encoder (seconds, not minutes)
    save_model(model, root / "eeg_model")
    index_archive(made.root, root / "idx", root / "eeg_model", precision="fp32")
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("x\n")
    (root / "bad.json").write_text('{"abnormal": ["normal EEG", "abnormal EEG"],\n')
    (root / "wrong.json").write_text("[1, 2]\n")
    edf = sorted(made.root.rglob("*.edf"))[0]
    return {"dir": str(root), "edf": str(edf.relative_to(root)), "labels": str(made.labels_path.relative_to(root))}


def _run(args: list[str], cwd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def results(workspace) -> dict[str, subprocess.CompletedProcess]:
    """Every case and OTHER, run in parallel (each is one short process)."""
    jobs = {cid: [a.format(**workspace) for a in args] for cid, args, _, _ in CASES}
    jobs.update(OTHER)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {cid: pool.submit(_run, args, workspace["dir"]) for cid, args in jobs.items()}
        return {cid: f.result() for cid, f in futures.items()}


@pytest.mark.parametrize(("cid", "code", "needle"), [(c, code, n) for c, _, code, n in CASES],
                         ids=[c for c, *_ in CASES])
def test_user_error_is_one_line(results, cid, code, needle):
    res = results[cid]
    report = f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    assert res.returncode == code, report
    assert "Traceback" not in res.stdout + res.stderr, report
    assert not any(c in res.stderr for c in "╭╰│"), report  # no Rich panel
    assert res.stdout == "", report
    lines = res.stderr.splitlines()
    assert 1 <= len(lines) <= 2, report  # the error, at most after one progress line
    assert lines[-1].startswith("error: "), report
    assert needle in lines[-1], report
    if code == USAGE:
        assert lines[-1].endswith("--help')"), report


def test_every_command_has_error_cases():
    import typer

    from cli.app import app

    commands = set(typer.main.get_command(app).commands)
    covered = {args[0] for _, args, _, _ in CASES if args and not args[0].startswith("-")}
    assert commands <= covered, commands - covered


def test_help_still_works(results):
    for cid, usage in (("help", "Usage: elmsearch [OPTIONS] COMMAND"), ("index-help", "Usage: elmsearch index")):
        res = results[cid]
        assert res.returncode == 0 and res.stdout.startswith(usage) and res.stderr == "", res
    res = results["no-arguments"]  # Click's rule: no command prints the help (to stderr) and exits with 2
    assert res.returncode == 2 and "Usage: elmsearch" in res.stderr and "Traceback" not in res.stderr


def test_verbose_shows_the_traceback_of_an_unexpected_error(results):
    res = results["verbose-traceback"]
    assert res.returncode == 1
    assert "Traceback (most recent call last)" in res.stderr
    assert res.stderr.rstrip().splitlines()[-1].startswith("NotADirectoryError")


def test_serve_on_a_busy_port_is_one_line(workspace):
    """A port another program holds: one error line, printed before the models load, and no 'serving' claim."""
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        port = holder.getsockname()[1]
        res = _run(["serve", "--db", "idx", "--port", str(port)], workspace["dir"])
    finally:
        holder.close()
    assert res.returncode == RUNTIME, res
    assert res.stdout == "" and res.stderr.splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use (another server?); choose one with --port"], res

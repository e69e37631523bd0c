"""No file stops, freezes or lies to a run: odd names, special files, links out of the archive,
BrainVision data files elsewhere, oversized reports, data past the header's records, empty archives."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fuzz_corpus import layout, synthetic_edf

from elmsearch.archive.discovery import (
    MAX_REPORT_BYTES,
    ArchiveEntry,
    Walk,
    discover,
    display_path,
    load_report_text,
    not_read_reason,
    path_to_text,
    text_to_path,
)
from elmsearch.archive.tuh import parse_recording_path
from elmsearch.errors import CorruptFileError, ReportError

REPO = Path(__file__).resolve().parents[1]
CAFE = b"caf\xe9.edf"  # Latin-1 bytes: not UTF-8


def with_extra_records(raw: bytes) -> bytes:
    """The EDF ``raw`` with every data record appended again (the header still counts the first ones)."""
    return raw + raw[layout(raw).header_bytes :]


def entry_for(path: Path, root: Path) -> ArchiveEntry:
    return ArchiveEntry(path, parse_recording_path(path.relative_to(root).parts))


# ---- 1a: names in any bytes -----------------------------------------------------------------
@pytest.mark.parametrize("raw", [b"/a/caf\xe9.edf", b"/a/\xff\xfe\\x41.edf", "/a/é\uf7e9 王.edf".encode(),
                                 b"/a/plain.edf", b"/a/Pr\xc3\xbcfung.edf", b"/a/\xed\xa0\x80.edf"])
def test_path_text_round_trip(raw):
    path = os.fsdecode(raw)
    text = path_to_text(path)
    text.encode("utf-8")  # storable in any database
    assert os.fsencode(text_to_path(text)) == raw
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        assert "\\x" in display_path(path) and display_path(text) == display_path(path)
    else:
        if not any(0xF780 <= ord(c) <= 0xF7FF for c in raw.decode("utf-8")):
            assert text == raw.decode("utf-8")  # valid names stored exactly as before


# ---- 1b: special files never opened -----------------------------------------------------------
def test_discovery_skips_special_files_and_folders_named_like_recordings(tmp_path):
    root = tmp_path / "a"
    root.mkdir()
    (root / "good.edf").write_bytes(synthetic_edf(seed=1))
    os.mkfifo(root / "pipe.edf")
    (root / "folder.bdf").mkdir()
    (root / "folder.bdf" / "inside.edf").write_bytes(synthetic_edf(seed=2))
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "s.edf"))
    except OSError:  # a path too long for a socket address
        sock.close()
        sock = None
    try:
        walk = Walk()
        found = {e.path.name for e in discover(root, walk=walk)}
    finally:
        if sock is not None:
            sock.close()
    assert found == {"good.edf", "inside.edf"}
    reasons = {Path(s["path"]).name: s["reason"] for s in walk.skipped}
    assert "FIFO" in reasons["pipe.edf"]
    assert "folder" in reasons["folder.bdf"]
    if sock is not None:
        assert "socket" in reasons["s.edf"]


def _returns_within(fn, seconds: float):
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    return out["value"]


def test_prepare_and_inspect_never_open_a_fifo(tmp_path):
    from elmsearch.errors import UnsupportedFileError
    from elmsearch.io.windowed import read_recording
    from elmsearch.signal.preprocessing import PreprocessingParams
    from indexer.pipeline import prepare

    os.mkfifo(tmp_path / "pipe.edf")
    p = _returns_within(lambda: prepare(entry_for(tmp_path / "pipe.edf", tmp_path), PreprocessingParams(), 5.0), 20)
    assert "FIFO" in p.error and p.content_hash is None

    def read():
        try:
            read_recording(tmp_path / "pipe.edf")
        except UnsupportedFileError as err:
            return err.reason

    assert "FIFO" in _returns_within(read, 20)


def test_after_a_worker_gives_up_the_main_process_only_stats(tmp_path, monkeypatch):
    import indexer.pipeline as pipeline

    f = tmp_path / "slow.edf"
    f.write_bytes(synthetic_edf(seed=3))

    def no_reading(*args, **kwargs):
        raise AssertionError("the main process read a file its worker gave up on")

    monkeypatch.setattr(pipeline, "file_hash", no_reading)
    st = f.stat()
    assert pipeline._stat(f) == (st.st_size, st.st_mtime, None)
    assert pipeline._stat(tmp_path / "gone.edf") == (0, 0.0, None)


# ---- 2: data records past the header's --------------------------------------------------------------
@pytest.mark.parametrize("reader", ["fast", "mne"])
def test_extra_records_are_cut_to_the_header(tmp_path, monkeypatch, reader, caplog):
    from elmsearch.io import source
    from elmsearch.io.recording import make_windows
    from elmsearch.io.windowed import WindowedRecording, read_recording

    raw = synthetic_edf(seed=4, duration=20)
    f = tmp_path / "extra.edf"
    f.write_bytes(with_extra_records(raw))
    if reader == "mne":
        monkeypatch.setattr(source, "open_edf_reader", lambda *a, **k: None)
    rec = read_recording(f)
    assert rec.meta.duration == 20.0
    assert rec.duration == pytest.approx(rec.meta.duration)
    assert len(make_windows(rec, 5.0)) == 4
    span = WindowedRecording(f)
    assert span.n_times / span.sfreq == pytest.approx(rec.meta.duration)
    assert "past the" in caplog.text


# ---- 3: nothing outside the archive enters it ------------------------------------------------------
def test_links_out_of_the_archive_are_refused_unless_followed(tmp_path):
    root, outside = tmp_path / "archive", tmp_path / "outside"
    (root / "p1").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET shadow contents\n")
    (outside / "other.edf").write_bytes(synthetic_edf(seed=5))
    (outside / "folder").mkdir()
    (outside / "folder" / "deep.edf").write_bytes(synthetic_edf(seed=6))
    (root / "p1" / "rec.edf").write_bytes(synthetic_edf(seed=7))
    (root / "p1" / "rec.txt").symlink_to(outside / "secret.txt")
    (root / "link.edf").symlink_to(outside / "other.edf")
    (root / "linked_folder").symlink_to(outside / "folder")
    (root / "inside_alias.edf").symlink_to("p1/rec.edf")  # a link that stays inside is fine

    walk = Walk()
    entries = {e.path.name: e for e in discover(root, walk=walk)}
    assert set(entries) == {"rec.edf", "inside_alias.edf"}
    skipped = {Path(s["path"]).name: s["reason"] for s in walk.skipped}
    assert "outside the archive" in skipped["link.edf"] and "--follow-outside" in skipped["link.edf"]
    assert "outside the archive" in skipped["linked_folder"]
    with pytest.raises(ReportError, match="outside the archive"):
        load_report_text(entries["rec.edf"])

    followed = {e.path.name: e for e in discover(root, follow_outside=True)}
    assert set(followed) == {"rec.edf", "inside_alias.edf", "link.edf", "deep.edf"}
    assert "SECRET" in load_report_text(followed["rec.edf"])


def _vhdr(data_file: str, marker_file: str = "rec.vmrk") -> str:
    return ("Brain Vision Data Exchange Header File Version 1.0\n\n[Common Infos]\nCodepage=UTF-8\n"
            f"DataFile={data_file}\nMarkerFile={marker_file}\nDataFormat=BINARY\nDataOrientation=MULTIPLEXED\n"
            "NumberOfChannels=1\nSamplingInterval=4000\n\n[Binary Infos]\nBinaryFormat=INT_16\n\n"
            "[Channel Infos]\nCh1=Fp1,,0.1,µV\n")


@pytest.mark.parametrize("data_file,marker_file", [("../p1/rec.eeg", "rec.vmrk"), ("{secret}", "rec.vmrk"),
                                                   ("rec.eeg", "../elsewhere.vmrk"), ("sub/rec.eeg", "rec.vmrk")])
def test_brainvision_data_file_must_be_beside_its_header(tmp_path, monkeypatch, data_file, marker_file):
    import mne

    from elmsearch.io.header import read_header
    from indexer.scan import scan_archive

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 64)
    root = tmp_path / "archive" / "p2"
    root.mkdir(parents=True)
    vhdr = root / "rec.vhdr"
    vhdr.write_text(_vhdr(data_file.format(secret=secret), marker_file))

    def never(*args, **kwargs):
        raise AssertionError("MNE was asked to read a BrainVision file whose data file is elsewhere")

    monkeypatch.setattr(mne.io, "read_raw_brainvision", never)
    with pytest.raises(CorruptFileError, match="header's own folder"):
        read_header(vhdr)
    for follow in (False, True):
        summary = scan_archive(root.parent, n_jobs=0, follow_outside=follow)
        assert [i.ok for i in summary.items] == [False]
        assert "header's own folder" in summary.items[0].error


def test_brainvision_data_file_linked_out_of_the_archive(tmp_path):
    root, outside = tmp_path / "archive", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "rec.eeg").write_bytes(b"\x00" * 64)
    (root / "rec.vhdr").write_text(_vhdr("rec.eeg"))
    (root / "rec.eeg").symlink_to(outside / "rec.eeg")
    walk = Walk()
    assert discover(root, walk=walk) == []
    assert "outside the archive" in walk.skipped[0]["reason"] and "DataFile" in walk.skipped[0]["reason"]
    assert [e.path.name for e in discover(root, follow_outside=True)] == ["rec.vhdr"]


def test_oversized_report_is_refused_and_the_recording_still_read(tmp_path):
    from indexer.scan import scan_archive

    root = tmp_path / "archive"
    root.mkdir()
    (root / "rec.edf").write_bytes(synthetic_edf(seed=8))
    line = "Findings: normal background activity without epileptiform discharges.\n"
    (root / "rec.txt").write_text(line * (int(1.5 * MAX_REPORT_BYTES) // len(line)))
    item = scan_archive(root, n_jobs=0).items[0]
    assert item.ok and item.n_windows > 0
    size_mb = (root / "rec.txt").stat().st_size / 2**20
    assert item.report_error == f"report file is {size_mb:.1f} MB, over the 1 MB limit"


# ---- 6: empty archives and files that are not EDF --------------------------------------------------
def test_empty_archive_warns_and_index_fails(tmp_path, restore_logging):
    from typer.testing import CliRunner

    from cli.app import app

    empty = tmp_path / "empty"
    (empty / "notes").mkdir(parents=True)
    (empty / "notes" / "readme.txt").write_text("nothing here\n")
    runner = CliRunner()
    res = runner.invoke(app, ["index", str(empty), "--db", str(tmp_path / "idx"), "--model", str(tmp_path)])
    assert res.exit_code == 1, res.output
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert lines == [f"warning: {empty}: no recordings found (looked for .edf, .bdf, .vhdr, .set)"]
    assert not (tmp_path / "idx").exists()
    res = runner.invoke(app, ["scan", str(empty), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["recordings"] == 0
    assert "no recordings found" in res.stderr


def test_inspect_gives_scan_reason_for_a_fif(tmp_path, restore_logging):
    from typer.testing import CliRunner

    from cli.app import app
    from indexer.scan import scan_archive

    fif = tmp_path / "archive" / "rec_raw.fif"
    fif.parent.mkdir()
    fif.write_bytes(b"\x00\x00\x00\x64" + bytes(200))
    scanned = scan_archive(fif.parent, n_jobs=0).skipped
    assert [s["reason"] for s in scanned] == [not_read_reason(fif)]
    res = CliRunner().invoke(app, ["inspect", str(fif)])
    assert res.exit_code == 1
    assert res.stderr.strip() == f"error: {fif}: {scanned[0]['reason']}"


# ---- the whole run: elmsearch index in a subprocess, bounded -------------------------------------


def run_cli(args: list[str], bound_s: float) -> tuple[subprocess.CompletedProcess | None, float]:
    """Run ``elmsearch ARGS`` in its own process group; a run past ``bound_s`` is killed (None)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})
    try:
        out, err = proc.communicate(timeout=bound_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, time.perf_counter() - t0
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode()), \
        time.perf_counter() - t0


def test_index_odd_archive_finishes_with_every_good_file(tmp_path, model_dir):
    """Good files beside a non-UTF-8 name, a FIFO, a folder named x.edf, links out, a huge report, extra data."""
    from sqlalchemy import select

    from db import Recording, Report, Status, Window
    from indexer.store import IndexStore

    root, outside = tmp_path / "archive", tmp_path / "outside"
    (root / "p1").mkdir(parents=True)
    (root / "p2").mkdir()
    outside.mkdir()
    good = {
        root / "good_a.edf": synthetic_edf(seed=11),
        root / "good_b.edf": synthetic_edf(seed=12),
        Path(os.fsdecode(os.fsencode(root) + b"/" + CAFE)): synthetic_edf(seed=13),
        root / "extra.edf": with_extra_records(synthetic_edf(seed=14, duration=20)),
        root / "p1" / "rec.edf": synthetic_edf(seed=15),
        root / "p2" / "rec.edf": synthetic_edf(seed=16),
    }
    for path, raw in good.items():
        path.write_bytes(raw)
    os.mkfifo(root / "pipe.edf")
    (root / "folder.edf").mkdir()
    (outside / "shadow").write_text("SECRET root:x:0:0\n")
    (outside / "elsewhere.edf").write_bytes(synthetic_edf(seed=17))
    (root / "p1" / "rec.txt").symlink_to(outside / "shadow")
    (root / "p2" / "rec.txt").write_text("Findings: normal.\n" * (MAX_REPORT_BYTES // 18 + 10))
    (root / "link_out.edf").symlink_to(outside / "elsewhere.edf")

    timeout_s, bound_s = 20, 400
    db = tmp_path / "idx"
    res, seconds = run_cli(["-q", "index", str(root), "--db", str(db), "--model", str(model_dir),
                            "--timeout", str(timeout_s), "-j", "1", "--json"], bound_s)
    assert res is not None, f"elmsearch index still running after {bound_s} s"
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    summary = json.loads(res.stdout)
    skipped = {Path(s["path"]).name: s["reason"] for s in summary["skipped_files"]}
    assert "FIFO" in skipped["pipe.edf"]
    assert "folder" in skipped["folder.edf"]
    assert "outside the archive" in skipped["link_out.edf"]
    with IndexStore.open(db).session() as s:
        rows = {os.fsencode(text_to_path(r.path)): r for r in s.scalars(select(Recording))}
        for path in good:
            rec = rows[os.fsencode(os.path.abspath(path))]
            assert rec.status == Status.INDEXED, (path, rec.error)
        assert set(rows) == {os.fsencode(os.path.abspath(p)) for p in good}
        cafe = rows[os.fsencode(root) + b"/" + CAFE]
        assert cafe.path == path_to_text(os.fsdecode(os.fsencode(root) + b"/" + CAFE))
        extra = rows[os.fsencode(root / "extra.edf")]
        ends = [w.end_s for w in s.scalars(select(Window).where(Window.recording_id == extra.id))]
        assert extra.duration == 20.0 and ends and max(ends) <= extra.duration
        assert rows[os.fsencode(root / "p1" / "rec.edf")].report_id is None
        assert rows[os.fsencode(root / "p2" / "rec.edf")].report_id is None
        assert not any("SECRET" in (r.text or "") for r in s.scalars(select(Report)))
    assert np.isfinite(seconds)

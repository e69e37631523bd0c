"""Tests of elmsearch.archive.discovery (discovery) and indexer.scan (scan that never stops on bad files)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from elmsearch.archive.discovery import discover, iter_eeg_files, load_report_text
from elmsearch.errors import ReportError
from elmsearch.signal.channels import STANDARD_1020, tuh_channel_name
from indexer.scan import scan_archive

TUH_SESSION = Path("edf/000/aaaaaaab/s001_2015_03_04")
TUH_AR = TUH_SESSION / "01_tcp_ar/aaaaaaab_s001_t000.edf"
TUH_LE = TUH_SESSION / "02_tcp_le/aaaaaaab_s001_t000.edf"
TUH_REPORT = TUH_SESSION / "aaaaaaab_s001.txt"
TUAB = Path("tuab/edf/train/normal/01_tcp_ar/aaaaaaac_s002_t001.edf")
BIDS = Path("bids/sub-01/ses-02/eeg/sub-01_ses-02_task-rest_run-1_eeg.edf")
FLAT = Path("flat/recording1.edf")
FLAT_REPORT = Path("flat/recording1.txt")

REPORT = (
    "CLINICAL HISTORY: 53 year old woman with new onset seizures.\n"
    "DESCRIPTION OF THE RECORD: A 10 Hz posterior dominant rhythm, reactive to eye opening.\n"
    "IMPRESSION: Normal EEG.\n"
)
LE_LABELS = [tuh_channel_name(e, "LE") for e in STANDARD_1020] + ["EEG EKG1-LE"]


@pytest.fixture
def archive(tmp_path, write_edf) -> Path:
    """A mixed archive: TUH v2 session in two montages with a report, TUAB, BIDS, flat."""
    write_edf(TUH_AR, duration=20, seed=1)
    write_edf(TUH_LE, labels=LE_LABELS, duration=20, seed=2)
    (tmp_path / TUH_REPORT).write_text(REPORT)
    write_edf(TUAB, duration=20, seed=3, patient="aaaaaaac M 01-JAN-1950 aaaaaaac Age:65")
    write_edf(BIDS, labels=[e for e in STANDARD_1020], duration=20, seed=4,
              patient="X X X X", startdate=dt.date(2020, 6, 1))
    write_edf(FLAT, duration=20, seed=5)
    (tmp_path / FLAT_REPORT).write_text("IMPRESSION: Normal EEG.\n")
    (tmp_path / "flat" / "notes.txt").write_text("not a report of anything")
    return tmp_path


def _by_path(entries, root) -> dict[Path, object]:
    return {e.path.relative_to(root): e for e in entries}


def test_discover_mixed_archive(archive):
    entries = discover(archive)
    assert [e.path for e in entries] == sorted(e.path for e in entries)
    found = _by_path(entries, archive)
    assert set(found) == {TUH_AR, TUH_LE, TUAB, BIDS, FLAT}

    ar, le = found[TUH_AR], found[TUH_LE]
    assert ar.key == ("aaaaaaab", "s001", "01_tcp_ar", "t000")
    assert le.key == ("aaaaaaab", "s001", "02_tcp_le", "t000")
    assert ar.info.layout == le.info.layout == "tuh"
    assert ar.info.session_date == dt.date(2015, 3, 4)
    # one session report serves both montages
    assert ar.report_path == le.report_path == archive / TUH_REPORT

    tuab = found[TUAB]
    assert tuab.key == ("aaaaaaac", "s002", "01_tcp_ar", "t001")
    assert (tuab.info.layout, tuab.info.split, tuab.info.label) == ("tuab", "train", "normal")
    assert tuab.report_path is None

    bids = found[BIDS]
    assert bids.key == ("01", "02", "", "task-rest_run-1")
    assert bids.info.layout == "bids"
    assert bids.report_path is None

    flat = found[FLAT]
    assert flat.key == ("recording1", "", "", "")
    assert flat.info.layout == "flat"
    assert flat.report_path == archive / FLAT_REPORT
    assert all(e.report_text is None for e in entries)

    assert load_report_text(ar) == REPORT
    assert load_report_text(tuab) is None


def test_discover_single_file_keeps_the_key(archive):
    # A file discovered on its own must get the same key (and report) as inside its archive,
    # or the same recording is indexed twice under two keys.
    entries = discover(archive / TUH_AR)
    assert len(entries) == 1
    assert entries[0].path == archive / TUH_AR
    assert entries[0].key == ("aaaaaaab", "s001", "01_tcp_ar", "t000")
    assert entries[0].report_path == archive / TUH_REPORT


def test_discover_single_flat_file(archive):
    entries = discover(archive / FLAT)
    assert [(e.path, e.key, e.report_path) for e in entries] == [
        (archive / FLAT, ("recording1", "", "", ""), archive / FLAT_REPORT)]


def test_discover_missing_root(archive):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        discover(archive / "nowhere")


def test_iter_eeg_files_skips_hidden_and_other_suffixes(archive):
    (archive / ".hidden").mkdir()
    (archive / ".hidden" / "x.edf").write_bytes(b"")
    (archive / "flat" / ".y.edf").write_bytes(b"")
    (archive / "flat" / "z.EDF").write_bytes(b"")
    (archive / "flat" / "z.csv").write_text("a,b")
    names = [p.relative_to(archive) for p in iter_eeg_files(archive)]
    assert Path(".hidden/x.edf") not in names
    assert Path("flat/.y.edf") not in names
    assert Path("flat/z.EDF") in names
    assert len(names) == 6


def test_reports_side_file(archive, tmp_path):
    side = tmp_path / "reports.jsonl"
    lines = [
        {"subject": "aaaaaaab", "session": "s001", "report": "IMPRESSION: From the side file."},
        {"subject": "01", "session": "02", "report": "IMPRESSION: BIDS report."},
        {"subject": "recording1", "session": "", "report": "IMPRESSION: Flat report."},
        {"subject": "zzzzzzzz", "session": "s009", "report": "IMPRESSION: Nobody's."},
    ]
    side.write_text("\n".join(json.dumps(obj) for obj in lines) + "\n")
    found = _by_path(discover(archive, reports=side), archive)
    for rel in (TUH_AR, TUH_LE):
        assert found[rel].report_text == "IMPRESSION: From the side file."
        assert found[rel].report_path is None  # the side file wins over the .txt
        assert load_report_text(found[rel]) == "IMPRESSION: From the side file."
    assert found[BIDS].report_text == "IMPRESSION: BIDS report."
    assert found[FLAT].report_text == "IMPRESSION: Flat report."
    assert found[TUAB].report_text is None


def test_missing_side_file_is_a_report_error(archive, tmp_path):
    with pytest.raises(ReportError):
        discover(archive, reports=tmp_path / "absent.jsonl")


def test_latin1_report_decodes(archive):
    text = "IMPRESSION: Normal EEG. Reviewed by Dr. Müller, café hours.\n"
    (archive / TUH_REPORT).write_bytes(text.encode("latin-1"))
    entry = _by_path(discover(archive), archive)[TUH_AR]
    assert load_report_text(entry) == text


def test_binary_report_is_a_report_error(archive):
    (archive / TUH_REPORT).write_bytes(b"\x00\x01\x02binary\x00")
    entry = _by_path(discover(archive), archive)[TUH_AR]
    with pytest.raises(ReportError) as info:
        load_report_text(entry)
    assert str(archive / TUH_REPORT) in str(info.value)


# ---- scan ----------------------------------------------------------------------------------------

CORRUPT = Path("bad/corrupt.edf")
TEXT = Path("bad/notes.edf")
SHORT = Path("bad/short.edf")


@pytest.fixture
def archive_with_bad_files(archive, write_edf) -> Path:
    corrupt = write_edf(CORRUPT, duration=10)
    corrupt.write_bytes(corrupt.read_bytes()[:-1000])
    (archive / TEXT).write_text("this is not an EDF file\n")
    write_edf(SHORT, duration=3)
    return archive


def _outcome(summary, root):
    return [
        (Path(i.path).relative_to(root), i.key, i.ok, i.error, i.n_windows, i.report_sections,
         i.sex, i.age)
        for i in summary.items
    ]


def test_scan_archive_keeps_going(archive_with_bad_files):
    root = archive_with_bad_files
    seen = []
    summary = scan_archive(root, n_jobs=1, on_item=seen.append)
    assert len(seen) == len(summary.items) == 8
    ok = {Path(i.path).relative_to(root): i for i in summary.ok}
    failed = {Path(i.path).relative_to(root): i for i in summary.failed}
    assert set(ok) == {TUH_AR, TUH_LE, TUAB, BIDS, FLAT}
    assert set(failed) == {CORRUPT, TEXT, SHORT}
    assert "truncated" in failed[CORRUPT].error
    assert "not an EDF/BDF file" in failed[TEXT].error
    assert "shorter than" in failed[SHORT].error
    for item in failed.values():
        assert "\n" not in item.error
        assert item.n_windows == 0

    for item in ok.values():
        assert item.n_windows == 4  # 20 s in 5 s windows
        assert item.duration == 20.0
        assert item.native_sfreq == 250.0
        assert item.error is None
    assert ok[TUH_AR].report_sections == ("CLINICAL HISTORY", "DESCRIPTION OF THE RECORD",
                                          "IMPRESSION")
    assert ok[TUH_LE].report_sections == ok[TUH_AR].report_sections
    assert ok[FLAT].report_sections == ("IMPRESSION",)
    assert ok[TUAB].report_sections == ()
    assert (ok[TUH_AR].sex, ok[TUH_AR].age) == ("F", 53.0)
    assert (ok[TUAB].sex, ok[TUAB].age) == ("M", 65.0)
    assert (ok[BIDS].sex, ok[BIDS].age) == (None, None)

    d = summary.to_dict()
    assert (d["recordings"], d["failed"], d["reports"], d["windows"]) == (5, 3, 3, 20)
    assert d["hours"] == pytest.approx(100 / 3600, abs=1e-4)
    assert {Path(f["path"]).relative_to(root) for f in d["failures"]} == {CORRUPT, TEXT, SHORT}
    assert d["report_failures"] == []
    json.dumps(d)


def test_scan_archive_parallel_gives_the_same_outcome(archive_with_bad_files):
    root = archive_with_bad_files
    serial = scan_archive(root, n_jobs=1)
    parallel = scan_archive(root, n_jobs=2)
    assert _outcome(parallel, root) == _outcome(serial, root)
    assert len(parallel.failed) == 3


def test_scan_archive_bad_report_does_not_stop_recording(archive):
    (archive / TUH_REPORT).write_bytes(b"\x00\x00\x00")
    summary = scan_archive(archive)
    item = next(i for i in summary.items if Path(i.path) == archive / TUH_AR)
    assert item.ok
    assert item.report_sections == ()
    assert "NUL" in item.report_error
    assert summary.to_dict()["report_failures"][0]["path"] == str(archive / TUH_AR)


def test_scan_archive_window_length(archive):
    summary = scan_archive(archive, window_seconds=10.0)
    assert [i.n_windows for i in summary.items] == [2] * 5
    summary = scan_archive(archive, window_seconds=30.0)
    assert summary.ok == []
    assert all("shorter than 30 s" in i.error for i in summary.failed)

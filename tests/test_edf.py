"""Tests of elmsearch.io.header: header validation gives typed, one-line errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest

from elmsearch.errors import (
    CorruptFileError,
    InputFileError,
    RecordingError,
    UnsupportedFileError,
)
from elmsearch.io.header import read_edf_header
from elmsearch.io.source import open_raw
from elmsearch.io.windowed import read_recording


def _patch(path, offset: int, text: str) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(text.encode("ascii"))


def _assert_one_line_naming(err: InputFileError, path) -> None:
    message = str(err)
    assert str(path) in message
    assert err.fname == str(path)
    assert "\n" not in message and "\r" not in message
    assert message == f"{path}: {err.reason}"


def test_valid_header(write_edf):
    path = write_edf(duration=12, sfreq=250)
    header = read_edf_header(path)
    assert header.kind == "EDF"
    assert header.n_records == 12
    assert header.record_duration == 1.0
    assert header.duration == 12.0
    assert len(header.labels) == 22
    assert header.labels[0] == "EEG FP1-REF"
    assert header.labels[-1] == "EEG EKG1-REF"
    assert header.samples_per_record == (250,) * 22
    assert header.sfreq_of(3) == 250.0
    assert header.patient == "aaaaaaab F 01-JAN-1961 aaaaaaab Age:53"
    assert header.recording.startswith("Startdate 04-MAR-2015")
    assert (header.startdate, header.starttime) == ("04.03.15", "10.20.30")


def test_text_file_named_edf(tmp_path):
    path = tmp_path / "notes.edf"
    path.write_text("This is not an EEG.\nJust some notes.\n")
    with pytest.raises(UnsupportedFileError, match="not an EDF/BDF file") as info:
        read_edf_header(path)
    _assert_one_line_naming(info.value, path)
    with pytest.raises(UnsupportedFileError) as info:
        read_recording(path)
    _assert_one_line_naming(info.value, path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.edf"
    path.write_bytes(b"")
    with pytest.raises(UnsupportedFileError, match="empty file") as info:
        read_edf_header(path)
    _assert_one_line_naming(info.value, path)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.edf"
    with pytest.raises(UnsupportedFileError, match="cannot open") as info:
        read_edf_header(path)
    _assert_one_line_naming(info.value, path)


def test_truncated_fixed_header(write_edf):
    path = write_edf(duration=5)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match="truncated header") as info:
        read_edf_header(path)
    _assert_one_line_naming(info.value, path)


def test_truncated_signal_headers(write_edf):
    path = write_edf(duration=5)
    path.write_bytes(path.read_bytes()[:256 + 300])
    with pytest.raises(CorruptFileError, match="truncated") as info:
        read_edf_header(path)
    _assert_one_line_naming(info.value, path)


@pytest.mark.parametrize("cut", [1, 500, 250 * 22 * 2 * 3])
def test_truncated_data(write_edf, cut):
    path = write_edf(duration=10)
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(CorruptFileError, match="truncated") as info:
        read_edf_header(path)
    _assert_one_line_naming(info.value, path)
    assert "10 data records" in info.value.reason
    with pytest.raises(CorruptFileError, match="truncated"):
        read_recording(path)


@pytest.mark.parametrize("lie", ["9999    ", "256     ", "-256    "])
def test_header_lies_about_its_length(write_edf, lie):
    path = write_edf(duration=5)
    _patch(path, 184, lie)
    with pytest.raises(CorruptFileError, match="header says") as info:
        read_edf_header(path)
    _assert_one_line_naming(info.value, path)


def test_unreadable_header_number(write_edf):
    path = write_edf(duration=5)
    _patch(path, 252, "ab  ")  # number of signals
    with pytest.raises(CorruptFileError, match=r"unreadable number of signals in the header \('ab'\)") as info:
        read_edf_header(path)
    _assert_one_line_naming(info.value, path)


def test_zero_record_duration(write_edf):
    path = write_edf(duration=5)
    _patch(path, 244, "0       ")
    with pytest.raises(CorruptFileError, match="record duration") as info:
        read_edf_header(path)
    _assert_one_line_naming(info.value, path)


def test_n_records_minus_one_is_computed_from_size(write_edf):
    path = write_edf(duration=12)
    original = read_recording(path)
    _patch(path, 236, "-1      ")
    header = read_edf_header(path)
    assert header.n_records == 12
    assert header.duration == 12.0
    rec = read_recording(path)
    np.testing.assert_array_equal(rec.data, original.data)


def test_n_records_minus_one_with_no_data(write_edf):
    path = write_edf(duration=5)
    header_bytes = 256 * 23
    path.write_bytes(path.read_bytes()[:header_bytes])
    _patch(path, 236, "-1      ")
    with pytest.raises(CorruptFileError, match="no data records") as info:
        read_edf_header(path)
    _assert_one_line_naming(info.value, path)


def test_bdf_magic_recognised(shared_data):
    path = shared_data / "mne_edf_cases" / "test.bdf"
    header = read_edf_header(path)
    assert header.kind == "BDF"
    assert header.n_records >= 1
    assert "Fp1" in header.labels
    raw = open_raw(path, header)
    assert raw.info["sfreq"] == header.sfreq_of(0)


def test_errors_are_recording_errors():
    for cls in (UnsupportedFileError, CorruptFileError):
        assert issubclass(cls, RecordingError)
        assert issubclass(cls, InputFileError)
    err = CorruptFileError("x.edf", "first line\nsecond   line")
    assert str(err) == "x.edf: first line second line"

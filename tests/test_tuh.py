"""Tests of elmsearch.archive.tuh: patient/start header fields and archive paths."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from elmsearch.archive.tuh import (
    PatientInfo,
    date_is_suspect,
    parse_patient_field,
    parse_recording_path,
    parse_start,
)

# ---- patient field ---------------------------------------------------------------------------


def test_parse_patient_field_tuh():
    info = parse_patient_field("00009932 F 01-JAN-1961 00009932 Age:53")
    assert info == PatientInfo(code="00009932", sex="F", birthdate=dt.date(1961, 1, 1), age=53.0)


def test_parse_patient_field_male_and_padding():
    info = parse_patient_field("aaaaaaab M 15-jul-1970 aaaaaaab Age:44".ljust(80))
    assert (info.code, info.sex, info.birthdate, info.age) == (
        "aaaaaaab", "M", dt.date(1970, 7, 15), 44.0)


def test_parse_patient_field_fractional_age():
    info = parse_patient_field("aaaaaaac M 01-JAN-2014 aaaaaaac Age:0.5")
    assert info.age == pytest.approx(0.5)
    assert info.sex == "M"


def test_parse_patient_field_anonymised():
    assert parse_patient_field("X X X X") == PatientInfo(None, None, None, None)


def test_parse_patient_field_code_only():
    info = parse_patient_field("00000123")
    assert info == PatientInfo("00000123", None, None, None)


def test_parse_patient_field_bad_birthdate_is_none():
    info = parse_patient_field("00000123 F 31-FEB-1961 x Age:40")
    assert info.sex == "F"
    assert info.birthdate is None
    assert info.age == 40.0


GARBAGE = [
    "", " " * 80, "X", "M", "F F F F", "Age:", "Age:abc", "- - - -", "\x00\x01\x02",
    "é ü ß 01-XXX-1961", "01-JAN-1961", "00009932 Q 01-JAN-1961", "00009932 F 99-ZZZ-0000",
    "00009932 F 00-JAN-1961", "00009932 F 01-JAN-99999 Age:1e9", "Age:53 Age:54",
]  # fmt: skip


@pytest.mark.parametrize("field", GARBAGE)
def test_parse_patient_field_never_raises(field):
    info = parse_patient_field(field)
    assert isinstance(info, PatientInfo)
    assert info.sex in {None, "M", "F"}


def test_parse_patient_field_random_never_raises():
    rng = random.Random(0)
    alphabet = "0123456789 -:.ABCDEFGJMNOPRSUXYZa\t\xe9"
    for _ in range(2000):
        field = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        info = parse_patient_field(field)
        assert info.sex in {None, "M", "F"}
        assert info.age is None or info.age >= 0


# ---- start date --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("startdate", "year"),
    [("04.03.85", 1985), ("04.03.99", 1999), ("04.03.00", 2000), ("04.03.15", 2015),
     ("04.03.84", 2084)],
)
def test_parse_start_two_digit_years(startdate, year):
    assert parse_start(startdate, "10.20.30") == dt.datetime(year, 3, 4, 10, 20, 30)


def test_parse_start_edfplus_startdate_wins():
    start = parse_start("01.01.85", "10.20.30", "Startdate 04-MAR-2015 X X X")
    assert start == dt.datetime(2015, 3, 4, 10, 20, 30)


def test_parse_start_anonymised_edfplus_falls_back_to_header():
    assert parse_start("04.03.15", "00.00.00", "Startdate X X X X") == dt.datetime(2015, 3, 4)


def test_parse_start_bad_time_gives_midnight_and_bad_date_none():
    assert parse_start("04.03.15", "xx.yy.zz") == dt.datetime(2015, 3, 4)
    assert parse_start("garbage", "10.20.30") is None
    assert parse_start("31.02.15", "10.20.30") is None


@pytest.mark.parametrize(
    ("when", "suspect"),
    [
        (dt.date(1899, 12, 30), True),
        (dt.datetime(1899, 12, 30, 0, 0), True),
        (dt.date(2000, 1, 1), True),
        (dt.datetime(2000, 1, 1, 12, 0), True),
        (dt.date(2000, 1, 2), False),
        (dt.date(2015, 3, 4), False),
        (dt.date(1949, 12, 31), True),
        (None, False),
    ],
)
def test_date_is_suspect(when, suspect):
    assert date_is_suspect(when, today=dt.date(2024, 6, 1)) is suspect


def test_date_is_suspect_future():
    today = dt.date.today()
    assert date_is_suspect(today + dt.timedelta(days=1))
    assert not date_is_suspect(today)
    assert date_is_suspect(dt.date(2030, 1, 1), today=dt.date(2024, 6, 1))


# ---- archive paths -----------------------------------------------------------------------------


def test_parse_recording_path_tuh_v2():
    info = parse_recording_path(
        ("edf", "000", "aaaaaaab", "s001_2015_03_04", "01_tcp_ar", "aaaaaaab_s001_t000.edf"))
    assert info.key == ("aaaaaaab", "s001", "01_tcp_ar", "t000")
    assert info.layout == "tuh"
    assert info.session_date == dt.date(2015, 3, 4)
    assert info.split is None and info.label is None


def test_parse_recording_path_tuh_year_only_session():
    info = parse_recording_path(
        ("edf", "000", "aaaaaaab", "s002_2015", "02_tcp_le", "aaaaaaab_s002_t001.edf"))
    assert info.key == ("aaaaaaab", "s002", "02_tcp_le", "t001")
    assert info.layout == "tuh"
    assert info.session_date is None


def test_parse_recording_path_session_date_only_from_matching_session():
    info = parse_recording_path(
        ("edf", "000", "aaaaaaab", "s001_2015_03_04", "01_tcp_ar", "aaaaaaab_s002_t000.edf"))
    assert info.session == "s002"
    assert info.session_date is None


def test_parse_recording_path_tuab():
    info = parse_recording_path(
        ("edf", "train", "normal", "01_tcp_ar", "aaaaaaab_s001_t000.edf"))
    assert info.layout == "tuab"
    assert (info.split, info.label) == ("train", "normal")
    assert info.key == ("aaaaaaab", "s001", "01_tcp_ar", "t000")

    info = parse_recording_path(
        ("edf", "eval", "abnormal", "01_tcp_ar", "aaaaaaac_s003_t002.edf"))
    assert (info.layout, info.split, info.label) == ("tuab", "eval", "abnormal")


def test_parse_recording_path_bids():
    info = parse_recording_path(
        ("sub-01", "ses-02", "eeg", "sub-01_ses-02_task-rest_run-1_eeg.edf"))
    assert info.layout == "bids"
    assert info.key == ("01", "02", "", "task-rest_run-1")


def test_parse_recording_path_bids_without_session():
    info = parse_recording_path(("sub-07", "eeg", "sub-07_task-oddball_eeg.bdf"))
    assert info.layout == "bids"
    assert info.key == ("07", "", "", "task-oddball")


def test_parse_recording_path_flat():
    info = parse_recording_path(("Subject00_1.edf",))
    assert info.layout == "flat"
    assert info.key == ("Subject00_1", "", "", "")
    assert info.session_date is None


@pytest.mark.parametrize("field", ["John Smith", "Smith", "Jane Q Doe born 1961", "MUSTERMANN^ERIKA"])
def test_a_free_text_patient_field_is_never_a_patient_code(field):
    # a non-EDF+ patient field usually holds the patient's name: never used as an id
    assert parse_patient_field(field).code is None


def test_edf_plus_patient_code_is_kept_and_the_name_is_not():
    info = parse_patient_field("MCH-0234567 F 02-MAY-1951 Haagse_Harry")
    assert info.code == "MCH-0234567" and "Harry" not in repr(info)

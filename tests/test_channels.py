"""Tests of elmsearch.signal.channels: electrode label spellings and the TCP montage."""

from __future__ import annotations

import pytest

from elmsearch.signal.channels import (
    STANDARD_1020,
    TCP_CH_NAMES,
    TCP_ELECTRODES,
    TCP_PAIRS,
    map_electrodes,
    normalize_channel_name,
    tuh_channel_name,
)

# ELM's 20 bipolar channels, in ELM's order, written out independently of the library.
ELM_TCP = [
    "Fp1-F7", "F7-T3", "T3-T5", "T5-O1",
    "Fp2-F8", "F8-T4", "T4-T6", "T6-O2",
    "T3-C3", "C3-Cz", "Cz-C4", "C4-T4",
    "Fp1-F3", "F3-C3", "C3-P3", "P3-O1",
    "Fp2-F4", "F4-C4", "C4-P4", "P4-O2",
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("EEG FP1-REF", "Fp1"),
        ("EEG FP1-LE", "Fp1"),
        ("EEG Fp1", "Fp1"),
        ("Fp1", "Fp1"),
        ("  eeg fp1-ref ", "Fp1"),
        ("EEG CZ-REF", "Cz"),
        ("EEG T7-REF", "T3"),
        ("T8", "T4"),
        ("EEG P7-LE", "T5"),
        ("P8", "T6"),
        ("EEG A2-A1", "A2"),
        ("EEG EKG1-REF", None),
        ("EDF Annotations", None),
        ("Fp1-F7", None),  # a bipolar derivation is not a referential electrode
        ("EEG F1-Ref", None),  # 10-10 electrode, not in the 10-20 set
        ("PHOTIC-REF", None),
        ("", None),
    ],
)
def test_normalize_channel_name(label, expected):
    assert normalize_channel_name(label) == expected


@pytest.mark.parametrize("electrode", STANDARD_1020)
@pytest.mark.parametrize("reference", ["REF", "LE"])
def test_tuh_spelling_round_trips(electrode, reference):
    label = tuh_channel_name(electrode, reference)
    assert label == f"EEG {electrode.upper()}-{reference}"
    assert normalize_channel_name(label) == electrode


def test_tcp_ch_names_are_elms_twenty_in_order():
    assert list(TCP_CH_NAMES) == ELM_TCP
    assert [f"{a}-{b}" for a, b in TCP_PAIRS] == ELM_TCP


def test_tcp_electrodes_are_the_17_the_montage_uses():
    used = {e for name in ELM_TCP for e in name.split("-")}
    assert set(TCP_ELECTRODES) == used
    assert len(TCP_ELECTRODES) == 17 == len(set(TCP_ELECTRODES))
    assert not {"Fz", "Pz", "A1", "A2"} & set(TCP_ELECTRODES)


def test_map_electrodes_reports_duplicates_and_keeps_first():
    labels = ["EEG FP1-REF", "EEG EKG1-REF", "EEG FP1-LE", "Fp2", "EEG T7-REF", "EEG T3-REF"]
    found, duplicates = map_electrodes(labels)
    assert found == {"Fp1": 0, "Fp2": 3, "T3": 4}
    assert duplicates == {
        "Fp1": ["EEG FP1-REF", "EEG FP1-LE"],
        "T3": ["EEG T7-REF", "EEG T3-REF"],
    }


def test_map_electrodes_without_duplicates():
    found, duplicates = map_electrodes(["Fp1", "EDF Annotations", "Cz"])
    assert found == {"Fp1": 0, "Cz": 2}
    assert duplicates == {}

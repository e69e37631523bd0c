"""Events: EDF+ annotation signals (EDF+C and EDF+D), BrainVision/EEGLAB through MNE, BIDS sidecars, TUH label files."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest

from elmsearch.archive.tuh_labels import (
    LabelFileError,
    meaning_of,
    parse_lbl,
    parse_rec,
    parse_tse,
    parse_tuh_csv,
)
from elmsearch.io.events import parse_bids_events, parse_tal, read_events, read_sidecar
from elmsearch.io.header import read_header

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
EEGMMIDB_LABELS = ["Fc5.", "Fc3.", "Fc1.", "Fcz.", "Fp1.", "Fpz.", "Fp2.", "F7..", "T9..", "Oz.."]


def write_edf_plus(path: Path, labels, onsets, durations, descriptions, sfreq=160.0, seconds=30.0) -> Path:
    """An EDF+C file written by MNE's exporter (edfio), with annotations."""
    info = mne.create_info(list(labels), sfreq, "eeg")
    data = np.random.default_rng(0).standard_normal((len(labels), int(sfreq * seconds))) * 2e-5
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_annotations(mne.Annotations(onsets, durations, descriptions))
    mne.export.export_raw(path, raw, fmt="edf", verbose="error")
    return path


def test_tal_parser_reads_the_specification_examples():
    # EDF+ specification 2.2.4: a time-keeping TAL, then annotations with and without duration
    data = b"+0\x14\x14\x00+180\x14Lights off\x14Close door\x14\x00+1800.2\x1525.5\x14Apnea\x14\x00\x00\x00"
    tals = parse_tal(data)
    assert tals == [(0.0, 0.0, []), (180.0, 0.0, ["Lights off", "Close door"]), (1800.2, 25.5, ["Apnea"])]
    assert parse_tal(b"\x00" * 10) == []
    assert parse_tal("+3.5\x14Augenöffnung\x14\x00".encode()) == [(3.5, 0.0, ["Augenöffnung"])]
    assert parse_tal("+3.5\x14Augenöffnung\x14\x00".encode("latin-1"))[0][2] == ["Augenöffnung"]
    with pytest.raises(ValueError, match="time stamp"):
        parse_tal(b"+1x2\x14oops\x14\x00")


def test_eegmmidb_style_file_with_dot_padded_labels(tmp_path):
    """PhysioNet EEGMMIDB: dot-padded labels, T0/T1/T2 events at 0, 4.2, 8.3 s ... (as in S001R03.edf)."""
    onsets = [round(4.15 * i, 2) for i in range(30)]
    descs = [("T0", "T2", "T0", "T1")[i % 4] for i in range(30)]
    f = write_edf_plus(tmp_path / "S001R03.edf", EEGMMIDB_LABELS, onsets, [4.1] * 30, descs, seconds=130)
    got = read_events(f)
    assert got.warnings == []
    assert len(got.events) == 30
    assert [e.label for e in got.events[:4]] == ["T0", "T2", "T0", "T1"]
    np.testing.assert_allclose([e.onset for e in got.events], onsets, atol=1e-3)
    assert all(e.source == "edf+" and e.channels == () and e.duration == pytest.approx(4.1) for e in got.events)
    # the same as MNE's own reader
    ann = mne.read_annotations(f)
    np.testing.assert_allclose([e.onset for e in got.events], ann.onset, atol=1e-6)
    assert [e.label for e in got.events] == list(ann.description)


def _edf_plus_d(path: Path, record_starts: list[float], events: list[tuple[int, float, str]]) -> Path:
    """A minimal EDF+D file: one 1 s record of 10 samples of one signal + an annotation signal per record."""
    n_ann = 30  # 60 bytes of TALs per record
    labels = ["EEG Fp1", "EDF Annotations"]
    spr = [10, n_ann]

    def field(v, n):
        return str(v).ljust(n)[:n].encode("latin-1")

    head = (field("0", 8) + field("X X X X", 80) + field("Startdate 01-JAN-2020 X X X", 80) + field("01.01.20", 8)
            + field("00.00.00", 8) + field(256 * 3, 8) + field("EDF+D", 44) + field(len(record_starts), 8)
            + field(1, 8) + field(2, 4))
    for width, values in ((16, labels), (80, ["", ""]), (8, ["uV", ""]), (8, [-100, -1]), (8, [100, 1]),
                          (8, [-32768, -32768]), (8, [32767, 32767]), (80, ["", ""]), (8, spr), (32, ["", ""])):
        head += b"".join(field(v, width) for v in values)
    body = b""
    for r, start in enumerate(record_starts):
        body += np.zeros(10, "<i2").tobytes()
        tal = f"+{start:g}\x14\x14\x00".encode()
        for rr, onset, text in events:
            if rr == r:
                tal += f"+{onset:g}\x150.5\x14{text}\x14\x00".encode()
        body += tal.ljust(n_ann * 2, b"\x00")
    path.write_bytes(head + body)
    return path


def test_edf_plus_d_events_on_the_samples_time_line(tmp_path):
    # records at 0, 1, then a gap: 10 and 11 s on the clock are samples' seconds 2 and 3
    f = _edf_plus_d(tmp_path / "d.edf", [0, 1, 10, 11], [(0, 0.25, "spike"), (2, 10.5, "seizure"), (3, 11.2, "end")])
    h = read_header(f)
    assert h.discontinuous
    got = read_events(f, h)
    assert got.warnings == []
    assert [(e.label, round(e.onset, 3)) for e in got.events] == [("spike", 0.25), ("seizure", 2.5), ("end", 3.2)]


def test_damaged_annotation_record_is_a_warning_not_a_refusal(tmp_path):
    f = _edf_plus_d(tmp_path / "bad.edf", [0, 1, 2], [(0, 0.1, "ok"), (2, 2.5, "also ok")])
    data = bytearray(f.read_bytes())
    rec = 10 * 2 + 60
    at = 256 * 3 + rec * 1 + 20  # record 1's annotation bytes
    data[at:at + 6] = b"+1x.\x14\x00"
    f.write_bytes(bytes(data))
    got = read_events(f)
    assert [e.label for e in got.events] == ["ok", "also ok"]
    assert len(got.warnings) == 1 and "1 of 3 data records" in got.warnings[0]


def test_brainvision_markers_through_mne(tmp_path):
    from test_robustness import _write_brainvision

    vhdr = _write_brainvision(tmp_path, "rec", np.zeros((2, 2500)), ["Fp1", "Fp2"], 250.0)
    vmrk = tmp_path / "rec.vmrk"
    vmrk.write_text(vmrk.read_text() + "Mk2=Comment,eyes closed,501,0,0\nMk3=Stimulus,S  1,1001,250,0\n"
                    "Mk4=Comment,spike,1501,1,2\n")
    got = read_events(vhdr)
    assert got.warnings == []
    assert [(e.label, round(e.onset, 3), round(e.duration, 3)) for e in got.events] == [
        ("Comment/eyes closed", 2.0, 0.0), ("Stimulus/S 1", 4.0, 1.0), ("Comment/spike", 6.0, 0.004)]
    assert {e.source for e in got.events} == {"brainvision"}


def test_bids_events_sidecar(tmp_path):
    text = "onset\tduration\ttrial_type\tvalue\n0.0\t4.2\trest\t1\n4.2\tn/a\tn/a\t7\n12.5\t2.0\tphotic 10 Hz\t3\n"
    events = parse_bids_events(text)
    assert [(e.onset, e.duration, e.label) for e in events] == [(0.0, 4.2, "rest"), (4.2, 0.0, "7"),
                                                                (12.5, 2.0, "photic 10 Hz")]
    with pytest.raises(ValueError, match="onset"):
        parse_bids_events("duration\ttrial_type\n1\tx\n")
    with pytest.raises(ValueError, match="line 3"):
        parse_bids_events("onset\ttrial_type\n1\tx\nabc\ty\n")
    # found beside a BIDS recording, with its own annotations
    f = write_edf_plus(tmp_path / "sub-01_task-rest_eeg.edf", ["Fp1", "Fp2"], [1.0], [0.0], ["eyes closed"])
    (tmp_path / "sub-01_task-rest_events.tsv").write_text(text)
    got = read_events(f)
    assert {e.source for e in got.events} == {"edf+", "bids"}
    assert [e.label for e in got.events if e.source == "bids"] == ["rest", "7", "photic 10 Hz"]


TUH_CSV = """# version = csv_v1.0.0
# bname = aaaaaaac_s001_t000
# duration = 301.00 secs
# montage_file = $NEDC_NFC/lib/nedc_eas_default_montage.txt
#
channel,start_time,stop_time,label,confidence
FP1-F7,0.0000,36.8868,bckg,1.0000
FP1-F7,36.8868,183.3055,cpsz,1.0000
F7-T3,36.8868,183.3055,cpsz,1.0000
FP1-F7,183.3055,301.0000,bckg,1.0000
T3-T5,200.0000,205.5000,eyem_musc,1.0000
"""

TUH_CSV_BI = """# version = csv_v1.0.0
# bname = aaaaaaac_s001_t000
#
channel,start_time,stop_time,label,confidence
TERM,0.0000,36.8868,bckg,1.0000
TERM,36.8868,183.3055,seiz,1.0000
TERM,183.3055,301.0000,bckg,1.0000
"""

TUH_TSE = """version = tse_v1.0.0

0.0000 36.8868 bckg 1.0000
36.8868 183.3055 cpsz 1.0000
183.3055 301.0000 bckg 1.0000
"""

TUH_LBL = """version = lbl_v1.0.0

montage =  0, FP1-F7: EEG FP1-REF --  EEG F7-REF
montage =  1, F7-T3:  EEG F7-REF  --  EEG T3-REF

number_of_levels = 1
level[0] = 1

symbols[0] = {0: '(null)', 1: 'spsw', 2: 'gped', 3: 'pled', 4: 'eybl', 5: 'artf', 6: 'bckg', 7: 'seiz'}

label = {0, 0, 0.0000, 10.2775, 0, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]}
label = {0, 0, 10.2775, 12.0000, 0, [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}
label = {0, 0, 10.2775, 12.0000, 1, [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}
"""

TUEV_REC = """16,44.0,45.0,6
16,45.0,46.0,1
17,45.0,46.0,1
0,100.0,101.0,4
"""


def test_tuh_csv_and_csv_bi():
    events = parse_tuh_csv(TUH_CSV)
    assert [(e.label, e.onset, e.channels) for e in events] == [
        ("cpsz", 36.8868, ("FP1-F7", "F7-T3")), ("eyem_musc", 200.0, ("T3-T5",))]
    assert events[0].meaning == "complex partial seizure"
    assert events[0].duration == pytest.approx(183.3055 - 36.8868)
    assert events[1].meaning == "eye movement artifact and muscle artifact"
    assert "complex partial seizure" in events[0].text
    bi = parse_tuh_csv(TUH_CSV_BI, "tuh-csv_bi")
    assert [(e.label, e.channels, e.source) for e in bi] == [("seiz", (), "tuh-csv_bi")]
    with pytest.raises(LabelFileError, match="header lacks"):
        parse_tuh_csv("channel,begin,end\nFP1-F7,0,1\n")
    with pytest.raises(LabelFileError, match="line 2.*not a number"):
        parse_tuh_csv("channel,start_time,stop_time,label,confidence\nFP1-F7,zero,1,seiz,1\n")
    with pytest.raises(LabelFileError, match="impossible span"):
        parse_tuh_csv("channel,start_time,stop_time,label,confidence\nTERM,5,1,seiz,1\n")


def test_tuh_tse_lbl_and_rec():
    assert [(e.label, e.onset, e.channels) for e in parse_tse(TUH_TSE)] == [("cpsz", 36.8868, ())]
    lbl = parse_lbl(TUH_LBL)
    assert [(e.label, e.onset, e.channels, e.meaning) for e in lbl] == [
        ("spsw", 10.2775, ("FP1-F7", "F7-T3"), "spike and/or sharp wave")]
    rec = parse_rec(TUEV_REC)
    assert [(e.label, e.onset, e.channels) for e in rec] == [("spsw", 45.0, ("C3-P3", "P3-O1")),
                                                             ("eyem", 100.0, ("FP1-F7",))]
    with pytest.raises(LabelFileError, match="1-6"):
        parse_rec("0,1,2,9\n")
    with pytest.raises(LabelFileError, match="symbols"):
        parse_lbl("label = {0, 0, 0.0, 1.0, 0, [1.0]}\n")
    assert meaning_of("spsw") == "spike and/or sharp wave" and meaning_of("T1") is None


def test_tuh_label_files_beside_a_recording(tmp_path):
    f = write_edf_plus(tmp_path / "aaaaaaac_s001_t000.edf", ["Fp1", "Fp2"], [], [], [], seconds=310)
    for suffix, text in ((".csv", TUH_CSV), (".csv_bi", TUH_CSV_BI), (".tse", TUH_TSE), (".lbl", TUH_LBL),
                         (".rec", TUEV_REC)):
        (tmp_path / f"aaaaaaac_s001_t000{suffix}").write_text(text)
    got = read_events(f)
    assert got.warnings == []
    assert {e.source for e in got.events} == {"tuh-csv", "tuh-csv_bi", "tuh-tse", "tuh-lbl", "tuh-rec"}
    assert got.events == sorted(got.events, key=lambda e: (e.onset, e.label))
    # a broken label file: a warning naming it, the others still read
    (tmp_path / "aaaaaaac_s001_t000.tse").write_text("version = tse_v1.0.0\n\n0.0 x bckg 1.0\n")
    got = read_events(f)
    assert len(got.warnings) == 1 and got.warnings[0].startswith("aaaaaaac_s001_t000.tse: line 3")
    assert "tuh-tse" not in {e.source for e in got.events} and "tuh-rec" in {e.source for e in got.events}
    with pytest.raises(ValueError):
        read_sidecar(tmp_path / "aaaaaaac_s001_t000.tse")


def test_events_after_the_end_are_dropped_with_a_warning(tmp_path):
    f = write_edf_plus(tmp_path / "r.edf", ["Fp1"], [1.0, 5.0], [0.0, 0.0], ["a", "b"], seconds=10)
    (tmp_path / "r.tse").write_text("version = tse_v1.0.0\n\n50.0 60.0 seiz 1.0\n")
    got = read_events(f, duration=10.0)
    assert [e.label for e in got.events] == ["a", "b"]
    assert "1 events start after" in got.warnings[0]


@pytest.mark.skipif(not (SHARED / "mne_edf_cases").is_dir(), reason="../shared/data/mne_edf_cases is absent")
def test_the_odd_mne_files_never_raise():
    for f in sorted((SHARED / "mne_edf_cases").iterdir()):
        if f.suffix.lower() in (".edf", ".bdf"):
            got = read_events(f)
            assert isinstance(got.events, list)
            ann = mne.read_annotations(f) if got.events else None
            if ann is not None:
                assert len(got.events) == len(ann)

"""Tests of elmsearch.text.report: parsing EEG report text, and reading report files."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

from elmsearch.errors import InputFileError, ReportError
from elmsearch.text.report import (
    ELM_HEADINGS,
    FINDING_HEADINGS,
    Report,
    decode_report_bytes,
    parse_report,
    read_report,
    read_reports_jsonl,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MTSAMPLES = SHARED_DATA / "eeg_reports_mtsamples"

TUH_REPORT = """\
CLINICAL HISTORY: 64 year old right-handed woman with new onset seizures, evaluated by Dr. Smith.
MEDICATIONS: Keppra 500 mg. b.i.d., Dilantin
INTRODUCTION: Digital video EEG was performed in the lab using standard 10-20 system of \
electrode placement with 1 channel of EKG. This is an awake and drowsy record.
DESCRIPTION OF THE RECORD: In wakefulness, there is a 10.5 Hz posterior dominant rhythm \
which is reactive to eye opening. There are occasional 3.5 Hz theta bursts, e.g. in the \
left temporal region. Hyperventilation was not performed.

Photic stimulation produces a symmetric driving response.
HR: 72 bpm
IMPRESSION: Abnormal EEG due to:
1. Intermittent left temporal slowing.
2. Rare left temporal sharp waves.
CLINICAL CORRELATION: This EEG supports a focal cerebral dysfunction on the left. No \
seizures were recorded.
"""

TUH_HEADINGS = [
    "CLINICAL HISTORY",
    "MEDICATIONS",
    "INTRODUCTION",
    "DESCRIPTION OF THE RECORD",
    "HR",
    "IMPRESSION",
    "CLINICAL CORRELATION",
]


def headings(report: Report) -> list[str]:
    return [sec.heading for sec in report.sections]


def texts(report: Report, section: str | None = None) -> list[str]:
    return [s.text for s in report.sentences if section is None or s.section == section]


def assert_offsets(report: Report) -> None:
    """Check every section and sentence points at its own text, in order, trimmed."""
    for sec in report.sections:
        assert report.text[sec.start : sec.end] == sec.text
        assert sec.text == sec.text.strip()
    prev_end = 0
    for sent in report.sentences:
        assert report.text[sent.start : sent.end] == sent.text
        assert sent.text and sent.text == sent.text.strip()
        assert sent.start >= prev_end
        prev_end = sent.end
        sec = report.sections[sent.section_index]
        assert sec.heading == sent.section
        assert sec.start <= sent.start and sent.end <= sec.end


# --- parse_report on synthetic reports -------------------------------------------------


def test_tuh_report_sections_and_bodies():
    report = parse_report(TUH_REPORT)
    assert headings(report) == TUH_HEADINGS
    assert report.section("HR").text == "72 bpm"
    assert report.section("MEDICATIONS").text == "Keppra 500 mg. b.i.d., Dilantin"
    description = report.section("DESCRIPTION OF THE RECORD").text
    assert description.startswith("In wakefulness, there is a 10.5 Hz")
    assert description.endswith("symmetric driving response.")
    assert report.impression.startswith("Abnormal EEG due to:")
    assert report.impression.endswith("Rare left temporal sharp waves.")
    assert_offsets(report)


def test_tuh_report_sentences():
    report = parse_report(TUH_REPORT)
    assert texts(report, "CLINICAL HISTORY") == [
        "64 year old right-handed woman with new onset seizures, evaluated by Dr. Smith."
    ]
    assert texts(report, "MEDICATIONS") == ["Keppra 500 mg. b.i.d., Dilantin"]
    assert texts(report, "DESCRIPTION OF THE RECORD") == [
        "In wakefulness, there is a 10.5 Hz posterior dominant rhythm which is reactive "
        "to eye opening.",
        "There are occasional 3.5 Hz theta bursts, e.g. in the left temporal region.",
        "Hyperventilation was not performed.",
        "Photic stimulation produces a symmetric driving response.",
    ]
    assert texts(report, "IMPRESSION") == [
        "Abnormal EEG due to:",
        "1. Intermittent left temporal slowing.",
        "2. Rare left temporal sharp waves.",
    ]
    assert texts(report, "CLINICAL CORRELATION") == [
        "This EEG supports a focal cerebral dysfunction on the left.",
        "No seizures were recorded.",
    ]
    index = {sec.heading: i for i, sec in enumerate(report.sections)}
    assert all(s.section_index == index[s.section] for s in report.sentences)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("DESCRIPTION", "DESCRIPTION OF THE RECORD"),
        ("description of record", "DESCRIPTION OF THE RECORD"),
        ("Conclusion", "IMPRESSION"),
        ("INTERPRETATION", "IMPRESSION"),
        ("summary of findings", "IMPRESSION"),
        ("CORRELATION", "CLINICAL CORRELATION"),
        ("HISTORY", "CLINICAL HISTORY"),
        ("patient history:", "CLINICAL HISTORY"),
        ("AED", "MEDICATIONS"),
        ("hr", "HR"),
    ],
)
def test_section_aliases(name, expected):
    assert parse_report(TUH_REPORT).section(name).heading == expected


def test_section_missing_and_exact_match_first():
    assert parse_report(TUH_REPORT).section("EPILEPTIFORM ACTIVITY") is None
    report = parse_report("CONCLUSION: first.\nIMPRESSION: second.\n")
    assert report.section("IMPRESSION").text == "second."  # exact beats alias
    assert report.section("CONCLUSION").text == "first."
    assert report.section("INTERPRETATION").text == "first."  # first alias in order


def test_impression_priority_and_absence():
    report = parse_report("SUMMARY: short.\nCONCLUSION: the conclusion.\n")
    assert report.impression == "the conclusion."
    assert parse_report("CLINICAL INTERPRETATION: normal.").impression == "normal."
    assert parse_report("HISTORY: seizures.\nDIAGNOSIS: epilepsy.").impression is None
    assert parse_report("IMPRESSION:\nCONCLUSION: normal EEG.").impression == "normal EEG."


def test_preamble_is_section_with_empty_heading():
    report = parse_report("Routine EEG, outpatient.\n\nIMPRESSION: Normal.")
    assert headings(report) == ["", "IMPRESSION"]
    assert report.sections[0].text == "Routine EEG, outpatient."
    assert report.sentences[0].section == "" and report.sentences[0].section_index == 0


def test_no_preamble_when_text_starts_with_heading():
    assert headings(parse_report("\n\n  IMPRESSION: Normal.")) == ["IMPRESSION"]


@pytest.mark.parametrize("text", ["", "   \n\n \t"])
def test_empty_text(text):
    report = parse_report(text)
    assert report.sections == () and report.sentences == ()
    assert report.impression is None
    assert report.segments() == [] and report.segments(mode="paragraph") == []


def test_crlf_and_cr_give_the_same_parse_as_lf():
    lf = parse_report(TUH_REPORT)
    for newline in ("\r\n", "\r"):
        report = parse_report(TUH_REPORT.replace("\n", newline))
        assert "\r" not in report.text
        assert report.text == lf.text
        assert report.sections == lf.sections and report.sentences == lf.sentences


def test_unicode_separators_bom_and_nbsp():
    text = (
        "\ufeffCLINICAL HISTORY: Seizures.\u2028MEDICATIONS: None.\u2029\u2029"
        "IMPRESSION:\u00a0Normal\u00a0EEG."
    )
    report = parse_report(text)
    assert (
        report.text == "CLINICAL HISTORY: Seizures.\nMEDICATIONS: None.\n\nIMPRESSION: Normal EEG."
    )
    assert headings(report) == ["CLINICAL HISTORY", "MEDICATIONS", "IMPRESSION"]
    assert report.impression == "Normal EEG."
    assert_offsets(report)


def test_title_case_heading_only_when_known():
    report = parse_report("Clinical history: seizures.\nNote: see above.\nImpression: Normal.")
    assert headings(report) == ["CLINICAL HISTORY", "IMPRESSION"]
    assert report.section("CLINICAL HISTORY").text == "seizures.\nNote: see above."
    assert report.impression == "Normal."


@pytest.mark.parametrize(
    "line",
    [
        "At 2:15 p.m. the patient had an event.",
        "AT 2:15 PM THE PATIENT HAD AN EVENT.",
        "RATIO 3:1 OF THETA TO ALPHA.",
        "10:30 the patient fell asleep.",
        "HTTP://EXAMPLE.ORG/REPORT",
        "1. AWAKE: normal.",
        "The EEG shows the following: slowing.",
        "X: a single letter is not a heading.",
    ],
)
def test_heading_false_positives(line):
    report = parse_report(f"IMPRESSION: Abnormal.\n{line}\n")
    assert headings(report) == ["IMPRESSION"]
    assert report.impression.endswith(line)


def test_heading_forms():
    text = (
        "EEG: Awake.\n"
        "  INDENTED HEADING:  body on the same line\n"
        "OTHER PAROXYSMAL ACTIVITY (NON-EPILEPTIFORM): None.\n"
        "ACTIVATION PROCEDURES/HV & PHOTIC:\n"
        "No change.\n"
        "HR:60 bpm\n"
    )
    report = parse_report(text)
    assert headings(report) == [
        "EEG",
        "INDENTED HEADING",
        "OTHER PAROXYSMAL ACTIVITY (NON-EPILEPTIFORM)",
        "ACTIVATION PROCEDURES/HV & PHOTIC",
        "HR",
    ]
    assert report.section("ACTIVATION PROCEDURES/HV & PHOTIC").text == "No change."
    assert report.section("HR").text == "60 bpm"
    assert_offsets(report)


def test_heading_whitespace_is_canonicalised():
    report = parse_report("DESCRIPTION   OF  THE RECORD : Normal.")
    assert headings(report) == ["DESCRIPTION OF THE RECORD"]


def test_repeated_heading_keeps_both_sections():
    report = parse_report("IMPRESSION: First read.\nEEG: Awake.\nIMPRESSION: Second read.")
    assert headings(report) == ["IMPRESSION", "EEG", "IMPRESSION"]
    assert [s.text for s in report.sections if s.heading == "IMPRESSION"] == [
        "First read.",
        "Second read.",
    ]
    assert report.impression == "First read."
    assert [s.section_index for s in report.sentences] == [0, 1, 2]


def test_empty_section_body():
    report = parse_report("MEDICATIONS:\nIMPRESSION: Normal.")
    meds = report.section("MEDICATIONS")
    assert meds.text == "" and meds.start == meds.end == len("MEDICATIONS:")
    assert texts(report) == ["Normal."]


def test_metadata_header_stays_in_preamble():
    text = (
        "Source: transcription service\n"
        "URL: https://example.org/report/1\n"
        "Description: Routine EEG.\n"
        "-------------------------\n"
        "DESCRIPTION: Normal background.\n"
        "IMPRESSION: Normal EEG.\n"
    )
    report = parse_report(text)
    assert headings(report) == ["", "DESCRIPTION", "IMPRESSION"]
    assert report.sections[0].text.startswith("Source: transcription service")
    assert report.section("DESCRIPTION").text == "Normal background."
    assert texts(report, "") == [
        "Source: transcription service",
        "URL: https://example.org/report/1",
        "Description: Routine EEG.",
    ]


def test_rule_after_headings_is_not_a_metadata_header():
    report = parse_report("CLINICAL HISTORY: Seizures.\n----------\nIMPRESSION: Normal.")
    assert headings(report) == ["CLINICAL HISTORY", "IMPRESSION"]
    assert texts(report) == ["Seizures.", "Normal."]  # the rule is not a sentence


# --- sentence splitting ----------------------------------------------------------------


@pytest.mark.parametrize(
    "sentence",
    [
        "The posterior dominant rhythm is 10.5 Hz and reactive.",
        "Seen by Dr. Müller and Dr. J. R. Smith on the ward.",
        "Recorded at 2:15 p.m. in the lab and again at 9 a.m. the next day.",
        "Slowing, i.e. theta, and sharp waves, e.g. at T3, vs. artifact.",
        "Recorded approx. 20 min. in the lab.",
        "She is a 45 y.o. woman on Keppra 500 mg. twice a day.",
        "Spikes, sharp waves, etc. Were all absent today.",
        "See Fig. 2 and No. 7 on the montage list.",
        "Transferred from St. Mary Hospital on t.i.d. Depakote.",
        "A single left temporal, T3, spike is seen in sleep.",
    ],
)
def test_no_split_inside_abbreviations_and_decimals(sentence):
    report = parse_report(f"DESCRIPTION: First sentence. {sentence} Last sentence.")
    assert texts(report) == ["First sentence.", sentence, "Last sentence."]


def test_splits_on_punctuation_before_capital_or_digit():
    report = parse_report(
        "FINDINGS: Is this normal? Yes! It is.  3 Hz spike-wave seen. "
        "then lower case continues. (Parenthetical.) The end"
    )
    assert texts(report) == [
        "Is this normal?",
        "Yes!",
        "It is.",
        "3 Hz spike-wave seen. then lower case continues.",
        "(Parenthetical.)",
        "The end",
    ]


def test_blank_lines_split_and_wrapped_lines_join():
    report = parse_report("FINDINGS: Alpha is\nwell formed\n\nNo slowing\n\n\nNormal sleep.")
    assert texts(report) == ["Alpha is\nwell formed", "No slowing", "Normal sleep."]
    assert_offsets(report)


def test_bullets_are_one_sentence_each():
    report = parse_report(
        "IMPRESSION: Abnormal EEG due to:\n"
        "1. Mildly abnormal background. Slowing is diffuse.\n"
        "2) Left temporal sharp waves\n"
        "   maximal at T3.\n"
        "- Frequent artifacts.\n"
        "a. Rare PLEDs.\n"
    )
    assert texts(report) == [
        "Abnormal EEG due to:",
        "1. Mildly abnormal background. Slowing is diffuse.",
        "2) Left temporal sharp waves\n   maximal at T3.",
        "- Frequent artifacts.",
        "a. Rare PLEDs.",
    ]


def test_sentences_never_span_sections():
    report = parse_report("HISTORY: Seizures, no period\nIMPRESSION: Normal")
    assert texts(report) == ["Seizures, no period", "Normal"]
    assert [s.section for s in report.sentences] == ["HISTORY", "IMPRESSION"]


# --- segments ----------------------------------------------------------------------------


def test_segments_sentences_from_finding_sections():
    segments = parse_report(TUH_REPORT).segments()
    assert segments[0] == (
        "DESCRIPTION OF THE RECORD: In wakefulness, there is a 10.5 Hz posterior dominant "
        "rhythm which is reactive to eye opening."
    )
    assert "HR: 72 bpm" in segments
    assert "IMPRESSION: 1. Intermittent left temporal slowing." in segments
    assert segments[-1] == "CLINICAL CORRELATION: No seizures were recorded."
    assert not any(
        s.startswith(("CLINICAL HISTORY", "MEDICATIONS", "INTRODUCTION")) for s in segments
    )
    assert len(segments) == 4 + 1 + 3 + 2


def test_segments_paragraph_mode_and_no_prefix():
    report = parse_report(TUH_REPORT)
    paragraphs = report.segments(mode="paragraph", headings=["impression", "HR"])
    assert paragraphs == [
        "HR: 72 bpm",
        "IMPRESSION: Abnormal EEG due to: 1. Intermittent left temporal slowing. "
        "2. Rare left temporal sharp waves.",
    ]
    plain = report.segments(headings=ELM_HEADINGS, prepend_heading=False)
    assert plain[0] == (
        "64 year old right-handed woman with new onset seizures, evaluated by Dr. Smith."
    )
    assert all(":" not in s.split()[0] for s in plain)


def test_segments_fall_back_to_all_headed_sections_then_whole_text():
    report = parse_report("Preamble line.\nTECHNICAL NOTE: Few artifacts.\nPLAN: Repeat EEG.")
    assert report.segments() == ["TECHNICAL NOTE: Few artifacts.", "PLAN: Repeat EEG."]
    bare = parse_report("Normal awake EEG. No epileptiform\nactivity.\n\nRepeat in a year.")
    assert bare.segments() == [
        "Normal awake EEG.",
        "No epileptiform activity.",
        "Repeat in a year.",
    ]
    assert bare.segments(mode="paragraph") == [
        "Normal awake EEG. No epileptiform activity.",
        "Repeat in a year.",
    ]


def test_segments_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        parse_report(TUH_REPORT).segments(mode="word")


def test_heading_constants():
    assert list(ELM_HEADINGS) == [
        "CLINICAL HISTORY",
        "HISTORY",
        "MEDICATIONS",
        "AED",
        "DESCRIPTION OF THE RECORD",
        "DESCRIPTION",
        "EEG BACKGROUND",
        "RANDOM WAKEFULNESS AND SLEEP",
        "EVENTS",
        "EVENT",
        "EPILEPTIFORM ACTIVITY",
        "OTHER PAROXYSMAL ACTIVITY (NON-EPILEPTIFORM)",
        "CORRELATION",
        "CLINICAL CORRELATION",
        "IMPRESSION",
        "CONCLUSION",
        "SUMMARY OF FINDINGS",
        "SUMMARY",
        "DIAGNOSIS",
        "INTERPRETATION",
    ]
    findings = set(FINDING_HEADINGS)
    assert len(findings) == len(FINDING_HEADINGS)
    assert {"CLINICAL HISTORY", "HISTORY", "MEDICATIONS", "AED", "DIAGNOSIS"}.isdisjoint(findings)
    assert set(ELM_HEADINGS) - findings == {
        "CLINICAL HISTORY",
        "HISTORY",
        "MEDICATIONS",
        "AED",
        "DIAGNOSIS",
    }
    assert {"FINDINGS", "BACKGROUND ACTIVITY", "SLEEP", "HR", "CLINICAL INTERPRETATION"} <= findings


# --- decoding and reading files ----------------------------------------------------------


def test_decode_utf8_bom_and_latin1(caplog):
    assert decode_report_bytes("\ufeffIMPRESSION: Dr. Müller.".encode()) == (
        "IMPRESSION: Dr. Müller."
    )
    with caplog.at_level(logging.DEBUG, logger="elmsearch.text.report"):
        text = decode_report_bytes("IMPRESSION: Dr. Müller.".encode("latin-1"), "r.txt")
    assert text == "IMPRESSION: Dr. Müller."
    assert any("r.txt" in r.getMessage() and "Latin-1" in r.getMessage() for r in caplog.records)
    utf16 = "\ufeffIMPRESSION: Normal.".encode("utf-16-le")
    assert decode_report_bytes(b"\xff\xfe" + utf16[2:]) == "IMPRESSION: Normal."


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b" \n\t\r\n", "empty"),
        (b"IMPRESSION:\x00 normal", "NUL"),
        (bytes(range(1, 32)) * 4 + b"some text", "control"),
        (bytes(range(128, 160)) * 4 + b"some text", "control"),
    ],
)
def test_decode_rejects_empty_and_binary(data, reason):
    with pytest.raises(ReportError, match=reason) as info:
        decode_report_bytes(data, "junk.bin")
    assert str(info.value).startswith("junk.bin: ")
    assert isinstance(info.value, InputFileError)


def test_decode_accepts_a_few_control_characters():
    text = "IMPRESSION: normal.\x0c\x1b[0m" + "x" * 100
    assert decode_report_bytes(text.encode()) == text


def test_read_report_latin1_crlf_file(tmp_path):
    fname = tmp_path / "report.txt"
    fname.write_bytes(
        "CLINICAL HISTORY: Seen by Dr. Müller.\r\nIMPRESSION: Normal EEG.\r\n".encode("latin-1")
    )
    report = read_report(fname)
    assert headings(report) == ["CLINICAL HISTORY", "IMPRESSION"]
    assert report.section("HISTORY").text == "Seen by Dr. Müller."
    assert report.impression == "Normal EEG."
    assert "\r" not in report.text
    assert read_report(str(fname)) == report


def test_read_report_errors(tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_bytes(bytes(range(256)) * 8)
    cases = [
        (tmp_path / "missing.txt", "no such file"),
        (tmp_path, "directory"),
        (junk, "not a text file"),
    ]
    for fname, reason in cases:
        with pytest.raises(ReportError) as info:
            read_report(fname)
        message = str(info.value)
        assert message.startswith(f"{fname}: ") and reason in message
        assert "\n" not in message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_read_report_permission_denied(tmp_path):
    fname = tmp_path / "secret.txt"
    fname.write_text("IMPRESSION: Normal.")
    fname.chmod(0)
    try:
        with pytest.raises(ReportError, match="permission denied"):
            read_report(fname)
    finally:
        fname.chmod(0o600)


def test_read_reports_jsonl(tmp_path, caplog):
    fname = tmp_path / "reports.jsonl"
    lines = [
        json.dumps({"subject": "aaaaaaaa", "session": "s001", "report": "IMPRESSION: Normal."}),
        "",
        "{not json",
        json.dumps({"subject": "aaaaaaab", "report": "no session"}),
        json.dumps(["a", "list"]),
        json.dumps({"subject": 17, "session": 2, "report": "Müller"}),
        "   ",
        json.dumps({"subject": "aaaaaaaa", "session": "s001", "report": "IMPRESSION: Abnormal."}),
        json.dumps({"subject": None, "session": "s1", "report": "x"}),
    ]
    fname.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="elmsearch.text.report"):
        reports = read_reports_jsonl(fname)
    assert reports == {
        ("aaaaaaaa", "s001"): "IMPRESSION: Abnormal.",
        ("17", "2"): "Müller",
    }
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 5
    assert messages[0].startswith(f"{fname}:3: invalid JSON")
    assert messages[1].startswith(f"{fname}:4: missing key(s) session")
    assert messages[2].startswith(f"{fname}:5: expected a JSON object")
    assert messages[3].startswith(f"{fname}:8: duplicate") and "line 1" in messages[3]
    assert messages[4].startswith(f"{fname}:9: subject must be")


def test_read_reports_jsonl_missing_file(tmp_path):
    with pytest.raises(ReportError, match="no such file"):
        read_reports_jsonl(tmp_path / "absent.jsonl")


# --- real reports (MTSamples transcriptions in ../shared/data) ----------------------------

MTSAMPLES_HEADINGS = {
    "mtsamples_0654_Electroencephalography.txt": [
        "",
        "HISTORY",
        "BACKGROUND ACTIVITY",
        "ACTIVATION PROCEDURES",
        "SLEEP PATTERNS",
        "IMPRESSION",
    ],
    "mtsamples_1162_Electroencephalogram.txt": [
        "",
        "DESCRIPTION OF RECORD",
        "FINDINGS",
        "IMPRESSION",
    ],
    "mtsamples_1167_EEG_Monitoring_Study.txt": [
        "",
        "TECHNICAL SUMMARY",
        "HYPERVENTILATION",
        "PHOTIC STIMULATION",
        "SLEEP",
        "INDUCED EVENT",
        "EEG",
        "IMPRESSION",
    ],
    "mtsamples_1926_Electroencephalogram_1.txt": ["", "REPORT", "CLINICAL INTERPRETATION"],
    "mtsamples_1927_Electroencephalogram_2.txt": ["", "REPORT", "CLINICAL NOTE", "IMPRESSION"],
    "mtsamples_2213_EEG.txt": ["", "DIAGNOSIS", "DESCRIPTION", "IMPRESSION"],
    "mtsamples_2473_Video_EEG.txt": [
        "",
        "TIME SEEN",
        "TOTAL RECORDING TIME",
        "PATIENT HISTORY",
        "DESCRIPTION",
        "CLINICAL INTERPRETATION",
    ],
    "mtsamples_2474_Video_EEG_1.txt": [
        "",
        "DATE OF EXAMINATION",
        "TOTAL RECORDING TIME",
        "PATIENT HISTORY",
        "DESCRIPTION",
        "CLINICAL INTERPRETATION",
    ],
    "mtsamples_2475_Electroencephalogram_3.txt": ["", "IMPRESSION"],
    "mtsamples_2476_Electroencephalogram_4.txt": ["", "PROCEDURE", "IMPRESSION"],
    "mtsamples_2477_Video_EEG_2.txt": ["", "IMPRESSION"],
    "mtsamples_2478_Video_EEG_3.txt": ["", "PROCEDURE", "IMPRESSION"],
}

# First words of each report's impression-like section.
MTSAMPLES_IMPRESSIONS = {
    "mtsamples_0654_Electroencephalography.txt": "This awake/alert/drowsy EEG is abnormal",
    "mtsamples_1162_Electroencephalogram.txt": "Normal awake and drowsy (stage I sleep) EEG",
    "mtsamples_1167_EEG_Monitoring_Study.txt": "The findings of this patient's 95.5-hour",
    "mtsamples_1926_Electroencephalogram_1.txt": "The electroencephalogram is essentially normal.",
    "mtsamples_1927_Electroencephalogram_2.txt": "This record is essentially within normal",
    "mtsamples_2213_EEG.txt": "Mildly abnormal study.",
    "mtsamples_2473_Video_EEG.txt": "This is normal video EEG monitoring",
    "mtsamples_2474_Video_EEG_1.txt": "This is abnormal video EEG monitoring",
    "mtsamples_2475_Electroencephalogram_3.txt": "Abnormal electroencephalogram revealing",
    "mtsamples_2476_Electroencephalogram_4.txt": "Abnormal electroencephalogram with repetitive",
    "mtsamples_2477_Video_EEG_2.txt": "EEG during wakefulness, drowsiness, and sleep",
    "mtsamples_2478_Video_EEG_3.txt": "EEG during wakefulness and light sleep is abnormal",
}


def _mtsamples_dir() -> Path:
    if not MTSAMPLES.is_dir():
        pytest.skip(f"../shared/data absent: {MTSAMPLES} not found")
    return MTSAMPLES


def test_mtsamples_index_lists_every_file():
    folder = _mtsamples_dir()
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    assert sorted(entry["file"] for entry in index) == sorted(MTSAMPLES_HEADINGS)
    assert sorted(p.name for p in folder.glob("*.txt")) == sorted(MTSAMPLES_HEADINGS)


@pytest.mark.parametrize("name", sorted(MTSAMPLES_HEADINGS))
def test_mtsamples_report(name):
    report = read_report(_mtsamples_dir() / name)
    assert headings(report) == MTSAMPLES_HEADINGS[name]
    preamble = report.sections[0]
    assert preamble.heading == "" and preamble.text.startswith("Source: MTSamples.com")
    assert "\n-----" in preamble.text  # the metadata header ends with a rule line
    assert_offsets(report)
    assert report.impression is not None
    assert report.impression.startswith(MTSAMPLES_IMPRESSIONS[name])
    # no sentence starts or ends inside a decimal number such as "10.5 Hz"
    for match in re.finditer(r"\d+\.\d+", report.text):
        for sent in report.sentences:
            assert not match.start() < sent.start < match.end()
            assert not match.start() < sent.end < match.end()
    segments = report.segments()
    assert segments and all(s.strip() for s in segments)
    assert not any(s.startswith(("Source:", "URL:", "Keywords:")) for s in segments)
    assert report.segments(mode="paragraph")


def test_mtsamples_1167_details():
    report = read_report(_mtsamples_dir() / "mtsamples_1167_EEG_Monitoring_Study.txt")
    assert report.sections[0].text.endswith(
        "This is a 95.5-hour continuous video EEG monitoring study."
    )
    sentences = texts(report)
    assert "The occipital dominant rhythm is 10 to 10.5 Hz and well regulated." in sentences
    assert (
        "The patient was recorded from 2:15 p.m. on 08/21/06 through 1:55 p.m. on 08/25/06."
        in sentences
    )
    assert "At 1:38 p.m., the patient was instructed to begin hyperventilation." in sentences
    assert report.section("EEG").text.startswith("There are no significant changes")
    assert "EEG: Of note, while her eyes were closed" in " ".join(report.segments())


def test_mtsamples_2473_numbered_diagnoses():
    report = read_report(_mtsamples_dir() / "mtsamples_2473_Video_EEG.txt")
    assert texts(report, "PATIENT HISTORY")[-4:] == [
        "VIDEO EEG DIAGNOSES",
        "1.  AWAKE:  Normal.",
        "2.  SLEEP:  No activation.",
        "3.  CLINICAL EVENTS:  None.",
    ]

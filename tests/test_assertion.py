"""Assertion status of report sentences (elmsearch.text.assertion) and its storage in the index."""

import re
import sqlite3

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cli.app import app
from db import Segment
from elmsearch.text.assertion import (
    STATUSES,
    Scope,
    assertion_scopes,
    match_status,
    parse_query,
    scopes_from_json,
    scopes_to_json,
    sentence_status,
    stem,
)
from elmsearch.text.report import read_report
from indexer.store import IndexStore

# (sentence, query words, status of those words), in the style of clinical EEG reports
CASES = [
    # affirmed
    ("There are frequent left temporal sharp waves.", "sharp waves", "affirmed"),
    ("Focal slowing is seen over the right frontal region.", "focal slowing", "affirmed"),
    ("The background consists of a well-organized 9 Hz posterior dominant rhythm.", "posterior dominant rhythm",
     "affirmed"),
    ("Sleep spindles and vertex waves are present in stage II sleep.", "sleep spindles", "affirmed"),
    ("Generalized 3 Hz spike-and-wave discharges were recorded during hyperventilation.", "spike wave discharges",
     "affirmed"),
    ("This EEG is abnormal due to intermittent left temporal slowing.", "temporal slowing", "affirmed"),
    ("The findings are consistent with a focal structural abnormality.", "structural abnormality", "affirmed"),
    ("Photic stimulation produced a symmetric driving response.", "driving response", "affirmed"),
    ("Independent bilateral sharp wave activity is seen intermittently.", "sharp wave", "affirmed"),
    ("The patient had a typical clinical seizure at 10:42.", "seizure", "affirmed"),
    # negated
    ("There is no evidence of focal slowing.", "focal slowing", "negated"),
    ("No epileptiform activity is present.", "epileptiform activity", "negated"),
    ("There were no epileptiform discharges.", "epileptiform discharges", "negated"),
    ("The record is without focal features.", "focal features", "negated"),
    ("Absence of sleep spindles was noted.", "sleep spindles", "negated"),
    ("The study is negative for electrographic seizures.", "electrographic seizures", "negated"),
    ("The tracing is free of epileptiform discharges.", "epileptiform discharges", "negated"),
    ("Epileptiform discharges were not seen.", "epileptiform discharges", "negated"),
    ("Hyperventilation was not performed.", "hyperventilation", "negated"),
    ("Photic stimulation did not reveal any abnormality.", "abnormality", "negated"),
    ("A posterior dominant rhythm is absent.", "posterior dominant rhythm", "negated"),
    ("No spikes or sharp waves were recorded.", "sharp waves", "negated"),
    ("No clear-cut photic driving was seen.", "photic driving", "negated"),
    ("The patient had no clinical events during the recording.", "clinical events", "negated"),
    ("No definite epileptiform abnormalities are identified.", "epileptiform abnormalities", "negated"),
    ("There is no family history of epilepsy.", "epilepsy", "negated"),
    # pseudo-negations: the cue does not negate
    ("There is no change in the frequency of the temporal slowing compared with the prior study.",
     "temporal slowing", "affirmed"),
    ("Not only focal slowing but also sharp waves are present over the left temporal region.", "sharp waves",
     "affirmed"),
    ("The slowing was seen not only during drowsiness.", "slowing", "affirmed"),
    # termination: the scope ends at "but", "however", ";"
    ("No spikes, but sharp waves are seen in the left temporal region.", "sharp waves", "affirmed"),
    ("No spikes, but sharp waves are seen in the left temporal region.", "spikes", "negated"),
    ("Photic stimulation was performed, but no clear-cut photic driving was seen.", "photic stimulation",
     "affirmed"),
    ("No sustained epileptogenic activity is evident, but independent bilateral sharp wave activity is seen.",
     "sharp wave", "affirmed"),
    ("There are no seizures; however, frequent right temporal spikes occur in sleep.", "temporal spikes",
     "affirmed"),
    ("No abnormalities other than mild diffuse slowing are seen.", "diffuse slowing", "affirmed"),
    # possible / uncertain
    ("There are muscle contractions at 4 Hz which suggests possible Parkinson's tremor.", "tremor", "possible"),
    ("Possible cerebrovascular accident.", "cerebrovascular accident", "possible"),
    ("The sharp transients are questionable epileptiform discharges.", "epileptiform discharges", "possible"),
    ("These findings are suspicious for an underlying structural lesion.", "structural lesion", "possible"),
    ("An epileptogenic focus cannot be excluded.", "epileptogenic focus", "possible"),
    ("The sharps may represent underlying structural abnormalities.", "structural abnormalities", "possible"),
    ("Rule out seizures.", "seizures", "possible"),
    ("The pattern is suggestive of a toxic or metabolic encephalopathy.", "encephalopathy", "possible"),
    ("The tremor probably represents a parkinsonian tremor.", "parkinsonian", "possible"),
    ("A normal EEG does not exclude epilepsy.", "epilepsy", "possible"),
    # historical
    ("This is a 43-year-old female with a history of seizures.", "seizures", "historical"),
    ("The patient has a known seizure disorder.", "seizure disorder", "historical"),
    ("He is status post left temporal lobectomy.", "temporal lobectomy", "historical"),
    ("Previous EEGs showed generalized spike-and-wave discharges.", "spike wave discharges", "historical"),
    # family
    ("His mother has epilepsy.", "epilepsy", "family"),
    ("There is a family history of febrile seizures.", "febrile seizures", "family"),
    ("Seizures in her brother.", "seizures", "family"),
]


@pytest.fixture(scope="module")
def case_scopes():
    return assertion_scopes([c[0] for c in CASES])


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{c[2]}:{c[1]}" for c in CASES])
def test_status_of_terms(case_scopes, i):
    text, words, expected = CASES[i]
    assert match_status(text, case_scopes[i], words.split()) == expected, (text, case_scopes[i])


def test_the_case_set_covers_every_status():
    assert len(CASES) >= 40
    assert {c[2] for c in CASES} == set(STATUSES)


def test_sentence_status_and_scopes():
    text = "There is no evidence of focal slowing or paroxysmal activity."
    (scopes,) = assertion_scopes([text])
    assert scopes and {s.status for s in scopes} == {"negated"}
    assert text[scopes[0].start:scopes[0].end].startswith("focal slowing")
    assert sentence_status(text, scopes) == "negated"
    assert sentence_status("Frequent sharp waves.", []) == "affirmed"
    assert sentence_status("There is a family history of epilepsy.",
                           assertion_scopes(["There is a family history of epilepsy."])[0]) == "family"
    # a mostly affirmed sentence with one negated word reads as affirmed
    text = "No spikes, but frequent left temporal sharp waves and focal slowing are seen."
    assert sentence_status(text, assertion_scopes([text])[0]) == "affirmed"


def test_batches_match_single_calls_and_empty_input():
    texts = [c[0] for c in CASES[:12]] + ["", "   ", "12 Hz."]
    batched = assertion_scopes(texts)
    assert batched == [assertion_scopes([t])[0] for t in texts]
    assert batched[-3:] == [[], [], []]
    assert assertion_scopes([]) == []


def test_json_round_trip_and_bad_rows():
    scopes = [Scope(0, 12, "negated"), Scope(20, 31, "possible")]
    text = scopes_to_json(scopes)
    assert text == '[[0,12,"negated"],[20,31,"possible"]]'
    assert scopes_from_json(text) == scopes
    assert scopes_from_json(None) == [] and scopes_from_json("") == [] and scopes_from_json("[]") == []
    assert scopes_from_json("not json") == []
    assert scopes_from_json('[[0,4,"negated"],[1,"x"],[0,2,"bogus"],{"a":1}]') == [Scope(0, 4, "negated")]


@pytest.mark.parametrize(("query", "terms", "status"), [
    ("no epileptiform discharges", ("epileptiform", "discharges"), "negated"),
    ("focal sharp waves", ("focal", "sharp", "waves"), "affirmed"),
    ("possible seizure", ("seizure",), "possible"),
    ("without spikes", ("spikes",), "negated"),
    ("absence of sleep spindles", ("sleep", "spindles"), "negated"),
    ("history of seizures", ("seizures",), "historical"),
    ("family history of epilepsy", ("epilepsy",), "family"),
    ("Left Temporal Slowing", ("left", "temporal", "slowing"), "affirmed"),
    ("sharp waves sharp waves", ("sharp", "waves"), "affirmed"),
    ("no", (), "affirmed"),
    ("", (), "affirmed"),
    ("'; DROP TABLE segments; --", ("drop", "table", "segments"), "affirmed"),
])
def test_parse_query(query, terms, status):
    q = parse_query(query)
    assert q.terms == terms and q.status == status


def test_match_status_inflection_and_absence():
    text = "Frequent spiking and slowed background waves."
    assert match_status(text, [], ["spikes"]) == "affirmed"
    assert match_status(text, [], ["slowing"]) == "affirmed"
    assert match_status(text, [], ["wave"]) == "affirmed"
    assert match_status(text, [], ["SLOW"]) == "affirmed"
    assert match_status(text, [], ["seizure"]) is None
    assert match_status(text, [], []) is None
    assert match_status(text, [], ["!!"]) is None
    assert stem("discharges") == stem("discharged") == stem("discharge")
    assert stem("activities") == stem("activity") and stem("status") == "status"
    assert stem("seizures") == stem("seizure") and stem("spindles") == stem("spindle")


def test_match_status_majority_over_occurrences():
    text = "No spikes, but sharp waves are seen in the left temporal region."
    (scopes,) = assertion_scopes([text])
    assert match_status(text, scopes, ["spikes", "sharp", "waves"]) == "affirmed"
    assert match_status(text, scopes, ["spikes"]) == "negated"


def test_queries_select_the_right_sentences():
    """A query's status, matched against sentences, keeps negated and affirmed mentions apart."""
    sents = ["No epileptiform discharges were seen.", "Frequent epileptiform discharges over the left temporal region.",
             "Epileptiform discharges cannot be excluded."]
    scopes = assertion_scopes(sents)
    for query, want in [("epileptiform discharges", 1), ("no epileptiform discharges", 0),
                        ("possible epileptiform discharges", 2)]:
        q = parse_query(query)
        hits = [i for i, (t, sc) in enumerate(zip(sents, scopes, strict=True))
                if match_status(t, sc, q.terms) == q.status]
        assert hits == [want], query


# --- real reports ---------------------------------------------------------------------------------

_NO_RE = re.compile(r"^no\b|\bno evidence of\b|\bthere (?:is|are|was|were) no\b", re.IGNORECASE)
_AFTER_CUE_RE = re.compile(r"\b(?:no evidence of|no)\s+(.*)$", re.IGNORECASE)
_FUNCTION = {"any", "significant", "definite", "clear", "further", "additional", "important", "other",
             "abnormal", "sustained", "evidence", "of", "the", "a", "an", "or", "and", "cut"}


def _finding_words(sentence: str) -> list[str]:
    """The first two content words after the negation cue: the finding the sentence denies."""
    m = _AFTER_CUE_RE.search(sentence)
    words = [w for w in re.findall(r"[A-Za-z]+", m.group(1)) if w.lower() not in _FUNCTION] if m else []
    return words[:2]


def test_real_reports_negated_sentences(shared_data, capsys):
    folder = shared_data / "eeg_reports_mtsamples"
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files:
        pytest.skip(f"no real EEG reports at {folder} (../shared/data/eeg_reports_mtsamples)")
    sentences = [s.text for f in files for s in read_report(f).sentences if _NO_RE.search(s.text)]
    sentences = [s for s in sentences if _finding_words(s)]
    assert len(sentences) >= 15, "fewer negated sentences than the reports hold"
    scopes = assertion_scopes(sentences)
    wrong = [(s, _finding_words(s)) for s, sc in zip(sentences, scopes, strict=True)
             if match_status(s, sc, _finding_words(s)) != "negated"]
    precision = 1 - len(wrong) / len(sentences)
    with capsys.disabled():
        print(f"\nreal reports: {len(sentences)} negated sentences, precision {precision:.3f}; wrong: {wrong}")
    assert precision >= 0.95, wrong
    # the examples
    for text, words in [("There is no evidence of focal slowing or paroxysmal activity.", "focal slowing"),
                        ("No epileptiform activity is present.", "epileptiform activity")]:
        assert text in sentences
        assert match_status(text, assertion_scopes([text])[0], words.split()) == "negated"


# --- storage --------------------------------------------------------------------------------------


def _segments(db):
    store = IndexStore(db)
    with store.session() as s:
        return s.execute(select(Segment.text, Segment.assertion, Segment.scopes)).all()


def test_index_stores_assertion_and_an_older_index_gets_it(archive, demo_model_dir, tmp_path, monkeypatch):
    runner = CliRunner()
    db = tmp_path / "idx"
    res = runner.invoke(app, ["index", str(archive), "--db", str(db), "--model", str(demo_model_dir), "-j", "1"])
    assert res.exit_code == 0, res.output
    rows = _segments(db)
    assert rows and all(r.assertion in STATUSES and r.scopes is not None for r in rows)
    negated = [r for r in rows if re.search(r"^no\b|\bthere is no\b|\bis not\b", r.text, re.IGNORECASE)]
    assert negated and all(r.assertion == "negated" for r in negated)
    before = {(r.text, r.assertion, r.scopes) for r in rows}

    # an index written before the columns existed
    con = sqlite3.connect(db / "elmsearch.sqlite")
    con.execute("ALTER TABLE segments DROP COLUMN assertion")
    con.execute("ALTER TABLE segments DROP COLUMN scopes")
    con.commit()
    con.close()
    import indexer.pipeline

    monkeypatch.setattr(indexer.pipeline, "ASSERTION_BATCH", 7)  # several batches
    res = runner.invoke(app, ["index", str(archive), "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    after = _segments(db)
    assert len(after) > 7 and {(r.text, r.assertion, r.scopes) for r in after} == before


def test_no_report_text_stores_status_without_scopes(archive, demo_model_dir, tmp_path):
    from indexer.pipeline import index_archive

    db = tmp_path / "idx"
    index_archive(archive, db, demo_model_dir, report_text=True)
    with_text = _segments(db)
    index_archive(archive, db, demo_model_dir, report_text=False)
    rows = _segments(db)
    assert rows and all(r.text == "" and r.scopes is None and r.assertion in STATUSES for r in rows)
    assert sorted(r.assertion for r in rows) == sorted(r.assertion for r in with_text)
    # a fresh text-free index computes the status from the text before dropping it
    db2 = tmp_path / "idx2"
    index_archive(archive, db2, demo_model_dir, report_text=False)
    rows2 = _segments(db2)
    assert sorted(r.assertion for r in rows2) == sorted(r.assertion for r in with_text)
    assert any(r.assertion == "negated" for r in rows2) and all(r.scopes is None for r in rows2)

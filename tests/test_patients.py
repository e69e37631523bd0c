"""Who a recording belongs to: PhysioNet-style names, EDF+ patient codes, BIDS participants,
a ``--patients`` mapping; and prior cases that never return the query's patient or bytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fuzz_corpus import synthetic_edf
from sqlalchemy import select
from typer.testing import CliRunner

from cli.app import app
from db import Patient, Recording, Status
from elmsearch.archive.discovery import (
    ArchiveEntry,
    PatientMapError,
    discover,
    mapped_patient,
    patient_of,
    read_participants,
    read_patient_map,
)
from elmsearch.archive.tuh import name_patient, parse_recording_path, real_patient_code

ANONYMOUS = "X X X X"  # EDF+ "patient unknown": the file name has to say who it is


@pytest.mark.parametrize("stem, patient", [
    ("S001R03", "S001"), ("S109R14", "S109"),  # PhysioNet EEGMMIDB
    ("chb01_03", "chb01"), ("chb17a_05", "chb17a"), ("chb04_28+", "chb04"),  # CHB-MIT
    ("Subject00_1", "Subject00"), ("Subject35_2", "Subject35"),  # EEGMAT
    ("rec", None), ("S1R3", None), ("patient_01", None), ("aaaaaaab_s001_t000", None),
])
def test_name_patient(stem, patient):
    assert name_patient(stem) == patient


@pytest.mark.parametrize("code, want", [
    ("MCH-0234567", "MCH-0234567"), ("X", None), ("x", None), ("0", None), ("000000", None),
    ("unknown", None), ("Anonymous", None), ("---", None), ("", None), (None, None), ("  P17 ", "P17"),
])
def test_real_patient_code(code, want):
    assert real_patient_code(code) == want


def _entry(root: Path, rel: str, patient: str | None = None) -> ArchiveEntry:
    return ArchiveEntry(root / rel, parse_recording_path(Path(rel).parts), patient=patient)


def test_patient_of_takes_the_first_thing_that_knows(tmp_path):
    # 1. the mapping beats everything
    assert patient_of(_entry(tmp_path, "S001R03.edf", patient="P9"), "MCH-1") == "P9"
    # 2. the archive layout beats the EDF code
    tuh = "edf/000/aaaaaaab/s001_2015/01_tcp_ar/aaaaaaab_s001_t000.edf"
    assert patient_of(_entry(tmp_path, tuh), "MCH-1") == "aaaaaaab"
    assert patient_of(_entry(tmp_path, "sub-07/eeg/sub-07_task-rest_eeg.edf"), "MCH-1") == "07"
    # 3. a structured EDF+ code beats the name; a placeholder code does not
    assert patient_of(_entry(tmp_path, "S001R03.edf"), "MCH-1") == "MCH-1"
    # 4. a PhysioNet-style name, 5. the stem
    assert patient_of(_entry(tmp_path, "S001R03.edf"), "X") == "S001"
    assert patient_of(_entry(tmp_path, "night.edf"), None) == "night"


def test_patient_map_globs_folders_and_absolute_paths(tmp_path):
    csv = tmp_path / "map.csv"
    csv.write_text("path,patient\n# a comment\n\nS001R*.edf,P1\nward7/,P2\n"
                   f"{tmp_path / 'abs' / 'x.edf'},P3\n*.edf,P0\n", encoding="utf-8")
    mapping = read_patient_map(csv)
    assert mapping[0] == ("S001R*.edf", "P1") and len(mapping) == 4
    assert mapped_patient(mapping, "S001R03.edf", "/a/S001R03.edf") == "P1"
    assert mapped_patient(mapping, "ward7/bed2/night.edf", "/a/ward7/bed2/night.edf") == "P2"
    assert mapped_patient(mapping, "abs/x.edf", str(tmp_path / "abs" / "x.edf")) == "P3"
    assert mapped_patient(mapping, "other.edf", "/a/other.edf") == "P0"  # the first match wins
    assert mapped_patient(mapping[:2], "other.edf", "/a/other.edf") is None


@pytest.mark.parametrize("text, problem", [("a.edf\n", "line 1"), ("path,patient\nb.edf,\n", "line 2")])
def test_a_bad_patient_map_names_the_file_and_line(tmp_path, text, problem):
    csv = tmp_path / "map.csv"
    csv.write_text(text)
    with pytest.raises(PatientMapError) as err:
        read_patient_map(csv)
    assert "map.csv" in str(err.value) and problem in str(err.value)
    with pytest.raises(PatientMapError, match="cannot read"):
        read_patient_map(tmp_path / "missing.csv")


def test_bids_participants_give_sex_and_age(tmp_path):
    (tmp_path / "participants.tsv").write_text("participant_id\tsex\tage\nsub-01\tF\t34\nsub-02\tmale\tn/a\n")
    (tmp_path / "sub-01" / "eeg").mkdir(parents=True)
    (tmp_path / "sub-01" / "eeg" / "sub-01_task-rest_eeg.edf").write_bytes(synthetic_edf(seed=1, patient=ANONYMOUS))
    assert read_participants(tmp_path / "participants.tsv") == {"01": {"sex": "F", "age": 34.0},
                                                                "02": {"sex": "M", "age": None}}
    (entry,) = discover(tmp_path)
    assert patient_of(entry) == "01" and entry.participant == {"sex": "F", "age": 34.0}


# ---- through an index -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flat_index(tmp_path_factory, model_dir):
    """A flat PhysioNet-style folder: 3 runs of S001, 2 of S002, 1 of S003, a copy of S002R01 under
    another name, and a file the ``--patients`` mapping assigns; EDF+ patient fields anonymised."""
    tmp = tmp_path_factory.mktemp("patients")
    root = tmp / "archive"
    root.mkdir()
    runs = {"S001R01": 1, "S001R02": 2, "S001R03": 3, "S002R01": 4, "S002R02": 5, "S003R01": 6, "night": 7}
    for stem, seed in runs.items():
        (root / f"{stem}.edf").write_bytes(synthetic_edf(seed=seed, patient=ANONYMOUS))
    shutil.copy(root / "S002R01.edf", root / "copy_of_a_run.edf")
    mapping = tmp / "patients.csv"
    mapping.write_text("night.edf,S003\n")
    db = tmp / "idx"
    res = CliRunner().invoke(app, ["-q", "index", str(root), "--db", str(db), "--model", str(model_dir),
                                   "--patients", str(mapping), "-j", "0"])
    assert res.exit_code == 0, res.output
    from indexer.store import IndexStore

    with IndexStore.open(db).session() as s:
        rows = {Path(r.path).stem: (r.id, key) for r, key in s.execute(
            select(Recording, Patient.key).join(Patient, Recording.patient_id == Patient.id)
            .where(Recording.status == Status.INDEXED))}
    return db, root, rows


def test_runs_of_one_subject_are_one_patient(flat_index):
    _, _, rows = flat_index
    patients = {stem: key for stem, (_, key) in rows.items()}
    assert patients == {"S001R01": "S001", "S001R02": "S001", "S001R03": "S001", "S002R01": "S002",
                        "S002R02": "S002", "S003R01": "S003", "night": "S003", "copy_of_a_run": "copy_of_a_run"}


def test_prior_cases_are_other_patients_and_never_the_query_bytes(flat_index, tmp_path):
    from indexer.search import Index

    db, root, rows = flat_index
    index = Index.open(db)
    # S001's other runs are not "other patients"
    hits = index.similar(recording_id=rows["S001R01"][0], k=10)
    assert hits and {h.patient for h in hits} == {"S002", "S003", "copy_of_a_run"}
    # all runs of the same patient when asked, one per patient otherwise
    hits = index.similar(recording_id=rows["S001R01"][0], k=10, include_same_patient=True, one_per_patient=False)
    assert {h.recording_id for h in hits} >= {rows["S001R02"][0], rows["S001R03"][0]}
    # a copy of the query's file is not a prior case (same content hash), from the index or from a file
    for query in ({"recording_id": rows["S002R01"][0]}, {"fname": shutil.copy(root / "S002R01.edf", tmp_path)}):
        hits = index.similar(**query, k=10, include_same_patient=True, one_per_patient=False)
        ids = {h.recording_id for h in hits}
        assert rows["copy_of_a_run"][0] not in ids and rows["S002R01"][0] not in ids
        assert hits and max(h.score for h in hits) < 0.999


def test_cli_similar_json_excludes_the_subjects_runs(flat_index):
    db, _, rows = flat_index
    res = CliRunner().invoke(app, ["similar", "--recording", str(rows["S001R02"][0]), "--db", str(db),
                                   "--json", "-k", "5"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)["hits"]
    assert hits and all(h["patient"] != "S001" for h in hits)
    assert len({h["patient"] for h in hits}) == len(hits)  # one per patient


def test_a_bad_patients_file_is_one_line_and_indexes_nothing(flat_index, tmp_path, model_dir):
    _, root, _ = flat_index
    bad = tmp_path / "bad.csv"
    bad.write_text("only-one-column\n")
    res = CliRunner().invoke(app, ["index", str(root), "--db", str(tmp_path / "idx"), "--model", str(model_dir),
                                   "--patients", str(bad)])
    assert res.exit_code != 0 and "bad.csv" in res.output and "line 1" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "idx" / "elmsearch.sqlite").exists()

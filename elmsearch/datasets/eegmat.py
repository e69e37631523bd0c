"""Lay out PhysioNet's EEG During Mental Arithmetic Tasks (EEGMAT) as a TUH-style archive with reports.

Run: ``python -m elmsearch.datasets.eegmat --src EEGMAT_FOLDER --out ARCHIVE_FOLDER [--seed 0]``
(``bench/eval_eegmat.py`` does it for the benchmark).

Data: "EEG During Mental Arithmetic Tasks", version 1.0.0, PhysioNet
(https://physionet.org/content/eegmat/1.0.0/), licence ODC-By 1.0 (Open Data Commons
Attribution). 36 healthy volunteers, each with a resting recording (``SubjectNN_1.edf``)
and one during serial-subtraction mental arithmetic (``SubjectNN_2.edf``); 19 10-20
electrodes referenced to linked ears, 500 Hz, artifacts removed with ICA by the authors.
Please cite both:

- Zyma I, Tukaev S, Seleznov I, Kiyono K, Popov A, Chernykh M, Shpenkov O.
  Electroencephalograms during Mental Arithmetic Task Performance. Data. 2019;4(1):14.
  https://doi.org/10.3390/data4010014
- Goldberger AL, Amaral LAN, Glass L, Hausdorff JM, Ivanov PCh, Mark RG, Mietus JE, Moody GB,
  Peng C-K, Stanley HE. PhysioBank, PhysioToolkit, and PhysioNet: Components of a new research
  resource for complex physiologic signals. Circulation. 2000;101(23):e215-e220.

The EDFs are never copied into the repository: each recording in the archive is a symbolic
link (relative) to the file in ``--src`` (a hard link, then a copy, only where symbolic links
cannot be made). Layout, one session per recording so that each gets its own report
(``elmsearch.archive.discovery`` finds a report per session folder, ``SUBJECT_sNNN.txt``)::

    OUT/edf/000/aaaaaaNN/s001_YYYY/02_tcp_le/aaaaaaNN_s001_t000.edf   rest      (SubjectNN_1.edf)
    OUT/edf/000/aaaaaaNN/s001_YYYY/aaaaaaNN_s001.txt                  its report
    OUT/edf/000/aaaaaaNN/s002_YYYY/02_tcp_le/aaaaaaNN_s002_t000.edf   arithmetic (SubjectNN_2.edf)
    OUT/edf/000/aaaaaaNN/s002_YYYY/aaaaaaNN_s002.txt                  its report
    OUT/labels.csv     key columns + ``arithmetic`` (0/1), EEGMAT subject, age, sex, count quality...
    OUT/reports.jsonl  the same reports as a side file ({"subject", "session", "report"})
    OUT/splits.json    seeded subject split, 24 train / 12 test (archive subject ids)
    OUT/manifest.json  the summary ``build_eegmat_archive`` returns

``NN`` is the EEGMAT subject number, ``YYYY`` the recording year; ``02_tcp_le`` because the
recordings are referenced to linked ears. Reports are written from the published metadata
(healthy volunteer, age and sex from ``subject-info.csv``, condition), not from reading the
EEG: task-related changes are phrased as what is typical. The EDF patient fields are
anonymised and disagree with ``subject-info.csv`` (e.g. sex); trust the CSV.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from elmsearch.io.header import read_edf_header

logger = logging.getLogger(__name__)

MONTAGE = "02_tcp_le"
# EEGMAT file suffix -> (session, condition, arithmetic label)
CONDITIONS = {1: ("s001", "rest", 0), 2: ("s002", "arithmetic", 1)}
N_TRAIN, N_TEST = 24, 12
LABEL_COLUMNS = ("subject", "session", "montage", "token", "arithmetic", "condition", "eegmat_subject", "age",
                 "sex", "recording_year", "n_subtractions", "count_quality", "duration_s", "file", "source")
_INFO_COLUMNS = ("Subject", "Age", "Gender", "Recording year", "Number of subtractions", "Count quality")


def archive_subject(eegmat_subject: str) -> str:
    """TUH-style 8-character subject id for an EEGMAT subject: ``"Subject07"`` -> ``"aaaaaa07"``."""
    number = int(eegmat_subject.removeprefix("Subject"))
    return f"aaaaaa{number:02d}"


def read_subject_info(fname: str | os.PathLike) -> list[dict]:
    """Read EEGMAT's ``subject-info.csv``.

    Returns
    -------
    list of dict
        One per subject, sorted by id: ``eegmat_subject``, ``age`` (int), ``sex`` (``"F"``/``"M"``),
        ``recording_year`` (int), ``n_subtractions`` (float), ``count_quality`` (1: good, 0: bad).
    """
    fname = Path(fname)
    with fname.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or any(c not in rows[0] for c in _INFO_COLUMNS):
        raise ValueError(f"{fname}: expected columns {', '.join(_INFO_COLUMNS)}")
    out = [dict(eegmat_subject=r["Subject"].strip(), age=int(float(r["Age"])), sex=r["Gender"].strip().upper(),
                recording_year=int(r["Recording year"]), n_subtractions=float(r["Number of subtractions"]),
                count_quality=int(r["Count quality"])) for r in rows]
    return sorted(out, key=lambda r: r["eegmat_subject"])


# ---- reports -------------------------------------------------------------------------------
def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def write_report(age: int, sex: str, arithmetic: bool, rng: np.random.Generator) -> str:
    """A short clinician-style report for one EEGMAT recording, in varied wording.

    Parameters
    ----------
    age : int
        Years.
    sex : str
        ``"F"`` or ``"M"``.
    arithmetic : bool
        Recorded during serial-subtraction mental arithmetic (else at rest, eyes closed).
    rng : numpy.random.Generator
        Chooses among equivalent phrasings.

    Returns
    -------
    str
        ``HEADING: text`` sections separated by blank lines. A rest report never
        mentions arithmetic.
    """
    who = {"F": ["female", "woman"], "M": ["male", "man"]}[sex]
    who = who[:1] if age < 18 else who
    history = f"{age} year old {_pick(rng, who)}, healthy volunteer" + _pick(rng, [
        " with no neurological or psychiatric complaints.",
        " without neurological or psychiatric history.",
        ". No history of neurological or psychiatric illness.",
        " enrolled in a research EEG study; no neurological complaints.",
    ])
    if arithmetic:
        history += _pick(rng, [" EEG during a mental arithmetic task.",
                               " Recording during serial subtraction (mental arithmetic).",
                               " Cognitive task EEG: mental arithmetic."])
    else:
        history += _pick(rng, [" Baseline resting EEG.", " Resting recording.", " Routine resting study."])
    meds = _pick(rng, ["None.", "None reported.", "No psychoactive medications."])
    intro = _pick(rng, [
        "Digital EEG was recorded with a 23-channel system using the international 10-20 system of "
        "electrode placement, referenced to linked ears.",
        "EEG was recorded monopolarly from Ag/AgCl scalp electrodes placed according to the 10-20 system, "
        "with an interconnected ear reference.",
        "Research EEG recorded with standard 10-20 electrode placement and a linked-ear reference.",
    ])
    if arithmetic:
        intro += _pick(rng, [
            " The subject performed serial subtraction: a four-digit number and a two-digit number were given "
            "orally and the subject subtracted repeatedly.",
            " Recorded while the subject carried out serial-subtraction mental arithmetic with numbers given "
            "orally.",
            " The recording was obtained during a mental arithmetic task (serial subtraction).",
        ])
    else:
        intro += _pick(rng, [
            " The recording was obtained at rest with the eyes closed.",
            " The subject was awake and relaxed, with eyes closed, throughout the recording.",
            " Resting recording, eyes closed.",
        ])
    intro += _pick(rng, [" Ocular, muscle and cardiac artifacts were removed by independent component analysis.",
                         " The segment is artifact-free after independent component analysis.",
                         ""])
    if arithmetic:
        desc = [_pick(rng, [
            "The record was obtained during mental arithmetic in the awake state. Task-related changes typical "
            "of mental arithmetic are expected, with attenuation of the posterior alpha rhythm and increased "
            "frontal midline theta activity.",
            "During serial subtraction the background is that of alert wakefulness; posterior alpha is "
            "typically reduced by mental effort and frontal theta typically increased.",
            "Awake EEG during a mental arithmetic task. Cognitive effort of this kind typically attenuates "
            "posterior alpha activity and enhances frontal theta, as expected in this condition.",
        ])]
    else:
        desc = [_pick(rng, [
            "The recording shows relaxed wakefulness with the eyes closed. The background is symmetric, with "
            "posterior alpha activity as is typical of the resting eyes-closed state.",
            "Resting wakeful background with eyes closed. A posterior dominant alpha rhythm is typically "
            "prominent in this condition, with lower-voltage faster activity anteriorly.",
            "In the resting state with eyes closed the background is that of normal relaxed wakefulness, in "
            "which a well-formed posterior dominant alpha rhythm is typical.",
        ])]
    desc.append(_pick(rng, ["No epileptiform discharges are seen.",
                            "There are no focal or epileptiform features.",
                            "No focal slowing or epileptiform activity is described.",
                            ""]))
    if arithmetic:
        impression = _pick(rng, ["Normal EEG.", "Normal awake EEG.", "Normal EEG during mental arithmetic."])
        correlation = _pick(rng, [
            "Normal EEG in a healthy volunteer; the changes during mental arithmetic are physiological.",
            "Task-related changes reflect mental effort and are not abnormal.",
            "This is a normal EEG. Alpha attenuation during serial subtraction is a physiological response to mental "
            "effort.",
        ])
    else:
        impression = _pick(rng, ["Normal EEG.", "Normal awake EEG.", "This is a normal resting EEG."])
        correlation = _pick(rng, [
            "Normal resting EEG in a healthy volunteer.",
            "No focal or epileptiform abnormalities are present.",
            "This is a normal EEG for age.",
        ])
    sections = [("CLINICAL HISTORY", history), ("MEDICATIONS", meds), ("INTRODUCTION", intro),
                ("DESCRIPTION OF THE RECORD", " ".join(d for d in desc if d)),
                ("IMPRESSION", impression), ("CLINICAL CORRELATION", correlation)]
    return "\n\n".join(f"{h}: {b}" for h, b in sections) + "\n"


# ---- files ---------------------------------------------------------------------------------
def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()


def link_file(src: Path, dest: Path) -> str:
    """Make ``dest`` refer to ``src``: a relative symbolic link, else a hard link, else a copy.

    An existing link or identical copy is kept; anything else at ``dest`` is replaced.

    Returns
    -------
    str
        ``"symlink"``, ``"hardlink"`` or ``"copy"``.
    """
    src = src.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        target = os.path.relpath(src, dest.parent.resolve())
    except ValueError:  # another drive (Windows)
        target = str(src)
    if dest.is_symlink():
        if os.readlink(dest) == target:
            return "symlink"
    elif dest.is_file():
        if os.path.samefile(dest, src):
            return "hardlink"
    tmp = dest.with_name(f".{dest.name}.tmp")
    _remove(tmp)
    try:
        os.symlink(target, tmp)
        mode = "symlink"
    except (OSError, NotImplementedError) as err:
        logger.debug("%s: symbolic link failed (%s)", dest, err)
        try:
            os.link(src, tmp)
            mode = "hardlink"
        except OSError as err2:
            logger.debug("%s: hard link failed (%s)", dest, err2)
            if dest.is_file() and not dest.is_symlink() and _same_copy(dest, src):
                return "copy"
            shutil.copy2(src, tmp)
            mode = "copy"
    os.replace(tmp, dest)
    return mode


def _same_copy(a: Path, b: Path) -> bool:
    sa, sb = a.stat(), b.stat()
    return sa.st_size == sb.st_size and int(sa.st_mtime) == int(sb.st_mtime)


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` unless the file already holds it (atomic replace)."""
    if path.is_file() and not path.is_symlink() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def split_subjects(subjects: list[str], seed: int = 0, n_train: int = N_TRAIN) -> tuple[list[str], list[str]]:
    """Seeded subject-level split: a permutation of the sorted ids, the first ``n_train`` to train.

    Returns
    -------
    train, test : list of str
        Sorted, disjoint.
    """
    ids = sorted(subjects)
    order = np.random.default_rng([seed, 2019]).permutation(len(ids))
    train = sorted(ids[i] for i in order[:n_train])
    test = sorted(ids[i] for i in order[n_train:])
    return train, test


def build_eegmat_archive(src: Path, out: Path, seed: int = 0) -> dict:
    """Lay out EEGMAT as a TUH-style archive with one report per recording, labels and a split.

    Idempotent: a re-run keeps links and files that are already right and rewrites the rest.

    Parameters
    ----------
    src : Path
        The EEGMAT folder (``SubjectNN_1.edf``, ``SubjectNN_2.edf``, ``subject-info.csv``).
    out : Path
        Archive folder to write (created).
    seed : int
        Seeds the report wording and the subject split.

    Returns
    -------
    dict
        Summary (also written to ``out/manifest.json``): ``root``, ``source``, ``seed``,
        ``n_subjects``, ``n_recordings``, ``n_arithmetic``, ``link_modes`` (mode -> count),
        ``labels``, ``reports``, ``splits`` (paths), ``train``, ``test`` (archive subject ids).

    Raises
    ------
    FileNotFoundError
        ``src`` lacks ``subject-info.csv`` or one of the subjects' EDFs.
    """
    src, out = Path(src), Path(out)
    info_csv = src / "subject-info.csv"
    if not info_csv.is_file():
        raise FileNotFoundError(f"{info_csv}: not found (is {src} the EEGMAT folder?)")
    subjects = read_subject_info(info_csv)
    missing = [f"{s['eegmat_subject']}_{k}.edf" for s in subjects for k in CONDITIONS
               if not (src / f"{s['eegmat_subject']}_{k}.edf").is_file()]
    if missing:
        raise FileNotFoundError(f"{src}: {len(missing)} EDF file(s) missing, e.g. {missing[0]}")
    out.mkdir(parents=True, exist_ok=True)
    rows, reports, modes = [], [], {}
    for s in subjects:
        subject = archive_subject(s["eegmat_subject"])
        number = int(subject[-2:])
        for k, (session, condition, arithmetic) in CONDITIONS.items():
            source = src / f"{s['eegmat_subject']}_{k}.edf"
            sess_dir = out / "edf" / "000" / subject / f"{session}_{s['recording_year']}"
            token = "t000"
            fname = sess_dir / MONTAGE / f"{subject}_{session}_{token}.edf"
            mode = link_file(source, fname)
            modes[mode] = modes.get(mode, 0) + 1
            report = write_report(s["age"], s["sex"], bool(arithmetic), np.random.default_rng([seed, number, k]))
            _write_text(sess_dir / f"{subject}_{session}.txt", report)
            reports.append({"subject": subject, "session": session, "report": report})
            rows.append(dict(
                subject=subject, session=session, montage=MONTAGE, token=token, arithmetic=arithmetic,
                condition=condition, eegmat_subject=s["eegmat_subject"], age=s["age"], sex=s["sex"],
                recording_year=s["recording_year"], n_subtractions=f"{s['n_subtractions']:g}",
                count_quality=s["count_quality"], duration_s=f"{read_edf_header(source).duration:g}",
                file=fname.relative_to(out).as_posix(), source=source.name))
    labels_path, reports_path, splits_path = out / "labels.csv", out / "reports.jsonl", out / "splits.json"
    tmp = labels_path.with_name(".labels.csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, labels_path)
    _write_text(reports_path, "".join(json.dumps(r) + "\n" for r in reports))
    ids = [archive_subject(s["eegmat_subject"]) for s in subjects]
    train, test = split_subjects(ids, seed, n_train=round(len(ids) * N_TRAIN / (N_TRAIN + N_TEST)))
    to_eegmat = {archive_subject(s["eegmat_subject"]): s["eegmat_subject"] for s in subjects}
    splits = {"seed": seed, "unit": "subject", "train": train, "test": test,
              "train_eegmat": [to_eegmat[i] for i in train], "test_eegmat": [to_eegmat[i] for i in test]}
    _write_text(splits_path, json.dumps(splits, indent=1) + "\n")
    summary = {"root": str(out), "source": str(src), "seed": seed, "n_subjects": len(subjects),
               "n_recordings": len(rows), "n_arithmetic": sum(r["arithmetic"] for r in rows),
               "link_modes": modes, "labels": str(labels_path), "reports": str(reports_path),
               "splits": str(splits_path), "train": train, "test": test}
    _write_text(out / "manifest.json", json.dumps(summary, indent=1) + "\n")
    if modes.get("copy"):
        logger.warning("%s: %d EDF(s) copied (links failed); do not commit them", out, modes["copy"])
    logger.info("%s: %d recordings of %d subjects (%s)", out, len(rows), len(subjects),
                ", ".join(f"{n} {m}" for m, n in modes.items()))
    return summary


def main() -> None:
    """``python -m elmsearch.datasets.eegmat``: build the archive and print its summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, required=True, help="the EEGMAT folder (SubjectNN_1.edf, subject-info.csv)")
    ap.add_argument("--out", type=Path, required=True, help="archive folder to write")
    ap.add_argument("--seed", type=int, default=0, help="report wording and subject split")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = build_eegmat_archive(args.src, args.out, args.seed)
    print(json.dumps({k: v for k, v in summary.items() if k not in {"train", "test"}}))


if __name__ == "__main__":
    main()

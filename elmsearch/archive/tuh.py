"""Parsers for TUH-style EDF header fields and archive paths (strings in, values out)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

_MONTHS = {m: i for i, m in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1)}
_PATIENT = re.compile(
    r"^\s*(?P<code>\S+)"
    r"(?:\s+(?P<sex>[MFX])(?=\s|$))?"
    r"(?:\s+(?P<birth>\d{1,2}-[A-Za-z]{3}-\d{4}|X)(?=\s|$))?"
    r"(?P<rest>.*)$"
)
_AGE = re.compile(r"Age:\s*(?P<age>\d+(?:\.\d+)?)", re.IGNORECASE)
_EDFPLUS_START = re.compile(r"Startdate\s+(?P<d>\d{1,2}-[A-Za-z]{3}-\d{4})", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class PatientInfo:
    """What a TUH/EDF+ patient field says.

    Attributes
    ----------
    code : str | None
        Patient code (TUH: the 8-character subject id).
    sex : str | None
        ``"M"``, ``"F"`` or None when unknown.
    birthdate : datetime.date | None
    age : float | None
        Age in years from ``Age:NN`` (fractional ages such as ``Age:0.5`` kept).
    """

    code: str | None
    sex: str | None
    birthdate: dt.date | None
    age: float | None


def _parse_dmy(text: str) -> dt.date | None:
    try:
        d, mon, y = text.split("-")
        return dt.date(int(y), _MONTHS[mon.upper()], int(d))
    except (ValueError, KeyError):
        return None


def parse_patient_field(field: str) -> PatientInfo:
    """Parse an EDF patient field such as ``"00009932 F 01-JAN-1961 00009932 Age:53"``.

    Parameters
    ----------
    field : str
        The 80-character local patient identification, already decoded.

    Returns
    -------
    PatientInfo
        Fields that cannot be read are None; this never raises.
    """
    field = field.strip()
    m = _PATIENT.match(field) if field else None
    code = sex = birth = None
    if m:
        # Only a structured field (EDF+ "code sex birthdate name", TUH) or a lone id with a digit
        # in it names a patient code: in a free-text field the first word is often the
        # patient's name, which elmsearch never stores.
        structured = bool(m["sex"] or m["birth"]) or (" " not in field and any(c.isdigit() for c in field))
        code = None if m["code"] in {"X", "-"} or not structured else m["code"]
        sex = m["sex"] if m["sex"] in {"M", "F"} else None
        birth = _parse_dmy(m["birth"]) if m["birth"] and m["birth"] != "X" else None
    age_m = _AGE.search(field)
    age = float(age_m["age"]) if age_m else None
    return PatientInfo(code=code, sex=sex, birthdate=birth, age=age)


def parse_start(startdate: str, starttime: str, recording_field: str = "") -> dt.datetime | None:
    """Recording start from the EDF header.

    Parameters
    ----------
    startdate : str
        ``dd.mm.yy`` field (two-digit year: 85-99 -> 19xx, else 20xx, per the EDF spec).
    starttime : str
        ``hh.mm.ss`` field.
    recording_field : str
        The EDF+ recording field; its ``Startdate dd-MMM-yyyy`` carries a
        four-digit year and wins when present.

    Returns
    -------
    datetime.datetime | None
    """
    date = None
    m = _EDFPLUS_START.search(recording_field or "")
    if m:
        date = _parse_dmy(m["d"])
    if date is None:
        try:
            d, mo, y = (int(v) for v in startdate.strip().split("."))
            date = dt.date(1900 + y if y >= 85 else 2000 + y, mo, d)
        except ValueError:
            return None
    try:
        h, mi, s = (int(v) for v in starttime.strip().split("."))
        return dt.datetime(date.year, date.month, date.day, h, mi, s)
    except ValueError:
        return dt.datetime(date.year, date.month, date.day)


def date_is_suspect(when: dt.date | dt.datetime | None, today: dt.date | None = None) -> bool:
    """Flag anonymised or bogus dates (1899 and earlier, 1 Jan 2000, before 1950, future)."""
    if when is None:
        return False
    day = when.date() if isinstance(when, dt.datetime) else when
    today = today or dt.date.today()
    return day.year < 1950 or day == dt.date(2000, 1, 1) or day > today


# ---- archive paths -------------------------------------------------------------------------
_TUH_FILE = re.compile(r"^(?P<subject>[^_]+)_(?P<session>s\d+)_(?P<token>t\d+)$")
_TUH_SESSION = re.compile(r"^(?P<session>s\d+)_(?P<date>\d{4}(?:_\d{2}_\d{2})?)$")
_TUH_V1_SESSION = re.compile(r"^(?P<session>s\d+)_(?P<date>\d{4}_\d{2}_\d{2})$")
_MONTAGE = re.compile(r"^\d\d_tcp_(ar|le|ar_a)$|^\d\d_tcp_\w+$")
_BIDS_ENT = re.compile(r"(?P<key>sub|ses|task|acq|run)-(?P<val>[A-Za-z0-9]+)")


@dataclasses.dataclass(frozen=True)
class PathInfo:
    """What a recording's path says about it.

    Attributes
    ----------
    subject, session, montage, token : str
        The recording key; empty strings where the layout has no such level.
    layout : str
        ``"tuh"`` (TUH EEG v2), ``"tuab"``, ``"bids"`` or ``"flat"``.
    session_date : datetime.date | None
        Date from a TUH session folder name (``s001_2015_03_04``).
    split, label : str | None
        TUAB ``train``/``eval`` and ``normal``/``abnormal``.
    """

    subject: str
    session: str
    montage: str
    token: str
    layout: str
    session_date: dt.date | None = None
    split: str | None = None
    label: str | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        """``(subject, session, montage, token)``: the same session may exist in two montages."""
        return (self.subject, self.session, self.montage, self.token)


def _folder_date(text: str) -> dt.date | None:
    parts = [int(p) for p in text.split("_")]
    try:
        return dt.date(parts[0], parts[1], parts[2]) if len(parts) == 3 else None
    except ValueError:
        return None


def parse_recording_path(parts: tuple[str, ...]) -> PathInfo:
    """Classify a recording by the parts of its path relative to the archive root.

    Parameters
    ----------
    parts : tuple of str
        Path components, the file name last (e.g. ``Path.relative_to(root).parts``).

    Returns
    -------
    PathInfo
    """
    stem = parts[-1].rsplit(".", 1)[0]
    dirs = [p for p in parts[:-1]]
    montage = next((d for d in reversed(dirs) if _MONTAGE.match(d)), "")
    m = _TUH_FILE.match(stem)
    if m:
        lowered = [d.lower() for d in dirs]
        split = next((d for d in lowered if d in {"train", "eval", "dev"}), None)
        label = next((d for d in lowered if d in {"normal", "abnormal"}), None)
        session_date = None
        for d in dirs:
            sm = _TUH_SESSION.match(d)
            if sm and sm["session"] == m["session"]:
                session_date = _folder_date(sm["date"])
        layout = "tuab" if label else "tuh"
        return PathInfo(m["subject"], m["session"], montage, m["token"], layout,
                        session_date, split, label)
    ents = dict((e["key"], e["val"]) for e in _BIDS_ENT.finditer(stem))
    if "sub" in ents and stem.endswith("_eeg"):
        token = "_".join(f"{k}-{ents[k]}" for k in ("task", "acq", "run") if k in ents)
        return PathInfo(ents["sub"], ents.get("ses", ""), "", token, "bids")
    return PathInfo(stem, "", montage, "", "flat")


# ---- patients ------------------------------------------------------------------------------
# Public datasets that name files after subject and run; each pattern's "patient" group is the subject.
_NAME_PATIENT = (
    re.compile(r"^(?P<patient>S\d{3,})R\d{1,3}$"),  # PhysioNet EEGMMIDB: S001R03 (subject 1, run 3)
    re.compile(r"^(?P<patient>chb\d{2,}[a-z]?)_\d+[a-z+]*$", re.IGNORECASE),  # CHB-MIT: chb01_03
    re.compile(r"^(?P<patient>Subject\d+)_\d+$", re.IGNORECASE),  # EEGMAT: Subject00_1, Subject00_2
)
_PLACEHOLDER_CODES = {"x", "-", "0", "00", "na", "n/a", "none", "null", "unknown", "anonymous", "anon",
                      "patient", "subject", "patid", "id"}


def name_patient(stem: str) -> str | None:
    """The subject a PhysioNet-style file name names, or None.

    ``S001R03`` -> ``S001`` (EEGMMIDB), ``chb01_03`` -> ``chb01`` (CHB-MIT),
    ``Subject00_1`` -> ``Subject00`` (EEGMAT). Other names give None.
    """
    for pattern in _NAME_PATIENT:
        m = pattern.match(stem)
        if m:
            return m["patient"]
    return None


def real_patient_code(code: str | None) -> str | None:
    """``code`` when it identifies a patient, None for a placeholder.

    EDF+ writers that do not know the patient write ``X``; anonymisers and some devices
    write ``0``, ``000000``, ``unknown``, ``anonymous``. A code made of one repeated
    character or without any letter or digit is a placeholder too.
    """
    if not code:
        return None
    c = code.strip()
    if not c or c.lower() in _PLACEHOLDER_CODES or len(set(c)) == 1 or not any(ch.isalnum() for ch in c):
        return None
    return c

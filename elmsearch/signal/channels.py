"""Electrode names and the 20-channel TCP bipolar montage used by ELM.

Channel labels in clinical EDFs come in many spellings (``EEG FP1-REF``,
``EEG FP1-LE``, ``EEG Fp1``, ``Fp1``, ``T7`` for ``T3``...). Everything here is
pure string handling: no files, no signals.
"""

from __future__ import annotations

import re

# ELM's 20 bipolar derivations, in ELM's order (longitudinal "double banana" + central chain).
TCP_PAIRS: tuple[tuple[str, str], ...] = (
    ("Fp1", "F7"), ("F7", "T3"), ("T3", "T5"), ("T5", "O1"),
    ("Fp2", "F8"), ("F8", "T4"), ("T4", "T6"), ("T6", "O2"),
    ("T3", "C3"), ("C3", "Cz"), ("Cz", "C4"), ("C4", "T4"),
    ("Fp1", "F3"), ("F3", "C3"), ("C3", "P3"), ("P3", "O1"),
    ("Fp2", "F4"), ("F4", "C4"), ("C4", "P4"), ("P4", "O2"),
)  # fmt: skip
TCP_CH_NAMES: tuple[str, ...] = tuple(f"{a}-{b}" for a, b in TCP_PAIRS)

# Electrodes the montage needs, in first-use order (17 of the 10-20 system).
TCP_ELECTRODES: tuple[str, ...] = tuple(dict.fromkeys(e for pair in TCP_PAIRS for e in pair))

# All 10-20 electrodes we recognise, in canonical spelling (old nomenclature T3/T4/T5/T6).
STANDARD_1020: tuple[str, ...] = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T3", "C3", "Cz", "C4", "T4",
    "T5", "P3", "Pz", "P4", "T6", "O1", "O2", "A1", "A2",
)  # fmt: skip
_CANONICAL = {name.upper(): name for name in STANDARD_1020}
# Modified combinatorial nomenclature (ACNS 2006) -> classic names ELM uses.
_NEW_TO_OLD = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}
# Reference suffixes seen in TUH (-REF, -LE), other archives, and EEGMAT (A2-A1).
_REF_SUFFIXES = {"REF", "LE", "AR", "AVG", "CAR", "RE", "M1", "M2", "A1", "A2", "A1A2", "LINKED"}
_PREFIX = re.compile(r"^(EEG|EEG:)\s*", re.IGNORECASE)


def normalize_channel_name(name: str) -> str | None:
    """Map a raw EDF channel label to a canonical 10-20 electrode name.

    Parameters
    ----------
    name : str
        Label as written in the EDF header, e.g. ``"EEG FP1-REF"``, ``"EEG T7-LE"``
        or ``"Fp1"``.

    Returns
    -------
    str | None
        Canonical electrode (``"Fp1"``, ``"T3"``...) or ``None`` when the label is
        not a referential 10-20 scalp electrode (EKG, annotations, bipolar pairs...).
    """
    # PhysioNet's EEGMMIDB pads labels with dots to four characters ("Fp1.", "T7..", "Cz..")
    label = _PREFIX.sub("", name.strip()).strip().rstrip(".").upper().replace(" ", "")
    if "-" in label:
        electrode, _, ref = label.partition("-")
        if ref not in _REF_SUFFIXES:
            return None
        label = electrode
    label = _NEW_TO_OLD.get(label, label)
    return _CANONICAL.get(label)


def map_electrodes(ch_names: list[str]) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Find each canonical electrode among raw channel labels.

    Parameters
    ----------
    ch_names : list of str
        Raw labels, in file order.

    Returns
    -------
    found : dict
        Canonical electrode -> index into ``ch_names`` (first unambiguous match).
    duplicates : dict
        Canonical electrode -> every raw label that maps to it, for electrodes
        that appear more than once (callers decide whether that is an error).
    """
    found: dict[str, int] = {}
    seen: dict[str, list[str]] = {}
    for idx, raw in enumerate(ch_names):
        canonical = normalize_channel_name(raw)
        if canonical is None:
            continue
        seen.setdefault(canonical, []).append(raw)
        found.setdefault(canonical, idx)
    duplicates = {k: v for k, v in seen.items() if len(v) > 1}
    return found, duplicates


def tuh_channel_name(electrode: str, reference: str = "REF") -> str:
    """Spell a canonical electrode the TUH way, e.g. ``("Fp1", "LE") -> "EEG FP1-LE"``."""
    return f"EEG {electrode.upper()}-{reference}"

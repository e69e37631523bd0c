"""The label files of the TUH EEG corpora (TUSZ, TUEV, TUAR), parsed into events.

Parsers take the file's text (readers in ``elmsearch.io.events`` open the files):

- ``.csv`` (TUSZ v2, TUAR v3): ``# key = value`` comment lines, then
  ``channel,start_time,stop_time,label,confidence`` rows, one per channel of the TCP montage;
- ``.csv_bi``: the same with ``channel`` = ``TERM`` (the whole recording; seizure vs background);
- ``.tse`` / ``.tse_bi`` (TUSZ v1): ``version = tse_v1.0.0``, then ``start stop label confidence``
  lines for the whole recording;
- ``.lbl`` / ``.lbl_bi`` (TUSZ v1): ``montage = i, NAME: ...`` lines, ``symbols[level] = {i: 'code', ...}``
  and ``label = {level, sublevel, start, stop, channel, [probabilities]}`` lines, the label being
  the symbol with the highest probability;
- ``.rec`` (TUEV): ``channel,start,stop,code`` rows, ``code`` 1-6 of ``TUEV_CODES`` and
  ``channel`` an index into ``TUH_TCP_22``.

Background (``bckg``) and empty (``null``) labels are not events and are dropped. Each event
carries the vocabulary's meaning of its label (``meaning``; "spsw" → "spike and/or sharp wave"),
so that a text query finds it in plain words.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

from elmsearch.io.events import Event

# The TUH annotation vocabulary (TUSZ/TUEV/TUAR annotation guidelines), code -> meaning.
TUH_VOCABULARY = {
    "seiz": "seizure",
    "fnsz": "focal non-specific seizure",
    "gnsz": "generalized non-specific seizure",
    "spsz": "simple partial seizure",
    "cpsz": "complex partial seizure",
    "absz": "absence seizure",
    "tnsz": "tonic seizure",
    "cnsz": "clonic seizure",
    "tcsz": "tonic-clonic seizure",
    "atsz": "atonic seizure",
    "mysz": "myoclonic seizure",
    "nesz": "non-epileptic seizure",
    "spsw": "spike and/or sharp wave",
    "gped": "generalized periodic epileptiform discharges",
    "pled": "periodic lateralized epileptiform discharges",
    "eyem": "eye movement artifact",
    "eybl": "eye blink artifact",
    "artf": "artifact",
    "musc": "muscle artifact",
    "chew": "chewing artifact",
    "shiv": "shivering artifact",
    "elpp": "electrode pop artifact",
    "elst": "electrostatic artifact",
    "elec": "electrode artifact",
    "slow": "slowing",
    "bckg": "background",
    "null": "no label",
}
NOT_EVENTS = frozenset({"bckg", "null", "(null)", ""})

# TUEV's .rec label codes
TUEV_CODES = {1: "spsw", 2: "gped", 3: "pled", 4: "eyem", 5: "artf", 6: "bckg"}

# The 22 channels of the TUH TCP montage, in the order TUEV's .rec channel numbers index
TUH_TCP_22 = ("FP1-F7", "F7-T3", "T3-T5", "T5-O1", "FP2-F8", "F8-T4", "T4-T6", "T6-O2", "A1-T3", "T3-C3",
              "C3-CZ", "CZ-C4", "C4-T4", "T4-A2", "FP1-F3", "F3-C3", "C3-P3", "P3-O1", "FP2-F4", "F4-C4",
              "C4-P4", "P4-O2")

LABEL_SUFFIXES = (".csv", ".csv_bi", ".tse", ".tse_bi", ".lbl", ".lbl_bi", ".rec")


class LabelFileError(ValueError):
    """A label file that cannot be parsed; the message names the line."""


def meaning_of(code: str) -> str | None:
    """The vocabulary's words for a TUH label code (``"eyem_musc"`` → both meanings), or None."""
    code = code.strip().lower()
    if code in TUH_VOCABULARY:
        return TUH_VOCABULARY[code]
    parts = code.split("_")
    if len(parts) > 1 and all(p in TUH_VOCABULARY for p in parts):
        return " and ".join(TUH_VOCABULARY[p] for p in parts)
    return None


def _event(start: float, stop: float, label: str, source: str, channels: tuple[str, ...] = ()) -> Event | None:
    label = label.strip()
    if label.lower() in NOT_EVENTS:
        return None
    if not (stop >= start >= 0):
        raise LabelFileError(f"event {label!r} has an impossible span {start:g}..{stop:g} s")
    return Event(onset=start, duration=stop - start, label=label, source=source, channels=channels,
                 meaning=meaning_of(label))


def _number(text: str, what: str, line_no: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise LabelFileError(f"line {line_no}: {what} {text.strip()!r} is not a number") from None


def _merge(events: Iterable[Event]) -> list[Event]:
    """One event per (span, label) with the channels it was marked on (TUH marks each channel)."""
    by_span: dict[tuple, list[str]] = {}
    first: dict[tuple, Event] = {}
    for e in events:
        key = (round(e.onset, 4), round(e.duration, 4), e.label, e.source)
        first.setdefault(key, e)
        by_span.setdefault(key, []).extend(e.channels)
    out = []
    for key, e in first.items():
        channels = tuple(dict.fromkeys(by_span[key]))
        out.append(Event(e.onset, e.duration, e.label, e.source, channels, e.meaning))
    return sorted(out, key=lambda e: (e.onset, e.label))


def parse_tuh_csv(text: str, source: str = "tuh-csv") -> list[Event]:
    """Events of a TUH ``.csv`` / ``.csv_bi`` label file (``TERM`` = the whole recording)."""
    events, header = [], None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cells = [c.strip() for c in line.split(",")]
        if header is None:
            header = [c.lower() for c in cells]
            missing = {"start_time", "stop_time", "label"} - set(header)
            if missing:
                raise LabelFileError(f"line {n}: the header lacks {', '.join(sorted(missing))} "
                                     f"(found {', '.join(cells)})")
            continue
        if len(cells) != len(header):
            raise LabelFileError(f"line {n}: {len(cells)} fields where the header has {len(header)}")
        row = dict(zip(header, cells, strict=True))
        channel = row.get("channel", "TERM")
        e = _event(_number(row["start_time"], "start", n), _number(row["stop_time"], "stop", n), row["label"],
                   source, () if channel.upper() == "TERM" else (channel.upper(),))
        if e is not None:
            events.append(e)
    if header is None:
        raise LabelFileError("no header line (channel,start_time,stop_time,label,confidence)")
    return _merge(events)


def parse_tse(text: str, source: str = "tuh-tse") -> list[Event]:
    """Events of a TUH ``.tse`` / ``.tse_bi`` file: ``start stop label [confidence]`` lines."""
    events = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#") or line.lower().startswith("version"):
            continue
        cells = line.split()
        if len(cells) < 3:
            raise LabelFileError(f"line {n}: expected 'start stop label [confidence]', got {line[:60]!r}")
        e = _event(_number(cells[0], "start", n), _number(cells[1], "stop", n), cells[2], source)
        if e is not None:
            events.append(e)
    return _merge(events)


_LBL_LABEL = re.compile(r"label\s*=\s*\{(.*)\}\s*$")
_LBL_SYMBOLS = re.compile(r"symbols\[(\d+)\]\s*=\s*(\{.*\})\s*$")
_LBL_MONTAGE = re.compile(r"montage\s*=\s*(\d+)\s*,\s*([^:]+):")


def parse_lbl(text: str, source: str = "tuh-lbl") -> list[Event]:
    """Events of a TUH ``.lbl`` / ``.lbl_bi`` file (the most probable symbol of each ``label`` line)."""
    montage: dict[int, str] = {}
    symbols: dict[int, dict[int, str]] = {}
    events = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if m := _LBL_MONTAGE.match(line):
            montage[int(m.group(1))] = m.group(2).strip().upper()
        elif m := _LBL_SYMBOLS.match(line):
            try:
                table = ast.literal_eval(m.group(2))
            except (ValueError, SyntaxError):
                raise LabelFileError(f"line {n}: unreadable symbols table") from None
            symbols[int(m.group(1))] = {int(k): str(v) for k, v in table.items()}
        elif m := _LBL_LABEL.match(line):
            try:
                level, _sub, start, stop, channel, probs = ast.literal_eval("(" + m.group(1) + ")")
            except (ValueError, SyntaxError, TypeError):
                raise LabelFileError(f"line {n}: expected 'label = {{level, sublevel, start, stop, channel, "
                                     f"[probabilities]}}'") from None
            table = symbols.get(int(level))
            if table is None:
                raise LabelFileError(f"line {n}: label of level {level} before its symbols table")
            best = max(range(len(probs)), key=lambda i: probs[i]) if probs else 0
            code = table.get(best, "null")
            ch = int(channel)
            names = (montage[ch],) if ch in montage else ()
            e = _event(float(start), float(stop), code, source, names)
            if e is not None:
                events.append(e)
    return _merge(events)


def parse_rec(text: str, source: str = "tuh-rec") -> list[Event]:
    """Events of a TUEV ``.rec`` file: ``channel,start,stop,code`` rows."""
    events = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 4:
            raise LabelFileError(f"line {n}: expected 'channel,start,stop,code', got {line[:60]!r}")
        code = int(_number(cells[3], "label code", n))
        if code not in TUEV_CODES:
            raise LabelFileError(f"line {n}: label code {code} is not one of TUEV's 1-6")
        ch = int(_number(cells[0], "channel", n))
        names = (TUH_TCP_22[ch],) if 0 <= ch < len(TUH_TCP_22) else ()
        e = _event(_number(cells[1], "start", n), _number(cells[2], "stop", n), TUEV_CODES[code], source, names)
        if e is not None:
            events.append(e)
    return _merge(events)


PARSERS = {".csv": parse_tuh_csv, ".csv_bi": parse_tuh_csv, ".tse": parse_tse, ".tse_bi": parse_tse,
           ".lbl": parse_lbl, ".lbl_bi": parse_lbl, ".rec": parse_rec}
"""Label file suffix → parser (text → events)."""

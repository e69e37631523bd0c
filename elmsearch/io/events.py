"""Time-stamped events of a recording: what the technologist marked, from every place it is kept.

One model (``Event``: onset and duration in seconds from the recording's first sample, the
channels it concerns (none: the whole recording), its label text, where it came from, and
the vocabulary's meaning of a coded label) read from:

- the file itself: EDF+/BDF+ annotation signals (TALs, EDF+D included: each data record's
  time-keeping TAL places its events on the samples' time line, gaps removed), BrainVision
  markers and EEGLAB events through MNE's readers;
- sidecar files beside it: BIDS ``*_events.tsv`` and the TUH corpora's label files
  (``elmsearch.archive.tuh_labels``: ``.csv``, ``.csv_bi``, ``.tse``, ``.lbl``, ``.rec``).

Reading events never refuses a recording: a damaged annotation signal or label file gives a
warning (``EventsRead.warnings``) and the events that could be read.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from elmsearch._lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy", globals(), "np")  # on first use: `elmsearch show` never computes


logger = logging.getLogger(__name__)

MAX_LABEL_CHARS = 512
MAX_EVENTS = 100_000  # per recording; more is a stimulus log, not annotations (the rest are dropped, with a warning)
MAX_SIDECAR_BYTES = 20_000_000
_ONSET = re.compile(r"^[+-]\d+(\.\d*)?$")
_DURATION = re.compile(r"^\d+(\.\d*)?$")


@dataclasses.dataclass(frozen=True)
class Event:
    """An annotated span of a recording.

    Attributes
    ----------
    onset : float
        Seconds from the recording's first sample (on its samples' time line).
    duration : float
        Seconds; 0 for a point event.
    label : str
        The text as written (``"eyes closed"``, ``"T1"``, ``"spsw"``).
    source : str
        Where it was read: ``edf+``, ``brainvision``, ``eeglab``, ``bids``, or a TUH label format
        (``tuh-csv``, ``tuh-csv_bi``, ``tuh-tse``, ``tuh-tse_bi``, ``tuh-lbl``, ``tuh-lbl_bi``, ``tuh-rec``).
    channels : tuple of str
        The channels (or bipolar derivations) it was marked on; empty for the whole recording.
    meaning : str | None
        The vocabulary's words for a coded label (TUH: ``"spsw"`` → ``"spike and/or sharp wave"``).
    """

    onset: float
    duration: float
    label: str
    source: str
    channels: tuple[str, ...] = ()
    meaning: str | None = None

    @property
    def end(self) -> float:
        """Seconds from the first sample to the end of the event."""
        return self.onset + self.duration

    @property
    def text(self) -> str:
        """What a text query reads: the label and, when it differs, its meaning."""
        if self.meaning and self.meaning.casefold() != self.label.casefold():
            return f"{self.label} ({self.meaning})"
        return self.label

    def to_dict(self) -> dict:
        """JSON-ready, with the keys of ``show --json`` and the API."""
        return {"onset": round(self.onset, 4), "duration": round(self.duration, 4), "label": self.label,
                "meaning": self.meaning, "channels": list(self.channels), "source": self.source}


@dataclasses.dataclass
class EventsRead:
    """The events of one recording, what could not be read (one line each), and its sidecars' ``sidecar_stamp``."""

    events: list[Event] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    stamp: str = ""


# ---- EDF+ / BDF+ annotation signals ----------------------------------------------------------

def parse_tal(data: bytes) -> list[tuple[float, float, list[str]]]:
    r"""The time-stamped annotation lists (TALs) of one data record's annotation bytes.

    Each TAL is ``+onset[\x15duration]\x14text\x14text...\x14\x00`` (EDF+ specification,
    section 2.2); the record's unused bytes are ``\x00``. Texts are UTF-8 (latin-1 where they
    are not).

    Returns
    -------
    list of (onset, duration, texts)
        In file order; the first TAL of a record is its time-keeping TAL (no text).

    Raises
    ------
    ValueError
        A TAL whose onset or duration is not a number.
    """
    out = []
    for chunk in data.split(b"\x00"):
        if not chunk.strip(b"\x00 "):
            continue
        parts = chunk.split(b"\x14")
        stamp = parts[0].decode("latin-1").strip()
        onset, _, duration = stamp.partition("\x15")
        if not _ONSET.match(onset) or (duration and not _DURATION.match(duration)):
            raise ValueError(f"unreadable time stamp {stamp[:40]!r}")
        texts = []
        for raw in parts[1:]:
            if not raw:
                continue
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(raw.decode("latin-1"))
        out.append((float(onset), float(duration) if duration else 0.0, texts))
    return out


def annotation_signals(header) -> list[int]:
    """Indices of a header's annotation signals (``EDF Annotations`` / ``BDF Annotations``)."""
    return [i for i, label in enumerate(header.labels) if label.strip().lower() in ("edf annotations",
                                                                                      "bdf annotations")]


def read_edf_annotations(fname: str | os.PathLike, header) -> EventsRead:
    """Events of an EDF+/BDF+ file's annotation signals.

    Parameters
    ----------
    fname : path-like
    header : elmsearch.io.header.EdfHeader

    Returns
    -------
    EventsRead
        Onsets on the samples' time line: the time of each data record is its time-keeping TAL
        (EDF+D: records need not follow each other), the file's first record is 0 s. A record
        whose TALs cannot be read is skipped and counted in a warning.
    """
    out = EventsRead()
    signals = annotation_signals(header)
    if not signals:
        return out
    width = 3 if header.kind == "BDF" else 2
    spr = np.asarray(header.samples_per_record)
    record_bytes = int(spr.sum()) * width
    offsets = np.concatenate([[0], np.cumsum(spr)[:-1]]) * width
    bad = 0
    first_error = ""
    record_start: list[float] = []
    pending: list[tuple[int, float, float, list[str]]] = []
    try:
        data = np.memmap(fname, np.uint8, "r", offset=header.header_bytes, shape=(header.n_records * record_bytes,))
    except (OSError, ValueError) as err:
        out.warnings.append(f"annotations not read: {err}")
        return out
    rd = header.record_duration
    for r in range(header.n_records):
        base = r * record_bytes
        start = None
        try:
            for i in signals:
                raw = bytes(data[base + offsets[i]: base + offsets[i] + spr[i] * width])
                tals = parse_tal(raw)
                if i == signals[0] and tals:
                    start = tals[0][0]  # the time-keeping TAL
                    tals = tals[1:] if not tals[0][2] else tals
                for onset, duration, texts in tals:
                    pending.append((r, onset, duration, texts))
        except ValueError as err:
            bad += 1
            first_error = first_error or f"record {r}: {err}"
        record_start.append(start if start is not None else (record_start[-1] + rd if record_start else 0.0))
    del data
    if bad:
        out.warnings.append(f"{bad} of {header.n_records} data records have an unreadable annotation signal "
                            f"({first_error}); their annotations are not read")
    starts = np.asarray(record_start)
    t0 = starts[0] if len(starts) else 0.0
    continuous = not header.discontinuous
    for _r, onset, duration, texts in pending:
        if continuous:
            t = float(onset - t0)
        else:  # the record whose clock time holds the onset, then the offset inside it
            k = max(int(np.searchsorted(starts, onset, side="right")) - 1, 0)
            t = float(k * rd + min(onset - starts[k], rd))
        for text in texts:
            label, _, channel = text.partition("@@")  # MNE's convention for a channel's annotation
            label = " ".join(label.split())[:MAX_LABEL_CHARS]
            if label:
                out.events.append(Event(max(t, 0.0), duration, label, "edf+",
                                        (channel.strip(),) if channel.strip() else ()))
    return out


def event_windows(events: list[Event], n_windows: int, window_s: float) -> list[tuple[int, Event]]:
    """The windows each event spans: ``(window index, event)`` for windows ``[i w, (i + 1) w)`` it overlaps.

    A point event (duration 0) marks the window that holds its onset; events outside the
    ``n_windows`` windows are left out.
    """
    out = []
    for e in events:
        first = int(e.onset // window_s)
        last = int(np.ceil(e.end / window_s)) - 1 if e.duration > 0 else first
        out += [(i, e) for i in range(max(first, 0), min(last, n_windows - 1) + 1)]
    return out


# ---- BrainVision / EEGLAB (MNE) --------------------------------------------------------------

def read_mne_annotations(raw, source: str) -> EventsRead:
    """Events of a recording opened with MNE (``raw.annotations``); onsets from its first sample."""
    out = EventsRead()
    ann = raw.annotations
    shift = raw.first_time if ann.orig_time is not None else 0.0
    ch_names = getattr(ann, "ch_names", None)
    for n, (onset, duration, desc) in enumerate(zip(ann.onset, ann.duration, ann.description, strict=True)):
        label = " ".join(str(desc).split())[:MAX_LABEL_CHARS]
        if not label or label.rstrip("/") == "New Segment":  # BrainVision's segment marker
            continue
        channels = tuple(ch_names[n]) if ch_names is not None and len(ch_names[n]) else ()
        out.events.append(Event(max(float(onset) - shift, 0.0), float(duration), label, source, channels))
    return out


# ---- sidecars --------------------------------------------------------------------------------

def parse_bids_events(text: str) -> list[Event]:
    """Events of a BIDS ``*_events.tsv`` (``onset``, ``duration``, and ``trial_type`` or ``value``).

    Raises
    ------
    ValueError
        No ``onset`` column, or a row whose onset is not a number (naming the line).
    """
    rows = csv.DictReader(io.StringIO(text), delimiter="\t")
    fields = [f.strip().lower() for f in rows.fieldnames or []]
    if "onset" not in fields:
        raise ValueError("no 'onset' column")
    rows.fieldnames = fields
    label_col = next((c for c in ("trial_type", "value", "event_type", "description", "stim_type") if c in fields),
                     None)
    events = []
    for n, row in enumerate(rows, 2):
        try:
            onset = float(row["onset"])
        except (TypeError, ValueError):
            raise ValueError(f"line {n}: onset {row.get('onset')!r} is not a number") from None
        try:
            duration = float(row.get("duration") or 0)
        except ValueError:
            duration = 0.0  # "n/a"
        if not math.isfinite(duration) or duration < 0:
            duration = 0.0
        label = (row.get(label_col) or "").strip() if label_col else ""
        if label.lower() in ("", "n/a"):
            label = label_col and row.get("value", "").strip() or "event"
        events.append(Event(onset, duration, label[:MAX_LABEL_CHARS], "bids"))
    return events


def sidecar_files(fname: str | os.PathLike) -> list[Path]:
    """The event files beside a recording: BIDS ``<base>_events.tsv`` and TUH label files of its stem."""
    from elmsearch.archive.tuh_labels import LABEL_SUFFIXES

    path = Path(fname)
    stem = path.stem
    found = [path.with_name(stem + suffix) for suffix in LABEL_SUFFIXES]
    base, sep, kind = stem.rpartition("_")
    if sep and kind in ("eeg", "ieeg"):
        found.append(path.with_name(f"{base}_events.tsv"))
    return [p for p in found if p.is_file()]


def sidecar_stamp(fname: str | os.PathLike) -> str:
    """A fingerprint of the event files beside a recording (names, sizes, modification times; stat only).

    The indexer stores it with the recording: a label file added, changed or removed beside an
    unchanged recording changes it, and the next run reads the events again.
    """
    import hashlib

    h = hashlib.sha1(usedforsecurity=False)
    for p in sidecar_files(fname):
        try:
            st = p.stat()
        except OSError:
            continue
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def read_sidecar(fname: str | os.PathLike) -> list[Event]:
    """Events of one sidecar file, parsed by its suffix.

    Raises
    ------
    ValueError
        A file that is too large or cannot be parsed (the message says why).
    """
    from elmsearch.archive.tuh_labels import PARSERS

    path = Path(fname)
    if path.stat().st_size > MAX_SIDECAR_BYTES:
        raise ValueError(f"larger than {MAX_SIDECAR_BYTES // 1_000_000} MB")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if path.name.endswith("_events.tsv"):
        return parse_bids_events(text)
    suffix = path.suffix.lower()
    return PARSERS[suffix](text, "tuh-" + suffix.lstrip("."))


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def read_events(fname: str | os.PathLike, header=None, raw=None, duration: float | None = None) -> EventsRead:
    """Every event of a recording: its own annotations and its sidecar files. Never raises.

    Parameters
    ----------
    fname : path-like
        The recording.
    header : EdfHeader | None
        Its header (read here when not given).
    raw : mne.io.BaseRaw | None
        The recording opened with MNE, for BrainVision and EEGLAB files (opened here when not given).
    duration : float | None
        Its duration in seconds: events that start after it are dropped (with a warning).

    Returns
    -------
    EventsRead
        Events sorted by onset; one warning line per source that could not be read.
    """
    from elmsearch.io.header import open_mne_format, read_header

    out = EventsRead(stamp=sidecar_stamp(fname))
    try:
        header = header or read_header(fname)
        if header.kind in ("EDF", "BDF"):
            got = read_edf_annotations(fname, header)
        else:
            raw = raw if raw is not None else open_mne_format(str(fname), header.kind)
            got = read_mne_annotations(raw, header.kind.lower())
        out.events += got.events
        out.warnings += got.warnings
    except Exception as err:  # noqa: BLE001 -- annotations never refuse a recording
        logger.debug("%s", fname, exc_info=True)
        out.warnings.append(f"annotations not read: {_one_line(err)}")
    for side in sidecar_files(fname):
        try:
            out.events += read_sidecar(side)
        except Exception as err:  # noqa: BLE001 -- a bad label file never refuses a recording
            out.warnings.append(f"{side.name}: {_one_line(err)}")
    if duration is not None:
        late = [e for e in out.events if e.onset > duration + 1e-6]
        if late:
            out.warnings.append(f"{len(late)} events start after the recording's end ({duration:g} s) and are "
                                "not kept")
            out.events = [e for e in out.events if e.onset <= duration + 1e-6]
    if len(out.events) > MAX_EVENTS:
        out.warnings.append(f"{len(out.events)} events; the first {MAX_EVENTS} are kept")
    out.events = sorted(out.events, key=lambda e: (e.onset, e.label))[:MAX_EVENTS]
    for w in out.warnings:
        logger.warning("%s: %s", fname, w)
    return out

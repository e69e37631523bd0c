"""EEG report text: sections, sentences and the text segments used for training.

Clinical EEG reports (the Temple University Hospital EEG corpus, clinicians' letters,
transcription samples) are loosely structured: upper-case headings such as
``CLINICAL HISTORY:`` or ``IMPRESSION:`` start sections, and the body of a section runs
until the next heading. :func:`parse_report` turns such a text into a :class:`Report`
of :class:`Section` and :class:`Sentence` objects whose character offsets point into the
normalised text, and :meth:`Report.segments` yields the units (sentences or paragraphs,
optionally prefixed with their heading) that an ELM-style EEG–text model is trained on.

Parsing is pure (strings in, objects out); :func:`decode_report_bytes`,
:func:`read_report` and :func:`read_reports_jsonl` are the small functions that touch
files and raise :class:`~elmsearch.errors.ReportError` with one clear line.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from elmsearch.errors import ReportError

logger = logging.getLogger(__name__)

__all__ = [
    "ELM_HEADINGS",
    "FINDING_HEADINGS",
    "IMPRESSION_HEADINGS",
    "Report",
    "Section",
    "Sentence",
    "decode_report_bytes",
    "parse_report",
    "read_report",
    "read_reports_jsonl",
]

#: Section headings kept by ELM (Gijsen & Ritter, 2025) when building text for training.
ELM_HEADINGS: tuple[str, ...] = (
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
)

#: Headings whose sections describe what was seen in the EEG (not history or drugs).
FINDING_HEADINGS: tuple[str, ...] = (
    # description of the recording
    "DESCRIPTION OF THE RECORD",
    "DESCRIPTION OF RECORD",
    "DESCRIPTION OF THE RECORDING",
    "DESCRIPTION",
    "FINDINGS",
    "EEG FINDINGS",
    "EEG",
    "REPORT",
    "EEG REPORT",
    "EEG BACKGROUND",
    "BACKGROUND",
    "BACKGROUND ACTIVITY",
    "HR",
    "HEART RATE",
    # state, activation and events
    "RANDOM WAKEFULNESS AND SLEEP",
    "SLEEP",
    "SLEEP PATTERNS",
    "ACTIVATION PROCEDURES",
    "HYPERVENTILATION",
    "PHOTIC STIMULATION",
    "EVENTS",
    "EVENT",
    "EPILEPTIFORM ACTIVITY",
    "OTHER PAROXYSMAL ACTIVITY (NON-EPILEPTIFORM)",
    # interpretation
    "IMPRESSION",
    "CONCLUSION",
    "SUMMARY OF FINDINGS",
    "SUMMARY",
    "INTERPRETATION",
    "CLINICAL INTERPRETATION",
    "CORRELATION",
    "CLINICAL CORRELATION",
)

#: Impression-like headings, in the order :attr:`Report.impression` looks for them.
IMPRESSION_HEADINGS: tuple[str, ...] = (
    "IMPRESSION",
    "CONCLUSION",
    "SUMMARY OF FINDINGS",
    "SUMMARY",
    "INTERPRETATION",
    "CLINICAL INTERPRETATION",
)

# Headings that name the same section; Report.section() accepts any of a group.
_ALIAS_GROUPS: tuple[tuple[str, ...], ...] = (
    (
        "DESCRIPTION OF THE RECORD",
        "DESCRIPTION OF RECORD",
        "DESCRIPTION OF THE RECORDING",
        "DESCRIPTION",
    ),
    (
        "IMPRESSION",
        "IMPRESSIONS",
        "CONCLUSION",
        "CONCLUSIONS",
        "SUMMARY OF FINDINGS",
        "INTERPRETATION",
        "CLINICAL INTERPRETATION",
    ),
    ("CLINICAL CORRELATION", "CORRELATION"),
    ("CLINICAL HISTORY", "HISTORY", "PATIENT HISTORY"),
    ("MEDICATIONS", "MEDICATION", "AED", "AEDS"),
    ("HR", "HEART RATE"),
)
_ALIASES: dict[str, frozenset[str]] = {
    name: frozenset(group) for group in _ALIAS_GROUPS for name in group
}

# Headings accepted in any letter case ("Impression:"); upper-case ones need no list.
_KNOWN_HEADINGS: frozenset[str] = frozenset(
    ELM_HEADINGS
    + FINDING_HEADINGS
    + IMPRESSION_HEADINGS
    + tuple(name for group in _ALIAS_GROUPS for name in group)
    + (
        "INTRODUCTION",
        "TECHNIQUE",
        "TECHNICAL DIFFICULTIES",
        "REASON FOR STUDY",
        "INDICATION",
        "INDICATIONS",
        "RECOMMENDATION",
        "RECOMMENDATIONS",
        "PROCEDURE",
    )
)

# --- normalisation and headings --------------------------------------------------------

_NEWLINES_RE = re.compile("\r\n|\r|\u2028|\u2029")
# A candidate heading: start of a line, optional indentation, up to 80 chars without a colon.
_HEAD_RE = re.compile(r"^[ \t]*(?P<head>[^:\n]{1,80}):", re.MULTILINE)
_HEAD_PUNCT = frozenset(" \t/&(),'-")
# A horizontal rule ("-----", "=====") separating a metadata header from the report.
_RULE_LINE_RE = re.compile(r"^[ \t]*[-=_*~]{8,}[ \t]*$")
_KEY_VALUE_RE = re.compile(r"^[ \t]*(?P<key>[A-Za-z][\w .,/&()'-]{0,40}):(?:[ \t]|$)")
_MAX_HEADER_LINES = 50


def _canonical_heading(name: str) -> str:
    """Return a heading in canonical form: upper case, one space between words, no colon."""
    return " ".join(name.strip().rstrip(":").split()).upper()


def _is_heading(head: str, after: str) -> bool:
    """Tell whether the text before a line's first colon is a section heading.

    Parameters
    ----------
    head : str
        The text between the start of the line and the colon, indentation included.
    after : str
        The characters just after the colon (a few are enough).

    Returns
    -------
    bool
        True for an upper-case heading of 2 to 60 characters with at least two letters,
        or a known heading in any case; False for times, ratios and URLs.
    """
    name = head.strip()
    if not 2 <= len(name) <= 60:
        return False
    if not (name[0].isalnum() or name[0] == "("):
        return False
    if any(not (c.isalnum() or c in _HEAD_PUNCT) for c in name):
        return False
    letters = [c for c in name if c.isalpha()]
    if len(letters) < 2:
        return False
    # "AT 2:15", "RATIO 3:1" are times and ratios; "HTTP://" is a URL.
    if name[-1].isdigit() and after[:1].isdigit():
        return False
    if after.startswith("//"):
        return False
    if all(c.isupper() for c in letters):
        return True
    return _canonical_heading(name) in _KNOWN_HEADINGS


def _normalise(text: str) -> str:
    """Normalise line breaks, no-break spaces and a leading byte-order mark."""
    text = text.removeprefix("\ufeff")
    text = _NEWLINES_RE.sub("\n", text)
    return text.replace("\u00a0", " ")


def _lines(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Yield ``(line_start, line_end)`` of the lines of ``text[start:end]``, no newline."""
    pos = start
    while pos <= end:
        nl = text.find("\n", pos, end)
        if nl < 0:
            if pos < end:
                yield pos, end
            return
        yield pos, nl
        pos = nl + 1


def _metadata_header_end(text: str) -> int:
    """Return where a leading metadata header ends, or 0 when there is none.

    A metadata header is a block of ``Key: value`` lines at the very start of the text,
    closed by a horizontal rule line (``-----``), such as the source notes in front of
    a transcribed report. At least one key must not be a report heading, so that a
    report that merely starts with headings and a rule is not swallowed.
    """
    n_lines = 0
    has_foreign_key = False
    has_key = False
    for line_start, line_end in _lines(text, 0, len(text)):
        n_lines += 1
        if n_lines > _MAX_HEADER_LINES:
            return 0
        line = text[line_start:line_end]
        if not line.strip():
            continue
        if _RULE_LINE_RE.match(line):
            if has_key and has_foreign_key:
                return line_end
            return 0
        match = _KEY_VALUE_RE.match(line)
        if match is None:
            if has_key and line[:1] in " \t":  # continuation of the previous value
                continue
            return 0
        has_key = True
        after = line[match.end("key") + 1 : match.end("key") + 4]
        if not _is_heading(match.group("key"), after):
            has_foreign_key = True
    return 0


def _find_headings(text: str, pos: int) -> list[tuple[str, int, int]]:
    """Find headings from ``pos`` on.

    Returns
    -------
    list of tuple
        ``(heading, line_start, body_start)`` for each heading, in order.
    """
    found = []
    for match in _HEAD_RE.finditer(text, pos):
        after = text[match.end() : match.end() + 3]
        if _is_heading(match.group("head"), after):
            found.append((_canonical_heading(match.group("head")), match.start(), match.end()))
    return found


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` to exclude leading and trailing whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


# --- sentences ---------------------------------------------------------------------------

# Words that end with a period but do not end a sentence (compared without the final ".").
_ABBREVIATIONS = frozenset(
    {
        "dr",
        "drs",
        "mr",
        "mrs",
        "ms",
        "prof",
        "e.g",
        "i.e",
        "p.m",
        "a.m",
        "vs",
        "approx",
        "etc",
        "fig",
        "figs",
        "st",
        "mg",
        "yrs",
        "y.o",
        "b.i.d",
        "t.i.d",
        "q.i.d",
        "cf",
    }
)
_DOTTED_RE = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]$")  # e.g, i.e, b.i.d, U.S
# Sentence-final punctuation, closing quotes/brackets, then whitespace or the end.
_END_RE = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")
_BULLET_RE = re.compile(r"^[ \t]*(?:[-*•·▪‣–]|\(?\d{1,3}[.)]|\(?[a-z][.)]|\([A-Za-z]\))[ \t]+\S")
_OPENERS = "\"'“‘(["


def _is_abbreviation(text: str, dot: int, unit_start: int, next_char: str) -> bool:
    """Tell whether the period at ``text[dot]`` ends an abbreviation or an initial."""
    word_start = dot
    while word_start > unit_start and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:dot].lstrip(_OPENERS)
    if not word:
        return False
    lower = word.lower()
    if lower in _ABBREVIATIONS:
        return True
    if lower == "no" and next_char.isdigit():  # "No. 5"
        return True
    if len(word) == 1 and word.isalpha() and word.isupper():  # initial: "J. Smith"
        return True
    return bool(_DOTTED_RE.match(word))


def _split_prose(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Split ``text[start:end]`` (no blank lines, no bullets) into sentence spans."""
    spans = []
    sent_start = start
    for match in _END_RE.finditer(text, start, end):
        rest = match.end()
        while rest < end and text[rest].isspace():
            rest += 1
        if rest < end:
            nxt = text[rest]
            if nxt in _OPENERS and rest + 1 < end:
                nxt = text[rest + 1]
            if not (nxt.isupper() or nxt.isdigit()):
                continue
        punct = match.group()
        if punct.rstrip("\"'”’)]") == "." and _is_abbreviation(
            text, match.start(), start, text[rest : rest + 1]
        ):
            continue
        spans.append(_trim(text, sent_start, match.end()))
        sent_start = match.end()
    spans.append(_trim(text, sent_start, end))
    return [(s, e) for s, e in spans if e > s]


def _split_sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Split ``text[start:end]`` into sentence spans.

    Blank lines and horizontal rules separate paragraphs; a bullet or numbered line
    (with the lines that continue it) is one sentence; other text is split after
    ``.``, ``!`` or ``?`` followed by whitespace and an upper-case letter or a digit.
    """
    spans: list[tuple[int, int]] = []
    unit_start: int | None = None
    unit_is_bullet = False

    def close(unit_end: int) -> None:
        if unit_start is None:
            return
        if unit_is_bullet:
            span = _trim(text, unit_start, unit_end)
            if span[1] > span[0]:
                spans.append(span)
        else:
            spans.extend(_split_prose(text, unit_start, unit_end))

    prev_end = start
    for line_start, line_end in _lines(text, start, end):
        line = text[line_start:line_end]
        if not line.strip() or _RULE_LINE_RE.match(line):
            close(prev_end)
            unit_start = None
        elif _BULLET_RE.match(line):
            close(prev_end)
            unit_start, unit_is_bullet = line_start, True
        elif unit_start is None:
            unit_start, unit_is_bullet = line_start, False
        prev_end = line_end
    close(prev_end)
    return spans


def _paragraphs(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Split ``text[start:end]`` into paragraph spans at blank lines and rules."""
    spans = []
    para_start: int | None = None
    prev_end = start
    for line_start, line_end in _lines(text, start, end):
        line = text[line_start:line_end]
        if not line.strip() or _RULE_LINE_RE.match(line):
            if para_start is not None:
                spans.append(_trim(text, para_start, prev_end))
            para_start = None
        elif para_start is None:
            para_start = line_start
        prev_end = line_end
    if para_start is not None:
        spans.append(_trim(text, para_start, prev_end))
    return [(s, e) for s, e in spans if e > s]


def _squash(text: str) -> str:
    """Collapse runs of whitespace (line breaks included) to single spaces."""
    return " ".join(text.split())


# --- data classes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """One section of a report.

    Parameters
    ----------
    heading : str
        Canonical heading: upper case, single spaces, without the colon; ``""`` for the
        preamble (the text before the first heading).
    text : str
        The body, stripped of surrounding whitespace; ``""`` for an empty section.
    start, end : int
        Character offsets of the body in :attr:`Report.text`, so that
        ``report.text[start:end] == text``.
    """

    heading: str
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Sentence:
    """One sentence of a report.

    Parameters
    ----------
    text : str
        The sentence, without surrounding whitespace (it may contain line breaks).
    section : str
        Heading of the section the sentence belongs to (``""`` for the preamble).
    section_index : int
        Position of that section in :attr:`Report.sections`.
    start, end : int
        Character offsets in :attr:`Report.text`, as for a :class:`Section`.
    """

    text: str
    section: str
    section_index: int
    start: int
    end: int


@dataclass(frozen=True)
class Report:
    """A parsed EEG report; build one with :func:`parse_report`.

    Parameters
    ----------
    text : str
        The normalised report text that every offset refers to.
    sections : tuple of Section
        Sections in document order; the preamble, if any, comes first with heading ``""``.
    sentences : tuple of Sentence
        Sentences in document order; none spans two sections.
    """

    text: str
    sections: tuple[Section, ...]
    sentences: tuple[Sentence, ...]

    def section(self, name: str) -> Section | None:
        """Return the first section with a given heading or one of its aliases.

        Parameters
        ----------
        name : str
            A heading in any case, with or without colon, e.g. ``"Impression"``.
            Aliases count: ``"DESCRIPTION"`` also finds ``DESCRIPTION OF THE RECORD``,
            ``"CONCLUSION"`` also finds ``IMPRESSION``, ``"AED"`` finds ``MEDICATIONS``.

        Returns
        -------
        Section | None
            The first section whose heading is ``name`` itself, else the first whose
            heading is an alias of it, else None.
        """
        wanted = _canonical_heading(name)
        for sec in self.sections:
            if sec.heading == wanted:
                return sec
        aliases = _ALIASES.get(wanted, frozenset())
        for sec in self.sections:
            if sec.heading in aliases:
                return sec
        return None

    @property
    def impression(self) -> str | None:
        """The text of the impression-like section, or None.

        The first non-empty section found among ``IMPRESSION_HEADINGS``, looked for in
        that order (IMPRESSION, CONCLUSION, SUMMARY OF FINDINGS, SUMMARY, INTERPRETATION,
        CLINICAL INTERPRETATION).
        """
        for heading in IMPRESSION_HEADINGS:
            for sec in self.sections:
                if sec.heading == heading and sec.text:
                    return sec.text
        return None

    def segments(
        self,
        mode: str = "sentence",
        headings: Iterable[str] = FINDING_HEADINGS,
        prepend_heading: bool = True,
    ) -> list[str]:
        """Return the text units used to train an EEG–text model.

        Parameters
        ----------
        mode : {"sentence", "paragraph"}
            One string per sentence, or one per section body.
        headings : iterable of str
            Keep only sections with these headings (any case). When none matches, all
            sections except the preamble are used; when the report has no headings at
            all, its whole text is split into sentences or paragraphs.
        prepend_heading : bool
            Write each unit as ``"HEADING: text"`` (units from the preamble or from a
            report without headings get no prefix).

        Returns
        -------
        list of str
            The units in document order, whitespace collapsed to single spaces; empty
            for an empty report.
        """
        if mode not in ("sentence", "paragraph"):
            raise ValueError(f"mode must be 'sentence' or 'paragraph', got {mode!r}")
        wanted = {_canonical_heading(h) for h in headings}
        indices = [i for i, sec in enumerate(self.sections) if sec.heading in wanted]
        if not indices:
            indices = [i for i, sec in enumerate(self.sections) if sec.heading]
        units: list[tuple[str, str]] = []
        if indices:
            chosen = set(indices)
            if mode == "sentence":
                units = [(s.section, s.text) for s in self.sentences if s.section_index in chosen]
            else:
                units = [(self.sections[i].heading, self.sections[i].text) for i in indices]
        elif mode == "sentence":
            units = [(s.section, s.text) for s in self.sentences]
        else:
            units = [("", self.text[s:e]) for s, e in _paragraphs(self.text, 0, len(self.text))]
        out = []
        for heading, text in units:
            text = _squash(text)
            if not text:
                continue
            out.append(f"{heading}: {text}" if prepend_heading and heading else text)
        return out


# --- parsing -----------------------------------------------------------------------------


def parse_report(text: str) -> Report:
    r"""Parse the text of an EEG report into sections and sentences.

    Parameters
    ----------
    text : str
        The report. Line breaks (``\r\n``, ``\r``, U+2028, U+2029) are normalised to
        ``\n``, no-break spaces to spaces, and a leading byte-order mark is dropped.

    Returns
    -------
    Report
        The parsed report; its ``text`` is the normalised text.

    Notes
    -----
    A heading is, at the start of a line (indentation allowed), a run of 2 to 60
    upper-case letters, digits, spaces and ``/&(),'-`` with at least two letters,
    followed by ``:``; the rest of the line is part of the body. Known headings are also
    accepted in title or lower case (``Impression:``). Times and ratios (``AT 2:15``),
    and URLs are not headings. A block of ``Key: value`` lines at the start of the text
    closed by a rule line (``-----``) is a metadata header: it stays in the preamble,
    one sentence per line.
    """
    text = _normalise(text)
    if not text.strip():
        return Report(text=text, sections=(), sentences=())
    header_end = _metadata_header_end(text)
    headings = _find_headings(text, header_end)
    # (heading, raw body start, raw body end)
    raw: list[tuple[str, int, int]] = []
    first_line = headings[0][1] if headings else len(text)
    if text[:first_line].strip():
        raw.append(("", 0, first_line))
    for i, (heading, _, body_start) in enumerate(headings):
        body_end = headings[i + 1][1] if i + 1 < len(headings) else len(text)
        raw.append((heading, body_start, body_end))

    sections = []
    sentences = []
    for index, (heading, raw_start, raw_end) in enumerate(raw):
        start, end = _trim(text, raw_start, raw_end)
        if start == end:
            start = end = raw_start
        sections.append(Section(heading=heading, text=text[start:end], start=start, end=end))
        spans = []
        if heading == "" and header_end > start:
            # each "Key: value" line of a metadata header is a sentence of its own
            for line_start, line_end in _lines(text, start, header_end):
                line = text[line_start:line_end]
                if line.strip() and not _RULE_LINE_RE.match(line):
                    spans.append(_trim(text, line_start, line_end))
            spans.extend(_split_sentences(text, header_end, end))
        else:
            spans = _split_sentences(text, start, end)
        for s, e in spans:
            sentences.append(
                Sentence(text=text[s:e], section=heading, section_index=index, start=s, end=e)
            )
    return Report(text=text, sections=tuple(sections), sentences=tuple(sentences))


# --- readers -----------------------------------------------------------------------------

_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v")
_MAX_CONTROL_FRACTION = 0.10


def decode_report_bytes(data: bytes, fname: str | Path = "<bytes>") -> str:
    """Decode the bytes of a report file to text.

    Parameters
    ----------
    data : bytes
        The file's content.
    fname : str | Path
        Name used in error and log messages.

    Returns
    -------
    str
        The text, without byte-order mark: UTF-8 (UTF-16 when it starts with a UTF-16
        byte-order mark), else Latin-1.

    Raises
    ------
    ReportError
        If the data are empty or only whitespace, or clearly not text (NUL bytes, or
        more than 10% control characters).
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as err:
            raise ReportError(fname, f"not valid UTF-16 text ({err.reason})") from None
        text = text.removeprefix("\ufeff")
    else:
        if b"\x00" in data:
            raise ReportError(fname, "not a text file (contains NUL bytes)")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            logger.debug("%s: not valid UTF-8, decoding as Latin-1", fname)
            text = data.decode("latin-1")
    if not text.strip():
        raise ReportError(fname, "empty report (no text)")
    n_control = sum(
        1 for c in text if c not in _ALLOWED_CONTROLS and unicodedata.category(c) == "Cc"
    )
    if n_control > _MAX_CONTROL_FRACTION * len(text):
        raise ReportError(
            fname, f"not a text file ({n_control} of {len(text)} characters are control codes)"
        )
    return text


def _read_bytes(fname: str | Path) -> bytes:
    """Read a file's bytes, turning every OS error into a one-line ReportError."""
    path = Path(fname)
    if path.is_dir():
        raise ReportError(fname, "is a directory, not a report file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ReportError(fname, "no such file") from None
    except PermissionError:
        raise ReportError(fname, "permission denied") from None
    except IsADirectoryError:
        raise ReportError(fname, "is a directory, not a report file") from None
    except OSError as err:
        raise ReportError(fname, f"cannot read file ({err.strerror or err})") from None


def read_report(fname: str | Path) -> Report:
    """Read and parse one report file.

    Parameters
    ----------
    fname : str | Path
        A plain-text report (UTF-8, or Latin-1 as a fallback).

    Returns
    -------
    Report
        The parsed report.

    Raises
    ------
    ReportError
        If the file is missing, unreadable, a directory, empty, or not text.
    """
    return parse_report(decode_report_bytes(_read_bytes(fname), fname))


def read_reports_jsonl(fname: str | Path) -> dict[tuple[str, str], str]:
    """Read a side file of reports, one JSON object per line.

    Each line is ``{"subject": ..., "session": ..., "report": ...}``. Blank lines are
    ignored; a line that is not valid JSON, not an object, lacks a key or has a value of
    the wrong type is logged as a warning ``FNAME:LINENO: reason`` and skipped. When a
    ``(subject, session)`` pair comes again, the last line wins, with a warning.

    Parameters
    ----------
    fname : str | Path
        The JSON Lines file (UTF-8).

    Returns
    -------
    dict
        Report text keyed by ``(subject, session)``, both as strings.

    Raises
    ------
    ReportError
        If the file is missing or cannot be read.
    """
    data = _read_bytes(fname)
    reports: dict[tuple[str, str], str] = {}
    seen_at: dict[tuple[str, str], int] = {}

    def skip(lineno: int, reason: str) -> None:
        logger.warning("%s:%d: %s", fname, lineno, reason)

    for lineno, raw_line in enumerate(data.split(b"\n"), start=1):
        if lineno == 1:
            raw_line = raw_line.removeprefix(b"\xef\xbb\xbf")
        if not raw_line.strip():
            continue
        try:
            obj = json.loads(raw_line.decode("utf-8"))
        except UnicodeDecodeError:
            skip(lineno, "not valid UTF-8, line skipped")
            continue
        except json.JSONDecodeError as err:
            skip(lineno, f"invalid JSON ({err.msg} at column {err.colno}), line skipped")
            continue
        if not isinstance(obj, dict):
            skip(lineno, f"expected a JSON object, got {type(obj).__name__}, line skipped")
            continue
        missing = [k for k in ("subject", "session", "report") if k not in obj]
        if missing:
            skip(lineno, f"missing key(s) {', '.join(missing)}, line skipped")
            continue
        ids = []
        for key in ("subject", "session"):
            value = obj[key]
            if isinstance(value, bool) or not isinstance(value, str | int):
                skip(lineno, f"{key} must be a string or an integer, line skipped")
                break
            ids.append(str(value))
        else:
            if not isinstance(obj["report"], str):
                skip(lineno, "report must be a string, line skipped")
                continue
            key = (ids[0], ids[1])
            if key in reports:
                skip(
                    lineno,
                    f"duplicate subject {key[0]!r} session {key[1]!r} "
                    f"(previous on line {seen_at[key]}), the last one is kept",
                )
            reports[key] = obj["report"]
            seen_at[key] = lineno
    return reports

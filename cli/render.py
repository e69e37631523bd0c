"""Ranked hits as people read them: a block per hit on a terminal, plain lines in a pipe, TSV on request.

A table squeezes each hit's impression into its last column: at 80 columns that is one word per
line. Here every hit is a block whose first line holds its rank, score, percentile and who and
when, and whose next lines (indented) hold why it matched and the impression, wrapped to the
terminal's width. Into a pipe or a file nothing is wrapped: one line per field, plain text.
``--format tsv`` gives one line per hit with a header; ``--json`` the document itself.
"""

from __future__ import annotations

import textwrap

from rich.console import Console
from rich.markup import escape

INDENT = "     "
TSV_COLUMNS = ("rank", "score", "percentile", "recording_id", "patient", "date", "age", "sex", "montage", "start_s",
               "end_s", "text", "path")


def ordinal(n: float) -> str:
    """``92nd``, ``1st``, ``13th``: a percentile as it is said."""
    n = int(round(n))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def head_line(h: dict) -> str:
    """Rank, score, percentile, recording, patient, date, age/sex, montage, best window (one line of fields)."""
    parts = [f"#{h['rank']}", f"{h['score']:.3f}"]
    if h.get("percentile") is not None:
        parts.append(f"({ordinal(h['percentile'])} pct)")
    parts.append(f"recording {h['recording_id']}")
    if h.get("patient"):
        parts.append(f"patient {h['patient']}")
    if h.get("date"):
        parts.append(h["date"][:10])
    age = "" if h.get("age") is None else f"{h['age']:g} y"
    if age or h.get("sex"):
        parts.append(f"{age} {h.get('sex') or ''}".strip())
    if h.get("montage"):
        parts.append(h["montage"])
    if h.get("start_s") is not None:
        parts.append(f"window {h['start_s']:g}–{h['end_s']:g} s")
    return "  ".join(parts)


def why_line(h: dict) -> str | None:
    """A text-search hit's evidence: its best report sentence (status), its event, the score of each source."""
    if not h.get("sources"):
        return None
    parts = []
    evidence = h.get("evidence") or []
    for e in [e for e in evidence if e.get("text")][:1]:
        parts.append(f"“{e['text']}” [{e['status']}]")
    for ev in [e["event"] for e in evidence if e.get("event")][:1]:
        label = ev["label"] + (f" ({ev['meaning']})" if ev.get("meaning") and ev["meaning"] != ev["label"] else "")
        parts.append(f"event: {label} at {ev['onset']:.1f} s")
    src = h["sources"]
    if "eeg" not in src:  # a window hit
        parts.append(f"EEG cosine {src.get('eeg_cosine', h['score']):.2f}")
    else:
        report = "no report read" if src.get("report") is None else f"report {src['report']:.2f}"
        parts.append(f"{report} / EEG {src['eeg']:.2f}")
    if h.get("also"):
        parts.append(f"same visit: {', '.join(map(str, h['also']))}")
    return " — ".join(parts)


def text_of(h: dict) -> str:
    """The hit's text: its best sentence (reports) or its impression, on one line."""
    impression = " ".join((h.get("impression") or "").split())
    if h.get("sentence"):
        return f"best sentence: {' '.join(h['sentence'].split())}" + (f" — impression: {impression}" if impression
                                                                      else "")
    return f"impression: {impression}" if impression else "(no report)"


def hit_lines(h: dict, paths: bool = False) -> list[tuple[str, str]]:
    """``(kind, text)`` lines of one hit: ``head``, then ``why``, ``text`` and ``path``."""
    lines = [("head", head_line(h))]
    why = why_line(h)
    if why:
        lines.append(("why", f"why: {why}"))
    lines.append(("text", text_of(h)))
    if paths:
        lines.append(("path", f"path: {h['path']}"))
    return lines


def wrap(text: str, width: int, first: str = "", break_long: bool = False) -> list[str]:
    """``text`` wrapped to ``width`` after ``first`` (then ``INDENT``), never leaving one word on a line.

    A wrap whose last line would hold one word is redone a little narrower (down to 70 %).
    """
    def lines_at(w: int) -> list[str]:
        return textwrap.wrap(text, width=w, initial_indent=first, subsequent_indent=INDENT,
                             break_long_words=break_long, break_on_hyphens=False) or [first]

    best = lines_at(width)
    for w in range(width, max(len(INDENT) + 10, int(width * 0.7)), -1):
        got = lines_at(w)
        if len(got) == 1 or all(len(line.split()) > 1 for line in got):
            return got
    return best


def print_hits(doc: dict, title: str, console: Console, paths: bool = False) -> None:
    """Print a ranked-query document: blocks wrapped to the terminal, or plain lines when not a terminal."""
    hits = doc["hits"]
    terminal = console.is_terminal
    width = max(40, console.width) if terminal else None
    emit = (lambda s, style="": console.print(f"[{style}]{escape(s)}[/{style}]" if style else escape(s),
                                                highlight=False, soft_wrap=True)) if terminal else \
        (lambda s, style="": console.print(s, markup=False, highlight=False, soft_wrap=True))
    emit(title, "bold")
    if not hits:
        emit("no hits")
    for h in hits:
        for kind, text in hit_lines(h, paths):
            first = "" if kind == "head" else INDENT
            if width is None:
                emit(first + text)
                continue
            for line in wrap(text, width - 1, first, break_long=kind == "path"):
                emit(line, "bold" if kind == "head" else "dim" if kind == "path" else "")
    if hits and not paths and terminal:  # a hint for people; a pipe gets only the hits
        emit(f"{INDENT}(full file paths: --paths; every field: --json or --format tsv)", "dim")


def print_tsv(doc: dict, console: Console) -> None:
    """One header line, then one tab-separated line per hit (tabs and newlines in fields become spaces)."""
    def cell(v) -> str:
        return "" if v is None else " ".join(str(v).split())

    lines = ["\t".join(TSV_COLUMNS)]
    for h in doc["hits"]:
        row = {**h, "text": h.get("sentence") or h.get("impression")}
        lines.append("\t".join(cell(row.get(c)) for c in TSV_COLUMNS))
    console.file.write("\n".join(lines) + "\n")  # as written: Rich would expand the tabs

"""Assertion status of the terms of a report sentence: affirmed, negated, possible, historical, family.

"There is no evidence of focal slowing" mentions focal slowing but does not assert it. This module
gives every content word of a sentence a status with NegEx (Chapman et al. 2001) as implemented by
negspacy's ``Negex`` component on a blank English spaCy pipeline (no model download):

* one ``Negex`` runs negspacy's clinical termset for negation, adapted to EEG reports (following
  cues such as "was not seen", "absent"; "rule out"/"evaluate for"/"versus" moved to *possible*;
  "cannot be excluded" a pseudo-negation),
* three more run this module's termsets (:data:`TERMSETS`) for *possible* (uncertain,
  hypothetical), *historical* and *family*, each under its own ``extension_name``.

Every content token (alphabetic, not a stop word, not part of a cue) is a target span, so that any
word a query may use gets a status. Where several statuses cover a token the first of
:data:`PRECEDENCE` wins ("no family history of epilepsy" is negated).

A sentence's statuses are stored compactly as :class:`Scope` character ranges (the terms outside
every scope are affirmed); :func:`match_status` answers, for the words of a query, which status
their occurrences in the sentence have, and :func:`parse_query` reads the status a query asks
for ("no epileptiform discharges" asks for negated sentences).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "PRECEDENCE",
    "STATUSES",
    "TERMSETS",
    "QueryTerms",
    "Scope",
    "assertion_scopes",
    "match_status",
    "read_terms",
    "parse_query",
    "scopes_from_json",
    "scopes_to_json",
    "sentence_status",
    "stem",
    "token_statuses",
]

STATUSES = ("affirmed", "negated", "possible", "historical", "family")
"""Every status a term can have; ``"affirmed"`` is the default, the others come from cues."""

PRECEDENCE = ("negated", "family", "historical", "possible")
"""Which status wins where several cover one token."""

# --- termsets ------------------------------------------------------------------------------------

# Shared terminations: a cue's scope ends at the next one (and at the sentence end). Clause
# boundaries of EEG reports: "No spikes, but sharp waves are seen", "no slowing; the background".
_TERMINATION = [
    "but", "however", "although", "though", "whereas", "while", "yet", "nevertheless", "except",
    "except for", "apart from", "aside from", "other than", "with the exception of", "which", ";",
    ", and the", "and the", ", and there", "and there", "now", "currently", "at present",
]

_RELATIVES = [
    "mother", "father", "sister", "brother", "sibling", "siblings", "son", "daughter", "parent",
    "parents", "grandmother", "grandfather", "aunt", "uncle", "cousin", "twin",
]


def _negation_termset() -> dict[str, list[str]]:
    from negspacy.termsets import termset

    base = {k: list(v) for k, v in termset("en_clinical").get_patterns().items()}  # a copy: negspacy shares its dicts
    # Hypothetical, not negated, in EEG requisitions: "rule out seizures", "evaluate for
    # epilepsy", "seizure versus syncope" (ConText calls these hypothetical/uncertain).
    moved = {"rule out", "rules out", "r/o", "ro", "evaluate for", "versus", "doubt"}
    base["preceding_negations"] = [c for c in base["preceding_negations"] if c not in moved] + [
        "no definite", "no clear", "no evidence for", "no further evidence of", "did not reveal",
        "failed to show", "negative", "none", "nor", "neither", "lack of", "lacks", "absent",
        "no longer",
    ]
    base["following_negations"] += [
        "absent", "is absent", "are absent", "was absent", "were absent", "not seen", "not observed",
        "not identified", "not present", "not noted", "not evident", "not detected", "not recorded",
        "not appreciated", "not demonstrated", "not performed", "is not", "are not", "has not been",
        "have not been", "had not been", "was never", "were never", "none",
    ]
    base["pseudo_negations"] += [
        "cannot be excluded", "can not be excluded", "could not be excluded", "cannot exclude",
        "can not exclude", "cannot rule out", "can not rule out", "not be excluded", "not excluded",
        "not be ruled out", "be ruled out", "not exclude", "does not exclude",
        "do not exclude", "not ruled out", "cannot be ruled out",
        "not rule out", "no change in", "not only", "not necessarily", "not well",
    ]
    base["termination"] += [t for t in _TERMINATION if t not in base["termination"]]
    # "involving", "still" end a negation's scope in discharge summaries; in EEG reports they sit
    # inside a finding ("no slowing involving the left temporal region").
    base["termination"] = [t for t in base["termination"] if t not in {"involving", "still"}]
    return base


TERMSETS: dict[str, dict[str, list[str]]] = {
    "possible": {
        "pseudo_negations": [
            "no possible", "not possible", "possible to", "likely due to", "not suspicious",
            "probably normal",
        ],
        "preceding_negations": [
            "possible", "possibly", "probable", "probably", "questionable", "question of", "questionably",
            "suspicious for", "suspicious of", "suspected", "suspect", "suspicion of", "may represent",
            "may reflect", "may be", "might be", "might represent", "could represent", "could be",
            "can potentially", "potentially", "potential", "suggestive of", "suggesting", "suggests",
            "concerning for", "concern for", "does not exclude", "do not exclude",
            "cannot exclude", "can not exclude", "cannot rule out",
            "rule out", "rules out", "r/o", "evaluate for", "evaluation for", "evaluation of",
            "assess for", "to exclude", "versus", "vs", "vs.", "likely", "most likely", "uncertain",
            "equivocal", "borderline", "presumed", "presumably", "raises the possibility of",
            "raise the possibility of", "differential diagnosis", "differential includes", "doubt",
            "indeterminate", "unclear", "?",
        ],
        "following_negations": [
            "cannot be excluded", "can not be excluded", "could not be excluded", "not be excluded",
            "not excluded", "cannot be ruled out", "should be ruled out", "be ruled out",
            "is possible", "are possible", "is suspected", "are suspected", "is questionable",
            "of uncertain significance", "of unclear significance", "of doubtful significance",
            "is likely", "are likely", "is probable", "versus", "vs",
        ],
        "termination": list(_TERMINATION),
    },
    "historical": {
        "pseudo_negations": [
            "prior to", "previous eeg", "previous study", "previous recording", "prior eeg",
            "prior study", "prior recording", "history of present illness", "clinical history",
            "family history", "known to",
        ],
        "preceding_negations": [
            "history of", "hx of", "h/o", "past history of", "past medical history of",
            "previous", "previously", "prior", "known", "remote", "status post", "s/p",
            "longstanding", "long-standing",
        ],
        "following_negations": ["in the past", "years ago", "months ago", "as a child", "in childhood"],
        "termination": [*_TERMINATION, "presents", "presenting", "presented", "today", "this eeg",
                        "this recording", "referred", "admitted"],
    },
    "family": {
        "pseudo_negations": [],
        "preceding_negations": [
            "family history of", "family history", "family hx", "fhx", "fh of", "maternal", "paternal",
            *(f"{rel} {verb}" for rel in _RELATIVES
              for verb in ("has", "had", "with", "'s", "suffers from", "was diagnosed with")),
        ],
        "following_negations": [
            "in the family", "runs in the family", "in family members", "in a sibling",
            *(f"in {pron} {rel}" for rel in _RELATIVES for pron in ("his", "her", "the")),
        ],
        "termination": [*_TERMINATION, "the patient", "patient", "he", "she"],
    },
}
"""This module's termsets, in negspacy's layout (pseudo/preceding/following/termination)."""

# Stop words that carry meaning in EEG findings ("left temporal", "right side", "front"): kept as
# content words even though spaCy lists them.
_KEEP_WORDS = frozenset(
    "left right side front back top bottom above below behind full part whole empty amount first "
    "last several".split()
)

_EXTENSIONS = {"negated": "elm_negated", "possible": "elm_possible", "historical": "elm_historical",
               "family": "elm_family"}
_SPAN_KEY = "elm_terms"

# --- the pipeline ----------------------------------------------------------------------------------

_lock = threading.Lock()
_pipeline: dict[str, Any] = {}


def _cue_phrases(sets: Iterable[dict[str, list[str]]]) -> list[str]:
    return sorted({c for ts in sets for key in ("preceding_negations", "following_negations") for c in ts[key]})


def _build() -> dict[str, Any]:
    import spacy
    from negspacy.negation import Negex  # noqa: F401  (registers the "negex" factory)
    from spacy.lang.en.stop_words import STOP_WORDS
    from spacy.language import Language
    from spacy.matcher import PhraseMatcher
    from spacy.tokens import Doc

    termsets = {"negated": _negation_termset(), **TERMSETS}
    nlp = spacy.blank("en")
    stop = set(STOP_WORDS) - _KEEP_WORDS
    cues = PhraseMatcher(nlp.vocab, attr="LOWER")
    cues.add("cue", list(nlp.tokenizer.pipe(_cue_phrases(termsets.values()))))

    name = "elm_assertion_targets"
    if name not in Language.factories:
        @Language.component(name)
        def _targets(doc: Doc) -> Doc:
            component = _pipeline.get("targets")
            return component(doc) if component is not None else doc

    def targets(doc: Doc) -> Doc:
        covered = set()
        for _, start, end in cues(doc):
            covered.update(range(start, end))
        doc.spans[_SPAN_KEY] = [
            doc[i:i + 1] for i, tok in enumerate(doc)
            if i not in covered and tok.is_alpha and tok.lower_ not in stop
        ]
        return doc

    nlp.add_pipe("sentencizer")
    nlp.add_pipe(name)
    for status, ts in termsets.items():
        nlp.add_pipe("negex", name=f"negex_{status}", config={
            "neg_termset": ts, "extension_name": _EXTENSIONS[status], "span_keys": [_SPAN_KEY]})
    cue_words = {w for ts in termsets.values() for key in ("preceding_negations", "following_negations")
                 for c in ts[key] for w in _WORD_RE.findall(c.lower())}
    return {"nlp": nlp, "targets": targets, "stop": frozenset(stop | cue_words)}


def _get() -> dict[str, Any]:
    if "nlp" not in _pipeline:
        with _lock:
            if "nlp" not in _pipeline:
                built = _build()
                _pipeline["targets"] = built["targets"]
                _pipeline["stop"] = built["stop"]
                _pipeline["nlp"] = built["nlp"]  # last: its presence means the rest is there
                logger.debug("assertion pipeline: %s", built["nlp"].pipe_names)
    return _pipeline


def _doc_terms(doc) -> list[tuple[int, int, str, str]]:
    """``(start_char, end_char, text, status)`` for every target token of a processed doc."""
    out = []
    for span in doc.spans[_SPAN_KEY]:
        status = "affirmed"
        for name in PRECEDENCE:
            if span._.get(_EXTENSIONS[name]):
                status = name
                break
        out.append((span.start_char, span.end_char, span.text, status))
    return out


def token_statuses(texts: Sequence[str], batch_size: int = 256) -> list[list[tuple[int, int, str, str]]]:
    """The content words of each text with their assertion status.

    Parameters
    ----------
    texts : sequence of str
        Sentences (a text of several sentences is split by spaCy's sentencizer; no cue reaches
        across a sentence end).
    batch_size : int
        Texts per ``nlp.pipe`` batch.

    Returns
    -------
    list of list of tuple
        Per text, ``(start, end, word, status)`` for every content word in order: ``start`` and
        ``end`` are character offsets into the text, ``status`` one of :data:`STATUSES`.
    """
    nlp = _get()["nlp"]
    return [_doc_terms(doc) for doc in nlp.pipe((t or "" for t in texts), batch_size=batch_size)]


@dataclass(frozen=True)
class Scope:
    """A character range of a sentence whose terms are not affirmed.

    Parameters
    ----------
    start, end : int
        Character offsets into the sentence (``text[start:end]`` runs from the first to the
        last content word of the range).
    status : str
        One of :data:`STATUSES` other than ``"affirmed"``.
    """

    start: int
    end: int
    status: str


def _scopes(terms: list[tuple[int, int, str, str]]) -> list[Scope]:
    scopes: list[Scope] = []
    for start, end, _, status in terms:
        if status == "affirmed":
            scopes.append(Scope(-1, -1, "affirmed"))  # breaks a run
            continue
        last = scopes[-1] if scopes else None
        if last is not None and last.status == status:
            scopes[-1] = Scope(last.start, end, status)
        else:
            scopes.append(Scope(start, end, status))
    return [s for s in scopes if s.status != "affirmed"]


def assertion_scopes(texts: Sequence[str], batch_size: int = 256) -> list[list[Scope]]:
    """The ranges of each sentence whose terms are negated, possible, historical or family.

    Parameters
    ----------
    texts : sequence of str
        Report sentences.
    batch_size : int
        Texts per ``nlp.pipe`` batch.

    Returns
    -------
    list of list of Scope
        One list per text, in order of position; empty when every term is affirmed. Adjacent
        content words of one status form one scope.
    """
    return [_scopes(terms) for terms in token_statuses(texts, batch_size=batch_size)]


# --- reading stored scopes ------------------------------------------------------------------------

_WORD_RE = re.compile(r"[A-Za-z]+")


@functools.lru_cache(maxsize=65536)  # called for every word of every candidate sentence of a query
def stem(word: str) -> str:
    """A light suffix-stripping stem, so that inflections match as in a Porter full-text index.

    ``waves``/``wave``, ``discharges``/``discharged``/``discharge``, ``slowing``/``slowed``/``slow``,
    ``activities``/``activity``, ``spikes``/``spiking`` meet; ``status`` or ``analysis`` keep their
    ``s``.

    Parameters
    ----------
    word : str
        One word.

    Returns
    -------
    str
        The lower-case stem.
    """
    w = word.lower()
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith("sses"):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if w.endswith(suffix):
            rest = w[: -len(suffix)]
            if len(rest) >= 3 and re.search("[aeiouy]", rest):
                w = rest[:-1] if len(rest) > 3 and rest[-1] == rest[-2] and rest[-1] not in "lsz" else rest
            break
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


def word_stems(text: str) -> set[str]:
    """The :func:`stem` of every word of a text (what a query term is matched against)."""
    return {stem(m.group()) for m in _WORD_RE.finditer(text)}


def _status_at(scopes: Sequence[Scope], pos: int) -> str:
    for s in scopes:
        if s.start <= pos < s.end:
            return s.status
    return "affirmed"


def _majority(statuses: Iterable[str], prefer_flagged: bool) -> str:
    counts = Counter(statuses)
    if not counts:
        return "affirmed"
    order = PRECEDENCE + ("affirmed",) if prefer_flagged else ("affirmed",) + PRECEDENCE
    best = max(counts.values())
    return next(s for s in order if counts.get(s, 0) == best)


def _content_words(text: str) -> list[tuple[int, str]]:
    stop = _get()["stop"]
    return [(m.start(), m.group()) for m in _WORD_RE.finditer(text) if m.group().lower() not in stop]


def sentence_status(text: str, scopes: Sequence[Scope]) -> str:
    """The status of a sentence as a whole, for display.

    Parameters
    ----------
    text : str
        The sentence.
    scopes : sequence of Scope
        Its scopes, from :func:`assertion_scopes` or :func:`scopes_from_json`.

    Returns
    -------
    str
        ``"affirmed"`` when there is no scope; otherwise the status of most of the sentence's
        content words (a tie goes to the non-affirmed status, in :data:`PRECEDENCE` order).
    """
    if not scopes:
        return "affirmed"
    words = _content_words(text)
    if not words:
        return _majority((s.status for s in scopes), prefer_flagged=True)
    return _majority((_status_at(scopes, pos) for pos, _ in words), prefer_flagged=True)


def match_status(text: str, scopes: Sequence[Scope], terms: Sequence[str]) -> str | None:
    """The status of the query terms where they occur in a sentence.

    Parameters
    ----------
    text : str
        The sentence.
    scopes : sequence of Scope
        Its scopes.
    terms : sequence of str
        Query words (e.g. :attr:`QueryTerms.terms`); matched case-insensitively on their
        :func:`stem`, so ``"wave"`` matches ``"waves"`` and ``"slowing"`` matches ``"slow"``.

    Returns
    -------
    str | None
        The most common status over every occurrence of a query term (a tie goes to
        ``"affirmed"``, then :data:`PRECEDENCE` order); None when no term occurs.
    """
    return read_terms(text, scopes, terms)[0]


def read_terms(text: str, scopes: Sequence[Scope], terms: Sequence[str]) -> tuple[str | None, set[str]]:
    """:func:`match_status` and the stems of the query terms the sentence holds, in one pass over its words.

    Returns
    -------
    status : str | None
        As :func:`match_status`.
    held : set of str
        The :func:`stem` of each term of ``terms`` that occurs in ``text``.
    """
    wanted = {stem(t) for t in terms if t and _WORD_RE.fullmatch(t)}
    if not wanted:
        return None, set()
    found, held = [], set()
    for m in _WORD_RE.finditer(text):
        st = stem(m.group())
        if st in wanted:
            held.add(st)
            found.append(_status_at(scopes, m.start()) if scopes else "affirmed")
    if not found:
        return None, held
    return _majority(found, prefer_flagged=False), held


def scopes_to_json(scopes: Sequence[Scope]) -> str:
    """Scopes as compact JSON, e.g. ``[[0,12,"negated"]]``.

    Parameters
    ----------
    scopes : sequence of Scope
        Scopes of one sentence.

    Returns
    -------
    str
        The JSON text (``"[]"`` for none).
    """
    return json.dumps([[s.start, s.end, s.status] for s in scopes], separators=(",", ":"))


def scopes_from_json(text: str | None) -> list[Scope]:
    """Scopes from :func:`scopes_to_json`'s text.

    Parameters
    ----------
    text : str | None
        The JSON text; None or ``""`` (no stored scopes) gives no scope.

    Returns
    -------
    list of Scope
        The scopes; entries that are not ``[int, int, status]`` with a known status are skipped
        with a warning rather than raised, so that one damaged row cannot break a search.
    """
    if not text:
        return []
    try:
        rows = json.loads(text)
    except ValueError:
        logger.warning("unreadable assertion scopes %.40r: ignored", text)
        return []
    out = []
    for row in rows if isinstance(rows, list) else []:
        if (isinstance(row, list) and len(row) == 3 and all(isinstance(v, int) for v in row[:2])
                and row[2] in STATUSES):
            out.append(Scope(row[0], row[1], row[2]))
        else:
            logger.warning("assertion scope %.40r: not [start, end, status]; ignored", row)
    return out


# --- queries ---------------------------------------------------------------------------------------

_plain: dict[str, Any] = {}


def _spacy_stop_words() -> frozenset[str]:
    """SpaCy's English stop words, read from its file without importing spaCy (seconds)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("spacy")
    path = Path(next(iter(spec.submodule_search_locations))) / "lang" / "en" / "stop_words.py"
    namespace: dict[str, Any] = {}
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)  # noqa: S102 (a data file)
    return frozenset(namespace["STOP_WORDS"])


def has_cue(text: str) -> bool:
    """Whether a text holds a negation, uncertainty or other cue phrase (reading it needs the pipeline)."""
    return _plain_query(text) is None


def _plain_query(text: str) -> QueryTerms | None:
    """The terms of a query that holds no cue phrase (all affirmed), or None when it holds one."""
    if "cues" not in _plain:
        with _lock:
            if "cues" not in _plain:
                termsets = {"negated": _negation_termset(), **TERMSETS}
                phrases = sorted((c.lower() for c in _cue_phrases(termsets.values())), key=len, reverse=True)
                cue_words = {w for c in phrases for w in _WORD_RE.findall(c)}
                _plain["stop"] = (_spacy_stop_words() - _KEEP_WORDS) | cue_words
                _plain["cues"] = re.compile(r"(?<![a-z0-9])(?:" + "|".join(map(re.escape, phrases)) + r")(?![a-z0-9])")
    lowered = text.lower()
    if _plain["cues"].search(lowered):
        return None
    words: list[str] = []
    for w in _WORD_RE.findall(lowered):
        if w not in _plain["stop"] and w not in words:
            words.append(w)
    return QueryTerms(tuple(words), "affirmed")


@dataclass(frozen=True)
class QueryTerms:
    """The words of a query and the assertion status it asks for.

    Parameters
    ----------
    terms : tuple of str
        Lower-case content words, cue words ("no", "without", "possible", "history of") removed.
    status : str
        One of :data:`STATUSES`: ``"negated"`` for "no epileptiform discharges", ``"affirmed"``
        for "focal sharp waves".
    """

    terms: tuple[str, ...]
    status: str


def parse_query(text: str) -> QueryTerms:
    """Split a free-text query into its content words and the status it asks for.

    Parameters
    ----------
    text : str
        The query as typed.

    Returns
    -------
    QueryTerms
        The content words in order (duplicates dropped) and the status most of them have in the
        query (``"affirmed"`` for a query without cue, or without content words).

    Notes
    -----
    A query without any cue phrase of the termsets ("focal sharp waves") is affirmed word for
    word; it is answered without spaCy (whose import takes seconds), so that a cold ``search``
    stays fast. A query with a cue runs the pipeline.
    """
    fast = _plain_query(text or "")
    if fast is not None:
        return fast
    terms = token_statuses([text or ""])[0]
    words: list[str] = []
    for _, _, word, _ in terms:
        if word.lower() not in words:
            words.append(word.lower())
    status = _majority((t[3] for t in terms), prefer_flagged=True) if terms else "affirmed"
    return QueryTerms(tuple(words), status)

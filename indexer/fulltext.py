"""Full-text index of report sentences (``segments.text``) inside the database, and its one query.

No second search server: the index lives in the same database as the segment rows and follows
every write in the same transaction.

- **SQLite**: an FTS5 external-content table ``segments_fts`` (``content='segments'``,
  ``content_rowid='id'``, Porter stemming over the ``unicode61`` tokenizer) kept in step by
  triggers on insert, delete (cascades from reports included) and update of ``segments.text``;
  ranked by FTS5's ``bm25()`` through its ``rank`` column (``ORDER BY rank LIMIT``).
- **PostgreSQL**: a stored generated column ``segments.text_tsv``
  (``to_tsvector('english', text)``) with a GIN index; ranked by ``ts_rank_cd``. The column is
  DDL only, not mapped in the ORM model.

:func:`ensure_fulltext` creates what is missing (the next writer calls it: ``IndexStore``
opened for writing) and fills it from the rows an older index already holds. A reader never
writes: where the index is missing, :func:`match_segments` logs a warning and answers nothing.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from elmsearch._lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy", globals(), "np")  # on first use: `elmsearch show` never computes

logger = logging.getLogger(__name__)

FTS_TABLE = "segments_fts"
TSV_COLUMN = "text_tsv"
TSV_INDEX = "ix_segments_text_tsv"
TS_CONFIG = "english"
MAX_TERMS = 64
"""Terms beyond this many are ignored (a query is a few words; a pasted page is not a query)."""
MAX_TERM_CHARS = 256
RANK_WINDOW = 2000
"""On SQLite, each tier of a query (all terms; some terms) ranks at most its newest this many
matches: FTS5 has no top-k pruning, bm25 costs about 1-2 us per matching sentence, and a common
word matches a fifth of an archive's sentences. Below this many matches the ranking is exact."""

_SQLITE_DDL = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(text, content='segments', content_rowid='id', "
    "tokenize='porter unicode61 remove_diacritics 2')",
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_ai AFTER INSERT ON segments BEGIN "
    f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END",
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_ad AFTER DELETE ON segments BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); END",
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_au AFTER UPDATE OF id, text ON segments BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); "
    f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END",
)
_SQLITE_OBJECTS = (FTS_TABLE, f"{FTS_TABLE}_ai", f"{FTS_TABLE}_ad", f"{FTS_TABLE}_au")

_ready: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Engines whose full-text index was seen complete (a reader checks once per engine)."""


@dataclass(frozen=True)
class SegmentMatch:
    """A report sentence that matches a full-text query.

    Attributes
    ----------
    segment_id : int
        ``Segment.id``.
    report_id : int
        ``Segment.report_id``.
    score : float
        Positive; larger is better (``-bm25`` on SQLite, ``ts_rank_cd`` on PostgreSQL). Scores
        compare within one query and one database, not across them.
    matched : int
        How many of the distinct query terms the sentence contains.
    """

    segment_id: int
    report_id: int
    score: float
    matched: int


# ---- creating and checking ----------------------------------------------------------------
def _sqlite_missing(con) -> set[str]:
    have = {r[0] for r in con.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE name IN (?, ?, ?, ?)", _SQLITE_OBJECTS)}
    return set(_SQLITE_OBJECTS) - have


def _pg_missing(con) -> set[str]:
    missing = set()
    if con.exec_driver_sql("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                           "AND table_name = 'segments' AND column_name = %(c)s", {"c": TSV_COLUMN}).first() is None:
        missing.add(TSV_COLUMN)
    if con.exec_driver_sql("SELECT to_regclass(%(i)s)", {"i": TSV_INDEX}).scalar() is None:
        missing.add(TSV_INDEX)
    return missing


def ensure_fulltext(engine: Engine) -> bool:
    """Create the full-text index of ``segments.text`` where it is missing (idempotent).

    On SQLite the FTS5 table and its triggers; when any of them was missing the table is
    rebuilt from the segment rows (an index made before the full-text index existed, or
    written without its triggers, then finds its old sentences). On PostgreSQL the generated
    ``tsvector`` column (filled by ``ALTER TABLE`` for the existing rows) and its GIN index.
    Call it from a writer only.

    Parameters
    ----------
    engine : Engine
        The index's database (with the ``segments`` table created).

    Returns
    -------
    bool
        True when something was created or rebuilt now, False when all was there.
    """
    with engine.begin() as con:
        if engine.dialect.name == "sqlite":
            missing = _sqlite_missing(con)
            if missing:
                for ddl in _SQLITE_DDL:
                    con.exec_driver_sql(ddl)
                n = con.exec_driver_sql("SELECT count(*) FROM segments").scalar()
                con.exec_driver_sql(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")
                logger.info("full-text index created (%s) and built from %d report sentences",
                            ", ".join(sorted(missing)), n)
        elif engine.dialect.name == "postgresql":
            missing = _pg_missing(con)
            if TSV_COLUMN in missing:
                con.exec_driver_sql(f"ALTER TABLE segments ADD COLUMN IF NOT EXISTS {TSV_COLUMN} tsvector "
                                    f"GENERATED ALWAYS AS (to_tsvector('{TS_CONFIG}', text)) STORED")
            if missing:
                con.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {TSV_INDEX} ON segments USING gin ({TSV_COLUMN})")
                logger.info("full-text index created (%s)", ", ".join(sorted(missing)))
        else:
            logger.warning("%s: no full-text index for this database; report text is searched by meaning only",
                           engine.dialect.name)
            return False
    _ready[engine] = True
    return bool(missing)


def rebuild_fulltext(engine: Engine) -> None:
    """Rebuild the full-text index from the segment rows (``elmsearch index --rebuild-faiss``)."""
    ensure_fulltext(engine)
    with engine.begin() as con:
        if engine.dialect.name == "sqlite":
            con.exec_driver_sql(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")
        elif engine.dialect.name == "postgresql":
            con.exec_driver_sql(f"REINDEX INDEX {TSV_INDEX}")
    logger.info("full-text index rebuilt")


def fulltext_problems(engine: Engine, full: bool = False, where: str = "the database") -> list[str]:
    """What is wrong with the full-text index: one line each, saying how to fix it.

    Parameters
    ----------
    engine : Engine
        The index's database.
    full : bool
        Also run FTS5's ``integrity-check`` against the segment rows (reads the whole index:
        seconds at 1e6 sentences; ``elmsearch verify``). Otherwise (``stats``) compare row
        counts only.
    where : str
        How to name the database in the messages.

    Returns
    -------
    list of str
        Empty when the index is complete.
    """
    hint = "run `elmsearch index --rebuild-faiss` to rebuild it"
    with engine.connect() as con:
        if engine.dialect.name == "sqlite":
            missing = _sqlite_missing(con)
            if missing:
                return [f"{where}: the full-text index of report sentences is missing ({', '.join(sorted(missing))}); "
                        f"{hint}"]
            n_seg = con.exec_driver_sql("SELECT count(*) FROM segments").scalar()
            try:
                n_fts = con.exec_driver_sql(f"SELECT count(*) FROM {FTS_TABLE}_docsize").scalar()
            except DBAPIError as err:
                return [f"{where}: the full-text index of report sentences cannot be read "
                        f"({str(err.orig).splitlines()[0][:200]}); {hint}"]
            if n_fts != n_seg:
                return [f"{where}: the full-text index holds {n_fts} report sentences but the database has {n_seg}; "
                        f"{hint}"]
            if full:
                try:
                    con.exec_driver_sql(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('integrity-check', 1)")
                except DBAPIError as err:
                    msg = str(err.orig).splitlines()[0][:200]
                    if "readonly" in msg or "read-only" in msg:
                        logger.info("%s: read-only: the full-text index's integrity check was skipped", where)
                    else:
                        return [f"{where}: the full-text index of report sentences is damaged ({msg}); {hint}"]
                finally:
                    con.rollback()
        elif engine.dialect.name == "postgresql":
            missing = _pg_missing(con)
            if missing:
                return [f"{where}: the full-text index of report sentences is missing ({', '.join(sorted(missing))}); "
                        f"{hint}"]
            if full:
                bad = con.exec_driver_sql(f"SELECT count(*) FROM segments WHERE {TSV_COLUMN} IS NULL").scalar()
                if bad:
                    return [f"{where}: {bad} report sentences have no full-text vector; {hint}"]
    return []


# ---- the query ----------------------------------------------------------------------------
def clean_terms(terms: Sequence[str]) -> list[str]:
    """The distinct usable query terms, in order: text that can form a token, no NUL, valid UTF-8.

    A term may be several words (searched as a phrase). Terms without a letter or digit
    (``"*"``, ``"-"``, ``"::"``) are dropped: they cannot match a token.
    """
    out, seen = [], set()
    for t in terms:
        if not isinstance(t, str):
            continue
        t = t.encode("utf-8", "replace").decode("utf-8").replace("\x00", " ").strip()[:MAX_TERM_CHARS]
        key = " ".join(t.casefold().split())
        if key and key not in seen and any(c.isalnum() for c in t):
            seen.add(key)
            out.append(t)
    return out[:MAX_TERMS]


def _fts5_string(term: str) -> str:
    """``term`` as one FTS5 string (a phrase of its tokens): any text, no query syntax."""
    return '"' + term.replace('"', '""') + '"'


def _is_ready(session: Session) -> bool:
    engine = session.get_bind()
    engine = getattr(engine, "engine", engine)
    if _ready.get(engine):
        return True
    con = session.connection()
    if engine.dialect.name == "sqlite":
        ok = not _sqlite_missing(con)
    elif engine.dialect.name == "postgresql":
        ok = TSV_COLUMN not in _pg_missing(con)
    else:
        ok = False
    if ok:
        _ready[engine] = True
    else:
        logger.warning("this index has no full-text index of its report sentences yet (it is made by the next "
                       "`elmsearch index` run); the report text is not searched by words")
    return ok


def match_segments(session: Session, terms: Sequence[str], limit: int = 1000,
                   report_ids: Collection[int] | None = None, ranked: bool = True) -> list[SegmentMatch]:
    """Report sentences that contain any of ``terms``: those with more of the terms first, then by score.

    Parameters
    ----------
    session : Session
        A session on the index's database (SQLite or PostgreSQL).
    terms : sequence of str
        User text, each term searched as a word or, when it has several words, a phrase;
        stemmed (``"wave"`` finds ``"waves"``). Any text is safe: quotes, ``*``, ``NEAR``,
        ``AND``/``OR``/``NOT``, ``-`` and ``:`` are searched as text, never parsed as query
        syntax. Terms that cannot match (punctuation only) are ignored.
    limit : int
        At most this many sentences.
    report_ids : collection of int, optional
        Only sentences of these reports.
    ranked : bool
        Order each group by the database's own relevance score. ``False`` (for a caller that
        scores the sentences itself, as the hybrid search does) takes each group's newest
        matches instead, those holding more of the terms first, and skips the score (``1.0``
        per term held): on SQLite this avoids ``bm25()``, whose cost grows with the archive
        (it counts every matching sentence of each term), so the cost is bounded by ``limit``.

    Returns
    -------
    list of SegmentMatch
        Sentences with every term first (``matched == len(terms)``), then those with some,
        each group best first by score; empty for no usable term, no match, or an index
        without a full-text index (logged). On SQLite each group ranks its newest
        ``RANK_WINDOW`` matching sentences (exact below that; see :data:`RANK_WINDOW`).
    """
    terms = clean_terms(terms)
    if not terms or limit <= 0 or (report_ids is not None and not len(report_ids)):
        return []
    if not _is_ready(session):
        return []
    ids = None if report_ids is None else sorted({int(r) for r in report_ids})
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        rows = _match_sqlite(session, terms, int(limit), ids, ranked)
    else:
        rows = _match_pg(session, terms, int(limit), ids, ranked)
    return [SegmentMatch(int(sid), int(rid), float(score), int(m)) for sid, rid, score, m in rows]


def _match_sqlite(session: Session, terms: list[str], limit: int, ids: list[int] | None, ranked: bool = True):
    quoted = [_fts5_string(t) for t in terms]
    every = " AND ".join(quoted)
    tiers = [(every, len(terms))]
    if len(terms) > 1:
        tiers.append((f"({' OR '.join(quoted)}) NOT ({every})", None))
    params: dict = {"window": RANK_WINDOW}
    restrict = ""
    if ids is not None:
        restrict = ("AND rowid IN (SELECT s.id FROM segments s WHERE s.report_id IN "
                    "(SELECT value FROM json_each(:ids)))")
        params["ids"] = json.dumps(ids)
    out: list[tuple[int, float, int]] = []
    try:
        for q, n_matched in tiers:
            want = limit - len(out)
            if want <= 0:
                break
            if not ranked and n_matched is not None:  # every term: the newest matches, nothing to rank
                rows = session.execute(text(
                    f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q {restrict} "
                    "ORDER BY rowid DESC LIMIT :want"), {**params, "q": q, "want": want}).scalars().all()
                out += [(sid, float(n_matched), n_matched) for sid in rows]
                continue
            # the newest RANK_WINDOW matches (FTS5 walks its doclists by rowid, no ranking), then
            # bm25 over them only: the cost is bounded however common the terms are
            lo = session.execute(text(
                f"SELECT min(rowid) FROM (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q {restrict} "
                "ORDER BY rowid DESC LIMIT :window)"), {**params, "q": q}).scalar()
            if lo is None:
                continue
            if not ranked:
                rows = session.execute(text(
                    f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q AND rowid >= :lo {restrict} "
                    "ORDER BY rowid DESC"), {**params, "q": q, "lo": lo}).scalars().all()
                has = [set(session.execute(text(
                    f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q AND rowid >= :lo"),
                    {"q": t, "lo": lo}).scalars()) for t in quoted]
                held = sorted(((sum(sid in h for h in has), sid) for sid in rows), reverse=True)[:want]
                out += [(sid, float(m), m) for m, sid in held]
                continue
            rows = session.execute(text(
                f"SELECT rowid, -rank FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q AND rowid >= :lo {restrict} "
                "ORDER BY rank LIMIT :want"), {**params, "q": q, "lo": lo, "want": want}).all()
            if n_matched is None:  # some terms, not all: which ones, from each term's rows in the window
                has = [set(session.execute(text(
                    f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q AND rowid >= :lo"),
                    {"q": t, "lo": lo}).scalars()) for t in quoted]
                out += [(sid, score, sum(sid in h for h in has)) for sid, score in rows]
            else:
                out += [(sid, score, n_matched) for sid, score in rows]
    except DBAPIError as err:
        msg = str(err.orig).splitlines()[0][:200]
        if f"no such table: {FTS_TABLE}" in msg or "vtable constructor failed" in msg:
            logger.warning("the full-text index of report sentences is missing or damaged (%s); run "
                           "`elmsearch index --rebuild-faiss`", msg)
            _ready.pop(getattr(session.get_bind(), "engine", session.get_bind()), None)
            return []
        raise
    if not out:
        return []
    report_of = dict(session.execute(text("SELECT id, report_id FROM segments WHERE id IN "
                                          "(SELECT value FROM json_each(:sids))"),
                                     {"sids": json.dumps([sid for sid, _, _ in out])}).all())
    return [(sid, report_of[sid], score, m) for sid, score, m in out if sid in report_of]


def _match_pg(session: Session, terms: list[str], limit: int, ids: list[int] | None, ranked: bool = True):
    params: dict = {f"t{i}": t for i, t in enumerate(terms)}
    params["limit"] = limit
    qs = [f"phraseto_tsquery('{TS_CONFIG}', :t{i})" for i in range(len(terms))]
    restrict = ""
    if ids is not None:
        restrict = "AND s.report_id = ANY(:ids)"
        params["ids"] = ids
    matched = " + ".join(f"(s.{TSV_COLUMN} @@ q.q{i})::int" for i in range(len(terms)))
    sql = (f"WITH q AS (SELECT {', '.join(f'{x} AS q{i}' for i, x in enumerate(qs))}), "
           f"qq AS (SELECT *, ({' || '.join(f'q{i}' for i in range(len(terms)))}) AS q FROM q) "
           f"SELECT s.id, s.report_id, ts_rank_cd(s.{TSV_COLUMN}, qq.q) AS score, {matched.replace('q.q', 'qq.q')} "
           f"FROM segments s, qq WHERE s.{TSV_COLUMN} @@ qq.q {restrict} "
           f"ORDER BY 4 DESC, {'score DESC, s.id' if ranked else 's.id DESC'} LIMIT :limit")
    rows = session.execute(text(sql), params).all()
    # ts_rank_cd is 0 for a match without a cover of the query; keep every score positive
    return [(sid, rid, max(float(score), 1e-6) if ranked else float(m), m) for sid, rid, score, m in rows]

def term_weights(session: Session, terms: Sequence[str]) -> dict[str, float]:
    """The inverse document frequency of each term over the report sentences (BM25's idf).

    ``log(1 + (N - n + 0.5) / (n + 0.5))`` with ``N`` sentences and ``n`` of them holding the
    term, counted by the database's own full-text index; a word in nearly every sentence
    ("EEG") weighs little, a rare one ("hypsarrhythmia") much. Counts are cached per database
    and newest sentence id, so a repeated term costs nothing until the next index run (a run
    that only deletes sentences keeps the cached counts: the weights drift, the matches do not).

    Returns
    -------
    dict
        ``{term: weight}`` for the usable terms (``clean_terms``); empty without a full-text index.
    """
    terms = clean_terms(terms)
    if not terms or not _is_ready(session):
        return {}
    engine = session.get_bind()
    engine = getattr(engine, "engine", engine)
    # the newest sentence id stands for the index's state (an index run adds or replaces rows):
    # one B-tree lookup, where count(*) would read the whole table on every query
    state = (str(engine.url), session.execute(text("SELECT max(id) FROM segments")).scalar() or 0)
    n_total = _df_cache.get(state)
    if n_total is None:
        n_total = _df_cache[state] = session.execute(text("SELECT count(*) FROM segments")).scalar() or 0
    out = {}
    for t in terms:
        key = (*state, t.casefold())
        n = _df_cache.get(key)
        if n is None:
            if engine.dialect.name == "sqlite":
                q = text(f"SELECT count(*) FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q")
                n = session.execute(q, {"q": _fts5_string(t)}).scalar() or 0
            else:
                q = text(f"SELECT count(*) FROM segments WHERE {TSV_COLUMN} @@ phraseto_tsquery('english', :q)")
                n = session.execute(q, {"q": t}).scalar() or 0
            if len(_df_cache) > 10_000:
                _df_cache.clear()
            _df_cache[key] = n
        out[t] = float(np.log(1 + (n_total - n + 0.5) / (n + 0.5)))
    return out


_df_cache: dict[tuple, int] = {}
"""``(url, newest id)`` → sentence count and ``(url, newest id, term)`` → sentences holding it."""

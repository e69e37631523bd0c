"""The events stored with each recording (``db.RecordingEvent``): listing them, and finding them by text.

Events are what technologists marked (``elmsearch.io.events``: EDF+ annotations, BrainVision
and EEGLAB markers, BIDS sidecars, TUH label files). A text query reads an event's label and
its vocabulary meaning ("spsw" reads as "spike and/or sharp wave") the way it reads a report
sentence: the share of the query's terms it holds, each weighted alike. Events state what was
seen, so a query that asks for a negated finding ("no seizure") matches none.

An index written before events were stored has no ``events`` table until its next writer; the
readers here then answer nothing (and a filter by event says why).
"""

from __future__ import annotations

import weakref
from collections.abc import Collection

from sqlalchemy import inspect, or_, select
from sqlalchemy.orm import Session

from db import Recording, RecordingEvent, Window
from elmsearch.io.events import Event

MATCH_SHARE = 0.5  # an event whose text holds at least this share of the query's terms matches it
MAX_EVENT_CANDIDATES = 5000  # events read per query (those whose text holds a query word), newest first

_ready: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_has_warnings: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class NoEventsError(LookupError):
    """The index has no events table yet (written before events were stored)."""


def events_ready(session: Session) -> bool:
    """Whether the database has the ``events`` table (checked once per engine while missing, then cached)."""
    engine = session.get_bind()
    engine = getattr(engine, "engine", engine)
    if _ready.get(engine):
        return True
    ok = inspect(session.connection()).has_table(RecordingEvent.__tablename__)
    if ok:
        _ready[engine] = True
    return ok


def to_event(row: RecordingEvent) -> Event:
    """A stored event as ``elmsearch.io.events.Event``."""
    return Event(row.onset, row.duration, row.label, row.source,
                 tuple(c for c in (row.channels or "").split(",") if c), row.meaning)


def recording_events(session: Session, recording_id: int) -> list[Event]:
    """The events of one recording, by onset (none for an index without the events table)."""
    if not events_ready(session):
        return []
    rows = session.scalars(select(RecordingEvent).where(RecordingEvent.recording_id == recording_id)
                           .order_by(RecordingEvent.onset, RecordingEvent.id))
    return [to_event(r) for r in rows]


def recording_warnings(session: Session, recording_id: int) -> list[str]:
    """What was read with a warning for one recording (one line each)."""
    engine = session.get_bind()
    engine = getattr(engine, "engine", engine)
    if not _has_warnings.get(engine):  # checked once per engine while missing, then cached
        cols = {c["name"] for c in inspect(session.connection()).get_columns(Recording.__tablename__)}
        if "warnings" not in cols:
            return []
        _has_warnings[engine] = True
    text = session.scalar(select(Recording.warnings).where(Recording.id == recording_id))
    return [line for line in (text or "").splitlines() if line]


def check_event_filter(session: Session, has_event: str | None) -> None:
    """Raise ``NoEventsError`` for a filter by event on an index that has no events table."""
    if has_event and not events_ready(session):
        raise NoEventsError("this index has no events yet: they are stored by the next `elmsearch index` run")


def event_share(event: Event, terms: list[str]) -> float:
    """The share of the query's terms an event's label and meaning hold."""
    from elmsearch.text.assertion import read_terms, stem

    if not terms:
        return 0.0
    _, held = read_terms(event.text, [], terms)
    return sum(stem(t) in held for t in terms) / len(terms)


def match_events(session: Session, text: str, recording_ids: Collection[int] | None = None
                 ) -> list[tuple[int, Event, float]]:
    """Events whose text speaks to a query: ``(recording_id, event, share)``, best share first.

    Parameters
    ----------
    session : Session
    text : str
        The query as typed; a query that asks for a negated or uncertain finding matches no event.
    recording_ids : collection of int, optional
        Only events of these recordings.
    """
    from elmsearch.text.assertion import parse_query, stem

    if not events_ready(session):
        return []
    query = parse_query(text)
    terms = list(query.terms)
    if query.status != "affirmed" or not terms:
        return []
    words = {stem(t) for t in terms if len(stem(t)) >= 2}
    if not words:
        return []
    cond = or_(*(c.icontains(w, autoescape=True) for w in words for c in (RecordingEvent.label,
                                                                             RecordingEvent.meaning)))
    stmt = select(RecordingEvent).where(cond)
    if recording_ids is not None:
        from indexer.search import _chunks

        rows = [r for chunk in _chunks(sorted(recording_ids)) for r in session.scalars(
            stmt.where(RecordingEvent.recording_id.in_(chunk)))]
    else:
        rows = session.scalars(stmt.order_by(RecordingEvent.id.desc()).limit(MAX_EVENT_CANDIDATES)).all()
    out = []
    for r in rows:
        e = to_event(r)
        share = event_share(e, terms)
        if share >= MATCH_SHARE:
            out.append((r.recording_id, e, share))
    return sorted(out, key=lambda x: (-x[2], x[0], x[1].onset))


def windows_in(session: Session, matches: list[tuple[int, Event, float]]) -> dict[int, tuple[Event, float]]:
    """The windows that overlap each matched event: ``{window id: (event, share)}``, the best event per window.

    A point event (duration 0) marks the window that holds it.
    """
    from indexer.search import _chunks

    by_rec: dict[int, list[tuple[Event, float]]] = {}
    for rid, e, share in matches:
        by_rec.setdefault(rid, []).append((e, share))
    out: dict[int, tuple[Event, float]] = {}
    for chunk in _chunks(sorted(by_rec)):
        for wid, rid, a, b in session.execute(select(Window.id, Window.recording_id, Window.start_s, Window.end_s)
                                              .where(Window.recording_id.in_(chunk))):
            for e, share in by_rec[rid]:
                inside = (a < e.end and b > e.onset) if e.duration > 0 else a <= e.onset < b
                if inside and (wid not in out or share > out[wid][1]):
                    out[wid] = (e, share)
    return out

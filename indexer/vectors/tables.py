"""Which database rows back each FAISS index: one declarative table, read by the store and by search.

An index folder holds five FAISS indices (:data:`VECTOR_TABLES`): ``eeg_recording`` (one EEG
embedding per recording), ``eeg_window`` (one per window), ``report`` and ``segment`` (text
embeddings of reports and of their sentences) and ``eeg_profile`` (spectral profiles for prior
cases, empty unless the model's ``similar_representation`` is ``spectral``). A row backs an index
when its embedding is set and a recording it belongs to is indexed, by the index's model.

This module imports SQLAlchemy and the ORM, never FAISS.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import ColumnElement, Select, exists, select
from sqlalchemy.orm import InstrumentedAttribute

from db import Recording, Report, Segment, Status, Window


@dataclasses.dataclass(frozen=True)
class VectorSource:
    """The rows behind one FAISS index.

    Attributes
    ----------
    table : type
        The ORM class of the rows (its ``id`` is the FAISS id).
    emb : str
        The attribute that holds the embedding (float32 bytes).
    link : str
        The attribute of ``table`` equal to ``Recording.<recording_key>``: how a row finds its
        recording(s).
    recording_key : str
        ``"id"`` when each row belongs to one recording (the recording itself, or a window:
        joined), ``"report_id"`` when rows are shared by the recordings of one report (checked
        with ``EXISTS``; the row's own ``model_hash`` is on its report).
    joins : tuple of (type, str, str)
        Tables joined to read the rows: ``(table, column of this table, column of the joined)``.
    emb_required : bool
        Whether rows whose embedding is NULL are left out (a window always has one).
    """

    table: type
    emb: str = "emb"
    link: str = "id"
    recording_key: str = "id"
    joins: tuple[tuple[type, str, str], ...] = ()
    emb_required: bool = True

    @property
    def id_column(self) -> InstrumentedAttribute:
        """The FAISS id column (the table's primary key)."""
        return self.table.id

    @property
    def emb_column(self) -> InstrumentedAttribute:
        """The embedding column."""
        return getattr(self.table, self.emb)

    @property
    def shared(self) -> bool:
        """Whether a row may belong to several recordings (a report and its segments)."""
        return self.recording_key != "id"

    def _belongs(self) -> ColumnElement[bool]:
        return getattr(self.table, self.link) == getattr(Recording, self.recording_key)

    def rows(self, model_hash: str, with_emb: bool = True) -> Select:
        """The SELECT of the rows behind the index: ``(id, emb)`` or ``(id,)``, by id.

        Parameters
        ----------
        model_hash : str
            The index's model: rows embedded by another are left out.
        with_emb : bool
            Select the embedding too.

        Returns
        -------
        Select
            Ordered by id (read with ``yield_per``: a server-side cursor on PostgreSQL).
        """
        cols = (self.id_column, self.emb_column) if with_emb else (self.id_column,)
        indexed = (Recording.status == Status.INDEXED) & (Recording.model_hash == model_hash)
        q = select(*cols)
        for joined, mine, theirs in self.joins:
            q = q.join(joined, getattr(self.table, mine) == getattr(joined, theirs))
        if self.shared:
            owner = Report if self.table is Report else next(j for j, _, _ in self.joins if j is Report)
            q = q.where(self.emb_column.is_not(None), owner.model_hash == model_hash,
                        exists().where(self._belongs(), indexed))
        elif self.emb_required:
            q = q.where(indexed, self.emb_column.is_not(None))
        else:
            q = q.where(indexed)
        return q.order_by(cols[0])

    def changed(self, since: dt.datetime) -> Select:
        """The ids of rows written by a run after ``since`` (maybe not all still indexed).

        A run rewrites a recording, its windows and its report (with the report's segments) in
        one transaction that sets ``Recording.indexed_at``; the rows of recordings written
        after ``since`` therefore include every row whose embedding may have changed.
        """
        new = Recording.indexed_at > since
        if self.shared:
            return select(self.id_column).where(exists().where(self._belongs(), new))
        if self.table is Recording:
            return select(Recording.id).where(new)
        return select(self.id_column).join(Recording, self._belongs()).where(new)

    def passing(self) -> tuple[InstrumentedAttribute, Select]:
        """``(column, SELECT)`` of the ids of rows whose recording is indexed, to filter further.

        The SELECT joins ``Recording`` (so that recording filters apply) and reads the ids from
        the recording's side where it can (``Recording.report_id`` for reports); ``column`` is
        the one selected, for ``column IN (...)``.
        """
        if self.table is Recording:
            col, q = Recording.id, select(Recording.id)
        elif self.table is Report:
            col, q = Recording.report_id, select(Recording.report_id).distinct()
        else:
            col = self.id_column
            q = select(col).join(Recording, self._belongs())
            q = q.distinct() if self.shared else q
        return col, q.where(Recording.status == Status.INDEXED, col.is_not(None))


VECTOR_TABLES: dict[str, VectorSource] = {
    "eeg_recording": VectorSource(Recording),
    "eeg_window": VectorSource(Window, link="recording_id", joins=((Recording, "recording_id", "id"),),
                               emb_required=False),
    "report": VectorSource(Report, recording_key="report_id"),
    "segment": VectorSource(Segment, link="report_id", recording_key="report_id", joins=((Report, "report_id", "id"),)),
    "eeg_profile": VectorSource(Recording, emb="profile"),
}
"""The five FAISS indices of an index folder, in the order they are built, and the rows behind each."""

INDEX_NAMES = tuple(VECTOR_TABLES)

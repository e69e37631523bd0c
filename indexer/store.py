"""An index folder: SQL metadata (SQLite inside it, or any URL) + four FAISS indices + a manifest.

```
DIR/elmsearch.sqlite      metadata and embeddings (unless --db-url points elsewhere)
DIR/faiss/*.faiss         eeg_recording, eeg_window, report, segment (ids = row ids)
DIR/faiss/*.ivfdata       inverted lists of the on-disk kind (from 2e6 vectors), named by the .faiss file
DIR/manifest.json         model, index types, counts; written last, atomically
DIR/cache/                frozen text-encoder embeddings
```

FAISS files follow the database (``IndexStore.rebuild``): exact indices are rebuilt, IVF ones
updated with the rows added, changed and removed since the last run unless the retraining rule
(:func:`indexer.faiss_scale.retrain_reason`) asks for a rebuild; see :class:`FaissPolicy`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sqlalchemy import delete, exists, func, select

from db import (
    IndexRun,
    Patient,
    Recording,
    Report,
    Segment,
    Status,
    Visit,
    Window,
    make_engine,
    make_sessionmaker,
    sqlite_url,
)
from elmsearch.errors import ElmsearchError
from indexer.lock import lock_holder
from indexer.private import FILE_MODE, private_dir, private_umask, secure_tree

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
INDEX_NAMES = ("eeg_recording", "eeg_window", "report", "segment", "eeg_profile")
"""FAISS indices of an index folder; ``eeg_profile`` (spectral profiles for prior cases) is empty
unless the model's ``similar_representation`` is ``spectral``."""
CHUNK = 50_000
ID_BATCH = 500  # ids per `IN (...)` when reading the embeddings of given rows


def vector_columns(name: str):
    """The id column and embedding column of the rows behind FAISS index ``name``."""
    if name == "eeg_profile":
        return Recording.id, Recording.profile
    table = {"eeg_recording": Recording, "eeg_window": Window, "report": Report, "segment": Segment}[name]
    return table.id, table.emb


@dataclasses.dataclass
class FaissPolicy:
    """How :meth:`IndexStore.rebuild` chooses, builds and updates the FAISS indices.

    Attributes
    ----------
    exact_below : int
        Below this many vectors an index is exact (``flat_ip``), rebuilt on every run that
        changed something (50 000 vectors: under a second).
    large_from : int
        From this many vectors an index is the on-disk kind (``ivf_sq8_ondisk``), built in
        shards from chunks of rows; in between it is ``ivf_sq8``, built in memory.
    shard_size : int
        Vectors per shard of the on-disk kind.
    incremental : bool
        Update IVF indices with the changed rows instead of rebuilding them.
    retrain_fraction, drift_tolerance : float
        The retraining rule (:func:`indexer.faiss_scale.retrain_reason`).
    min_drift_count : int
        Vectors added since the training before the drift part of the rule applies.
    target_recall : float
        Recall@10 the ``nprobe`` tuning aims for.
    seed : int
        Seed of every sample, k-means and tuning query set.
    """

    exact_below: int = 50_000
    large_from: int = 2_000_000
    shard_size: int = 1_000_000
    incremental: bool = True
    retrain_fraction: float = 0.2
    drift_tolerance: float = 0.25
    min_drift_count: int = 1000
    target_recall: float = 0.95
    seed: int = 0

    def kind(self, n: int) -> str:
        """The index kind for ``n`` vectors (the names of :mod:`indexer.vectors`)."""
        if n < self.exact_below:
            return "flat_ip"
        return "ivf_sq8" if n < self.large_from else "ivf_sq8_ondisk"


class IndexStateError(ElmsearchError):
    """The index folder is missing, inconsistent, or was built with another model."""


def public_url(url: str) -> str:
    """A database URL without its password (what may be written to disk or shown).

    The server then takes the password from ``PGPASSWORD``, ``~/.pgpass`` or ``--db-url``.
    """
    from sqlalchemy.engine import URL, make_url

    u = make_url(url)
    return URL.create(u.drivername, u.username, None, u.host, u.port, u.database, u.query).render_as_string(
        hide_password=False)


def _atomic_write_text(fname: Path, text: str) -> None:
    tmp = fname.with_name(f".{fname.name}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, fname)


class IndexStore:
    """Database and FAISS files of one index.

    Use ``IndexStore.create`` to make or extend one and ``IndexStore.open`` to query one.
    ``faiss_policy`` (a :class:`FaissPolicy`) says how :meth:`rebuild` treats the FAISS files.
    """

    def __init__(self, folder: str | os.PathLike, db_url: str | None = None, create: bool = False):
        self.folder = Path(folder)
        self.faiss_policy = FaissPolicy()
        self.pending_run: dict | None = None  # set by verify(full=False): a newer run, unfinished
        manifest = self.read_manifest()
        self.db_url = db_url or (manifest or {}).get("db_url") or sqlite_url(self.folder)
        self.engine = make_engine(self.db_url, create=create)
        self._sessions = make_sessionmaker(self.engine)

    @classmethod
    def create(cls, folder: str | os.PathLike, db_url: str | None = None) -> IndexStore:
        """Open for writing, creating the folder (0700) and tables when needed.

        Every file already in the folder is made owner-only (0600), so an index written by an
        older version is tightened on its next run.
        """
        private_dir(folder)
        private_dir(Path(folder) / "faiss")
        store = cls(folder, db_url, create=True)
        secure_tree(folder)
        return store

    @classmethod
    def open(cls, folder: str | os.PathLike, db_url: str | None = None) -> IndexStore:
        """Open an existing index for reading (raises ``IndexStateError`` when there is none)."""
        if not (Path(folder) / MANIFEST).is_file():
            raise IndexStateError(f"{folder}: no elmsearch index here (build one with `elmsearch index`)")
        return cls(folder, db_url, create=False)

    @contextmanager
    def session(self) -> Iterator:
        """A SQLAlchemy session (use ``with store.session() as s, s.begin():`` to write)."""
        with self._sessions() as s:
            yield s

    # ---- manifest -------------------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        """The manifest, or None before the first run finished."""
        f = self.folder / MANIFEST
        return json.loads(f.read_text()) if f.is_file() else None

    @property
    def manifest(self) -> dict:
        """The manifest (raises when there is none)."""
        m = self.read_manifest()
        if m is None:
            raise IndexStateError(f"{self.folder}: no manifest (the first `elmsearch index` did not finish)")
        return m

    def check_model(self, model_hash: str) -> None:
        """Log when the index was built with another model (a run then re-embeds everything)."""
        m = self.read_manifest()
        if m and m.get("model_hash") != model_hash:
            logger.warning("%s was built with model %s; re-embedding everything with %s", self.folder,
                           m.get("model_hash"), model_hash)

    # ---- maintenance ----------------------------------------------------------------------
    def delete_orphans(self, s) -> None:
        """Remove reports, sessions and patients no recording refers to."""
        s.execute(delete(Report).where(~exists().where(Recording.report_id == Report.id)))
        s.execute(delete(Visit).where(~exists().where(Recording.session_id == Visit.id)))
        s.execute(delete(Patient).where(~exists().where(Recording.patient_id == Patient.id)))

    def _rows(self, name: str, model_hash: str, with_emb: bool = True):
        """The SELECT of the rows behind FAISS index ``name``: ``(id, emb)`` or ``(id,)``, by id."""
        ok = (Recording.status == Status.INDEXED) & (Recording.model_hash == model_hash)
        if name == "eeg_recording":
            cols = (Recording.id, Recording.emb) if with_emb else (Recording.id,)
            q = select(*cols).where(ok, Recording.emb.is_not(None))
        elif name == "eeg_profile":
            cols = (Recording.id, Recording.profile) if with_emb else (Recording.id,)
            q = select(*cols).where(ok, Recording.profile.is_not(None))
        elif name == "eeg_window":
            cols = (Window.id, Window.emb) if with_emb else (Window.id,)
            q = select(*cols).join(Recording, Window.recording_id == Recording.id).where(ok)
        elif name == "report":
            cols = (Report.id, Report.emb) if with_emb else (Report.id,)
            q = select(*cols).where(
                Report.emb.is_not(None), Report.model_hash == model_hash,
                exists().where(Recording.report_id == Report.id, ok))
        else:
            cols = (Segment.id, Segment.emb) if with_emb else (Segment.id,)
            q = select(*cols).join(Report, Segment.report_id == Report.id).where(
                Segment.emb.is_not(None), Report.model_hash == model_hash,
                exists().where(Recording.report_id == Report.id, ok))
        return q.order_by(cols[0])  # read with yield_per: a server-side cursor on PostgreSQL, not all rows at once

    @staticmethod
    def _decode(rows) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        return ids, np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1)

    def _vectors(self, s, name: str, model_hash: str) -> tuple[np.ndarray, np.ndarray]:
        ids, embs = [], []
        for rows in s.execute(self._rows(name, model_hash), execution_options={"yield_per": CHUNK}).partitions():
            i, e = self._decode(rows)
            ids.append(i)
            embs.append(e)
        if not ids:
            return np.zeros((0, 256), np.float32), np.zeros(0, np.int64)
        return np.concatenate(embs), np.concatenate(ids)

    def _vector_chunks(self, name: str, model_hash: str):
        """A re-iterable source of ``(ids, vectors)`` chunks (``indexer.faiss_scale.Chunks``)."""

        def chunks():
            with self.session() as s:
                result = s.execute(self._rows(name, model_hash), execution_options={"yield_per": CHUNK})
                for rows in result.partitions():
                    yield self._decode(rows)

        return chunks

    def _ids(self, s, name: str, model_hash: str) -> np.ndarray:
        """The ids of the rows behind FAISS index ``name``, sorted."""
        parts = [np.fromiter((r[0] for r in rows), np.int64, len(rows))
                 for rows in s.execute(self._rows(name, model_hash, with_emb=False),
                                    execution_options={"yield_per": CHUNK}).partitions()]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _changed_ids(self, s, name: str, since: dt.datetime) -> np.ndarray:
        """Ids of index ``name``'s rows written by a run after ``since`` (maybe not all still indexed).

        A run rewrites a recording, its windows and its report (with the report's segments) in
        one transaction that sets ``Recording.indexed_at``; the rows of recordings written
        after ``since`` therefore include every row whose embedding may have changed.
        """
        new = Recording.indexed_at > since
        if name in ("eeg_recording", "eeg_profile"):
            q = select(Recording.id).where(new)
        elif name == "eeg_window":
            q = select(Window.id).join(Recording, Window.recording_id == Recording.id).where(new)
        elif name == "report":
            q = select(Report.id).where(exists().where(Recording.report_id == Report.id, new))
        else:
            q = select(Segment.id).where(exists().where(Recording.report_id == Segment.report_id, new))
        return np.unique(np.fromiter((r[0] for r in s.execute(q)), np.int64))

    def _vectors_of(self, s, name: str, ids: np.ndarray) -> np.ndarray:
        """The embeddings of the given rows, in the order of ``ids``."""
        key_col, column = vector_columns(name)
        out = np.empty((len(ids), 256), np.float32)
        pos = {int(k): i for i, k in enumerate(ids)}
        for start in range(0, len(ids), ID_BATCH):
            batch = [int(k) for k in ids[start:start + ID_BATCH]]
            for key, emb in s.execute(select(key_col, column).where(key_col.in_(batch))):
                out[pos[key]] = np.frombuffer(emb, np.float32)
        return out

    def _last_write(self) -> str | None:
        """When the last recording was written (``max(indexed_at)``, ISO 8601), the FAISS sync point."""
        with self.session() as s:
            last = s.scalar(select(func.max(Recording.indexed_at)))
        return last.isoformat() if last is not None else None

    def _has_profiles(self) -> bool:
        """Whether the database has the ``profile`` column (an older index gets it on its next run)."""
        from sqlalchemy import inspect

        if getattr(self, "_profiles", None) is None:
            self._profiles = any(c["name"] == "profile" for c in inspect(self.engine).get_columns("recordings"))
        return self._profiles

    def db_counts(self, model_hash: str | None = None) -> dict:
        """Row counts that the FAISS indices must match."""
        with self.session() as s:
            mh = model_hash or (self.read_manifest() or {}).get("model_hash")
            ok = (Recording.status == Status.INDEXED) & (Recording.model_hash == mh)
            used = exists().where(Recording.report_id == Report.id, ok)
            return {
                "eeg_recording": s.scalar(select(func.count()).select_from(Recording).where(
                    ok, Recording.emb.is_not(None))),
                "eeg_window": s.scalar(select(func.count()).select_from(Window).join(Recording).where(ok)),
                "report": s.scalar(select(func.count()).select_from(Report).where(
                    Report.emb.is_not(None), Report.model_hash == mh, used)),
                "segment": s.scalar(select(func.count()).select_from(Segment).join(Report).where(
                    Segment.emb.is_not(None), Report.model_hash == mh, used)),
                "eeg_profile": s.scalar(select(func.count()).select_from(Recording).where(
                    ok, Recording.profile.is_not(None))) if self._has_profiles() else 0,
            }

    def rebuild(self, model_hash: str, model_path: str, model_config: dict, force: bool = True,
                run_id: int | None = None, extra: dict | None = None) -> dict:
        """Bring the FAISS indices in line with the database and write the manifest (manifest last).

        With ``force=False`` and a manifest that already agrees with the database, no FAISS file
        is rewritten. Otherwise each index is built or updated as ``faiss_policy`` says (exact
        ones are rebuilt; IVF ones get the rows added, changed and removed since the previous
        sync, unless the retraining rule asks for a rebuild; from ``large_from`` vectors the
        on-disk kind is built in shards from chunks of rows). Every new file is written under a
        temporary or new name first and the index files are renamed only once all four are
        ready, so an error (or a crash) before that leaves the previous files and manifest as
        they were; data files no index file names any more are deleted after the manifest.
        ``run_id``, the ``IndexRun`` that made this state, goes into the manifest:
        ``verify(full=False)`` compares it with the newest run in the database. Returns the
        vector counts.
        """
        if not force:
            try:
                self.verify(model_hash)
                manifest = self.manifest
                if manifest.get("run_id") != run_id or any(manifest.get(k) != v for k, v in (extra or {}).items()):
                    _atomic_write_text(self.folder / MANIFEST,
                                       json.dumps({**manifest, **(extra or {}), "run_id": run_id}, indent=1))
                return manifest["counts"]
            except IndexStateError:
                pass
        from indexer import faiss_scale  # FAISS: not for `stats`, `show` or `export`

        self.analyze()
        previous = self.read_manifest() or {}
        same_model = previous.get("model_hash") == model_hash
        since = previous.get("faiss_synced_at") if same_model else None
        synced_at = self._last_write()
        counts = self.db_counts(model_hash)
        staged: list = []
        with private_umask():
            try:
                for name in INDEX_NAMES:
                    old = (previous.get("indices") or {}).get(name) if same_model else None
                    staged.append(self._sync_index(name, model_hash, counts[name], old, since))
            except BaseException:
                for st in staged:
                    st.discard()
                raise
            for st in staged:  # renames only, from here to the manifest
                st.commit()
        infos = {}
        for name, st in zip(INDEX_NAMES, staged, strict=True):
            if st.info is not None:
                infos[name] = {**st.info.to_dict(), "bytes": st.nbytes(), "last_sync": st.how}
            logger.info("%s: %d vectors, %s (%s)", name, counts[name], st.info.kind if st.info else "no index", st.how)
        manifest = {
            "format": 1, "model_hash": model_hash, "model_path": model_path,
            "window_seconds": model_config["eeg"]["window_seconds"],
            "preprocessing": model_config.get("preprocessing", {}),
            "has_text": counts["report"] > 0 or counts["segment"] > 0,
            "db_url": None if self.db_url == sqlite_url(self.folder) else public_url(self.db_url),
            "counts": counts, "indices": infos, "updated": dt.datetime.now(dt.UTC).isoformat(),
            "faiss_synced_at": synced_at, "run_id": run_id, **(extra or {}),
        }
        _atomic_write_text(self.folder / MANIFEST, json.dumps(manifest, indent=1))
        faiss_scale.collect_garbage(self.folder / "faiss")  # data files of replaced indices, leftovers
        secure_tree(self.folder)
        return counts

    def _sync_index(self, name: str, model_hash: str, n: int, old: dict | None, since: str | None):
        """Bring FAISS index ``name`` in line with the database; returns an uncommitted ``Staged``.

        IVF indices whose kind still suits their size are updated with the rows added, changed
        and removed since ``since`` (the previous sync), unless the retraining rule says
        otherwise; everything else is built anew.
        """
        from indexer import faiss_scale, vectors

        fname = self.folder / "faiss" / f"{name}.faiss"
        policy = self.faiss_policy
        if n == 0:
            return faiss_scale.Staged(fname, action="delete", how="deleted")
        kind = policy.kind(n)
        if (policy.incremental and old is not None and since is not None and fname.is_file()
                and old.get("kind") == kind and kind != vectors.KIND_EXACT):
            staged = self._update_index(name, model_hash, fname, vectors.IndexInfo.from_dict(old),
                                        dt.datetime.fromisoformat(since))
            if staged is not None:
                return staged
        t0 = dt.datetime.now()
        if kind == vectors.KIND_ONDISK:
            staged = faiss_scale.build_ondisk(
                self._vector_chunks(name, model_hash), n, fname, shard_size=policy.shard_size,
                target_recall=policy.target_recall, seed=policy.seed)
        else:
            with self.session() as s:
                vecs, ids = self._vectors(s, name, model_hash)
            index, info = vectors.build_index(vecs, ids, exact_below=policy.exact_below,
                                              target_recall=policy.target_recall, seed=policy.seed)
            del vecs
            tmp = fname.with_name(f".{fname.name}.{os.getpid()}.{t0:%H%M%S%f}.tmp")
            vectors.write_index(index, tmp)
            staged = faiss_scale.Staged(fname, tmp, None, info)
        return staged

    def _update_index(self, name: str, model_hash: str, fname: Path, info, since: dt.datetime):
        """An incremental update of an IVF index (``Staged``), None when it must be rebuilt."""
        from indexer import faiss_scale, vectors

        try:
            index = vectors.read_index(fname, mmap=True)
            in_index = np.sort(vectors.index_ids(index))
            del index
        except (ValueError, OSError, RuntimeError) as err:  # an unreadable file: rebuild it
            logger.warning("%s: cannot update (%s); rebuilding", fname, err)
            return None
        if len(in_index) != info.n:
            logger.warning("%s holds %d vectors, the manifest says %d; rebuilding", fname, len(in_index), info.n)
            return None
        with self.session() as s:
            in_db = self._ids(s, name, model_hash)
            changed = self._changed_ids(s, name, since)
            gone = np.union1d(np.setdiff1d(in_index, in_db, assume_unique=True),
                              np.intersect1d(changed, in_index, assume_unique=True))
            new = np.union1d(np.setdiff1d(in_db, in_index, assume_unique=True),
                             np.intersect1d(changed, in_db, assume_unique=True))
            if len(gone) == 0 and len(new) == 0:
                info.ivfdata = vectors.ondisk_data_name(fname) or ""  # the file's word over the manifest's
                return faiss_scale.Staged(fname, info=info, action="keep", how="unchanged")
            vecs = self._vectors_of(s, name, new)
        p = self.faiss_policy
        staged = faiss_scale.update_index(fname, info, vecs, new, gone, retrain_fraction=p.retrain_fraction,
                                          drift_tolerance=p.drift_tolerance, min_drift_count=p.min_drift_count)
        if staged is not None and staged.info.n != len(in_db):
            logger.warning("%s: %d vectors after the update, the database has %d; rebuilding", fname,
                           staged.info.n, len(in_db))
            staged.discard()
            return None
        return staged

    def analyze(self) -> None:
        """Refresh the query planner's statistics (``ANALYZE``; 0.6 s at 1e6 recordings on SQLite).

        Without them SQLite reads a filter's whole covering index to check 256 candidate ids
        (50 ms at 1e6) instead of looking the ids up (3 ms).
        """
        with self.engine.begin() as con:
            con.exec_driver_sql("ANALYZE")

    def verify(self, model_hash: str | None = None, full: bool = True) -> dict:
        """Check the FAISS files and the manifest against the database.

        Parameters
        ----------
        model_hash : str | None
            The model the index must have been built with.
        full : bool
            Count the database rows behind every FAISS index (seconds on millions of rows).
            Otherwise (the check on every query) check that the FAISS files exist and note, in
            ``pending_run``, an ``IndexRun`` newer than the manifest's: only the indexer
            writes, and it rewrites the manifest last, so a newer run is in progress or was
            interrupted, and queries answer from the last complete index meanwhile. Indices
            written before runs were recorded in the manifest always get the full check.

        Returns
        -------
        dict
            The vector counts (the manifest's after a quick check).

        Raises
        ------
        IndexStateError
            One line saying what disagrees (and how to fix it).
        """
        m = self.manifest
        if model_hash is not None and m["model_hash"] != model_hash:
            raise IndexStateError(f"{self.folder}: built with model {m['model_hash']}, not {model_hash}; "
                                  "re-run `elmsearch index` with this model")
        if not full and m.get("run_id") is not None:
            self.pending_run = self._pending_run(m["run_id"])
            counts = dict(m["counts"])
            self._check_files(counts, m.get("indices") or {})
            return counts
        counts = self.db_counts(m["model_hash"])
        for name in INDEX_NAMES:
            want, have = counts[name], m["counts"].get(name, 0)
            if want != have:
                raise IndexStateError(f"{self.folder}: the {name} index holds {have} vectors but the database "
                                      f"has {want}; run `elmsearch index` again to bring it up to date")
        self._check_files(counts, m.get("indices") or {})
        return counts

    def _pending_run(self, run_id: int) -> dict | None:
        """The index run newer than the manifest's, if any: still running or interrupted.

        Queries answer from the last complete index meanwhile: its FAISS files are replaced
        only atomically at the end of a run, and hits whose rows a run has since changed or
        removed are checked in SQL (``Index``). Returns ``{"run", "started", "running"}``.
        """
        with self.session() as s:
            last = s.scalar(select(IndexRun).order_by(IndexRun.id.desc()).limit(1))
        if last is None or last.id == run_id:
            return None
        running = lock_holder(self.folder) is not None
        started = f"{last.started:%Y-%m-%d %H:%M} UTC" if last.started else "?"
        if running:
            logger.info("%s: index run %d (started %s) is still writing; answering from the last complete "
                        "index (run %d)", self.folder, last.id, started, run_id)
        else:
            logger.warning("%s: index run %d (started %s) did not finish; answering from the last complete "
                           "index (run %d); run `elmsearch index` again to bring it up to date",
                           self.folder, last.id, started, run_id)
        return {"run": last.id, "started": started, "running": running}

    def _check_files(self, counts: dict, infos: dict) -> None:
        for name in INDEX_NAMES:
            fname = self.folder / "faiss" / f"{name}.faiss"
            if counts[name] and not fname.is_file():
                raise IndexStateError(f"{fname}: missing; run `elmsearch index` again to rebuild it")
            data = (infos.get(name) or {}).get("ivfdata")
            if counts[name] and data and not (fname.parent / data).is_file():
                raise IndexStateError(f"{fname.parent / data}: missing; run `elmsearch index` again to rebuild it")

    def load_index(self, name: str):
        """A FAISS index of this store, memory-mapped read-only (None when it has no vectors).

        Mapping instead of reading makes opening a 1e6-vector index 4 ms instead of 0.2 s; the
        indexer replaces files atomically, so a mapped index never changes under a query. The
        on-disk kind maps its ``.ivfdata`` file (named by the index file, in the same folder).
        """
        from indexer import vectors

        fname = self.folder / "faiss" / f"{name}.faiss"
        if not fname.is_file():
            return None
        try:
            index = vectors.read_index(fname, mmap=True)
        except FileNotFoundError:
            # the indexer replaced the index file and deleted the data file the old one named
            # between our two reads: the index file now names a data file that exists
            index = vectors.read_index(fname, mmap=True)
        want = self.manifest["counts"].get(name, 0)
        if index.ntotal != want:
            raise IndexStateError(f"{fname}: holds {index.ntotal} vectors, the manifest says {want}; "
                                  "run `elmsearch index` again")
        return index

    # ---- reporting ------------------------------------------------------------------------
    def stats(self) -> dict:
        """Counts, failures with reasons, model, index types and sizes (stable keys)."""
        m = self.read_manifest() or {}
        try:
            self.verify(full=True)
            consistency = "ok"
        except IndexStateError as err:
            consistency = str(err)
        with self.session() as s:
            n = {st: s.scalar(select(func.count()).select_from(Recording).where(Recording.status == st))
                 for st in Status}
            failures = [{"path": p, "reason": r} for p, r in s.execute(
                select(Recording.path, Recording.error).where(Recording.status == Status.FAILED)
                .order_by(Recording.path))]
            hours = s.scalar(select(func.sum(Recording.duration)).where(Recording.status == Status.INDEXED)) or 0
            last = s.scalar(select(IndexRun).order_by(IndexRun.id.desc()).limit(1))
            doc = {
                "recordings": n[Status.INDEXED], "failed": n[Status.FAILED],
                "reports": s.scalar(select(func.count()).select_from(Report)),
                "segments": s.scalar(select(func.count()).select_from(Segment)),
                "windows": s.scalar(select(func.count()).select_from(Window)),
                "patients": s.scalar(select(func.count()).select_from(Patient)),
                "hours": round(hours / 3600, 3),
                "consistency": consistency,
                "failures": failures,
                "model": {"hash": m.get("model_hash"), "path": m.get("model_path"),
                          "window_seconds": m.get("window_seconds"), "has_text": m.get("has_text")},
                "indices": m.get("indices", {}),
                "writer": lock_holder(self.folder),
                "db": self.engine.url.render_as_string(hide_password=True),
                "db_bytes": (self.folder / "elmsearch.sqlite").stat().st_size
                if (self.folder / "elmsearch.sqlite").is_file() else None,
                "last_run": None if last is None else {
                    "started": last.started.isoformat() if last.started else None,
                    "finished": last.finished.isoformat() if last.finished else None,
                    "added": last.n_added, "updated": last.n_updated, "skipped": last.n_skipped,
                    "failed": last.n_failed, "removed": last.n_removed, "timings": last.timings},
            }
        return doc

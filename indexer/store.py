"""An index folder: SQL metadata (SQLite inside it, or any URL) + four FAISS indices + a manifest.

```
DIR/elmsearch.sqlite      metadata and embeddings (unless --db-url points elsewhere)
DIR/faiss/*.faiss         eeg_recording, eeg_window, report, segment (ids = row ids)
DIR/manifest.json         model, index types, counts; written last, atomically
DIR/cache/                frozen text-encoder embeddings
```
"""

from __future__ import annotations

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
from indexer.private import FILE_MODE, private_dir, secure_tree

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
INDEX_NAMES = ("eeg_recording", "eeg_window", "report", "segment")
CHUNK = 50_000


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
    """

    def __init__(self, folder: str | os.PathLike, db_url: str | None = None, create: bool = False):
        self.folder = Path(folder)
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

    def _vectors(self, s, name: str, model_hash: str) -> tuple[np.ndarray, np.ndarray]:
        ok = (Recording.status == Status.INDEXED) & (Recording.model_hash == model_hash)
        if name == "eeg_recording":
            q = select(Recording.id, Recording.emb).where(ok, Recording.emb.is_not(None))
        elif name == "eeg_window":
            q = select(Window.id, Window.emb).join(Recording, Window.recording_id == Recording.id).where(ok)
        elif name == "report":
            q = select(Report.id, Report.emb).where(
                Report.emb.is_not(None), Report.model_hash == model_hash,
                exists().where(Recording.report_id == Report.id, ok))
        else:
            q = select(Segment.id, Segment.emb).join(Report, Segment.report_id == Report.id).where(
                Segment.emb.is_not(None), Report.model_hash == model_hash,
                exists().where(Recording.report_id == Report.id, ok))
        ids, embs = [], []
        for rows in s.execute(q.order_by(q.selected_columns[0])).partitions(CHUNK):
            ids.append(np.fromiter((r[0] for r in rows), np.int64, len(rows)))
            embs.append(np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1))
        if not ids:
            return np.zeros((0, 256), np.float32), np.zeros(0, np.int64)
        return np.concatenate(embs), np.concatenate(ids)

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
            }

    def rebuild(self, model_hash: str, model_path: str, model_config: dict, force: bool = True,
                run_id: int | None = None, extra: dict | None = None) -> dict:
        """Build the FAISS indices from the database and write the manifest (atomically, manifest last).

        With ``force=False`` and a manifest that already agrees with the database, no FAISS file
        is rewritten. ``run_id``, the ``IndexRun`` that made this state, goes into the manifest:
        ``verify(full=False)`` compares it with the newest run in the database. Returns the
        vector counts.
        """
        from indexer import vectors  # FAISS: not for `stats`, `show` or `export`

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
        self.analyze()
        infos, counts = {}, {}
        with self.session() as s:
            for name in INDEX_NAMES:
                vecs, ids = self._vectors(s, name, model_hash)
                counts[name] = len(ids)
                fname = self.folder / "faiss" / f"{name}.faiss"
                if len(ids) == 0:
                    fname.unlink(missing_ok=True)
                    continue
                index, info = vectors.build_index(vecs, ids)
                vectors.write_index(index, fname)
                infos[name] = {**info.to_dict(), "bytes": fname.stat().st_size}
                logger.info("%s: %d vectors, %s", name, len(ids), info.kind)
        manifest = {
            "format": 1, "model_hash": model_hash, "model_path": model_path,
            "window_seconds": model_config["eeg"]["window_seconds"],
            "preprocessing": model_config.get("preprocessing", {}),
            "has_text": counts["report"] > 0 or counts["segment"] > 0,
            "db_url": None if self.db_url == sqlite_url(self.folder) else public_url(self.db_url),
            "counts": counts, "indices": infos, "updated": dt.datetime.now(dt.UTC).isoformat(),
            "run_id": run_id, **(extra or {}),
        }
        _atomic_write_text(self.folder / MANIFEST, json.dumps(manifest, indent=1))
        secure_tree(self.folder)
        return counts

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
            self._check_files(counts)
            return counts
        counts = self.db_counts(m["model_hash"])
        for name in INDEX_NAMES:
            want, have = counts[name], m["counts"].get(name, 0)
            if want != have:
                raise IndexStateError(f"{self.folder}: the {name} index holds {have} vectors but the database "
                                      f"has {want}; run `elmsearch index` again to bring it up to date")
        self._check_files(counts)
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

    def _check_files(self, counts: dict) -> None:
        for name in INDEX_NAMES:
            fname = self.folder / "faiss" / f"{name}.faiss"
            if counts[name] and not fname.is_file():
                raise IndexStateError(f"{fname}: missing; run `elmsearch index` again to rebuild it")

    def load_index(self, name: str):
        """A FAISS index of this store, memory-mapped read-only (None when it has no vectors).

        Mapping instead of reading makes opening a 1e6-vector index 4 ms instead of 0.2 s; the
        indexer replaces files atomically, so a mapped index never changes under a query.
        """
        from indexer import vectors

        fname = self.folder / "faiss" / f"{name}.faiss"
        if not fname.is_file():
            return None
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

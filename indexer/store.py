"""An index folder: SQL metadata (SQLite inside it, or any URL) + five FAISS indices + a manifest.

```
DIR/manifest.json         model, index types, counts, checksums, generation; written last, atomically
DIR/elmsearch.sqlite      metadata and embeddings (unless --db-url points elsewhere)
DIR/faiss/*.faiss         eeg_recording, eeg_window, report, segment, eeg_profile (ids = row ids)
DIR/faiss/*.ivfdata       inverted lists of the on-disk kind (from 2e6 vectors), named by the .faiss file
DIR/generations/N/        the same database and faiss/ of generation N (``--reembed``: a new model)
DIR/cache/                frozen text-encoder embeddings
DIR/index.lock            the running writer
```

**One index, one model.** Every row holds the hash of the model that embedded it and the
manifest names the index's model; a run with another model is refused
(:meth:`IndexStore.check_model`) unless it re-embeds everything into a new generation
(``DIR/generations/N``: a copy of the database, re-embedded, with its own FAISS files). The
manifest names the generation its files belong to, so the switch is the manifest's atomic
rename: readers answer from the old generation until then; the previous one is kept for
readers that still hold it open, older ones are deleted.

**Checksums.** The manifest records the size and SHA-256 (whole file, and a quick sample;
:mod:`indexer.integrity`) of every FAISS file. Opening an index for a query checks the quick
one; ``elmsearch verify`` (:meth:`IndexStore.audit`) checks everything.

FAISS files follow the database (``IndexStore.rebuild``): exact indices are rebuilt, IVF ones
updated with the rows added, changed and removed since the last run unless the retraining rule
(:meth:`indexer.vectors.policy.FaissPolicy.retrain_reason`) asks for a rebuild; which rows back
each index is :data:`indexer.vectors.tables.VECTOR_TABLES`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import case, delete, exists, func, select

from db import IndexRun, Patient, Recording, Report, Segment, Status, Visit, Window
from db.engine import DB_FILE, make_engine, make_sessionmaker, sqlite_url
from elmsearch._lazy import lazy_module
from elmsearch.errors import ElmsearchError
from elmsearch.models.config import ModelCfg
from indexer import integrity
from indexer.fulltext import ensure_fulltext, fulltext_problems
from indexer.lock import lock_holder
from indexer.private import FILE_MODE, private_dir, private_umask
from indexer.vectors.index_info import DIM, KIND_EXACT, IndexInfo
from indexer.vectors.policy import FaissPolicy
from indexer.vectors.tables import INDEX_NAMES, VECTOR_TABLES

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy", globals(), "np")  # on first use: `elmsearch show` never computes

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
INDEX_MARKERS = (MANIFEST, "elmsearch.sqlite", "index.lock", "faiss", "generations")
"""Names whose presence makes a folder an index folder (one that ``IndexStore.create`` may write into)."""
GENERATIONS = "generations"
CHUNK = 50_000
ID_BATCH = 500  # ids per `IN (...)` when reading the embeddings of given rows


class IndexStateError(ElmsearchError):
    """The index folder is missing, inconsistent, or was built with another model."""


def _first_line(err: BaseException) -> str:
    """The first line of an exception's text, without FAISS's "Error in ... at file:line" preamble."""
    text = str(err).strip().splitlines()
    line = next((t for t in text if t.strip() and not t.startswith("Error in ")),
                text[0] if text else type(err).__name__)
    return line.strip()[:200]


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


def load_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest of an index folder, or None before the first run finished.

    Raises
    ------
    IndexStateError
        The manifest is damaged (not a JSON object with a model): the message names the file.
    """
    f = Path(folder) / MANIFEST
    if not f.is_file():
        return None
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise IndexStateError(f"{f}: cannot be read ({str(err).splitlines()[0]}); the index is damaged: "
                              f"run `elmsearch index --rebuild-faiss --db {folder}`") from None
    if not isinstance(m, dict) or "model_hash" not in m:
        raise IndexStateError(f"{f}: not an elmsearch manifest; run `elmsearch index --rebuild-faiss --db {folder}`")
    return m


def locate_index(folder: str | os.PathLike) -> tuple[Path, str]:
    """The index folder a user meant, and a hint for the error when there is none.

    ``folder`` itself when it holds a manifest; else its ``index/`` subfolder when that does
    (``elmsearch-demo`` holds the demo's ``index``); else ``folder``, with a hint naming the
    demo's index when ``./elmsearch-demo/index`` exists.
    """
    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        return folder, ""
    if (folder / "index" / MANIFEST).is_file():
        return folder / "index", ""
    demo = Path("elmsearch-demo") / "index"
    if (demo / MANIFEST).is_file() and folder.resolve() != demo.resolve():
        return folder, f" (the demo's index is {demo}: add --db {demo})"
    return folder, ""

class IndexStore:
    """Database and FAISS files of one index.

    Use ``IndexStore.create`` to make or extend one and ``IndexStore.open`` to query one.
    ``faiss_policy`` (a :class:`FaissPolicy`) says how :meth:`rebuild` treats the FAISS files.
    """

    def __init__(self, folder: str | os.PathLike, db_url: str | None = None, create: bool = False,
                 generation: str | None = ..., tolerate_damage: bool = False):
        self.folder = Path(folder)
        self.faiss_policy = FaissPolicy()
        self.pending_run: dict | None = None  # set by verify(full=False): a newer run, unfinished
        manifest = self.read_manifest_or_none() if tolerate_damage else self.read_manifest()
        if tolerate_damage and manifest is None and generation is ...:
            generation = self._newest_generation()
        self.generation = (manifest or {}).get("generation") if generation is ... else generation
        self.data = self.folder / GENERATIONS / self.generation if self.generation else self.folder
        """Where this generation's SQLite file and ``faiss/`` folder are."""
        default = sqlite_url(self.data)
        self.db_url = db_url or (manifest or {}).get("db_url") or default
        self.read_only = False
        if self.db_url == default and not create and not os.access(self.data, os.W_OK):
            # a read-only mount or copy: immutable SQLite, no journal or lock files
            self.read_only = True
            self.db_url = sqlite_url(self.data, read_only=True)
        self._default_db = self.db_url in (default, sqlite_url(self.data, read_only=True))
        self.engine = make_engine(self.db_url, create=create)
        self._sessions = make_sessionmaker(self.engine)
        if create:
            # the next writer adds the full-text index to an index made before it (readers never write)
            ensure_fulltext(self.engine)

    @property
    def faiss_dir(self) -> Path:
        """The FAISS files of this generation."""
        return self.data / "faiss"

    @property
    def owns_database(self) -> bool:
        """Whether the database is this folder's own SQLite file (not a ``--db-url`` server)."""
        return self._default_db

    def _newest_generation(self) -> str | None:
        """The newest generation that has a database (where a damaged manifest most likely pointed)."""
        gens = self.folder / GENERATIONS
        found = sorted(int(g.name) for g in gens.iterdir() if g.name.isdigit() and (g / DB_FILE).is_file()
                       ) if gens.is_dir() else []
        return str(found[-1]) if found else None

    def next_generation(self, model_hash: str) -> IndexStore:
        """The store of the next generation: a copy of this database (the caller holds the lock).

        A generation left by an interrupted re-embedding run with the same model is resumed
        (its rows embedded so far are kept); one with another model is started afresh.
        """
        import shutil
        import sqlite3

        if not self._default_db:
            raise IndexStateError(f"{self.folder}: generations need the folder's own SQLite database")
        name = str(int(self.generation or 0) + 1)
        data = self.folder / GENERATIONS / name
        resume = False
        if (data / DB_FILE).is_file():
            con = sqlite3.connect(data / DB_FILE)
            try:
                row = con.execute("SELECT model_hash FROM index_runs ORDER BY id DESC LIMIT 1").fetchone()
            except sqlite3.Error:
                row = None
            finally:
                con.close()
            resume = row is not None and row[0] == model_hash
        if resume:
            logger.info("%s: resuming the re-embedding into generation %s", self.folder, name)
        else:
            shutil.rmtree(data, ignore_errors=True)
            with private_umask():
                private_dir(data / "faiss")
                src = sqlite3.connect(self.data / DB_FILE)
                dst = sqlite3.connect(data / DB_FILE)
                try:
                    src.backup(dst)  # a consistent copy, WAL included
                finally:
                    dst.close()
                    src.close()
        return IndexStore(self.folder, None, create=True, generation=name)

    @classmethod
    def create(cls, folder: str | os.PathLike, db_url: str | None = None, generation: str | None = ...,
               tolerate_damage: bool = False) -> IndexStore:
        """Open for writing, creating the folder (0700) and tables when needed.

        A folder that exists, holds files and is not an index folder is refused: elmsearch
        writes patient data 0600 into folders it creates 0700 and never changes the modes of
        files it did not write.

        Raises
        ------
        IndexStateError
            ``folder`` is a file, or a non-empty folder that is not an elmsearch index.
        """
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise IndexStateError(f"{folder}: not a folder (--db is the index folder)")
        if folder.is_dir() and not any((folder / m).exists() for m in INDEX_MARKERS) and any(folder.iterdir()):
            raise IndexStateError(f"{folder}: not empty and not an elmsearch index; give a new or empty folder "
                                  "for --db")
        with private_umask():
            private_dir(folder)
            if generation is ...:
                try:
                    generation = (load_manifest(folder) or {}).get("generation")
                except IndexStateError:
                    if not tolerate_damage:
                        raise
                    probe = cls.__new__(cls)
                    probe.folder = folder
                    generation = probe._newest_generation()
            private_dir((folder / GENERATIONS / generation if generation else folder) / "faiss")
            return cls(folder, db_url, create=True, generation=generation, tolerate_damage=tolerate_damage)

    @classmethod
    def open(cls, folder: str | os.PathLike, db_url: str | None = None, tolerate_damage: bool = False) -> IndexStore:
        """Open an existing index for reading (raises ``IndexStateError`` when there is none).

        ``tolerate_damage`` opens one whose manifest is damaged (``elmsearch verify`` reports it).
        An index folder without write permission (a read-only mount or copy) is opened
        read-only.
        """
        if not (Path(folder) / MANIFEST).is_file():
            raise IndexStateError(f"{folder}: no elmsearch index here (build one with `elmsearch index`)")
        return cls(folder, db_url, create=False, tolerate_damage=tolerate_damage)

    @contextmanager
    def session(self) -> Iterator:
        """A SQLAlchemy session (use ``with store.session() as s, s.begin():`` to write)."""
        with self._sessions() as s:
            yield s

    def close(self) -> None:
        """Close the database connections now (SQLite then removes its ``-wal``/``-shm`` files).

        A later session opens new ones. Without it they close when the store is collected.
        """
        self.engine.dispose()

    # ---- manifest -------------------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        """The manifest, or None before the first run finished.

        Raises
        ------
        IndexStateError
            The manifest is not a JSON object (damaged): the message names the file.
        """
        return load_manifest(self.folder)

    def read_manifest_or_none(self) -> dict | None:
        """The manifest, or None when there is none or it is damaged."""
        try:
            return load_manifest(self.folder)
        except IndexStateError:
            return None

    @property
    def manifest(self) -> dict:
        """The manifest (raises when there is none)."""
        m = self.read_manifest()
        if m is None:
            raise IndexStateError(f"{self.folder}: no manifest (the first `elmsearch index` did not finish)")
        return m

    def index_model(self) -> tuple[str, str] | None:
        """``(model_hash, model_path)`` of the model this index holds embeddings of, None when empty.

        The manifest's, else (a first run that did not finish) the last run's that wrote rows.
        """
        m = self.read_manifest_or_none()
        if m:
            return m["model_hash"], m.get("model_path") or "?"
        with self.session() as s:
            mh = s.scalar(select(IndexRun.model_hash).where(exists().where(Recording.model_hash == IndexRun.model_hash))
                          .order_by(IndexRun.id.desc()).limit(1))
            if mh is None:
                return None
            path = s.scalar(select(IndexRun.model_path).where(IndexRun.model_hash == mh)
                            .order_by(IndexRun.id.desc()).limit(1))
        return mh, path or "?"

    def check_model(self, model_hash: str, model_path: str | os.PathLike = "?") -> None:
        """Refuse a model other than the index's (one index holds one model's embeddings).

        Raises
        ------
        IndexStateError
            The index was built with another model; the message names both and says how to
            switch (``--reembed``).
        """
        have = self.index_model()
        if have is not None and have[0] != model_hash:
            raise IndexStateError(
                f"{self.folder} holds embeddings of model {have[0]} ({have[1]}), not of {model_hash} "
                f"({model_path}); one index holds one model: give --model {have[1]}, or --reembed to re-embed "
                "every recording with the new one")

    # ---- maintenance ----------------------------------------------------------------------
    def delete_orphans(self, s) -> None:
        """Remove reports, sessions and patients no recording refers to."""
        s.execute(delete(Report).where(~exists().where(Recording.report_id == Report.id)))
        s.execute(delete(Visit).where(~exists().where(Recording.visit_id == Visit.id)))
        s.execute(delete(Patient).where(~exists().where(Recording.patient_id == Patient.id)))

    def _rows(self, name: str, model_hash: str, with_emb: bool = True):
        """The SELECT of the rows behind FAISS index ``name``: ``(id, emb)`` or ``(id,)``, by id."""
        return VECTOR_TABLES[name].rows(model_hash, with_emb)

    @staticmethod
    def _decode(rows) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        return ids, np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1)

    def _vector_chunks(self, name: str, model_hash: str):
        """A re-iterable source of ``(ids, vectors)`` chunks (``indexer.vectors.arrays.Chunks``)."""

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

    def _sample_ids(self, s, name: str, model_hash: str, n: int, rng: np.random.Generator) -> np.ndarray:
        """About ``n`` ids of the rows behind index ``name``, sorted, found by ``n`` seeks (never a scan).

        The first row at or after each of ``n`` random points between the smallest and the
        largest id: rows after a gap in the ids are drawn more often, which a check allows.
        """
        key = VECTOR_TABLES[name].id_column
        rows = self._rows(name, model_hash, with_emb=False).order_by(None)
        lo = s.scalar(rows.order_by(key).limit(1))
        if lo is None:
            return np.zeros(0, np.int64)
        hi = s.scalar(rows.order_by(key.desc()).limit(1))
        points = rng.integers(lo, hi + 1, n) if n else []
        found = {s.scalar(rows.where(key >= int(p)).order_by(key).limit(1)) for p in points}
        return np.array(sorted(found | {lo}), np.int64)[:n]

    def _changed_ids(self, s, name: str, since: dt.datetime) -> np.ndarray:
        """Ids of index ``name``'s rows written by a run after ``since`` (maybe not all still indexed).

        A run rewrites a recording, its windows and its report (with the report's segments) in
        one transaction that sets ``Recording.indexed_at``; the rows of recordings written
        after ``since`` therefore include every row whose embedding may have changed.
        """
        q = VECTOR_TABLES[name].changed(since)
        return np.unique(np.fromiter((r[0] for r in s.execute(q)), np.int64))

    def _vectors_of(self, s, name: str, ids: np.ndarray) -> np.ndarray:
        """The embeddings of the given rows, in the order of ``ids``."""
        key_col, column = VECTOR_TABLES[name].id_column, VECTOR_TABLES[name].emb_column
        out = np.empty((len(ids), DIM), np.float32)
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
        mh = model_hash or (self.read_manifest_or_none() or {}).get("model_hash")
        with self.session() as s:
            return {name: self._row_stats(s, name, mh)[0] for name in INDEX_NAMES}

    def _row_stats(self, s, name: str, model_hash: str) -> tuple[int, int, int | None]:
        """``(rows behind index name, rows whose embedding is not DIM float32, the first of those)``.

        One pass over the rows (``length`` of a blob is read from SQLite's record header).
        """
        if name == "eeg_profile" and not self._has_profiles():
            return 0, 0, None
        key, col = VECTOR_TABLES[name].id_column, VECTOR_TABLES[name].emb_column
        rows = self._rows(name, model_hash, with_emb=False).order_by(None).add_columns(
            func.length(col).label("nbytes")).subquery()
        wrong = rows.c.nbytes != 4 * DIM
        n, bad, first = s.execute(select(func.count(), func.sum(case((wrong, 1), else_=0)),
                                         func.min(case((wrong, rows.c[key.name]))))).one()
        return int(n), int(bad or 0), first

    def rebuild(self, model_hash: str, model_path: str, model_config: dict, force: bool = True,
                run_id: int | None = None, extra: dict | None = None, fresh: Collection[str] = ()) -> dict:
        """Bring the FAISS indices in line with the database and write the manifest (manifest last).

        With ``force=False`` and a manifest that already agrees with the database, no FAISS file
        is rewritten. Otherwise each index is built or updated as ``faiss_policy`` says (exact
        ones are rebuilt; IVF ones get the rows added, changed and removed since the previous
        sync, unless the retraining rule asks for a rebuild; from ``large_from`` vectors the
        on-disk kind is built in shards from chunks of rows). Every new file is written under a
        temporary or new name first and the index files are renamed only once all five are
        ready, so an error (or a crash) before that leaves the previous files and manifest as
        they were; data files no index file names any more are deleted after the manifest.
        ``run_id``, the ``IndexRun`` that made this state, goes into the manifest:
        ``verify(full=False)`` compares it with the newest run in the database. ``fresh``: indices
        built anew, never updated (rows changed without a new ``indexed_at``). Returns the
        vector counts.
        """
        if not force:
            try:
                self.verify(model_hash)
                manifest = self.manifest
                if manifest.get("run_id") != run_id or any(manifest.get(k) != v for k, v in (extra or {}).items()):
                    # the same files: their checksums were just checked
                    _atomic_write_text(self.folder / MANIFEST,
                                       json.dumps({**manifest, **(extra or {}), "run_id": run_id}, indent=1))
                return manifest["counts"]
            except IndexStateError:
                pass
        from indexer.vectors.files import collect_garbage  # FAISS: not for `stats`, `show` or `export`

        self.analyze()
        previous = self.read_manifest_or_none() or {}  # a damaged one: rebuild everything
        same_model = previous.get("model_hash") == model_hash
        since = previous.get("faiss_synced_at") if same_model else None
        synced_at = self._last_write()
        counts = self.db_counts(model_hash)
        staged: list = []
        with private_umask():
            try:
                for name in INDEX_NAMES:
                    old = (previous.get("indices") or {}).get(name) if same_model and name not in fresh else None
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
                old = (previous.get("indices") or {}).get(name) if same_model else None
                infos[name] = {**st.info.to_dict(), "bytes": st.nbytes(), "last_sync": st.how,
                               "files": self._describe_files(st, old)}
            logger.info("%s: %d vectors, %s (%s)", name, counts[name], st.info.kind if st.info else "no index", st.how)
        cfg = ModelCfg.from_dict(model_config)  # a ModelCfg or its dict
        manifest = {
            "format": 1, "model_hash": model_hash, "model_path": model_path,
            "window_seconds": cfg.eeg.window_seconds,
            "preprocessing": cfg.preprocessing or {},
            "has_text": counts["report"] > 0 or counts["segment"] > 0,
            "db_url": None if self._default_db else public_url(self.db_url),
            "counts": counts, "indices": infos, "updated": dt.datetime.now(dt.UTC).isoformat(),
            "faiss_synced_at": synced_at, "run_id": run_id, "generation": self.generation, **(extra or {}),
        }
        self.checkpoint()
        _atomic_write_text(self.folder / MANIFEST, json.dumps(manifest, indent=1))
        collect_garbage(self.faiss_dir)  # data files of replaced indices, leftovers
        if previous.get("generation", None) != self.generation:
            self._drop_old_generations(keep={self.generation, previous.get("generation")})
        return counts

    def _describe_files(self, st, old: dict | None) -> dict:
        """Sizes and checksums of a committed index's files (an unchanged one keeps the manifest's)."""
        names = [st.fname.name] + ([st.info.ivfdata] if st.info.ivfdata else [])
        have = (old or {}).get("files") or {}
        out = {}
        for n in names:
            f = st.fname.parent / n
            if st.how == "unchanged" and n in have and integrity.check_file(f, have[n]) is None:
                out[n] = have[n]
            else:
                out[n] = integrity.describe(f)
        return out

    def checkpoint(self) -> None:
        """Move SQLite's write-ahead log into the database file (a read-only copy then holds everything)."""
        if self.engine.dialect.name == "sqlite" and not self.read_only:
            with self.engine.connect() as con:
                con.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def _drop_old_generations(self, keep: set) -> None:
        """Delete the data of generations other than ``keep`` (the current and the previous one)."""
        import shutil

        if None not in keep and self._default_db:  # generation 0 lives in the folder itself
            for name in ("elmsearch.sqlite", "elmsearch.sqlite-wal", "elmsearch.sqlite-shm"):
                (self.folder / name).unlink(missing_ok=True)
            shutil.rmtree(self.folder / "faiss", ignore_errors=True)
        gens = self.folder / GENERATIONS
        if gens.is_dir():
            for g in gens.iterdir():
                if g.name not in keep:
                    shutil.rmtree(g, ignore_errors=True)
                    logger.info("%s: deleted generation %s", self.folder, g.name)

    def _sync_index(self, name: str, model_hash: str, n: int, old: dict | None, since: str | None):
        """Bring FAISS index ``name`` in line with the database; returns an uncommitted ``Staged``.

        IVF indices whose kind still suits their size are updated with the rows added, changed
        and removed since ``since`` (the previous sync), unless the retraining rule says
        otherwise; everything else is built anew.
        """
        from indexer.vectors.files import Staged
        from indexer.vectors.kinds import vector_index

        fname = self.faiss_dir / f"{name}.faiss"
        policy = self.faiss_policy
        if n == 0:
            return Staged(fname, action="delete", how="deleted")
        impl = vector_index(policy.kind(n), policy)
        if (policy.incremental and impl.updatable and old is not None and since is not None and fname.is_file()
                and old.get("kind") == impl.kind):
            staged = self._update_index(name, model_hash, fname, impl, IndexInfo.from_dict(old),
                                        dt.datetime.fromisoformat(since))
            if staged is not None:
                return staged
        return impl.build(self._vector_chunks(name, model_hash), n, fname)

    def _update_index(self, name: str, model_hash: str, fname: Path, impl, info, since: dt.datetime):
        """An incremental update of index ``name`` by ``impl`` (a ``VectorIndex``): ``Staged``, None to rebuild."""
        from indexer.vectors.files import Staged, ondisk_data_name, read_index
        from indexer.vectors.ops import index_ids

        try:
            index = read_index(fname, mmap=True)
            in_index = np.sort(index_ids(index))
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
                info.ivfdata = ondisk_data_name(fname) or ""  # the file's word over the manifest's
                return Staged(fname, info=info, action="keep", how="unchanged")
            vecs = self._vectors_of(s, name, new)
        staged = impl.update(fname, info, vecs, new, gone)
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
            What ``stats`` and every indexing run check: the database rows behind every FAISS
            index counted (seconds on millions of rows), every indexed row embedded by the
            manifest's model with embeddings of the right size, and every FAISS file's quick
            checksum (:mod:`indexer.integrity`). Otherwise (the check on every query) check
            that the FAISS files exist and note, in ``pending_run``, an ``IndexRun`` newer than
            the manifest's: only the indexer writes, and it rewrites the manifest last, so a
            newer run is in progress or was interrupted, and queries answer from the last
            complete index meanwhile; each FAISS file's quick checksum is checked when a query
            first loads it (:meth:`load_index`). Indices written before runs were recorded in
            the manifest always get the full check. :meth:`audit` checks everything.

        Returns
        -------
        dict
            The vector counts (the manifest's after a quick check).

        Raises
        ------
        IndexStateError
            One line saying what disagrees, naming the file (and how to fix it).
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
        counts: dict = {}
        problems = self._row_problems(m["model_hash"], counts)
        if problems:
            raise IndexStateError(problems[0])
        for name in INDEX_NAMES:
            want, have = counts[name], m["counts"].get(name, 0)
            if want != have:
                raise IndexStateError(f"{self.folder}: the {name} index holds {have} vectors but the database "
                                      f"has {want}; run `elmsearch index` again to bring it up to date")
        self._check_files(counts, m.get("indices") or {})
        for problem in self._checksum_problems(m, full=False):
            raise IndexStateError(problem)
        return counts

    def _db_name(self) -> str:
        return str(self.data / DB_FILE) if self._default_db else "the database"

    def _rebuild_hint(self) -> str:
        return f"run `elmsearch index --rebuild-faiss --db {self.folder}`"

    def _row_problems(self, model_hash: str, counts: dict | None = None) -> list[str]:
        """Indexed rows the FAISS indices cannot hold: another model's, or embeddings of the wrong size.

        ``counts``, when given, receives the rows behind each index (the same pass).
        """
        out, counts = [], {} if counts is None else counts
        with self.session() as s:
            other = s.execute(select(Recording.model_hash, func.count()).where(
                Recording.status == Status.INDEXED, Recording.model_hash != model_hash)
                .group_by(Recording.model_hash)).all()
            for mh, n in other:
                out.append(f"{self.folder}: {n} indexed recordings were embedded with model {mh}, not the index's "
                           f"{model_hash}; run `elmsearch index --reembed` to re-embed them with one model")
            for name in INDEX_NAMES:
                n, bad, first = self._row_stats(s, name, model_hash)
                counts[name] = n
                if bad:
                    out.append(f"{self.data / 'elmsearch.sqlite' if self._default_db else 'the database'}: {bad} "
                               f"{name} embeddings are not {DIM} float32 values (row id {first}, …); the "
                               "database is damaged: restore it from a backup or re-index")
        return out

    def _index_files(self, m: dict) -> list[tuple[str, Path, dict | None]]:
        """``(index name, file, manifest entry or None)`` of every FAISS file the manifest names."""
        out = []
        for name, info in (m.get("indices") or {}).items():
            files = info.get("files")
            names = list(files) if files else [f"{name}.faiss"] + ([info["ivfdata"]] if info.get("ivfdata") else [])
            for n in names:
                out.append((name, self.faiss_dir / n, (files or {}).get(n)))
        return out

    def _checksum_problems(self, m: dict, full: bool, names: tuple[str, ...] = INDEX_NAMES) -> list[str]:
        out = []
        for name, f, want in self._index_files(m):
            if name not in names:
                continue
            if want is None:
                continue  # written before checksums were recorded: `audit` says so
            problem = integrity.check_file(f, want, full=full)
            if problem:
                out.append(f"{f}: {problem}; {self._rebuild_hint()}")
        return out

    def audit(self, sample: int = 256) -> dict:
        """Check everything an index promises; what ``elmsearch verify`` prints.

        Checks the manifest; the whole-file SHA-256 of every FAISS file; that every FAISS
        file loads and holds exactly the ids of the database rows behind it (every indexed
        row is in FAISS, nothing else is); every indexed row embedded by the manifest's model
        with a finite, unit-norm embedding of the right size; and that a sample of ``sample``
        vectors per index read back from FAISS equals their database embeddings. ``stats``
        runs the cheaper :meth:`check`.

        Returns
        -------
        dict
            ``{"ok": bool, "problems": [str], "checked": {index name: {"vectors", "sampled"}}}``;
            each problem is one line naming the file or table.
        """
        from indexer.vectors.files import read_index
        from indexer.vectors.ops import index_ids, reconstruct

        problems: list[str] = []
        checked: dict = {}
        try:
            m = self.manifest
        except IndexStateError as err:
            return {"ok": False, "problems": [str(err)], "checked": checked}
        problems += self._row_problems(m["model_hash"])
        problems += self._checksum_problems(m, full=True)
        problems += fulltext_problems(self.engine, full=True, where=self._db_name())
        for _name, f, want in self._index_files(m):
            if want is None:
                problems.append(f"{f}: no checksum in the manifest (written by an older version); "
                                f"{self._rebuild_hint()}")
        rng = np.random.default_rng(0)
        counts = self.db_counts(m["model_hash"])
        with self.session() as s:
            for name in INDEX_NAMES:
                fname = self.faiss_dir / f"{name}.faiss"
                if not counts[name] and not fname.is_file():
                    continue
                if counts[name] and not fname.is_file():
                    problems.append(f"{fname}: missing; {self._rebuild_hint()}")
                    continue
                try:
                    index = read_index(fname, mmap=True)
                    in_index = np.sort(index_ids(index))
                except Exception as err:  # noqa: BLE001 -- FAISS says RuntimeError with its own text
                    problems.append(f"{fname}: not a readable FAISS index ({_first_line(err)}); "
                                    f"{self._rebuild_hint()}")
                    continue
                in_db = self._ids(s, name, m["model_hash"])
                missing = np.setdiff1d(in_db, in_index)
                extra = np.setdiff1d(in_index, in_db)
                if len(missing) or len(extra):
                    some = (missing if len(missing) else extra)[:3].tolist()
                    problems.append(f"{fname}: {len(missing)} indexed rows are not in it and it holds {len(extra)} ids "
                                    f"the database does not index (e.g. {some}); {self._rebuild_hint()}")
                ids = np.intersect1d(in_db, in_index)
                pick = np.sort(rng.choice(ids, min(sample, len(ids)), replace=False)) if len(ids) else ids
                db_vecs = self._vectors_of(s, name, pick)
                if (problem := self._norm_problem(name, pick, db_vecs)) is not None:
                    problems.append(problem)
                try:
                    faiss_vecs = reconstruct(index, pick)
                except Exception as err:  # noqa: BLE001
                    problems.append(f"{fname}: cannot read vectors back ({_first_line(err)}); {self._rebuild_hint()}")
                    faiss_vecs = None
                if faiss_vecs is not None and len(pick):
                    tol = 1e-5 if (m.get("indices") or {}).get(name, {}).get("kind") == KIND_EXACT else 0.05
                    with np.errstate(all="ignore"):
                        bad = ~(np.abs(faiss_vecs - db_vecs).max(axis=1) <= tol)
                    if bad.any():
                        problems.append(f"{fname}: {int(bad.sum())} of {len(pick)} sampled vectors differ from their "
                                        f"database embeddings (row id {int(pick[bad][0])}, …); {self._rebuild_hint()}")
                checked[name] = {"vectors": int(index.ntotal), "sampled": int(len(pick))}
                del index
        return {"ok": not problems, "problems": problems, "checked": checked}

    def _norm_problem(self, name: str, ids: np.ndarray, vecs: np.ndarray) -> str | None:
        """One line when sampled database embeddings of ``name`` are not finite unit vectors."""
        if name == "eeg_profile":  # profiles are standardised band powers, not unit vectors
            return None
        with np.errstate(all="ignore"):  # damaged rows hold anything: inf, nan
            bad = ~np.isfinite(vecs).all(1) | (np.abs(np.linalg.norm(vecs, axis=1) - 1) > 1e-3)
        if not bad.any():
            return None
        return (f"{self.data / 'elmsearch.sqlite' if self._default_db else 'the database'}: {int(bad.sum())} of "
                f"{len(ids)} sampled {name} embeddings are not finite unit vectors (row id {int(ids[bad][0])}, …); "
                "the database is damaged: restore it from a backup or re-index")

    def check(self, sample: int = 64) -> str:
        """The quick consistency check of ``stats``, without loading FAISS: ``"ok"`` or the first problem.

        :meth:`verify` (every row's model and embedding size, the database's counts against
        the manifest's, every FAISS file present with its quick checksum) and ``sample``
        database embeddings per index checked for finite unit norm. What it cannot see (a
        FAISS file rewritten together with its manifest entry) :meth:`audit` finds.
        """
        try:
            self.verify(full=True)
            m = self.manifest
            for problem in fulltext_problems(self.engine, full=False, where=self._db_name()):
                return problem
            rng = np.random.default_rng(0)
            with self.session() as s:
                for name in INDEX_NAMES:
                    pick = self._sample_ids(s, name, m["model_hash"], sample, rng)
                    if (problem := self._norm_problem(name, pick, self._vectors_of(s, name, pick))) is not None:
                        return problem
        except IndexStateError as err:
            return str(err)
        return "ok"

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
            fname = self.faiss_dir / f"{name}.faiss"
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
        from indexer.vectors.files import read_index

        fname = self.faiss_dir / f"{name}.faiss"
        if not fname.is_file():
            return None
        m = self.manifest
        problems = self._checksum_problems(m, full=False, names=(name,))
        if problems:
            raise IndexStateError(problems[0])
        try:
            try:
                index = read_index(fname, mmap=True)
            except FileNotFoundError:
                # the indexer replaced the index file and deleted the data file the old one named
                # between our two reads: the index file now names a data file that exists
                index = read_index(fname, mmap=True)
        except (RuntimeError, ValueError, OSError) as err:
            raise IndexStateError(f"{fname}: not a readable FAISS index ({_first_line(err)}); "
                                  f"{self._rebuild_hint()}") from None
        want = m["counts"].get(name, 0)
        if index.ntotal != want:
            raise IndexStateError(f"{fname}: holds {index.ntotal} vectors, the manifest says {want}; "
                                  "run `elmsearch index` again")
        return index

    # ---- reporting ------------------------------------------------------------------------
    def stats(self) -> dict:
        """Counts, failures with reasons, model, index types and sizes (stable keys)."""
        m = self.read_manifest() or {}
        consistency = self.check()
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
                # recordings with a report (what `scan` counts; the recordings of one visit share one)
                "with_report": s.scalar(select(func.count()).select_from(Recording).where(
                    Recording.status == Status.INDEXED, Recording.report_id.is_not(None))),
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
                "db_bytes": (self.data / "elmsearch.sqlite").stat().st_size
                if (self.data / "elmsearch.sqlite").is_file() else None,
                "generation": m.get("generation"),
                "read_only": self.read_only,
                "last_run": None if last is None else {
                    "started": last.started.isoformat() if last.started else None,
                    "finished": last.finished.isoformat() if last.finished else None,
                    "added": last.n_added, "updated": last.n_updated, "skipped": last.n_skipped,
                    "failed": last.n_failed, "removed": last.n_removed, "timings": last.timings},
            }
        return doc

"""Index an archive on Ray (``elmsearch index ARCHIVE --runner ray``), for archives that outgrow one machine.

The driver (this process) plans the run exactly as the local runner does
(``Indexer.plan``: same discovery, same change detection, same ``IndexRun`` row) and cuts
the to-do list into partitions of about ``partition_size`` files. A Ray Data pipeline maps
the partitions through a pool of actors (``ray.data.ActorPoolStrategy``; one GPU per actor
when the cluster has GPUs), each of which loads the model once and, per file, runs the
local runner's steps: ``prepare`` in an isolated reader process (``run_isolated``: a file
that crashes or hangs its reader fails alone, the actor carries on), then
``embed_prepared`` (EEG windows, recording pooling, report text). An actor hands back one
row per file: path, size, mtime, content hash, metadata, error, report text and the
embeddings as float32 bytes.

The driver writes each finished partition as a Parquet shard,
``DIR/staging/ray/<run>/<partition>.parquet``, then its ``.SUCCESS`` marker (both written
to a temporary name and renamed, so a marker always means a whole shard), and stores the
shards' rows in partition order through ``Indexer.store_prepared``, the function the local
runner stores every file with: the database content is the same whichever runner wrote
it. The run then ends as a local run does (``Indexer.finish``: FAISS rebuild, query
model, the ``IndexRun`` row closed) and the staging folder is removed. The index folder's
writer lock is held throughout.

Resuming: a partition's id is a hash of its files (path, size, mtime, known content hash)
and of the model, backend and preprocessing. A later run whose plan holds a partition of
the same id reuses its shard instead of computing it again. Partition boundaries are
content-defined (a partition ends after a file whose path hashes to 0 modulo
``partition_size``, or at four times that size): the files that a crashed run already
stored leave the to-do list without moving the later boundaries, so only the partition
they were cut from (up to its next content-defined boundary) gets a new id; new files in
the archive likewise change only the partition they fall into.

On a cluster, the archive and the model folder must be readable at the same paths on every
node and ``elmsearch`` installed there; the index folder is only written by the driver.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import inspect
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from db import Recording, to_blob
from elmsearch.archive.discovery import ArchiveEntry, archive_path
from elmsearch.errors import ElmsearchError
from elmsearch.io.events import Event
from elmsearch.io.meta import RecordingMeta
from indexer.lock import IndexLock
from indexer.pipeline import (
    Indexer,
    IndexSummary,
    Prepared,
    _stat,
    embed_prepared,
    make_indexer,
    prepare,
)
from indexer.private import private_dir, private_umask
from indexer.workers import DEFAULT_TIMEOUT_S, run_isolated

logger = logging.getLogger(__name__)

RAY_MISSING = "ray is not installed: pip install -e '.[ray]'"
DEFAULT_PARTITION_SIZE = 16
MAX_PARTITION_FACTOR = 4  # a partition holds at most this many times partition_size files
CPUS_PER_ACTOR = 4  # CPU actors: one reader process, the rest torch threads (as the local runner on 4 cores)
STAGING = "staging"
MARKER = ".SUCCESS"

SHARD_SCHEMA = pa.schema([
    ("partition", pa.string()),
    ("ordinal", pa.int32()),  # position in the partition (the plan's order)
    ("n_files", pa.int32()),  # files in the partition: the driver knows when it has them all
    ("path", pa.string()),
    ("size", pa.int64()),
    ("mtime", pa.float64()),
    ("content_hash", pa.string()),
    ("error", pa.string()),
    ("report_error", pa.string()),
    ("report_text", pa.string()),
    ("meta", pa.string()),  # RecordingMeta as JSON
    ("read_s", pa.float64()),
    ("embed_eeg_s", pa.float64()),
    ("embed_text_s", pa.float64()),
    ("window_emb", pa.binary()),  # float32, shape (n_windows, dim)
    ("window_index", pa.binary()),  # int64, shape (n_windows,)
    ("recording_emb", pa.binary()),  # float32, shape (dim,)
    ("profile", pa.binary()),  # float32, shape (dim,): the spectral profile, when prior cases use it
    ("bandpower", pa.binary()),  # float32, shape (200,): the band-power map (indexer.similar_space)
    ("text_embedded", pa.bool_()),  # the report text was embedded (the two below may still be null)
    ("segment_emb", pa.binary()),  # float32, shape (n_sentences, dim)
    ("report_emb", pa.binary()),  # float32, shape (dim,)
    ("events", pa.string()),  # {"events": [Event.to_dict()], "warnings": [...], "stamp": ...} as JSON; null: not read
])


class RayMissingError(ElmsearchError):
    """``--runner ray`` without Ray installed."""


def require_ray():
    """Import Ray (with Ray Data) or raise ``RayMissingError`` with the one line that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 -- the extra "data" must be there too
    except ImportError:
        raise RayMissingError(RAY_MISSING) from None
    return ray


def init_ray(address: str | None = None) -> bool:
    """Connect to a Ray cluster (``address``) or start a quiet local one; returns whether this call started it.

    Parameters
    ----------
    address : str | None
        A cluster address (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None starts
        Ray on this machine with one CPU per core, no dashboard, and workers' output kept in
        Ray's log files. A session already initialised in this process is used as it is.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = os.cpu_count() or 1
    t0 = time.perf_counter()
    ray.init(**kwargs)
    logger.info("ray started in %.1f s: %s", time.perf_counter() - t0, ray.cluster_resources())
    return True


def _quiet_ray_data() -> None:
    """No progress bars or per-dataset chatter from Ray Data (our own progress and log say what happens)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    for name, value in (("enable_progress_bars", False), ("enable_operator_progress_bars", False),
                        ("enable_auto_log_stats", False), ("print_on_execution_start", False)):
        if hasattr(ctx, name):
            setattr(ctx, name, value)
    logging.getLogger("ray.data").setLevel(logging.WARNING if logger.isEnabledFor(logging.DEBUG) else logging.ERROR)


# ---- partitions -------------------------------------------------------------------------------
@dataclasses.dataclass
class Partition:
    """Files indexed together by one actor call, with a stable id."""

    pid: str
    items: list[tuple[ArchiveEntry, Recording | None, str | None]]  # entry, its row, known content hash


def _boundary(path: str, size: int) -> bool:
    return int(hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:8], 16) % size == 0


def _stat_key(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def make_partitions(todo: list[tuple[ArchiveEntry, Recording | None]], known_hash: Callable,
                    size: int = DEFAULT_PARTITION_SIZE, salt: str = "") -> list[Partition]:
    """Cut the to-do list into partitions, in order, with content-defined boundaries.

    Parameters
    ----------
    todo : list of (ArchiveEntry, Recording | None)
        From ``Indexer.plan``.
    known_hash : callable
        ``Indexer.known_hash``: the content hash of a row indexed with this model (None otherwise).
    size : int
        Files per partition on average; a partition ends after a file whose path hashes to 0
        modulo ``size``, or when it holds ``MAX_PARTITION_FACTOR * size`` files.
    salt : str
        What else the results depend on (model, backend, preprocessing).

    Returns
    -------
    list of Partition
        The id is a hash of ``salt`` and of each file's path, size, mtime and known hash.
    """
    size = max(1, int(size))
    parts, current = [], []

    def close() -> None:
        ident = [salt] + [[archive_path(e.path), *_stat_key(e.path), known] for e, _, known in current]
        pid = hashlib.sha256(json.dumps(ident).encode("utf-8", "surrogateescape")).hexdigest()[:24]
        parts.append(Partition(pid, list(current)))
        current.clear()

    for entry, ex in todo:
        current.append((entry, ex, known_hash(ex)))
        if _boundary(archive_path(entry.path), size) or len(current) >= MAX_PARTITION_FACTOR * size:
            close()
    if current:
        close()
    return parts


# ---- rows: what an actor hands back per file ------------------------------------------------------
def _meta_to_json(meta: RecordingMeta | None) -> str | None:
    if meta is None:
        return None
    out = {}
    for f in dataclasses.fields(meta):
        v = getattr(meta, f.name)
        if isinstance(v, dt.datetime):
            v = {"__datetime__": v.isoformat()}
        elif isinstance(v, dt.date):
            v = {"__date__": v.isoformat()}
        out[f.name] = v
    return json.dumps(out)


def _meta_from_json(text: str | None) -> RecordingMeta | None:
    if text is None:
        return None
    d = json.loads(text)
    for k, v in d.items():
        if isinstance(v, dict) and set(v) == {"__datetime__"}:
            d[k] = dt.datetime.fromisoformat(v["__datetime__"])
        elif isinstance(v, dict) and set(v) == {"__date__"}:
            d[k] = dt.date.fromisoformat(v["__date__"])
    return RecordingMeta(**d)


def _blob(a: np.ndarray | None, dtype=np.float32) -> bytes | None:
    return None if a is None else np.ascontiguousarray(a, dtype=dtype).tobytes()


def shard_row(pid: str, ordinal: int, n_files: int, p: Prepared, timings: dict) -> dict:
    """One file's row of a shard (``SHARD_SCHEMA``) from an embedded ``Prepared``."""
    window_emb, window_index, rec_emb, profile, bandpower = p.eeg if p.eeg is not None else (None,) * 5
    seg_emb, rep_emb = p.text_emb if p.text_emb is not None else (None, None)
    return {"partition": pid, "ordinal": ordinal, "n_files": n_files, "path": archive_path(p.entry.path),
            "size": int(p.size), "mtime": float(p.mtime), "content_hash": p.content_hash, "error": p.error,
            "report_error": p.report_error, "report_text": p.report_text, "meta": _meta_to_json(p.meta),
            "read_s": float(p.seconds), "embed_eeg_s": float(timings.get("embed_eeg_s", 0.0)),
            "embed_text_s": float(timings.get("embed_text_s", 0.0)),
            "window_emb": _blob(window_emb), "window_index": _blob(window_index, np.int64),
            "recording_emb": None if rec_emb is None else to_blob(rec_emb),
            "profile": None if profile is None else to_blob(profile),
            "bandpower": None if bandpower is None else to_blob(bandpower),
            "text_embedded": p.text_emb is not None, "segment_emb": _blob(seg_emb), "report_emb": _blob(rep_emb),
            "events": None if p.events is None else json.dumps({
                "events": [e.to_dict() for e in p.events], "warnings": p.warnings, "stamp": p.events_stamp})}


def prepared_from_row(row: dict, entry: ArchiveEntry) -> Prepared:
    """The ``Prepared`` (embeddings included) that a shard row stands for."""
    p = Prepared(entry, row["size"], row["mtime"], row["content_hash"], meta=_meta_from_json(row["meta"]),
                 report_text=row["report_text"], error=row["error"], report_error=row["report_error"],
                 seconds=row["read_s"])
    if row["recording_emb"] is not None:
        rec = np.frombuffer(row["recording_emb"], np.float32)
        p.eeg = (np.frombuffer(row["window_emb"], np.float32).reshape(-1, len(rec)),
                 np.frombuffer(row["window_index"], np.int64), rec,
                 None if row.get("profile") is None else np.frombuffer(row["profile"], np.float32),
                 None if row.get("bandpower") is None else np.frombuffer(row["bandpower"], np.float32))
    if row["text_embedded"]:
        rep = None if row["report_emb"] is None else np.frombuffer(row["report_emb"], np.float32)
        seg = None if row["segment_emb"] is None else np.frombuffer(row["segment_emb"], np.float32)
        if seg is not None and rep is not None:
            seg = seg.reshape(-1, len(rep))
        p.text_emb = (seg, rep)
    if row.get("events") is not None:
        got = json.loads(row["events"])
        p.events = [Event(e["onset"], e["duration"], e["label"], e["source"], tuple(e["channels"]), e["meaning"])
                    for e in got["events"]]
        p.warnings, p.events_stamp = got["warnings"], got["stamp"]
    return p


class PartitionEmbedder:
    """A Ray actor (Ray Data callable class): loads the model once, then reads and embeds partitions.

    Parameters
    ----------
    model_path : str
        The model folder (readable on the actor's node).
    model_hash : str
        ``config_hash`` the driver's model has; a node with another model at that path is refused.
    precision, backend : str
        As the driver resolved them (``Indexer.plan``); a GPU actor runs torch.
    timeout : float | None
        Seconds one file may take to read (its reader process is then stopped).
    n_jobs : int
        Reader processes per actor (0: read in the actor, no isolation).
    threads : int
        Torch threads of a CPU actor.
    """

    def __init__(self, model_path: str, model_hash: str, precision: str, backend: str,
                 timeout: float | None, n_jobs: int, threads: int):
        import ray
        import torch

        from elmsearch.models.backends import get_encoder
        from elmsearch.models.factory import load_model
        from elmsearch.models.identity import config_hash
        from elmsearch.signal.preprocessing import PreprocessingParams

        device = "cuda" if ray.get_gpu_ids() else "cpu"
        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        self.model = load_model(model_path, map_location=device)
        if config_hash(self.model) != model_hash:
            raise ElmsearchError(f"{model_path}: another model on this node (hash {config_hash(self.model)}, "
                                 f"the driver's is {model_hash})")
        self._tmp = tempfile.TemporaryDirectory(prefix="elmsearch-ray-")
        tmp = Path(self._tmp.name)
        self.model.cache_dir = tmp / "text"  # this actor's text features: a session's report is embedded once
        self.spill = tmp / "spill"
        self.spill.mkdir()
        enc = get_encoder(self.model, backend, precision)
        self.backend, self.precision = enc.name, enc.precision
        self.params = PreprocessingParams.from_dict(self.model.config.preprocessing or {})
        self.window_seconds = self.model.window_seconds
        self.pooling = "attention" if self.model.has_text else "mean"
        self.timeout, self.n_jobs = timeout, n_jobs

    def embed_partition(self, pid: str, jobs: list[tuple[ArchiveEntry, str | None]]) -> list[dict]:
        """Rows (``SHARD_SCHEMA``) of one partition's files, in the partition's order."""
        args = ((i, (entry, self.params, self.window_seconds, known, self.spill))
                for i, (entry, known) in enumerate(jobs))
        rows = []
        for i, p, error in run_isolated(prepare, args, self.n_jobs, self.timeout):
            if p is None:  # the reader died or ran out of time: the file alone fails
                p = Prepared(jobs[i][0], *_stat(jobs[i][0].path), error=error)
            timings: dict = {}
            embed_prepared(p, self.model, self.precision, self.backend, self.pooling, text=True, timings=timings)
            rows.append(shard_row(pid, i, len(jobs), p, timings))
        return sorted(rows, key=lambda r: r["ordinal"])

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Ray Data batch (``partition``, ``jobs``: pickled ``[(ArchiveEntry, known hash)]``) to shard rows."""
        rows = []
        for pid, jobs in zip(batch.column("partition").to_pylist(), batch.column("jobs").to_pylist(), strict=True):
            rows += self.embed_partition(pid, pickle.loads(jobs))
        return pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)


# ---- shards -------------------------------------------------------------------------------------
def _fsync_replace(tmp: Path, dest: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)


def write_shard(staging: Path, pid: str, table: pa.Table) -> Path:
    """Write a partition's shard, then its marker (each atomically: temporary name, fsync, rename)."""
    dest = staging / f"{pid}.parquet"
    tmp = staging / f".{pid}.parquet.tmp"
    pq.write_table(table, tmp, compression="zstd")
    _fsync_replace(tmp, dest)
    tmp = staging / f".{pid}{MARKER}.tmp"
    tmp.write_text(json.dumps({"rows": table.num_rows, "bytes": dest.stat().st_size}))
    _fsync_replace(tmp, staging / f"{pid}{MARKER}")
    return dest


def shard_done(staging: Path, part: Partition) -> bool:
    """Whether a whole shard of ``part`` is there (marker, and a Parquet file with the rows it names)."""
    marker, shard = staging / f"{part.pid}{MARKER}", staging / f"{part.pid}.parquet"
    try:
        info = json.loads(marker.read_text())
        return (info["rows"] == len(part.items) == pq.read_metadata(shard).num_rows
                and info["bytes"] == shard.stat().st_size)
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return False


# ---- the driver ---------------------------------------------------------------------------------
class RayRunner:
    """Run an ``Indexer``'s plan on Ray: actors read and embed, this process writes the database.

    Parameters
    ----------
    indexer : Indexer
        Model, index store and options (``make_indexer``).
    address : str | None
        Ray cluster address; None: a local Ray (one CPU per core). An initialised Ray
        session in this process is used as it is.
    partition_size : int
        Files per partition on average (the unit of work, of shards and of retries).
    n_jobs : int | "auto"
        Reader processes per actor; ``"auto"``: one per four of the actor's CPUs.
    actors : int | None
        Actors in the pool; None: one per GPU when the cluster has GPUs, else one per
        ``CPUS_PER_ACTOR`` CPUs (at least one).

    Attributes
    ----------
    stats : dict
        After a run: ``partitions``, ``reused`` (shards of an earlier, interrupted run),
        ``computed``, ``actors``, ``gpus_per_actor``, ``ray_init_s``.
    """

    def __init__(self, indexer: Indexer, address: str | None = None,
                 partition_size: int = DEFAULT_PARTITION_SIZE, n_jobs: int | str = "auto",
                 actors: int | None = None):
        self.indexer = indexer
        self.address = address
        self.partition_size = max(1, int(partition_size))
        self.n_jobs = n_jobs
        self.actors = actors
        self.stats: dict = {}

    def run(self, root: str | os.PathLike, reports: str | os.PathLike | None = None, prune: bool = False,
            on_item: Callable[[str, str, float], None] | None = None,
            on_plan: Callable[[int, int], None] | None = None, retry_failed: bool = False) -> IndexSummary:
        """Index (or update the index of) an archive; the parameters are those of ``Indexer.run``.

        Raises
        ------
        IndexLockedError
            Another process is writing to this index.
        RayMissingError
            Ray is not installed.
        """
        require_ray()
        with IndexLock(self.indexer.store.folder), private_umask():
            return self._run(root, reports, prune, on_item, on_plan, retry_failed)

    def _salt(self) -> str:
        ix = self.indexer
        return json.dumps([ix.model_hash, ix.backend, ix.precision, ix.params.to_dict(), ix.window_seconds])

    def _run(self, root, reports, prune, on_item, on_plan, retry_failed) -> IndexSummary:
        t_run = time.perf_counter()
        ix = self.indexer
        run_id, summary, todo = ix.plan(root, reports, prune, on_plan, retry_failed)
        parts = make_partitions(todo, ix.known_hash, self.partition_size, self._salt())
        run_key = hashlib.sha256(self._salt().encode()).hexdigest()[:16]
        ray_dir = ix.store.folder / STAGING / "ray"
        staging = ray_dir / run_key
        private_dir(staging)
        done = [p.pid for p in parts if shard_done(staging, p)]
        self.stats = {"partitions": len(parts), "reused": len(done), "computed": 0, "actors": 0,
                      "gpus_per_actor": 0, "ray_init_s": 0.0}
        if done:
            logger.info("%d of %d partitions were done by an interrupted run; their shards are reused",
                        len(done), len(parts))
        loader = _Loader(ix, parts, staging, summary, on_item)
        loader.ready.update(done)
        loader.drain()
        if len(done) < len(parts):
            t0 = time.perf_counter()
            self._compute([p for p in parts if p.pid not in loader.ready], staging, loader)
            ix.timings["ray_s"] = time.perf_counter() - t0
        loader.drain()
        if loader.next < len(parts):  # Ray's stream ended without some partitions: never store a partial run
            raise ElmsearchError(f"{len(parts) - loader.next} partitions came back incomplete from Ray; "
                                 "run the same command again to finish them")
        shutil.rmtree(ray_dir, ignore_errors=True)
        try:
            (ix.store.folder / STAGING).rmdir()
        except OSError:
            pass
        return ix.finish(run_id, summary, t_run)

    def _compute(self, parts: list[Partition], staging: Path, loader: _Loader) -> None:
        import ray
        from ray.data import ActorPoolStrategy

        t0 = time.perf_counter()
        started = init_ray(self.address)
        self.stats["ray_init_s"] = round(time.perf_counter() - t0, 3)
        self.indexer.timings["ray_init_s"] = time.perf_counter() - t0
        try:
            _quiet_ray_data()
            resources = ray.cluster_resources()
            n_cpus, n_gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
            if n_gpus:
                size = self.actors or n_gpus
                remote = {"num_gpus": 1, "num_cpus": max(1, min(CPUS_PER_ACTOR, n_cpus // max(n_gpus, 1)))}
            else:
                cpus = max(1, min(CPUS_PER_ACTOR, n_cpus))
                size = self.actors or max(1, n_cpus // cpus)
                remote = {"num_cpus": cpus}
            size = max(1, min(size, len(parts)))
            cpus = int(remote["num_cpus"])
            readers = max(1, cpus // 4) if self.n_jobs == "auto" else int(self.n_jobs)
            self.stats.update(actors=size, gpus_per_actor=remote.get("num_gpus", 0))
            logger.info("ray: %d partitions on %d actors (%s each), %d reader process(es) per actor",
                        len(parts), size, ", ".join(f"{v} {k[4:]}" for k, v in remote.items()), readers)
            ix = self.indexer
            items = [{"partition": p.pid, "jobs": pickle.dumps([(e, known) for e, _, known in p.items])}
                     for p in parts]
            blocks = "override_num_blocks" if "override_num_blocks" in inspect.signature(
                ray.data.from_items).parameters else "parallelism"  # ray < 2.10
            ds = ray.data.from_items(items, **{blocks: len(items)})  # one block per partition: spread over actors
            ds = ds.map_batches(
                PartitionEmbedder, batch_size=1, batch_format="pyarrow", compute=ActorPoolStrategy(size=size),
                fn_constructor_kwargs={"model_path": ix.model_path, "model_hash": ix.model_hash,
                                       "precision": ix.precision, "backend": ix.backend, "timeout": ix.timeout,
                                       "n_jobs": readers, "threads": max(1, cpus - readers)},
                **remote)  # Ray Data's defaults: an actor that dies is replaced and its partition retried
            pending: dict[str, list[pa.Table]] = {}
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                if block.num_rows == 0:
                    continue
                for pid in set(block.column("partition").to_pylist()):
                    part = block.filter(pc.equal(block.column("partition"), pid))
                    pending.setdefault(pid, []).append(part)
                    tables = pending[pid]
                    if sum(t.num_rows for t in tables) == tables[0].column("n_files")[0].as_py():
                        table = pa.concat_tables(pending.pop(pid)).sort_by("ordinal")
                        write_shard(staging, pid, table)
                        self.stats["computed"] += 1
                        loader.ready.add(pid)
                        loader.drain()
        finally:
            if started:
                ray.shutdown()


class _Loader:
    """Stores finished shards in the database in partition order (so row ids follow the plan, as locally)."""

    def __init__(self, indexer: Indexer, parts: list[Partition], staging: Path, summary: IndexSummary,
                 on_item: Callable[[str, str, float], None] | None):
        self.indexer, self.parts, self.staging = indexer, parts, staging
        self.summary, self.on_item = summary, on_item
        self.ready: set[str] = set()
        self.next = 0

    def drain(self) -> None:
        """Store every ready shard that follows the last stored one."""
        while self.next < len(self.parts) and self.parts[self.next].pid in self.ready:
            self._load(self.parts[self.next])
            self.next += 1

    def _load(self, part: Partition) -> None:
        ix = self.indexer
        rows = pq.read_table(self.staging / f"{part.pid}.parquet").to_pylist()
        if [r["path"] for r in rows] != [archive_path(e.path) for e, _, _ in part.items]:
            raise ElmsearchError(f"shard {part.pid}: its files are not those of its partition")
        for row, (entry, ex, _) in zip(rows, part.items, strict=True):
            ix.timings["embed_eeg_s"] += row["embed_eeg_s"]
            ix.timings["embed_text_s"] += row["embed_text_s"]
            ix.store_prepared(prepared_from_row(row, entry), ex, self.summary, self.on_item)


def index_archive_ray(root: str | os.PathLike, db_dir: str | os.PathLike, model_path: str | os.PathLike,
                      reports: str | os.PathLike | None = None, n_jobs: int | str = "auto", prune: bool = False,
                      db_url: str | None = None, precision: str = "fp32", on_item=None, on_plan=None,
                      retry_failed: bool = False, report_text: bool | None = None,
                      timeout: float | None = DEFAULT_TIMEOUT_S, backend: str = "auto", address: str | None = None,
                      partition_size: int = DEFAULT_PARTITION_SIZE, actors: int | None = None) -> IndexSummary:
    """``indexer.pipeline.index_archive`` on Ray: same parameters, and the Ray ones of ``RayRunner``.

    ``n_jobs`` is the number of reader processes per actor.

    Raises
    ------
    RayMissingError
        Ray is not installed (checked before the model is loaded).
    """
    require_ray()
    indexer = make_indexer(db_dir, model_path, db_url, precision, report_text, timeout, backend)
    return RayRunner(indexer, address, partition_size, n_jobs, actors).run(
        root, reports, prune, on_item, on_plan, retry_failed)

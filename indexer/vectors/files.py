"""Index files: atomic writes, reading (memory-mapped, or the on-disk kind with its ``.ivfdata``), staging.

An index folder's ``faiss/NAME.faiss`` is replaced only by one ``os.replace`` (:class:`Staged`),
so a reader sees the old or the new file, never a partial one. The on-disk kind's inverted lists
live in ``NAME.TOKEN.ivfdata`` next to it, named by the index file; a new build or update writes a
new data file, and :func:`collect_garbage` deletes the ones no index file names any more.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import secrets
import shutil
import sys
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss

from indexer.vectors.index_info import IVFDATA_SUFFIX, IndexInfo

logger = logging.getLogger(__name__)

# Indexes whose storage is a read-only memory map: FAISS aborts the process (it does not raise)
# when such an index is modified, so the editing helpers refuse them first (:func:`check_writable`).
_READ_ONLY: weakref.WeakSet[faiss.Index] = weakref.WeakSet()


def ondisk_lists(index: faiss.Index) -> faiss.OnDiskInvertedLists | None:
    """The inverted lists of an on-disk IVF index (kept in an ``.ivfdata`` file), else None."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return None
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) and lists.filename else None


def check_writable(index: faiss.Index) -> None:
    """Refuse an index read memory-mapped (FAISS would abort the process on a change)."""
    if index in _READ_ONLY:
        raise ValueError("this index was read memory-mapped (read-only); read it with mmap=False to modify it")


def fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (where the file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(fname: Path) -> None:
    """Flush a file's data to disk."""
    fd = os.open(fname, os.O_RDONLY)
    try:
        os.fsync(fd)  # also writes back the pages dirtied through a shared mapping
    finally:
        os.close(fd)


@contextmanager
def c_stdout_to_stderr() -> Iterator[None]:
    """Send what FAISS prints on the C stdout to stderr (it announces on-disk resizes).

    The indexer's own stdout may carry JSON (``elmsearch index --json``).
    """
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def write_index(index: faiss.Index, fname: str | os.PathLike[str]) -> None:
    """Write an index atomically: temporary file in the same folder, fsync, ``os.replace``.

    A reader never sees a partial file, and a crash leaves either the old or the new index.

    Parameters
    ----------
    index : faiss.Index
    fname : path
        Destination; its folder must exist.
    """
    path = Path(fname)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        fsync_file(Path(tmp))
        os.chmod(tmp, 0o600)  # patient data (mkstemp made it 0600 already; kept explicit)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)  # make the rename itself durable


def ondisk_data_name(fname: str | os.PathLike[str]) -> str | None:
    """Name of the ``.ivfdata`` file an on-disk index file refers to, or None for a self-contained file.

    FAISS writes an on-disk index's inverted lists last: ..., the data file's name (a uint64
    length, then the bytes), the data size (uint64). Only the file's last bytes are read.

    Parameters
    ----------
    fname : path
        An index file.

    Returns
    -------
    str or None
        The data file's base name (its folder is the index file's).
    """
    suffix = IVFDATA_SUFFIX.encode()
    with open(fname, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 4096))
        tail = f.read()
    body = tail[:-8]
    if not body.endswith(suffix):
        return None
    for length in range(len(suffix) + 1, len(body) - 7):
        if int.from_bytes(body[-length - 8 : -length], "little") == length:
            return Path(body[-length:].decode("utf-8", "replace")).name
    return None


def _read_ondisk(path: Path, data_name: str) -> faiss.Index:
    """Read an on-disk index: the header, then its ``.ivfdata`` file mapped read-only.

    The data file is looked up next to the index file, whatever folder it was written in (what
    ``IO_FLAG_ONDISK_SAME_DIR`` does, without the line FAISS then prints on stdout), and its
    size is checked first: mapping a truncated file would kill the process on first access.
    """
    data = path.parent / data_name
    if not data.is_file():
        raise FileNotFoundError(f"{path}: its data file {data} is missing")
    index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
    lists = ondisk_lists(index)
    if lists is None:
        raise ValueError(f"{path}: not an on-disk index")
    if data.stat().st_size < lists.totsize:
        raise ValueError(f"{data}: {data.stat().st_size} bytes, the index needs {lists.totsize} (truncated?)")
    lists.filename = str(data)
    lists.prefetch_nthread = 0  # no prefetch threads per query: the page cache does it
    if lists.totsize:
        lists.do_mmap()
    _READ_ONLY.add(index)
    return index


def read_index(fname: str | os.PathLike[str], mmap: bool = False) -> faiss.Index:
    """Read an index written by :func:`write_index` (or an on-disk one, see below).

    Parameters
    ----------
    fname : path
    mmap : bool
        Memory-map the vector data read-only instead of loading it (fast start, shared pages).
        Uses ``IO_FLAG_MMAP_IFC | IO_FLAG_READ_ONLY``, which maps both kinds (plain
        ``IO_FLAG_MMAP`` maps only IVF lists in faiss 1.15). Such an index can be searched
        and reconstructed, not modified: :func:`indexer.vectors.ops.add_vectors` and
        :func:`indexer.vectors.ops.remove_ids` refuse it.
        The on-disk kind (``"ivf_sq8_ondisk"``, an index file and the ``.ivfdata`` file it
        names) is always mapped read-only from the data file next to the index file; it is
        changed only by writing new files (:meth:`indexer.vectors.kinds.IVFIndex.update`).

    Returns
    -------
    faiss.Index
    """
    path = Path(fname)
    if not path.is_file():
        raise FileNotFoundError(f"no index file {path}")
    data_name = ondisk_data_name(path)
    if data_name is not None:
        return _read_ondisk(path, data_name)
    if not mmap:
        return faiss.read_index(str(path))
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    _READ_ONLY.add(index)
    return index


@dataclasses.dataclass
class Staged:
    """An index written under temporary names, made current by :meth:`commit` (or thrown away).

    Attributes
    ----------
    fname : Path
        The index file's final name.
    tmp : Path or None
        The index file as written (renamed to ``fname`` at commit); None when ``fname`` is to be
        kept as it is (``action="keep"``) or deleted (``action="delete"``).
    ivfdata : Path or None
        A new data file (on-disk kind), already under its final, unique name: nothing refers to
        it before the commit.
    info : IndexInfo or None
        How the index was built or updated.
    action : str
        ``"replace"``, ``"keep"`` or ``"delete"``.
    how : str
        ``"built"``, ``"updated"``, ``"unchanged"`` or ``"deleted"`` (for logs and the manifest).
    """

    fname: Path
    tmp: Path | None = None
    ivfdata: Path | None = None
    info: IndexInfo | None = None
    action: str = "replace"
    how: str = "built"

    def commit(self) -> None:
        """Make the new index current (one ``os.replace``); readers see the old or the new one."""
        if self.action == "replace":
            os.replace(self.tmp, self.fname)
            fsync_dir(self.fname.parent)
        elif self.action == "delete":
            self.fname.unlink(missing_ok=True)

    def discard(self) -> None:
        """Delete what was written (before :meth:`commit`)."""
        for f in (self.tmp, self.ivfdata):
            if f is not None:
                f.unlink(missing_ok=True)

    def nbytes(self) -> int:
        """Bytes on disk of the committed index (index file and data file)."""
        size = self.fname.stat().st_size if self.fname.is_file() else 0
        if self.info is not None and self.info.ivfdata:
            data = self.fname.parent / self.info.ivfdata
            size += data.stat().st_size if data.is_file() else 0
        return size


def new_names(fname: Path) -> tuple[Path, Path]:
    """A new, unique data file name and a temporary index file name for the index file ``fname``."""
    token = secrets.token_hex(6)
    return fname.parent / f"{fname.stem}.{token}{IVFDATA_SUFFIX}", fname.parent / f".{fname.name}.{token}.tmp"


def referenced_data(folder: str | os.PathLike[str]) -> set[str]:
    """Names of the ``.ivfdata`` files the index files in ``folder`` refer to."""
    names = set()
    for f in Path(folder).glob("*.faiss"):
        try:
            name = ondisk_data_name(f)
        except OSError:
            continue
        if name is not None:
            names.add(name)
    return names


def collect_garbage(folder: str | os.PathLike[str]) -> list[str]:
    """Delete data files no index file refers to, and what interrupted builds left.

    Call it after the new index files and the manifest are in place (a reader that opened an
    old data file keeps its mapping).

    Parameters
    ----------
    folder : path
        The ``faiss`` folder of an index.

    Returns
    -------
    list of str
        The names deleted.
    """
    folder = Path(folder)
    keep = referenced_data(folder)
    deleted = []
    for f in folder.iterdir():
        if f.name.endswith(IVFDATA_SUFFIX) and f.name not in keep:
            f.unlink(missing_ok=True)
        elif f.name.startswith(".") and ".staging." in f.name and f.is_dir():
            shutil.rmtree(f, ignore_errors=True)
        elif f.name.startswith(".") and f.name.endswith(".tmp") and f.is_file():
            f.unlink(missing_ok=True)
        else:
            continue
        deleted.append(f.name)
    if deleted:
        logger.info("%s: deleted %s", folder, ", ".join(sorted(deleted)))
    return deleted

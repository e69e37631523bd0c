"""One writer per index folder: an advisory lock file that says who holds it.

``DIR/index.lock`` is locked with ``flock`` for as long as a writer (``elmsearch index``) runs,
and holds that writer's pid, host, command and start time. The kernel drops the lock when
the process dies, however it dies, so a lock file left by a killed run is stale by
construction: the next writer takes it over and says so. Readers never take the lock; they
look at it to tell a run in progress from an interrupted one.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path

from elmsearch.errors import ElmsearchError

logger = logging.getLogger(__name__)

LOCK_NAME = "index.lock"


# Lock descriptors this process holds. A forked child (a reader worker) closes its copies at
# once: a flock belongs to the open file, so a worker left running after its parent was
# killed would otherwise keep the index locked.
_HELD: set[int] = set()


def _close_in_child() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class IndexLockedError(ElmsearchError):
    """Another process is writing to this index."""


def _describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
            f"since {holder.get('started', '?')}")


_WORD = re.compile(r"[a-z][a-z0-9-]*")
_SECRET_IN_URL = re.compile(r"(://[^:/@\s]*):[^@\s]*@")


def redact_url(url: str) -> str:
    """A database URL with its password shown as ``***`` (anything unparsable: ``***``)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is shown as nothing at all
        return "***"


def public_command(argv: list[str]) -> str:
    """What a lock file says about its writer's command: the program and its subcommand only.

    The full command line may hold secrets (``--db-url postgresql://user:PASSWORD@...``) and
    private paths; the lock file is shown by ``elmsearch stats`` and ``GET /api/stats``. Only
    the program name, the first plain-word argument (the subcommand, e.g. ``elmsearch index``)
    and a ``--db-url`` with its password redacted are kept.

    Parameters
    ----------
    argv : list of str
        The command line (``sys.argv``).

    Returns
    -------
    str
        E.g. ``"elmsearch index --db-url postgresql+psycopg://user:***@host/db"``.
    """
    argv = [str(a) for a in argv]
    words = [os.path.basename(argv[0])] if argv else []
    sub = next((a for a in argv[1:] if not a.startswith("-")), None)
    if sub is not None and _WORD.fullmatch(sub):
        words.append(sub)
    for i, a in enumerate(argv[1:], 1):
        if a == "--db-url" and i + 1 < len(argv):
            words += ["--db-url", redact_url(argv[i + 1])]
        elif a.startswith("--db-url="):
            words += ["--db-url", redact_url(a.split("=", 1)[1])]
    return " ".join(words)[:300]


def _public_holder(holder: dict) -> dict:
    # A lock file written by an older version holds the whole argv: never show a URL's password.
    if isinstance(holder.get("command"), str):
        holder["command"] = _SECRET_IN_URL.sub(r"\1:***@", holder["command"])
    return holder


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        holder = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


class IndexLock:
    """Exclusive writer lock of an index folder (a context manager).

    Parameters
    ----------
    folder : path-like
        The index folder (must exist).

    Raises
    ------
    IndexLockedError
        On entry, when a live process holds the lock; the message names it.
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> IndexLock:
        """Take the lock or raise ``IndexLockedError`` at once (never waits)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + 2.0  # a reader's look (lock_holder) holds it for microseconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                if not holder.get("pid") and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
            os.close(fd)
            raise IndexLockedError(
                f"{self.path.parent}: another `elmsearch index` is writing to this index "
                f"({_describe(holder)}); wait for it to finish or stop it") from None
        stale = _read_holder(fd)
        if stale:
            logger.warning("%s: taking over a stale lock left by %s (that process is gone)",
                           self.path.parent, _describe(stale))
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "command": public_command(sys.argv)}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode())
        os.fsync(fd)
        self._fd = fd
        _HELD.add(fd)
        return self

    def release(self) -> None:
        """Clear the holder and unlock."""
        if self._fd is None:
            return
        _HELD.discard(self._fd)
        try:
            os.ftruncate(self._fd, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> IndexLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(folder: str | os.PathLike) -> dict | None:
    """Who writes to this index now: the holder's pid, host, start time; None when nobody does.

    A lock file whose lock is free (its writer died) counts as nobody.
    """
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _public_holder(_read_holder(fd)) or {"pid": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)

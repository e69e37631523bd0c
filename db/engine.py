"""Engines and sessions: SQLite by default (WAL, foreign keys on), any SQLAlchemy URL otherwise."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.orm import sessionmaker

from db.models import Base

DB_FILE = "elmsearch.sqlite"


def sqlite_url(folder: str | os.PathLike, read_only: bool = False) -> str:
    """URL of the default SQLite file inside an index folder.

    With ``read_only`` the file is opened as an immutable URI (``mode=ro&immutable=1``): no
    journal, lock or shared-memory file is created, so an index on a read-only mount (or a
    copy without write permission) can be queried. The indexer checkpoints the WAL into the
    main file at the end of each run, so that file holds the whole index.
    """
    path = Path(folder).resolve() / DB_FILE
    if read_only:
        return f"sqlite:///file:{quote(str(path))}?mode=ro&immutable=1&uri=true"
    return f"sqlite:///{path}"


def is_read_only(url: str) -> bool:
    """Whether ``url`` is the read-only form of ``sqlite_url``."""
    return url.startswith("sqlite:///file:") and "mode=ro" in url


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_read_only_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.execute("PRAGMA foreign_keys=ON")


SQLITE_BUSY_TIMEOUT_S = 60.0


def make_engine(url: str, create: bool = True) -> Engine:
    """An engine for ``url``; on SQLite every connection gets WAL and foreign keys.

    Parameters
    ----------
    url : str
        ``sqlite:///path`` or e.g. ``postgresql+psycopg://user@host/db``.
    create : bool
        Create missing tables, and missing indexes and nullable columns of existing tables
        (an index folder made by an older version gets them on its next ``elmsearch index`` run).

    SQLite connections wait up to ``SQLITE_BUSY_TIMEOUT_S`` for a lock held by another
    process (one writer and any number of readers share a WAL database) instead of failing
    with "database is locked".
    """
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S} if url.startswith("sqlite") else {}
    engine = create_engine(url, future=True, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_read_only_pragmas if is_read_only(url) else _sqlite_pragmas)
    if create:
        Base.metadata.create_all(engine)
        _add_missing_columns(engine)
        for table in Base.metadata.sorted_tables:
            for index in table.indexes:
                index.create(engine, checkfirst=True)
    return engine


def _add_missing_columns(engine: Engine) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for nullable columns that newer versions added."""
    have = inspect(engine)
    with engine.begin() as con:
        for table in Base.metadata.sorted_tables:
            existing = {c["name"] for c in have.get_columns(table.name)}
            for col in table.columns:
                if col.name not in existing and col.nullable:
                    kind = col.type.compile(dialect=engine.dialect)
                    con.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{col.name}" {kind}')


def make_sessionmaker(engine: Engine) -> sessionmaker:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)

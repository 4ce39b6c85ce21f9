"""Opening the catalog's SQLite file: by path, writable or read-only, with honest errors.

* The file is named by a path, never a URL: SQLAlchemy's ``sqlite:///...`` would decode
  ``%41`` and cut at ``?`` or ``#``, so connections are made by ``sqlite3.connect`` on a
  ``file:`` URI whose path is percent-quoted (any name the filesystem accepts works).
* A reader never needs to write. A catalog whose folder or file is not writable is opened
  ``mode=ro``; on a read-only medium where SQLite cannot even create the WAL index
  (``-shm``), ``immutable=1``, which is safe because nobody can write there either.
* Write transactions begin ``IMMEDIATE``: they take the write lock up front and wait for
  it (busy timeout), instead of starting as readers and failing with "database is locked"
  when they upgrade while another process writes.
* SQLite's full-disk, read-only and lock errors become one-line :class:`RetrievalError`\\ s.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import QueuePool

from ..errors import DiskFullError, IndexBusyError, ReadOnlyIndexError, RetrievalError
from .metadata import dumps

__all__ = ["BUSY_TIMEOUT_S", "MODE_WRITE", "MODE_READ", "MODE_IMMUTABLE", "choose_mode", "sqlite_engine",
           "immediate", "translate_errors"]

BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another process's write transaction
MODE_WRITE, MODE_READ, MODE_IMMUTABLE = "rwc", "ro", "immutable"
_QUERY = {MODE_WRITE: "mode=rwc", MODE_READ: "mode=ro", MODE_IMMUTABLE: "immutable=1"}
_SQLITE_READONLY, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_FULL = 8, 5, 6, 13


def choose_mode(path: Path, read_only: bool | None, create: bool) -> str:
    """How to open `path`: writable, ``mode=ro``, or ``immutable``.

    `read_only` None decides from the filesystem: SQLite in WAL mode must be able to
    write the folder (for ``-wal`` and ``-shm``) and the file.

    Raises:
        RetrievalError: no folder, or no catalog to read.
        ReadOnlyIndexError: `create` in a folder that cannot be written.
    """
    if not path.parent.is_dir():
        raise RetrievalError(f"folder {path.parent} does not exist")
    if read_only is None:
        read_only = not (os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK)))
    if not read_only:
        return MODE_WRITE
    if not path.is_file():
        if create:
            raise ReadOnlyIndexError(f"cannot create a catalog at {path}: its folder is read-only")
        raise RetrievalError(f"no catalog at {path}")
    try:
        probe = _connect(path, MODE_READ)
        try:
            probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            probe.close()
        return MODE_READ
    except sqlite3.OperationalError:
        pass  # the -shm file is missing and cannot be made: the folder is read-only
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise ReadOnlyIndexError(
            f"catalog {path} has changes in {wal.name} that were never merged, and its folder is read-only; "
            "open the index once with write access (or copy it somewhere writable)"
        )
    return MODE_IMMUTABLE


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    uri = f"file:{quote(str(path.absolute()))}?{_QUERY[mode]}"
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)


def sqlite_engine(path: Path, mode: str) -> Engine:
    """A SQLAlchemy engine on `path`; sessions on it read one snapshot each.

    A pool of connections (not SQLAlchemy's one-per-thread default for a bare
    ``sqlite://`` URL) serves the indexing writer thread and query threads alike.
    """
    engine = create_engine("sqlite://", creator=lambda: _connect(path, mode), poolclass=QueuePool,
                           json_serializer=dumps)
    event.listen(engine, "connect", lambda conn, _record: _pragmas(conn, mode))
    event.listen(engine, "begin", _begin)
    return engine


def immediate(engine: Engine) -> Engine:
    """The same engine, whose transactions begin IMMEDIATE (for writes)."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


def _pragmas(dbapi_conn: sqlite3.Connection, mode: str) -> None:
    """WAL lets readers query while one writer adds (set only by a writer: it is persistent).

    The driver's own transaction handling is switched off (it would BEGIN only before
    writes), so that :func:`_begin` makes every session one snapshot, reads included.
    """
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    if mode == MODE_WRITE:
        _set_wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _set_wal(cur: sqlite3.Cursor) -> None:
    """Put the file in WAL mode, retrying while another connection does the same.

    Switching a new (rollback-journal) file to WAL needs an exclusive lock, taken from a
    shared one: two processes creating one catalog at once deadlock there, and SQLite
    answers one of them "database is locked" at once, without waiting (measured: 70 of 300
    three-thread races). The pragma is idempotent and holds nothing when it fails, so it is
    tried again until the winner has made the file WAL (then it is a no-op), within the
    busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            code = getattr(e, "sqlite_errorcode", None)
            if code is None or code & 0xFF not in (_SQLITE_BUSY, _SQLITE_LOCKED) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.001, 0.02))  # apart, so that the racers stop meeting


def _begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN " + conn.get_execution_options().get("sqlite_begin", "DEFERRED"))


@contextlib.contextmanager
def translate_errors(path: Path) -> Iterator[None]:
    """Turn SQLite's full-disk, read-only and lock failures into one-line RetrievalErrors.

    Whatever the transaction had written is rolled back by then (SQLite on these errors,
    the session on the exception), so the catalog holds exactly what was committed before.
    """
    try:
        yield
    except DBAPIError as e:
        code = getattr(e.orig, "sqlite_errorcode", None)
        primary = code & 0xFF if code is not None else None
        if primary == _SQLITE_FULL:
            raise DiskFullError(f"no space left on the disk holding {path}; free some space and run again "
                                "(this batch was not written; everything before it is safe)") from e
        if primary == _SQLITE_READONLY:
            raise ReadOnlyIndexError(f"catalog {path} cannot be written (read-only file or folder); "
                                     "fix its permissions or open the index read-only") from e
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
            raise IndexBusyError(f"catalog {path} stayed locked by another process for over "
                                 f"{BUSY_TIMEOUT_S:.0f} s; try again later") from e
        raise

"""What a database error means: retry it, or which ``davserver.errors`` exception it becomes.

The drivers (psycopg2, sqlite3) and peewee raise their own exception classes; nothing above
``davserver.index`` may see them. :func:`translate` turns each into the one exception tree
(``davserver.errors``), so the DAV layer's single mapping answers it, and logs it:

- the index cannot be reached or is overloaded — connection refused or lost, the server
  shutting down or starting up, too many connections, a ``lock_timeout`` or
  ``statement_timeout`` hit, SQLite busy past its ``busy_timeout``, no free connection in
  the pool — is ``StorageError`` (503 with ``Retry-After``);
- a full disk under the index (PostgreSQL ``disk_full``, SQLite ``SQLITE_FULL``) is
  ``DiskFull`` (507);
- a constraint still violated after the transaction was retried is ``Conflict`` (409):
  another request changed the same names at the same moment;
- anything else (a statement the database refused: a bug or a damaged schema) is
  ``IndexFailure`` (500).

:func:`retryable` says which errors a transaction should simply be run again for (the
database rolled it back and another attempt can succeed): deadlocks and serialization
failures, and unique or foreign-key violations between concurrent writers (the next attempt
sees the other writer's committed rows and decides anew). Log lines name the error class
and SQLSTATE only: driver messages can quote row values.
"""

from __future__ import annotations

import errno
import logging

import peewee as pw

from davserver.errors import Conflict, DavServerError, DiskFull, IndexFailure, StorageError

log = logging.getLogger(__name__)

#: Seconds a client is told to wait (Retry-After) when the index is unavailable.
RETRY_AFTER = 2

# SQLSTATEs (PostgreSQL appendix A).
_RETRY_CODES = frozenset({"40001", "40P01", "23505", "23503"})
_SQLITE_RETRY_CODES = frozenset(
    {"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_FOREIGNKEY"}
)
_DISK_FULL_CODES = frozenset({"53100"})
# The -shm file could not grow: SQLite creates it (32 KiB) with the first connection after
# the last one closed, so a server started on a full disk meets this on its first read.
_SQLITE_IOERR_SHMSIZE = 4874
# Connection exceptions (08), insufficient resources (53: too many connections, out of
# memory), lock_not_available, query_canceled (statement_timeout), operator intervention
# (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now).
_UNAVAILABLE_PREFIXES = ("08", "53", "55P03", "57")


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's exception under a peewee one (peewee keeps it as args[0])."""
    if isinstance(exc, pw.PeeweeException) and exc.args and isinstance(exc.args[0], Exception):
        return exc.args[0]
    return exc


def sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of a PostgreSQL error, the SQLite error name, or ''."""
    orig = _driver_error(exc)
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlite_errorname", None)
    return str(code) if code else ""


def is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the database layer (and must not escape ``index``)."""
    from playhouse.pool import MaxConnectionsExceeded

    return isinstance(exc, pw.PeeweeException | MaxConnectionsExceeded) or (
        type(exc).__module__.split(".")[0] in ("psycopg2", "sqlite3")
    )


def retryable(exc: BaseException) -> bool:
    """Whether running the whole transaction again may succeed (see the module docstring)."""
    code = sqlstate(exc)
    if code in _RETRY_CODES:
        return True
    # SQLite writers are serialised (BEGIN IMMEDIATE): a constraint error there is the
    # same race, seen by the loser of a check-then-insert.
    return code in _SQLITE_RETRY_CODES


def _disk_full(exc: BaseException, code: str) -> bool:
    """Whether the error, or one it arose from, says the disk is full. The whole chain is
    searched: SQLite rolls a transaction back itself when its commit meets a full disk, so
    peewee's own rollback then fails and the full disk is only in that error's context."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        sqlite_code = getattr(e, "sqlite_errorcode", None)
        if isinstance(sqlite_code, int) and (
            sqlite_code & 0xFF == 13 or sqlite_code == _SQLITE_IOERR_SHMSIZE  # SQLITE_FULL
        ):
            return True
        if getattr(e, "pgcode", None) in _DISK_FULL_CODES:
            return True
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "disk is full" in str(e):  # sqlite3's message for SQLITE_FULL
            return True
        todo += [e.__cause__, e.__context__, *(a for a in e.args if isinstance(a, BaseException))]
    return code == "SQLITE_FULL"


def is_disk_full(exc: BaseException) -> bool:
    """Whether a database error, or one it arose from, says the disk is full."""
    return _disk_full(exc, sqlstate(exc))


def translate(exc: BaseException, attempts: int = 1) -> DavServerError:
    """The ``davserver.errors`` exception for a database error (logged here)."""
    if isinstance(exc, DavServerError):
        return exc
    code = sqlstate(exc)
    what = f"{type(_driver_error(exc)).__name__}{f' [{code}]' if code else ''}"
    if attempts > 1:
        what += f" after {attempts} attempts"
    if _disk_full(exc, code):
        log.error("index database error: %s: the disk under the index is full", what)
        return DiskFull("no space left for the index")
    if retryable(exc):
        log.warning("index database error: %s: concurrent change", what)
        return Conflict("the same resource was changed concurrently; try again")
    if (
        code.startswith(_UNAVAILABLE_PREFIXES)
        or code in ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN")
        or isinstance(exc, pw.OperationalError | pw.InterfaceError)
        or not isinstance(exc, pw.PeeweeException)  # e.g. the pool's MaxConnectionsExceeded
    ):
        log.warning("index database unavailable: %s", what)
        return StorageError("the index database is unavailable", retry_after=RETRY_AFTER)
    log.error("index database error: %s", what)
    return IndexFailure("the index database refused a statement")

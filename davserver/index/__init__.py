"""The index database: connection from a URL, schema versioning, transactions.

SQLite (WAL mode) is the embedded default; PostgreSQL is chosen by a ``postgresql://`` URL and
uses the same models. Every schema change is a numbered migration in ``MIGRATIONS``; opening an
index created by a newer davserver is refused rather than guessed at.

This package knows nothing of keys or HTTP: it stores what ``davserver.vault`` gives it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import peewee as pw

from davserver.errors import ConfigError, DiskFull, StorageError
from davserver.index import models
from davserver.index.models import SchemaInfo, database_proxy

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5
_SQLITE_FULL = 13  # "database or disk is full" (primary result code)
# The -shm file could not grow: SQLite creates it (32 KiB) with the first connection after
# the last one closed, so a server started on a full disk meets this on its first read.
_SQLITE_IOERR_SHMSIZE = 4874
_PG_DISK_FULL = "53100"  # SQLSTATE disk_full


def is_disk_full(exc: BaseException) -> bool:
    """Whether a database error, or one it arose from, says the disk is full.

    SQLite rolls a transaction back by itself when its commit meets a full disk, so peewee's
    own rollback then fails ("no transaction is active") and the full disk is only in that
    error's context: the whole chain is searched.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        code = getattr(e, "sqlite_errorcode", None)
        if isinstance(code, int) and (code & 0xFF == _SQLITE_FULL or code == _SQLITE_IOERR_SHMSIZE):
            return True
        if getattr(e, "pgcode", None) == _PG_DISK_FULL:
            return True
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        todo += [e.__cause__, e.__context__]
        todo += [a for a in e.args if isinstance(a, BaseException)]  # peewee wraps as args[0]
    return False


def _migrate_v1(db: pw.Database) -> None:
    db.create_tables(models.V1_MODELS, safe=True)


def _migrate_v2(db: pw.Database) -> None:
    """Chunked uploads (Nextcloud-style)."""
    db.create_tables(models.V2_MODELS, safe=True)


def _migrate_v3(db: pw.Database) -> None:
    """Directory version counters (listing cache validation)."""
    db.create_tables(models.V3_MODELS, safe=True)


def _migrate_v4(db: pw.Database) -> None:
    """Small blobs stored in the index (storage.inline_max); failed-login counters shared
    by every server process."""
    db.create_tables(models.V4_MODELS, safe=True)


def _migrate_v5(db: pw.Database) -> None:
    """``user.last_login`` (``davserver user list``). An index created at this version got
    the column from the model in ``_migrate_v1`` already."""
    from playhouse.migrate import SchemaMigrator, migrate

    table = models.User._meta.table_name  # type: ignore[attr-defined]
    if "last_login" in {c.name for c in db.get_columns(table)}:
        return
    migrator = SchemaMigrator.from_database(db)
    migrate(migrator.add_column(table, "last_login", pw.DoubleField(null=True)))


# MIGRATIONS[n] brings a schema at version n to version n + 1. Never edit a released one:
# add the next.
MIGRATIONS: dict[int, Callable[[pw.Database], None]] = {
    0: _migrate_v1,
    1: _migrate_v2,
    2: _migrate_v3,
    3: _migrate_v4,
    4: _migrate_v5,
}


class Index:
    """An open index database bound to the models."""

    def __init__(self, db: pw.Database) -> None:
        self.db = db
        self.is_sqlite = isinstance(db, pw.SqliteDatabase)
        #: Called when connecting meets a full disk; returns whether it freed some space
        #: (the vault's space reserve), and the connection is then tried once more.
        self.on_disk_full: Callable[[], bool] | None = None

    def atomic(self) -> pw._transaction | pw._atomic:  # type: ignore[name-defined]
        """A write transaction. SQLite takes the write lock up front (BEGIN IMMEDIATE) so two
        writers never deadlock upgrading read locks; PostgreSQL uses its default."""
        if self.is_sqlite:
            return self.db.atomic("IMMEDIATE")
        return self.db.atomic()

    @contextlib.contextmanager
    def connection(self) -> Iterator[None]:
        """Make sure this thread has a connection for a unit of work.

        Connections are per thread and stay open: server threads are long-lived, and
        reconnecting (re-applying SQLite pragmas, a PostgreSQL handshake) per request costs
        more than the request. ``close`` releases the calling thread's connection.
        """
        try:
            try:
                self.db.connect(reuse_if_open=True)
            except pw.OperationalError as exc:
                if not (is_disk_full(exc) and self.on_disk_full and self.on_disk_full()):
                    raise
                self.db.connect(reuse_if_open=True)
        except pw.OperationalError as exc:
            if is_disk_full(exc):
                log.warning("index database: disk full")
                raise DiskFull("no space left for the index database") from exc
            raise StorageError("cannot connect to the index database") from exc
        try:
            yield
        except pw.DatabaseError as exc:
            if is_disk_full(exc):  # nothing was committed: the transaction rolled back
                log.warning("index database: disk full")
                raise DiskFull("no space left for the index database") from exc
            raise

    def schema_version(self) -> int:
        if not self.db.table_exists(SchemaInfo._meta.table_name):  # type: ignore[attr-defined]
            return 0
        row = SchemaInfo.get_or_none(SchemaInfo.key == "schema_version")
        return int(row.value) if row else 0

    def migrate(self) -> None:
        """Bring the schema to ``SCHEMA_VERSION``; refuse an index from a newer release."""
        with self.db.connection_context():
            current = self.schema_version()
            if current > SCHEMA_VERSION:
                raise ConfigError(
                    f"the index has schema version {current}, newer than this davserver "
                    f"supports ({SCHEMA_VERSION}); upgrade davserver"
                )
            while current < SCHEMA_VERSION:
                with self.db.atomic():
                    MIGRATIONS[current](self.db)
                    current += 1
                    SchemaInfo.insert(key="schema_version", value=str(current)).on_conflict(
                        conflict_target=[SchemaInfo.key], update={SchemaInfo.value: str(current)}
                    ).execute()

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()


def _sqlite_path(url: str, base_dir: Path) -> str:
    raw = url[len("sqlite:///") :]
    if raw == ":memory:":
        return raw
    p = Path(raw)
    return str(p if p.is_absolute() else base_dir / p)


def _private_sqlite_files(path: str) -> None:
    """Create the SQLite file owner-only (0600) before SQLite does, and make an existing one
    and its ``-wal``/``-shm`` owner-only: the index holds the wrapped keys. SQLite gives the
    files it creates beside a database the database file's mode."""
    if path == ":memory:" or path.startswith("file:"):
        return
    with contextlib.suppress(OSError):  # a missing directory: SQLite reports it
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, path + "-wal", path + "-shm", path + "-journal"):
        with contextlib.suppress(OSError):
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)


def connect(url: str, base_dir: str | Path = ".") -> pw.Database:
    """Make a peewee database from an index URL (``sqlite:///rel/or/abs.db`` or
    ``postgresql://user:pass@host:port/db``); relative SQLite paths resolve against base_dir."""
    base = Path(base_dir)
    if url.startswith("sqlite:///"):
        path = _sqlite_path(url, base)
        _private_sqlite_files(path)
        return pw.SqliteDatabase(
            path,
            pragmas={
                "journal_mode": "wal",
                "synchronous": "normal",  # durable across process crashes in WAL mode
                "foreign_keys": 1,
                "busy_timeout": 30000,
                # Per connection, and each of the server's threads has one: 1 MiB each, the
                # OS page cache holds the rest. With 16 MiB, every thread that once listed a
                # 10,000-entry directory kept ~4 MiB more (measured with /proc VmHWM).
                "cache_size": -1024,
            },
            check_same_thread=False,
            timeout=30,
        )
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        try:
            import psycopg2  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on install
            raise ConfigError(
                "index.url is PostgreSQL but psycopg2 is not installed "
                "(pip install 'davserver[postgres]')"
            ) from exc
        from playhouse.pool import PooledPostgresqlDatabase

        db: pw.Database = PooledPostgresqlDatabase(
            (parts.path or "/").lstrip("/") or None,
            user=parts.username,
            password=parts.password,
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            max_connections=64,
            stale_timeout=300,
            timeout=30,
        )
        return db
    raise ConfigError(
        "index.url: unsupported database URL scheme (use sqlite:/// or postgresql://)"
    )


def open_index(url: str, base_dir: str | Path = ".", migrate: bool = True) -> Index:
    """Connect, bind the models, and (by default) migrate the schema to the current version."""
    db = connect(url, base_dir)
    database_proxy.initialize(db)
    index = Index(db)
    if migrate:
        try:
            index.migrate()
        except pw.OperationalError as exc:
            raise StorageError(f"cannot open the index database: {exc}") from exc
    return index


def now() -> float:
    return time.time()


__all__ = ["SCHEMA_VERSION", "Index", "connect", "models", "now", "open_index"]

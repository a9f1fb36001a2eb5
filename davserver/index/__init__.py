"""The index database: connection from a URL, schema versioning, transactions.

SQLite (WAL mode) is the embedded default; PostgreSQL is chosen by a ``postgresql://`` URL and
uses the same models. Every schema change is a numbered migration in ``MIGRATIONS``; opening an
index created by a newer davserver is refused rather than guessed at.

This package knows nothing of keys or HTTP: it stores what ``davserver.vault`` gives it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import peewee as pw

from davserver.errors import ConfigError, StorageError
from davserver.index import dirtree, errors, fast, instance, models
from davserver.index.models import SchemaInfo, database_proxy

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 11


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
    """Keyless digests of stored objects and when scrub last re-read them (``davserver
    scrub``): ``version.digest``, ``version.scrubbed_at`` (indexed), ``inline_blob.digest``.
    A fresh index already has them (its tables are created from the current models)."""
    from playhouse.migrate import PostgresqlMigrator, SchemaMigrator, SqliteMigrator, migrate

    migrator: SchemaMigrator = (
        SqliteMigrator(db) if isinstance(db, pw.SqliteDatabase) else PostgresqlMigrator(db)
    )
    ops = []
    have = {c.name for c in db.get_columns("version")}
    if "digest" not in have:
        ops.append(migrator.add_column("version", "digest", pw.BlobField(null=True)))
    if "scrubbed_at" not in have:
        ops.append(migrator.add_column("version", "scrubbed_at", pw.DoubleField(null=True)))
        ops.append(migrator.add_index("version", ("scrubbed_at",), False))
    if "digest" not in {c.name for c in db.get_columns("inline_blob")}:
        ops.append(migrator.add_column("inline_blob", "digest", pw.BlobField(null=True)))
    migrate(*ops)


def _migrate_v6(db: pw.Database) -> None:
    """``user.last_login`` (``davserver user list``). An index created at this version got
    the column from the model in ``_migrate_v1`` already."""
    from playhouse.migrate import SchemaMigrator, migrate

    table = models.User._meta.table_name  # type: ignore[attr-defined]
    if "last_login" in {c.name for c in db.get_columns(table)}:
        return
    migrator = SchemaMigrator.from_database(db)
    migrate(migrator.add_column(table, "last_login", pw.DoubleField(null=True)))


def _migrate_v7(db: pw.Database) -> None:
    """Versions and trash: ``user.trash_id``, ``node.fileid`` (random, unique: every
    existing node gets one here, so ``oc:fileid`` values change once), ``version.labelled``
    and ``version.label_ct``, and the ``trash_item`` table. Columns an index created at
    this version already has (from the models) are left alone."""
    from playhouse.migrate import SchemaMigrator, migrate

    migrator = SchemaMigrator.from_database(db)

    def missing(model: type[models.BaseModel], column: str) -> bool:
        table = model._meta.table_name  # type: ignore[attr-defined]
        return column not in {c.name for c in db.get_columns(table)}

    ops = []
    user_t = models.User._meta.table_name  # type: ignore[attr-defined]
    if missing(models.User, "trash_id"):
        ops.append(migrator.add_column(user_t, "trash_id", models.IdField(null=True)))
    new_fileid = missing(models.Node, "fileid")
    if new_fileid:
        ops.append(migrator.add_column("node", "fileid", pw.BigIntegerField(null=True)))
    if missing(models.Version, "labelled"):
        ops.append(migrator.add_column("version", "labelled", pw.BooleanField(default=False)))
    if missing(models.Version, "label_ct"):
        ops.append(migrator.add_column("version", "label_ct", pw.BlobField(null=True)))
    if ops:
        migrate(*ops)
    taken: set[int] = set()
    rows = db.execute_sql('SELECT id FROM "node" WHERE fileid IS NULL').fetchall()  # type: ignore[no-untyped-call]
    for (node_id,) in rows:
        value = fast.new_fileid()
        while value in taken:
            value = fast.new_fileid()
        taken.add(value)
        sql = 'UPDATE "node" SET fileid = ? WHERE id = ?'.replace("?", db.param)
        db.execute_sql(sql, (value, node_id))  # type: ignore[no-untyped-call]
    if new_fileid:
        migrate(migrator.add_index("node", ("fileid",), True))
    db.create_tables(models.V7_MODELS, safe=True)


def _migrate_tokens(db: pw.Database) -> None:
    """Device tokens and recovery codes (DESIGN §13): ``envelope.label_ct``,
    ``scope_node``, ``perms``, ``expires``, ``last_used``, all nullable, so existing password
    envelopes are untouched. ``scope_node`` is not a foreign key: deleting a directory must
    not fail on a token scoped to it (the token then no longer finds its root). Columns an
    index created at this version already has (from the model) are left alone."""
    from playhouse.migrate import SchemaMigrator, migrate

    table = models.Envelope._meta.table_name  # type: ignore[attr-defined]
    have = {c.name for c in db.get_columns(table)}
    migrator = SchemaMigrator.from_database(db)
    wanted: list[tuple[str, pw.Field]] = [
        ("label_ct", pw.BlobField(null=True)),
        ("scope_node", models.IdField(null=True)),
        ("perms", pw.CharField(max_length=2, null=True)),
        ("expires", pw.DoubleField(null=True)),
        ("last_used", pw.DoubleField(null=True)),
    ]
    ops = [migrator.add_column(table, name, field) for name, field in wanted if name not in have]
    if ops:
        migrate(*ops)


def _migrate_identity_keys(db: pw.Database) -> None:
    """Scoped sessions (DESIGN §13): the identity key columns of ``user`` (``id_pk``,
    ``id_pk_mac``, ``id_sk_env``; filled in at each user's next password login, since
    they need MK) and ``trash_item.pending``. Self-contained: columns that exist already are
    left alone, so it may run at any number."""
    from playhouse.migrate import SchemaMigrator, migrate

    migrator = SchemaMigrator.from_database(db)
    user_t = models.User._meta.table_name  # type: ignore[attr-defined]
    trash_t = models.TrashItem._meta.table_name  # type: ignore[attr-defined]
    have_user = {c.name for c in db.get_columns(user_t)}
    ops = [
        migrator.add_column(user_t, column, pw.BlobField(null=True))
        for column in ("id_pk", "id_pk_mac", "id_sk_env")
        if column not in have_user
    ]
    if "pending" not in {c.name for c in db.get_columns(trash_t)}:
        ops.append(migrator.add_column(trash_t, "pending", pw.BooleanField(null=True)))
    if ops:
        migrate(*ops)


def _migrate_login_flows(db: pw.Database) -> None:
    """Nextcloud login flows (v2) in progress (``davserver.vault.loginflow``): one table,
    rows that live at most 20 minutes. Self-contained: nothing else depends on its number."""
    db.create_tables([models.LoginFlow], safe=True)


def _migrate_dir_tree(db: pw.Database) -> None:
    """Directory ETags and sizes: the ``dir_tree`` table (a change counter and the bytes
    below every directory), filled from the node rows, replaces ``dir_version`` (dropped:
    one counter mechanism, not two); and the index's instance id and data fingerprint in
    ``schema_info`` (``oc:id``, ``oc:data-fingerprint``). Run again on a table that exists
    (an index copied from an older backup), it recomputes the totals."""
    db.create_tables(models.V8_MODELS, safe=True)
    dirtree.fill(db)
    db.execute_sql('DROP TABLE IF EXISTS "dir_version"')  # type: ignore[no-untyped-call]
    instance.ensure(db)


# MIGRATIONS[n] brings a schema at version n to version n + 1. Never edit a released one:
# add the next.
MIGRATIONS: dict[int, Callable[[pw.Database], None]] = {
    0: _migrate_v1,
    1: _migrate_v2,
    2: _migrate_v3,
    3: _migrate_v4,
    4: _migrate_v5,
    5: _migrate_v6,
    6: _migrate_v7,
    7: _migrate_tokens,
    8: _migrate_login_flows,
    9: _migrate_identity_keys,
    10: _migrate_dir_tree,
}


@dataclass(frozen=True)
class IndexSettings:
    """Connection settings (``index.*`` in the configuration); only PostgreSQL uses them."""

    connect_timeout: int = 2  # seconds (libpq connect_timeout; libpq's minimum is 2)
    statement_timeout: int = 30  # seconds, 0 = none
    lock_timeout: int = 10  # seconds, 0 = none
    pool_size: int = 64  # connections per process


# A transaction that lost a deadlock or a race is run again, at most this many times in all,
# after a random pause of up to RETRY_BASE seconds, doubling up to RETRY_CAP (full jitter,
# so the losers of one race do not collide again in step): at most ~1.5 s in all.
RETRY_ATTEMPTS = 8
RETRY_BASE = 0.01
RETRY_CAP = 0.4


class Index:
    """An open index database bound to the models.

    Units of work. Every use of the database runs inside :meth:`connection` (reads, or
    writes that need no retry) or :meth:`run` (a transaction that is run again when it lost
    a deadlock or a race). On PostgreSQL the outermost unit takes a connection from peewee's
    pool (``playhouse.pool``), which checks it with a round trip before handing it out and
    drops it if it is broken, and gives it back at the end: after the server restarts, no
    thread keeps a dead connection. SQLite keeps one connection per thread (opening one
    re-applies the pragmas, which costs more than a request). Whatever the database raises
    leaves the outermost unit as a ``davserver.errors`` exception (:mod:`.errors`), logged.
    """

    def __init__(self, db: pw.Database) -> None:
        self.db = db
        self.is_sqlite = isinstance(db, pw.SqliteDatabase)
        self._local = threading.local()
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
    def write(self, user_id: str | None) -> Iterator[tuple[int, int | None] | None]:
        """A write transaction on one user's data, in the canonical lock order: the user's
        row first (PostgreSQL ``SELECT … FOR NO KEY UPDATE``; SQLite's BEGIN IMMEDIATE
        already serialises all writers). Every transaction that changes a user's tree,
        usage, uploads or locks starts here, so two of them never hold rows the other wants
        (the deadlocks of ``dir_tree`` against ``user``): writers of one user queue on
        that row, writers of different users share nothing. ``FOR NO KEY UPDATE`` leaves
        inserts of rows that merely reference the user (their foreign-key checks) alone.

        Yields the user's (usage, own quota) as read by that locking statement on
        PostgreSQL (saves a round trip while the row is held), else None."""
        with self.atomic():
            locked = None
            if user_id is not None and not self.is_sqlite and self.db.transaction_depth() == 1:
                row = fast.execute("lock_user", (user_id,)).fetchone()
                if row is not None:
                    locked = (int(row[0]), None if row[1] is None else int(row[1]))
            yield locked

    def _depth(self) -> int:
        return int(getattr(self._local, "depth", 0))

    @contextlib.contextmanager
    def sticky(self) -> Iterator[None]:
        """Within this block (one HTTP request, ``Vault.request_scope``) the connection that
        the first unit of work takes from the pool is kept by the thread until the block
        ends, instead of going back after each unit: a request runs many small units
        (path walk, lock lookups, the write), and each checkout costs a validating round
        trip. A unit that fails with a database error gives its connection back at once
        (the pool drops it if it is broken)."""
        if self.is_sqlite or getattr(self._local, "sticky", False):
            yield
            return
        self._local.sticky = True
        try:
            yield
        finally:
            self._local.sticky = False
            if self._depth() == 0 and not self.db.is_closed():
                self._release()

    @contextlib.contextmanager
    def _unit(self) -> Iterator[None]:
        """Hold a connection for a unit of work (nested units share it). Database errors
        pass through untranslated."""
        depth = self._depth()
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        sticky = getattr(self._local, "sticky", False)
        if self.is_sqlite:
            self._connect(reuse_if_open=True)
        elif not (sticky and not self.db.is_closed()):
            if not self.db.is_closed():  # opened outside a unit (autoconnect): re-check it
                self._release()
            self._connect()  # from the pool, validated on checkout
        self._local.depth = 1
        broken = False
        try:
            yield
        except BaseException as exc:
            broken = errors.is_database_error(exc)
            raise
        finally:
            self._local.depth = 0
            if not self.is_sqlite and (broken or not sticky):
                self._release()

    def _connect(self, reuse_if_open: bool = False) -> None:
        """Connect; on a full disk (SQLite re-creates its -shm file with the first connection
        after the last one closed) let ``on_disk_full`` free room and try once more."""
        try:
            self.db.connect(reuse_if_open=reuse_if_open)
        except pw.OperationalError as exc:
            if not (errors.is_disk_full(exc) and self.on_disk_full and self.on_disk_full()):
                raise
            self.db.connect(reuse_if_open=reuse_if_open)

    def _release(self) -> None:
        """Give the thread's connection back to the pool (dropped there if it is broken)."""
        try:
            self.db.close()
        except Exception:
            log.debug("closing an index connection failed", exc_info=True)

    @contextlib.contextmanager
    def connection(self) -> Iterator[None]:
        """Hold a connection for a unit of work (nested units share it). Errors of the
        database leave it as ``davserver.errors`` exceptions, except inside :meth:`run`,
        which needs them as they are to decide on a retry (and translates them itself)."""
        try:
            with self._unit():
                yield
        except Exception as exc:
            if errors.is_database_error(exc) and not getattr(self._local, "in_run", False):
                raise errors.translate(exc) from exc
            raise

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (which opens its own transaction) in a unit of work, and run it again
        when it lost a deadlock, a serialization failure or a race on a unique key
        (bounded, with jittered pauses). Inside a transaction ``fn`` just runs: the
        outermost transaction is the one to retry. Other errors and the last failure leave
        as ``davserver.errors`` exceptions."""
        if self._depth() and self.db.in_transaction():
            return fn()
        pause = RETRY_BASE
        attempt = 1
        outer = getattr(self._local, "in_run", False)
        while True:
            self._local.in_run = True
            try:
                with self._unit():
                    return fn()
            except Exception as exc:
                if not errors.is_database_error(exc):
                    raise
                if attempt >= RETRY_ATTEMPTS or not errors.retryable(exc):
                    if outer:
                        raise  # the enclosing run decides
                    raise errors.translate(exc, attempt) from exc
                log.debug("index transaction retried (%s)", errors.sqlstate(exc))
            finally:
                self._local.in_run = outer
            time.sleep(random.uniform(0, pause))  # noqa: S311 - jitter, not a secret
            pause = min(pause * 2, RETRY_CAP)
            attempt += 1

    def identity(self) -> tuple[str, str]:
        """(instance id, data fingerprint) of this index (``davserver.index.instance``),
        read once: they change only while no server runs (a restore)."""
        cached: tuple[str, str] | None = getattr(self, "_identity", None)
        if cached is None:
            with self.connection():
                cached = self._identity = instance.read(self.db)
        return cached

    def schema_version(self) -> int:
        if not self.db.table_exists(SchemaInfo._meta.table_name):  # type: ignore[attr-defined]
            return 0
        row = SchemaInfo.get_or_none(SchemaInfo.key == "schema_version")
        return int(row.value) if row else 0

    def migrate(self) -> None:
        """Bring the schema to ``SCHEMA_VERSION``; refuse an index from a newer release."""
        with self.connection():
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
            self._release()
        close_all = getattr(self.db, "close_all", None)
        if close_all is not None:  # the pool's idle connections too
            close_all()


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


def connect(
    url: str, base_dir: str | Path = ".", settings: IndexSettings | None = None
) -> pw.Database:
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

        s = settings or IndexSettings()
        # Server-side limits for every session, so that a stuck lock or statement fails
        # (and is answered 503) instead of holding a request thread indefinitely.
        options = (
            f"-c statement_timeout={s.statement_timeout * 1000} "
            f"-c lock_timeout={s.lock_timeout * 1000}"
        )
        db: pw.Database = PooledPostgresqlDatabase(
            unquote((parts.path or "/").lstrip("/")) or None,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            connect_timeout=s.connect_timeout,
            options=options,
            application_name="davserver",
            # Notice a peer that vanished without closing (a crashed host) on idle
            # pooled connections too.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
            max_connections=s.pool_size,
            stale_timeout=300,
            # Waiting for a free pooled connection is bounded like connecting.
            timeout=s.connect_timeout,
        )
        return db
    raise ConfigError(
        "index.url: unsupported database URL scheme (use sqlite:/// or postgresql://)"
    )


def open_index(
    url: str,
    base_dir: str | Path = ".",
    migrate: bool = True,
    settings: IndexSettings | None = None,
) -> Index:
    """Connect, bind the models, and (by default) migrate the schema to the current version."""
    db = connect(url, base_dir, settings)
    database_proxy.initialize(db)
    index = Index(db)
    if migrate:
        try:
            index.migrate()
        except StorageError as exc:
            raise StorageError(f"cannot open the index database: {exc.reason}") from exc
    return index


is_disk_full = errors.is_disk_full


def now() -> float:
    return time.time()


__all__ = [
    "SCHEMA_VERSION",
    "Index",
    "IndexSettings",
    "connect",
    "errors",
    "is_disk_full",
    "models",
    "now",
    "open_index",
]

"""Copying a whole index from one database to another, table by table, in bounded memory.

Used by ``davserver backup`` (a PostgreSQL index exported to a SQLite file), ``restore`` and
``index migrate``. The source is read inside one snapshot (SQLite: one read transaction, WAL
readers see one point in time; PostgreSQL: one ``REPEATABLE READ READ ONLY`` transaction),
so a running server's later writes do not tear the copy. Rows stream through a server-side
cursor (PostgreSQL) or SQLite's own stepping cursor and are written in batches: memory holds
one batch, never a table.

The target gets its schema from the migrations (``Index.migrate``), then every table of
``models.ALL_MODELS`` in that order (parents before the rows that reference them). A
self-reference (``node.parent``) is written as NULL first and set in a second pass, so
the order of rows inside a table does not matter. The whole copy is one transaction on the
target: a failure leaves it as empty as it was.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import peewee as pw

from davserver.index import Index
from davserver.index.models import (
    ALL_MODELS,
    MIGRATION_MODELS,
    BaseModel,
    InlineBlob,
    UploadChunk,
    Version,
)

BATCH = 1000


def table_name(model: type[BaseModel]) -> str:
    return str(model._meta.table_name)  # type: ignore[attr-defined]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(model: type[BaseModel]) -> list[str]:
    return [f.column_name for f in model._meta.sorted_fields]  # type: ignore[attr-defined]


def _order(model: type[BaseModel]) -> str:
    pk: Any = model._meta.primary_key  # type: ignore[attr-defined]
    if isinstance(pk, pw.CompositeKey):
        names = [model._meta.fields[n].column_name for n in pk.field_names]  # type: ignore[attr-defined]
    else:
        names = [pk.column_name]
    return ", ".join(_q(n) for n in names)


def _bool_columns(model: type[BaseModel]) -> set[str]:
    return {
        f.column_name
        for f in model._meta.sorted_fields  # type: ignore[attr-defined]
        if isinstance(f, pw.BooleanField)
    }


def _self_refs(model: type[BaseModel]) -> list[str]:
    return [
        f.column_name
        for f in model._meta.sorted_fields  # type: ignore[attr-defined]
        if isinstance(f, pw.ForeignKeyField) and f.rel_model is model
    ]


def _sql(db: pw.Database, sql: str, params: Sequence[Any] = ()) -> Any:
    """``db.execute_sql`` (untyped in peewee)."""
    raw: Any = db
    return raw.execute_sql(sql, tuple(params))


def _raw_cursor(db: pw.Database, name: str | None = None) -> Any:
    raw: Any = db
    if name is None:
        return raw.cursor()
    return raw.connection().cursor(name=name, withhold=True)


def is_postgres(db: pw.Database) -> bool:
    return isinstance(db, pw.PostgresqlDatabase)


@contextlib.contextmanager
def snapshot(db: pw.Database) -> Iterator[None]:
    """One read-only transaction on ``db``: every read inside sees the same point in time."""
    db.connect(reuse_if_open=True)
    if is_postgres(db):
        _sql(db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    else:
        _sql(db, "BEGIN")
    try:
        yield
    finally:
        _sql(db, "ROLLBACK")  # nothing was written


def iter_rows(db: pw.Database, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
    """The rows of ``sql`` one batch at a time (a named, server-side cursor on PostgreSQL:
    psycopg2's ordinary cursor would fetch the whole result into memory first)."""
    if is_postgres(db):
        cur = _raw_cursor(db, f"copy_{uuid.uuid4().hex}")
        cur.itersize = BATCH
    else:
        cur = _raw_cursor(db)
    try:
        cur.execute(sql, tuple(params))
        while True:
            rows = cur.fetchmany(BATCH)
            if not rows:
                return
            yield from (tuple(r) for r in rows)
    finally:
        cur.close()


def our_tables(db: pw.Database) -> list[str]:
    """The tables of ours that exist in ``db``."""
    db.connect(reuse_if_open=True)
    present = set(db.get_tables())
    return [table_name(m) for m in ALL_MODELS if table_name(m) in present]


def count_rows(db: pw.Database, tables: Sequence[str] | None = None) -> dict[str, int]:
    """Rows per table of ours (those present in ``db``); call inside ``snapshot`` for counts
    of one point in time."""
    names = our_tables(db) if tables is None else list(tables)
    out: dict[str, int] = {}
    for name in names:
        row = _sql(db, f"SELECT COUNT(*) FROM {_q(name)}").fetchone()  # noqa: S608 - our names
        out[name] = int(row[0])
    return out


def non_empty_tables(db: pw.Database) -> list[str]:
    """Those of our tables in ``db`` that hold a row (an empty schema counts as empty)."""
    out = []
    for name in our_tables(db):
        if _sql(db, f"SELECT 1 FROM {_q(name)} LIMIT 1").fetchone():  # noqa: S608
            out.append(name)
    return out


def create_schema(db: pw.Database) -> None:
    """The current schema on an empty ``db``, made by the migrations as ``open_index`` would;
    the rows they write (``schemainfo``) are removed, since the copy brings its own."""
    with db.bind_ctx(MIGRATION_MODELS):
        Index(db).migrate()
    db.connect(reuse_if_open=True)
    for model in ALL_MODELS:
        _sql(db, f"DELETE FROM {_q(table_name(model))}")  # noqa: S608


def _write_batch(db: pw.Database, sql: str, rows: list[tuple[Any, ...]]) -> None:
    if is_postgres(db):
        from psycopg2.extras import execute_batch

        execute_batch(_raw_cursor(db), sql, rows, page_size=BATCH)
    else:
        _raw_cursor(db).executemany(sql, rows)


def copy_table(
    src: pw.Database,
    dst: pw.Database,
    model: type[BaseModel],
    advance: Callable[[int], None] = lambda n: None,
) -> int:
    """Copy every row of ``model``'s table from ``src`` to ``dst`` (inside the caller's
    snapshot on ``src`` and transaction on ``dst``); returns the rows copied."""
    name = table_name(model)
    cols = _columns(model)
    refs = set(_self_refs(model))
    select = f"SELECT {', '.join(_q(c) for c in cols)} FROM {_q(name)} ORDER BY {_order(model)}"  # noqa: S608
    marks = ", ".join([dst.param] * len(cols))
    insert = f"INSERT INTO {_q(name)} ({', '.join(_q(c) for c in cols)}) VALUES ({marks})"  # noqa: S608
    nulled = [i for i, c in enumerate(cols) if c in refs]
    # SQLite keeps a boolean as 0 or 1, which PostgreSQL refuses for a boolean column.
    flags = {i for i, c in enumerate(cols) if c in _bool_columns(model)}
    copied = 0
    batch: list[tuple[Any, ...]] = []
    for row in iter_rows(src, select):
        if nulled or flags:
            row = tuple(
                None if i in nulled else bool(v) if i in flags and v is not None else v
                for i, v in enumerate(row)
            )
        batch.append(row)
        if len(batch) >= BATCH:
            _write_batch(dst, insert, batch)
            copied += len(batch)
            advance(len(batch))
            batch = []
    if batch:
        _write_batch(dst, insert, batch)
        copied += len(batch)
        advance(len(batch))
    pk: Any = model._meta.primary_key  # type: ignore[attr-defined]
    for ref in refs:  # second pass: the self-references
        sel = (
            f"SELECT {_q(ref)}, {_q(pk.column_name)} FROM {_q(name)} "  # noqa: S608
            f"WHERE {_q(ref)} IS NOT NULL ORDER BY {_q(pk.column_name)}"
        )
        upd = (
            f"UPDATE {_q(name)} SET {_q(ref)} = {dst.param} "  # noqa: S608
            f"WHERE {_q(pk.column_name)} = {dst.param}"
        )
        batch = []
        for row in iter_rows(src, sel):
            batch.append(row)
            if len(batch) >= BATCH:
                _write_batch(dst, upd, batch)
                batch = []
        if batch:
            _write_batch(dst, upd, batch)
    if is_postgres(dst) and isinstance(pk, pw.AutoField):
        # Ids were copied as they are: move the sequence past them.
        _sql(
            dst,
            f"SELECT setval(pg_get_serial_sequence('{name}', '{pk.column_name}'), "  # noqa: S608
            f"COALESCE((SELECT MAX({_q(pk.column_name)}) FROM {_q(name)}), 0) + 1, false)",
        )
    return copied


def copy_index(
    src: pw.Database,
    dst: pw.Database,
    on_table: Callable[[str, int], Callable[[int], None]] | None = None,
) -> dict[str, int]:
    """Copy every table from ``src`` (read in one snapshot) into the empty ``dst`` (one
    transaction); returns the source's row counts in that snapshot, which the caller checks
    against ``count_rows(dst)`` after the commit. ``on_table(name, total)`` may return a
    progress callback for that table.

    A table the source does not have yet (``dir_tree`` of an index older than schema 11) is
    left empty: the source's ``schema_version`` is copied with the rest, so the target's
    next open runs that migration, which fills it."""
    create_schema(dst)
    copied: dict[str, int] = {}
    with snapshot(src):
        present = set(our_tables(src))
        models = [m for m in ALL_MODELS if table_name(m) in present]
        totals = count_rows(src, [table_name(m) for m in models])
        with dst.atomic():
            for model in models:
                name = table_name(model)
                advance = on_table(name, totals[name]) if on_table else (lambda n: None)
                copied[name] = copy_table(src, dst, model, advance)
    return totals


__all__ = [
    "copy_index",
    "copy_table",
    "count_rows",
    "create_schema",
    "iter_rows",
    "non_empty_tables",
    "our_tables",
    "referenced_blobs",
    "snapshot",
    "table_name",
]


def referenced_blobs(db: pw.Database) -> Iterator[tuple[str, int, bytes]]:
    """(blob id, plaintext size, header24) of every object the index references in the blob
    store — versions and upload chunks not stored inline — in id order, streamed."""
    version, chunk, inline = (table_name(m) for m in (Version, UploadChunk, InlineBlob))
    sql = (
        "SELECT blob_id, plain_size, header24 FROM ("  # noqa: S608 - our table names
        f"SELECT blob_id, plain_size, header24 FROM {_q(version)} UNION ALL "
        f"SELECT blob_id, plain_size, header24 FROM {_q(chunk)}) AS refs "
        f"WHERE blob_id NOT IN (SELECT blob_id FROM {_q(inline)}) ORDER BY blob_id"
    )
    last = None
    for blob_id, size, header in iter_rows(db, sql):
        if blob_id != last:  # COPY shares blobs: one row per object
            last = blob_id
            yield str(blob_id), int(size), bytes(header)

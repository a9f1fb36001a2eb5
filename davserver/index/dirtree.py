"""The ``dir_tree`` totals recomputed from the node rows: what the schema 11 migration fills
the table with, what ``davserver fsck`` compares it against and what ``fsck --repair``
writes back.

While the server runs, the table is kept by the ``propagate`` statement (``fast``), in the
transaction of every change; this module is the slow, whole-index counterpart, one pass over
the node table (ids, parents, kinds and sizes: no keys, so it needs no user's password).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import peewee as pw


@dataclass
class TreeDrift:
    """How ``dir_tree`` differs from the tree: directories without a row, rows of nodes that
    are not directories, and {directory id: (stored bytes, bytes below it)}."""

    missing: list[str] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)
    wrong_bytes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.missing or self.stray or self.wrong_bytes)


def _sql(db: pw.Database, text: str, params: tuple[object, ...] = ()) -> list[Any]:
    return list(db.execute_sql(text.replace("?", db.param), params).fetchall())  # type: ignore[no-untyped-call]


def _exec(db: pw.Database, text: str, params: tuple[object, ...] = ()) -> None:
    db.execute_sql(text.replace("?", db.param), params)  # type: ignore[no-untyped-call]


def expected_bytes(db: pw.Database) -> dict[str, int]:
    """{directory id: bytes of the current versions of all files below it}, for every
    directory (the roots and trash roots included), from one query of the node table."""
    parent: dict[str, str | None] = {}
    totals: dict[str, int] = {}
    files: list[tuple[str, int]] = []
    # A file counts with its current version's size (which its key envelope binds), so a
    # damaged ``node.size`` is fsck's ``node_size`` problem alone, not every ancestor's too.
    for node_id, parent_id, kind, size in _sql(
        db,
        "SELECT n.id, n.parent_id, n.kind, COALESCE(v.plain_size, n.size) "
        'FROM "node" AS n LEFT JOIN "version" AS v ON v.id = n.current_version',
    ):
        parent[node_id] = parent_id
        if kind == "dir":
            totals[node_id] = 0
        elif parent_id is not None:
            files.append((parent_id, int(size or 0)))
    for parent_id, size in files:
        if parent_id in totals:
            totals[parent_id] += size
    # Directories deepest first: each adds its total to its parent's once its own is done.
    depth: dict[str, int] = {}
    for start in totals:
        chain: list[str] = []
        node: str | None = start
        while node is not None and node not in depth and node not in chain:
            chain.append(node)
            node = parent.get(node)
        base = depth.get(node, 0) if node is not None else 0
        for i, n in enumerate(reversed(chain)):
            depth[n] = base + i + 1
    for dir_id in sorted(totals, key=lambda d: depth.get(d, 0), reverse=True):
        up = parent.get(dir_id)
        if up is not None and up in totals:
            totals[up] += totals[dir_id]
    return totals


def drift(db: pw.Database) -> TreeDrift:
    """Compare ``dir_tree`` with the totals the node rows give."""
    want = expected_bytes(db)
    have = {str(r[0]): int(r[1]) for r in _sql(db, 'SELECT dir_id, bytes FROM "dir_tree"')}
    out = TreeDrift()
    out.missing = sorted(d for d in want if d not in have)
    out.stray = sorted(d for d in have if d not in want)
    out.wrong_bytes = {
        d: (have[d], want[d]) for d in sorted(want) if d in have and have[d] != want[d]
    }
    return out


def repair(db: pw.Database) -> TreeDrift:
    """Within the caller's transaction: make ``dir_tree`` match the tree. Rows are added or
    corrected, and every row written gets its counter raised (a changed ETag: clients
    look again); rows of nodes that are not directories go. Returns what was wrong.

    On PostgreSQL the table is locked against writers first (a running server's
    ``propagate`` waits), so the totals written are those of the tree as it is; SQLite's
    write transaction excludes other writers already."""
    if not isinstance(db, pw.SqliteDatabase):
        _exec(db, 'LOCK TABLE "dir_tree" IN EXCLUSIVE MODE')
    found = drift(db)
    want = expected_bytes(db) if found.missing else {}
    for dir_id in found.stray:
        _exec(db, 'DELETE FROM "dir_tree" WHERE dir_id = ?', (dir_id,))
    for dir_id in found.missing:
        _exec(
            db,
            'INSERT INTO "dir_tree" (dir_id, changes, bytes) VALUES (?, 1, ?)',
            (dir_id, want[dir_id]),
        )
    for dir_id, (_, right) in found.wrong_bytes.items():
        _exec(
            db,
            'UPDATE "dir_tree" SET bytes = ?, changes = changes + 1 WHERE dir_id = ?',
            (right, dir_id),
        )
    return found


def fill(db: pw.Database) -> None:
    """Within the caller's transaction: ``dir_tree`` from scratch (the schema 11 migration)."""
    _exec(db, 'DELETE FROM "dir_tree"')
    rows = list(expected_bytes(db).items())
    for i in range(0, len(rows), 500):
        chunk = rows[i : i + 500]
        values = ", ".join(["(?, 0, ?)"] * len(chunk))
        params: list[object] = []
        for dir_id, size in chunk:
            params += [dir_id, size]
        _exec(db, f'INSERT INTO "dir_tree" (dir_id, changes, bytes) VALUES {values}', tuple(params))  # noqa: S608


__all__ = ["TreeDrift", "drift", "expected_bytes", "fill", "repair"]

"""Hand-written SQL for the hottest lookups: a node by id, a child by name MAC.

Path resolution runs one of these per path component on every request. Building the same
peewee query object each time costs about 0.5 ms of Python, several times the query itself
(measured with cProfile on a 4 KiB PUT: two thirds of its time was SQL generation), so these
keep one SQL string per database dialect and return plain tuples with the model's attribute
names. The results are read-only views; writes still go through the models.
"""

from __future__ import annotations

import secrets
from typing import Any, NamedTuple

import peewee as pw

from davserver.index.models import database_proxy

_COLUMNS = (
    "id",
    "parent_id",
    "kind",
    "name_mac",
    "name_ct",
    "key_env",
    "meta_ct",
    "current_version",
    "size",
    "created",
    "fileid",
)
# A directory's row comes with its ``dir_tree`` counters (0 for a file): its ETag and
# ``oc:size`` need no query of their own, in a listing or a walk.
_TREE_COLS = "COALESCE(t.changes, 0), COALESCE(t.bytes, 0)"
_FROM = 'FROM "node" AS n LEFT JOIN "dir_tree" AS t ON t.dir_id = n.id'


class NodeRow(NamedTuple):
    id: str
    parent_id: str | None
    kind: str
    name_mac: bytes
    name_ct: bytes
    key_env: bytes
    meta_ct: bytes | None
    current_version: str | None
    size: int
    created: float
    fileid: int = 0
    #: ``dir_tree`` of a directory: its change counter and the bytes of the files below it.
    changes: int = 0
    tree_bytes: int = 0


def new_fileid() -> int:
    """A random positive 63-bit integer: a node's Nextcloud FILEID (never sequential)."""
    return secrets.randbelow((1 << 63) - 1) + 1


_NODE_COLS = ", ".join("n." + c for c in _COLUMNS) + ", " + _TREE_COLS

# One SQL text per statement; "?" stands for the driver's placeholder (SQLite "?",
# psycopg2 "%s"), substituted once per dialect.
_TEMPLATES = {
    "by_id": f"SELECT {_NODE_COLS} {_FROM} WHERE n.id = ? AND n.owner_id = ?",
    "children": f"SELECT {_NODE_COLS} {_FROM} WHERE n.parent_id = ? AND n.owner_id = ?",
    "child": (
        f"SELECT {_NODE_COLS} {_FROM} WHERE n.parent_id = ? AND n.name_mac = ? AND n.owner_id = ?"
    ),
    "dir_changes": 'SELECT changes FROM "dir_tree" WHERE dir_id = ?',
    "dir_bytes": 'SELECT bytes FROM "dir_tree" WHERE dir_id = ?',
    "dir_tree_insert": 'INSERT INTO "dir_tree" (dir_id, changes, bytes) VALUES (?, 0, 0)',
    # (directory id, byte delta): something below this directory changed. Its counter and
    # every ancestor's go up by one and their byte totals by the delta, in one statement
    # (a recursive CTE that SQLite and PostgreSQL both run) in the caller's transaction.
    # UNION, not UNION ALL: a parent cycle (a damaged index, fsck's business) still ends.
    "propagate": (
        'WITH RECURSIVE up(id) AS (SELECT id FROM "node" WHERE id = ? '
        'UNION SELECT n.parent_id FROM "node" AS n JOIN up ON n.id = up.id '
        "WHERE n.parent_id IS NOT NULL) "
        'UPDATE "dir_tree" SET changes = changes + 1, bytes = bytes + ? '
        "WHERE dir_id IN (SELECT id FROM up)"
    ),
    "locks_at": (
        'SELECT token, path_mac, data_ct, expire FROM "lock" WHERE path_mac = ? AND expire >= ?'
    ),
    "locks_below": (
        'SELECT l.token, l.path_mac, l.data_ct, l.expire FROM "lock" AS l '
        'JOIN "lock_scope" AS s ON s.lock_id = l.token '
        "WHERE s.ancestor_mac = ? AND l.expire >= ?"
    ),
    "version": (
        "SELECT v.id, v.version_no, v.blob_id, v.plain_size, v.header24, v.ck_env, i.data "
        'FROM "version" AS v LEFT JOIN "inline_blob" AS i ON i.blob_id = v.blob_id '
        "WHERE v.id = ? AND v.node_id = ?"
    ),
    "inline_insert": 'INSERT INTO "inline_blob" (blob_id, data, digest) VALUES (?, ?, ?)',
    "user_trash": 'SELECT trash_id FROM "user" WHERE id = ?',
    # id, blob_id, version_no, created, labelled, plain_size: a file's versions, newest first.
    "history_of": (
        'SELECT id, blob_id, version_no, created, labelled, plain_size FROM "version" '
        "WHERE node_id = ? ORDER BY version_no DESC"
    ),
    "user_quota": 'SELECT usage_bytes, quota_bytes FROM "user" WHERE id = ?',
    # PostgreSQL only: the first statement of every write transaction (Index.write).
    "lock_user": 'SELECT usage_bytes, quota_bytes FROM "user" WHERE id = ? FOR NO KEY UPDATE',
    # PostgreSQL only: serialise the lock changes of one lock namespace (LockStore).
    "lock_advisory": "SELECT pg_advisory_xact_lock(?)",
    "usage_add": 'UPDATE "user" SET usage_bytes = usage_bytes + ? WHERE id = ?',
    "gc_insert": 'INSERT INTO "blob_gc" (blob_id, state, since) VALUES (?, ?, ?)',
    "gc_delete": 'DELETE FROM "blob_gc" WHERE blob_id = ?',
    "gc_dead": (
        "INSERT INTO \"blob_gc\" (blob_id, state, since) VALUES (?, 'dead', ?) "
        "ON CONFLICT (blob_id) DO UPDATE SET state = 'dead', since = excluded.since"
    ),
    "versions_of": 'SELECT id, blob_id, version_no FROM "version" WHERE node_id = ?',
    "version_delete": 'DELETE FROM "version" WHERE id = ?',
    "props_delete": 'DELETE FROM "dead_props" WHERE node_id = ?',
    "node_delete": 'DELETE FROM "node" WHERE id = ?',
    "node_move": (
        'UPDATE "node" SET parent_id = ?, key_env = ?, name_mac = ?, name_ct = ?, meta_ct = ? '
        "WHERE id = ?"
    ),
    "node_insert": (
        'INSERT INTO "node" (id, owner_id, parent_id, kind, name_mac, name_ct, key_env, '
        "meta_ct, current_version, size, created, fileid) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    "version_insert": (
        'INSERT INTO "version" (id, node_id, version_no, blob_id, plain_size, header24, '
        "ck_env, meta_ct, created, digest, labelled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, FALSE)"
    ),
    "node_set_version": 'UPDATE "node" SET current_version = ?, size = ? WHERE id = ?',
    # Device tokens (vault.tokens): the login by envelope id and user name, in one query,
    # and the re-check of a cached token session on every request.
    "token_login": (
        "SELECT e.kind, e.kdf_params, e.verifier, e.wrapped, e.scope_node, e.perms, "
        'e.expires, e.last_used, u.id, u.name, u.root_id FROM "envelope" AS e '
        'JOIN "user" AS u ON u.id = e.user_id WHERE e.id = ? AND u.name = ?'
    ),
    "token_check": (
        'SELECT kind, scope_node, perms, expires, last_used FROM "envelope" '
        "WHERE id = ? AND user_id = ?"
    ),
    "token_used": (
        'UPDATE "envelope" SET last_used = ? WHERE id = ? AND (last_used IS NULL OR last_used < ?)'
    ),
    "node_set_version_meta": (
        'UPDATE "node" SET current_version = ?, size = ?, meta_ct = ? WHERE id = ?'
    ),
}
# PostgreSQL's own text of a statement, where the common one plans badly there. The
# ancestor walk steps by a scalar subquery (an index lookup per level) and the update
# matches ``= ANY(ARRAY(...))``: with ``IN (SELECT ...)`` the planner guessed ~100 ancestors
# and hash-joined whole tables, 6-15 ms per write on a 30,000-directory index whose
# statistics were not yet gathered (0.2-0.4 ms this way, measured; SQLite has no arrays and
# runs the common text in ~40 us).
_PG_TEMPLATES = {
    "propagate": (
        "WITH RECURSIVE up(id) AS (SELECT CAST(? AS VARCHAR(32)) "
        'UNION SELECT (SELECT n.parent_id FROM "node" AS n WHERE n.id = up.id) '
        "FROM up WHERE up.id IS NOT NULL) "
        'UPDATE "dir_tree" SET changes = changes + 1, bytes = bytes + ? '
        "WHERE dir_id = ANY(ARRAY(SELECT id FROM up))"
    ),
}
_sql_cache: dict[tuple[str, str], str] = {}


def _sql(kind: str) -> str:
    param = database_proxy.obj.param
    key = (kind, param)
    sql = _sql_cache.get(key)
    if sql is None:
        template = _TEMPLATES[kind]
        if param != "?":  # PostgreSQL (psycopg2's placeholder)
            template = _PG_TEMPLATES.get(kind, template)
        sql = _sql_cache[key] = template.replace("?", param)
    return sql


def execute(kind: str, params: tuple[object, ...]) -> Any:
    """Run one of the statements above; returns the cursor."""
    return database_proxy.obj.execute_sql(_sql(kind), params)


def batch(statements: list[tuple[str, tuple[object, ...]]]) -> None:
    """Run several of the statements above (none returning rows), in order. On PostgreSQL
    they go as one multi-statement request (psycopg2 binds client-side): one round trip
    instead of one each, which matters while a transaction holds the user's row and every
    other writer of that user waits for it. SQLite runs them one by one (in process)."""
    if not statements:
        return
    db = database_proxy.obj
    if isinstance(db, pw.SqliteDatabase) or len(statements) == 1:
        for kind, params in statements:
            db.execute_sql(_sql(kind), params)
        return
    sql = ";\n".join(_sql(kind) for kind, _ in statements)
    db.execute_sql(sql, tuple(p for _, params in statements for p in params))


class TokenRow(NamedTuple):
    """A token envelope with its user (``token_login``)."""

    kind: str
    kdf_params: bytes
    verifier: bytes
    wrapped: bytes
    scope_node: str | None
    perms: str | None
    expires: float | None
    last_used: float | None
    user_id: str
    user_name: str
    root_id: str


def token_login(envelope_id: str, user_name: str) -> TokenRow | None:
    """The envelope ``envelope_id`` of the user named ``user_name``, or None."""
    r = execute("token_login", (envelope_id, user_name)).fetchone()
    if r is None:
        return None
    return TokenRow(r[0], bytes(r[1]), bytes(r[2]), bytes(r[3]), *r[4:])


TokenCheck = tuple[str, str | None, str | None, float | None, float | None]


def token_check(envelope_id: str, user_id: str) -> TokenCheck | None:
    """(kind, scope_node, perms, expires, last_used) of a token envelope of this user."""
    r = execute("token_check", (envelope_id, user_id)).fetchone()
    return None if r is None else (r[0], r[1], r[2], r[3], r[4])


def _row(values: tuple[object, ...] | None) -> NodeRow | None:
    if values is None:
        return None
    v = list(values)
    for i in (3, 4, 5, 6):  # PostgreSQL returns bytea as memoryview
        item = v[i]
        if isinstance(item, memoryview):
            v[i] = item.tobytes()
    return NodeRow(*v)  # type: ignore[arg-type]


def node_by_id(node_id: str, owner_id: str) -> NodeRow | None:
    cur = database_proxy.obj.execute_sql(_sql("by_id"), (node_id, owner_id))
    return _row(cur.fetchone())


def child_by_mac(parent_id: str, name_mac: bytes, owner_id: str) -> NodeRow | None:
    cur = database_proxy.obj.execute_sql(_sql("child"), (parent_id, name_mac, owner_id))
    return _row(cur.fetchone())


def children_by_macs(
    keys: list[tuple[str, bytes]], owner_id: str
) -> dict[tuple[str, bytes], NodeRow]:
    """The child rows for several (parent id, name MAC) pairs, from one statement (one
    snapshot): {(parent id, name MAC): row} for those that exist."""
    param = database_proxy.obj.param
    where = " OR ".join([f"(n.parent_id = {param} AND n.name_mac = {param})"] * len(keys))
    # SQLite without statistics took the owner index and read every node of the user
    # (~135 us of a GET's ~500 us with 500 files); "+" keeps it off that index, so each
    # OR term is one lookup in the (parent, name MAC) index. PostgreSQL has no unary "+"
    # for text, and its planner picks the unique index by itself.
    owner = "+n.owner_id" if param == "?" else "n.owner_id"
    sql = f"SELECT {_NODE_COLS} {_FROM} WHERE {owner} = {param} AND ({where})"
    params: list[object] = [owner_id]
    for parent_id, mac in keys:
        params += [parent_id, mac]
    out: dict[tuple[str, bytes], NodeRow] = {}
    for values in database_proxy.obj.execute_sql(sql, tuple(params)).fetchall():
        row = _row(values)
        if row is not None and row.parent_id is not None:
            out[(row.parent_id, row.name_mac)] = row
    return out


def children(parent_id: str, owner_id: str) -> list[NodeRow]:
    """Every child row of a directory (one query; a listing's whole index cost)."""
    cur = database_proxy.obj.execute_sql(_sql("children"), (parent_id, owner_id))
    rows = cur.fetchall()
    if rows and isinstance(rows[0][3], memoryview):
        return [r for r in map(_row, rows) if r is not None]
    return [NodeRow(*r) for r in rows]


def dir_changes(dir_id: str) -> int:
    """The change counter of a directory (its ETag; 0 if it has no ``dir_tree`` row)."""
    row = database_proxy.obj.execute_sql(_sql("dir_changes"), (dir_id,)).fetchone()
    return int(row[0]) if row else 0


def dir_bytes(dir_id: str) -> int:
    """The bytes of all files below a directory (``oc:size``)."""
    row = database_proxy.obj.execute_sql(_sql("dir_bytes"), (dir_id,)).fetchone()
    return int(row[0]) if row else 0


#: Longest ancestor chain that ``propagate_known`` names in an IN list; longer ones walk.
KNOWN_CHAIN_MAX = 64


def propagate_known(chain: tuple[str, ...], delta: int) -> tuple[str, tuple[object, ...]]:
    """``propagate`` for a directory whose ancestors the caller resolved in this transaction
    (``chain``: the directory, then its parent, ... up to the top), as a statement for
    ``batch``: one indexed UPDATE of those rows, no walk. On PostgreSQL the recursive walk
    cost ~0.4 ms more per write (planning and a subquery per level, ~15% of a small PUT);
    on SQLite it is about even."""
    if len(chain) > KNOWN_CHAIN_MAX:
        return ("propagate", (chain[0], delta))
    kind = f"propagate_{len(chain)}"
    if kind not in _TEMPLATES:
        marks = ", ".join(["?"] * len(chain))
        _TEMPLATES[kind] = (
            'UPDATE "dir_tree" SET changes = changes + 1, bytes = bytes + ? '
            f"WHERE dir_id IN ({marks})"
        )
    return (kind, (delta, *chain))


def propagate(dir_id: str, delta: int = 0) -> None:
    """Within the caller's transaction: something below ``dir_id`` changed (by ``delta``
    bytes); count it there and in every ancestor. ``("propagate", (dir_id, delta))`` is the
    same for ``batch``."""
    database_proxy.obj.execute_sql(_sql("propagate"), (dir_id, delta))


class LockRow(NamedTuple):
    token: str
    path_mac: bytes
    data_ct: bytes
    expire: float


def _lock_rows(kind: str, mac: bytes, now: float) -> list[LockRow]:
    rows = database_proxy.obj.execute_sql(_sql(kind), (mac, now)).fetchall()
    return [
        LockRow(r[0], bytes(r[1]), bytes(r[2]), float(r[3]))  # bytea arrives as memoryview
        for r in rows
    ]


def locks_at(path_mac: bytes, now: float) -> list[LockRow]:
    """Live locks rooted at the path with this MAC (every request checks them)."""
    return _lock_rows("locks_at", path_mac, now)


def locks_below(ancestor_mac: bytes, now: float) -> list[LockRow]:
    """Live locks strictly below the path with this MAC."""
    return _lock_rows("locks_below", ancestor_mac, now)


def user_quota(user_id: str) -> tuple[int, int | None]:
    """(usage in bytes, the user's own quota or None for the server default)."""
    row = execute("user_quota", (user_id,)).fetchone()
    return int(row[0]), (None if row[1] is None else int(row[1]))


class VersionRow(NamedTuple):
    id: str
    version_no: int
    blob_id: str
    plain_size: int
    header24: bytes
    ck_env: bytes
    inline: bytes | None  # the blob itself, when it is kept in the index


def version(version_id: str, node_id: str) -> VersionRow | None:
    """What a read needs of one version (every GET asks)."""
    r = execute("version", (version_id, node_id)).fetchone()
    if r is None:
        return None
    inline = None if r[6] is None else bytes(r[6])
    return VersionRow(r[0], int(r[1]), r[2], int(r[3]), bytes(r[4]), bytes(r[5]), inline)


# The failed-login check runs on every authenticated request (davserver.vault.throttle).
_TEMPLATES["login_failures"] = (
    'SELECT key_mac, at FROM "login_failure" WHERE key_mac IN (?, ?, ?) AND at > ?'
)


def login_failures(macs: tuple[bytes, bytes, bytes], since: float) -> list[tuple[bytes, float]]:
    """(key MAC, time) of every failed login after ``since`` against one of three keys."""
    rows = execute("login_failures", (*macs, since)).fetchall()
    return [(bytes(r[0]), float(r[1])) for r in rows]

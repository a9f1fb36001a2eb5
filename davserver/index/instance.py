"""Facts that name an index: the instance id in every ``oc:id`` and the data fingerprint.

Both live in ``schema_info`` and are created with the index (the schema 11 migration gives an older
index its own). The **instance id** is what Nextcloud calls ``instanceid``: ``oc`` and ten
lowercase letters or digits, random; a file's ``oc:id`` is its fileid as eight or more
digits followed by it, so ids of two servers never collide in a client's database. The
**data fingerprint** (``oc:data-fingerprint`` on the root) tells a sync client whether the
data behind the account is still the same: a restore from a backup gives the index a new
one (``davserver backup restore``), and a client that sees it change does not take the
files that the older backup lacks for deletions to propagate, but keeps and re-uploads them.
"""

from __future__ import annotations

import secrets
import string

import peewee as pw

INSTANCE_ID = "instanceid"
DATA_FINGERPRINT = "data_fingerprint"
_ALPHABET = string.ascii_lowercase + string.digits


def new_instance_id() -> str:
    return "oc" + "".join(secrets.choice(_ALPHABET) for _ in range(10))


def new_fingerprint() -> str:
    return secrets.token_hex(16)


def _get(db: pw.Database, key: str) -> str | None:
    sql = 'SELECT value FROM "schema_info" WHERE key = ?'.replace("?", db.param)
    row = db.execute_sql(sql, (key,)).fetchone()  # type: ignore[no-untyped-call]
    return None if row is None else str(row[0])


def _put(db: pw.Database, key: str, value: str) -> None:
    sql = (
        'INSERT INTO "schema_info" (key, value) VALUES (?, ?) '
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    ).replace("?", db.param)
    db.execute_sql(sql, (key, value))  # type: ignore[no-untyped-call]


def ensure(db: pw.Database) -> None:
    """Give the index an instance id and a data fingerprint if it has none yet."""
    if _get(db, INSTANCE_ID) is None:
        _put(db, INSTANCE_ID, new_instance_id())
    if _get(db, DATA_FINGERPRINT) is None:
        _put(db, DATA_FINGERPRINT, new_fingerprint())


def renew_fingerprint(db: pw.Database) -> str:
    """A new data fingerprint (after a restore); returns it."""
    value = new_fingerprint()
    _put(db, DATA_FINGERPRINT, value)
    return value


def read(db: pw.Database) -> tuple[str, str]:
    """(instance id, data fingerprint); empty strings for an index that has none."""
    return _get(db, INSTANCE_ID) or "", _get(db, DATA_FINGERPRINT) or ""


__all__ = ["ensure", "new_fingerprint", "new_instance_id", "read", "renew_fingerprint"]

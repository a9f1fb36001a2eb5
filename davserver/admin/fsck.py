"""``davserver fsck``: check that the index and the blob store agree, with or without a key.

Keyless checks (no password; read-only and safe on a live server):

- every version's blob exists with exactly the ciphertext length of DESIGN §5
  (``blobfmt.ciphertext_size``), whether in the blob store or kept in the index (inline);
  the blobs of waiting upload chunks likewise;
- every node's parent exists, is a directory and has the same owner; every parentless node is
  its owner's root or its owner's trash directory; every node is reachable from one of the
  two (no cycles); ``(parent, name_mac)`` is unique; every file points at a version of its
  own whose size it records; every node has a positive ``fileid`` that no other node has;
- the trash: each ``trash_item`` row names a direct child of its owner's trash directory,
  and each direct child of a trash directory has its ``trash_item`` row (items a scoped
  session deleted and the owner has not folded yet, DESIGN §13.4, are ordinary here);
- every identity public key is bound to its user by its pepper-keyed MAC (DESIGN §13.3);
- blob reference counts: the schema keeps no counter, a blob's count *is* the number of
  version and chunk rows naming it, so what can disagree is its tracking row (``blob_gc``):
  a blob queued as unreferenced ("dead") or as an upload in flight while rows reference it
  has a wrong count. Several version rows naming one blob is normal (COPY, and restoring an
  old version, share the blob);
- ``dir_tree``: every directory has its row and no other node has one, and each row's byte
  total (``oc:size``) is the sum of the sizes of the files below that directory;
- per-user usage totals equal the sum of ``plain_size`` over every version row of the
  user's nodes — the tree and the trash, current and older versions alike; every user has a
  password envelope; a version's ``labelled`` flag and its sealed label go together;
- orphans: objects in the store (and blobs in the index) that nothing references or tracks,
  and partial uploads idle past ``gc.upload_grace`` that nothing tracks, with their age.

``davserver.admin.deep`` (with one user's password, through ``Vault.login``) also unwraps
every key of that user's tree and trash and authenticates every name, metadata record, property set,
checksum record and every segment of every version, using the session's and the reader's own
code; its problems join this module's report.

``repair`` fixes only what is derivable from the rows — usage totals, ``dir_tree`` rows and
totals, node sizes (from the
version, whose size its key envelope binds), tracking rows (removed where rows reference the
blob, added for orphans so that gc collects them after its grace period) — and never touches
ciphertext. Everything else is reported with its ids. Problems never carry names or paths.

Memory stays bounded: rows are read in keyset-paginated batches, the store's listing is
matched against the index a batch at a time, reachability is one recursive query that the
database evaluates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import peewee as pw

from davserver import crypto
from davserver.admin import ProgressFactory, no_progress
from davserver.blobs import BlobStat
from davserver.blobs.local import LocalBlobStore
from davserver.crypto import blobfmt
from davserver.crypto import identity as crypto_identity
from davserver.errors import BlobNotFound, StorageError
from davserver.index import dirtree
from davserver.index.models import BlobGC, database_proxy
from davserver.vault import Vault, identity

log = logging.getLogger(__name__)

BATCH = 1000
STAT_THREADS = 8  # object-store HEAD requests in flight at once
MAX_PARENT_HOPS = 4096  # when classifying an unreachable node
# Which of a batch of listed blob ids the index knows ("@": one placeholder per id).
_KNOWN_SQL = (
    'SELECT blob_id FROM "version" WHERE blob_id IN (@) '
    'UNION SELECT blob_id FROM "upload_chunk" WHERE blob_id IN (@) '
    'UNION SELECT blob_id FROM "blob_gc" WHERE blob_id IN (@)'
)
# What a user's usage total must be ("user" is the outer row: a SELECT or an UPDATE of it).
_USAGE_SQL = (
    'SELECT COALESCE(SUM(v.plain_size), 0) FROM "version" AS v JOIN "node" AS n '
    'ON n.id = v.node_id WHERE n.owner_id = "user".id'
)
# The nodes every walk starts from: each user's root and trash directory (owned by that user:
# a foreign node named as someone's root is no start; check_users reports it).
_TOPS = (
    'SELECT n.id FROM "node" AS n JOIN "user" AS u ON n.owner_id = u.id '
    "AND (n.id = u.root_id OR n.id = u.trash_id) WHERE n.parent_id IS NULL"
)


@dataclass
class Problem:
    """One thing found wrong. ``ids`` names rows and objects by id only."""

    kind: str
    ids: dict[str, str]
    detail: str
    repairable: bool = False
    repaired: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "ids": self.ids,
            "detail": self.detail,
            "repairable": self.repairable,
            "repaired": self.repaired,
        }


@dataclass
class FsckReport:
    problems: list[Problem] = field(default_factory=list)
    #: What was looked at: users, nodes, versions, chunks, objects (listed), inline blobs.
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def remaining(self) -> list[Problem]:
        """Problems still there (not repaired)."""
        return [p for p in self.problems if not p.repaired]

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n

    def to_json(self) -> dict[str, Any]:
        return {
            "problems": [p.to_json() for p in self.problems],
            "checked": dict(self.checked),
            "clean": not self.remaining,
        }


def _batches(it: Iterable[Any], n: int = BATCH) -> Iterator[list[Any]]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


def _sql(text: str) -> str:
    return text.replace("?", database_proxy.obj.param)


def _q(text: str, params: Sequence[object] = ()) -> Any:
    """A cursor over a read-only statement ("?" placeholders)."""
    return database_proxy.obj.execute_sql(_sql(text), tuple(params))


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _bytes(v: object) -> bytes:
    return v.tobytes() if isinstance(v, memoryview) else bytes(v)  # type: ignore[call-overload]


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class Fsck:
    """One run of the checks over a vault's index and blob store."""

    def __init__(
        self, vault: Vault, repair: bool = False, progress: ProgressFactory = no_progress
    ) -> None:
        self.vault = vault
        self.repair = repair
        self.progress = progress
        self.report = FsckReport()

    def _add(
        self, kind: str, ids: dict[str, str], detail: str, repairable: bool = False
    ) -> Problem:
        p = Problem(kind, ids, detail, repairable)
        self.report.problems.append(p)
        return p

    def _fixed(self, p: Problem, done: bool) -> None:
        p.repaired = bool(done)

    # -- the keyless run -------------------------------------------------------------------
    def run(self) -> FsckReport:
        """Every keyless check, repairing as it goes if asked. Raises ``StorageError`` when
        the index or the store cannot be reached."""
        try:
            with self.vault.index.connection():
                self.check_users()
                self.check_identity_keys()
                self.check_nodes()
                self.check_reachable()
                self.check_duplicate_names()
                self.check_fileids()
                self.check_trash()
                self.check_usage()
                self.check_dir_tree()
                self.check_versions()
                self.check_labels()
                self.check_chunks()
                self.check_tracking()
                self.check_inline_orphans()
                self.check_store_orphans()
                self.check_partial_uploads()
        except (pw.OperationalError, pw.InterfaceError) as exc:
            raise StorageError("cannot read the index database") from exc
        return self.report

    def check_users(self) -> None:
        rows = _q(
            "SELECT u.id, u.root_id, r.id, r.owner_id, r.parent_id, r.kind, "
            '(SELECT COUNT(*) FROM "envelope" AS e WHERE e.user_id = u.id AND e.kind = ?), '
            "u.trash_id, t.id, t.owner_id, t.parent_id, t.kind "
            'FROM "user" AS u LEFT JOIN "node" AS r ON r.id = u.root_id '
            'LEFT JOIN "node" AS t ON t.id = u.trash_id',
            ("password",),
        ).fetchall()  # one row per user: users are few
        for uid, root_id, rid, rowner, rparent, rkind, envs, trash_id, *trash in rows:
            self.report.count("users")
            if not envs:
                self._add(
                    "no_password_envelope", {"user": uid}, "the user has no password envelope"
                )
            if rid is None:
                self._add(
                    "root_missing",
                    {"user": uid, "node": root_id or ""},
                    "root directory is missing",
                )
            elif rowner != uid or rparent is not None or rkind != "dir":
                self._add(
                    "root_invalid",
                    {"user": uid, "node": rid},
                    "the root is not a parentless directory of its user",
                )
            if trash_id is None:
                continue  # no trash yet: it is made at the first DELETE that keeps anything
            tid, towner, tparent, tkind = trash
            if tid is None:
                self._add(
                    "trash_missing", {"user": uid, "node": trash_id}, "trash directory is missing"
                )
            elif towner != uid or tparent is not None or tkind != "dir" or tid == rid:
                self._add(
                    "trash_invalid",
                    {"user": uid, "node": tid},
                    "the trash is not a parentless directory of its user apart from the root",
                )

    def check_identity_keys(self) -> None:
        """Every identity public key is bound to its user by the pepper-keyed MAC (DESIGN
        §13.3): one that is not was swapped in, and scoped sessions refuse to seal to it.
        A user without a pair yet (from before schema 10) gets it at the next password login;
        items scoped sessions deleted and the owner has not folded yet are counted."""
        bind = self.vault.server_key(identity.BIND_PURPOSE)
        rows = _q('SELECT id, id_pk, id_pk_mac FROM "user" WHERE id_pk IS NOT NULL').fetchall()
        for uid, pk, mac in rows:
            self.report.count("identity keys")
            try:
                crypto_identity.check_pk(bind, bytes.fromhex(uid), _bytes(pk), _bytes(mac or b""))
            except crypto.AuthenticationFailed:
                self._add(
                    "identity_key_unbound",
                    {"user": uid},
                    "the identity public key is not the one bound to this user",
                )
        pending = _q('SELECT COUNT(*) FROM "trash_item" WHERE pending = ?', (True,)).fetchone()
        self.report.count("pending trash items", int(pending[0] or 0))

    def check_nodes(self) -> None:
        total = _q('SELECT COUNT(*) FROM "node"').fetchone()[0]
        last = ""
        with self.progress("nodes", int(total)) as bar:
            while True:
                rows = _q(
                    "SELECT n.id, n.owner_id, n.parent_id, n.kind, n.current_version, n.size, "
                    "p.id, p.owner_id, p.kind, v.id, v.node_id, v.plain_size, "
                    "u.root_id, u.trash_id "
                    'FROM "node" AS n LEFT JOIN "node" AS p ON p.id = n.parent_id '
                    'LEFT JOIN "user" AS u ON u.id = n.owner_id '
                    'LEFT JOIN "version" AS v ON v.id = n.current_version '
                    "WHERE n.id > ? ORDER BY n.id LIMIT ?",
                    (last, BATCH),
                ).fetchall()
                if not rows:
                    return
                last = rows[-1][0]
                for row in rows:
                    self._check_node(*row)
                bar.advance(len(rows))
                self.report.count("nodes", len(rows))

    def _check_node(
        self,
        nid: str,
        owner: str,
        parent_id: str | None,
        kind: str,
        current: str | None,
        size: int,
        pid: str | None,
        powner: str | None,
        pkind: str | None,
        vid: str | None,
        vnode: str | None,
        vsize: int | None,
        root_id: str | None,
        trash_id: str | None,
    ) -> None:
        if parent_id is None:
            if nid != root_id and nid != trash_id:
                self._add(
                    "parentless", {"node": nid}, "a node without parent that is no root or trash"
                )
        elif pid is None:
            self._add("parent_missing", {"node": nid, "parent": parent_id}, "its parent is gone")
        elif powner != owner:
            self._add(
                "parent_owner", {"node": nid, "parent": parent_id}, "its parent has another owner"
            )
        elif pkind != "dir":
            self._add("parent_not_dir", {"node": nid, "parent": parent_id}, "its parent is a file")
        if kind != "file":
            return
        if current is None or vid is None or vnode != nid:
            self._add(
                "no_current_version",
                {"node": nid, "version": current or ""},
                "the file's current version is missing or belongs to another node",
            )
        elif vsize != size:
            p = self._add(
                "node_size",
                {"node": nid, "version": vid},
                f"the node records {size} bytes, its current version {vsize}",
                repairable=True,
            )
            if self.repair:
                with self.vault.index.atomic():
                    n = _q(
                        'UPDATE "node" SET size = ? WHERE id = ? AND current_version = ? '
                        "AND size = ?",
                        (vsize, nid, vid, size),
                    ).rowcount
                self._fixed(p, n == 1)

    def check_reachable(self) -> None:
        """Every node reachable from its owner's root or trash directory; what is not lies
        in a cycle or below a node whose parent is gone (reported already).

        First a count: walking down from the roots with UNION ALL needs no set of visited
        nodes (a cycle cannot be reached from a root, since every node has one parent), so
        the database holds only the walk's frontier. Only when the count falls short are
        the unreachable nodes looked up, with the set the lookup needs."""
        reached, total = _q(
            "WITH RECURSIVE reach(id) AS ("  # noqa: S608 - constants
            f"{_TOPS} UNION ALL "
            'SELECT c.id FROM "node" AS c JOIN reach AS r ON c.parent_id = r.id) '
            'SELECT (SELECT COUNT(*) FROM reach), (SELECT COUNT(*) FROM "node")'
        ).fetchone()
        if int(reached) == int(total):
            return
        cur = _q(
            "WITH RECURSIVE reach(id) AS ("  # noqa: S608 - constants
            f"{_TOPS} UNION "
            'SELECT c.id FROM "node" AS c JOIN reach AS r ON c.parent_id = r.id) '
            'SELECT n.id FROM "node" AS n WHERE n.parent_id IS NOT NULL '
            "AND n.id NOT IN (SELECT id FROM reach) ORDER BY n.id"
        )
        while rows := cur.fetchmany(BATCH):
            for (nid,) in rows:
                self._classify_unreachable(nid)

    def _classify_unreachable(self, nid: str) -> None:
        seen = [nid]
        at = nid
        for _ in range(MAX_PARENT_HOPS):
            row = _q('SELECT parent_id FROM "node" WHERE id = ?', (at,)).fetchone()
            parent = row[0] if row else None
            if parent is None:
                return  # a parentless node or a missing parent: reported by check_nodes
            if _q('SELECT 1 FROM "node" WHERE id = ?', (parent,)).fetchone() is None:
                if at != nid:  # below a node whose parent is gone
                    self._add(
                        "unreachable",
                        {"node": nid, "below": at},
                        "not reachable from its root: an ancestor's parent is gone",
                    )
                return
            if parent in seen:
                self._add("cycle", {"node": nid}, "its ancestors form a cycle")
                return
            seen.append(parent)
            at = parent
        self._add("cycle", {"node": nid}, f"more than {MAX_PARENT_HOPS} ancestors")

    def check_duplicate_names(self) -> None:
        cur = _q(
            'SELECT parent_id, COUNT(*) FROM "node" WHERE parent_id IS NOT NULL '
            "GROUP BY parent_id, name_mac HAVING COUNT(*) > 1"
        )
        while rows := cur.fetchmany(BATCH):
            for parent, n in rows:
                self._add(
                    "duplicate_name",
                    {"parent": parent},
                    f"{n} members of the directory share one name MAC",
                )

    def check_fileids(self) -> None:
        """Every node has a positive ``fileid`` (the FILEID clients keep) that no other node
        shares; the unique index says so too, unless it was dropped or never built."""
        cur = _q('SELECT id FROM "node" WHERE fileid IS NULL OR fileid <= 0 ORDER BY id')
        while rows := cur.fetchmany(BATCH):
            for (nid,) in rows:
                self._add("fileid_missing", {"node": nid}, "the node has no valid fileid")
        cur = _q(
            'SELECT n.fileid, n.id FROM "node" AS n WHERE n.fileid IN (SELECT fileid FROM '
            '"node" WHERE fileid IS NOT NULL GROUP BY fileid HAVING COUNT(*) > 1) '
            "ORDER BY n.fileid, n.id"
        )
        while rows := cur.fetchmany(BATCH):
            for fileid, nid in rows:
                self._add(
                    "fileid_duplicate",
                    {"node": nid, "fileid": str(fileid)},
                    "another node has the same fileid",
                )

    def check_trash(self) -> None:
        """``trash_item`` rows and the children of the trash directories describe the same
        nodes: each row names a direct child of its owner's trash, each child has a row."""
        cur = _q(
            "SELECT t.node_id, t.owner_id, n.id, n.owner_id, n.parent_id, u.trash_id "
            'FROM "trash_item" AS t LEFT JOIN "node" AS n ON n.id = t.node_id '
            'LEFT JOIN "user" AS u ON u.id = t.owner_id ORDER BY t.node_id'
        )
        while rows := cur.fetchmany(BATCH):
            for nid, owner, found, nowner, parent, trash_id in rows:
                self.report.count("trash items")
                ids = {"node": nid, "user": owner}
                if found is None:
                    self._add("trash_item_orphan", ids, "a trash item whose node is gone")
                elif nowner != owner:
                    self._add("trash_item_owner", ids, "the trash item's node has another owner")
                elif trash_id is None or parent != trash_id:
                    self._add(
                        "trash_item_misplaced",
                        {**ids, "parent": parent or ""},
                        "the trash item's node is not a direct child of its owner's trash",
                    )
        cur = _q(
            'SELECT n.id, u.id FROM "node" AS n JOIN "user" AS u ON n.parent_id = u.trash_id '
            'WHERE NOT EXISTS (SELECT 1 FROM "trash_item" AS t WHERE t.node_id = n.id) '
            "ORDER BY n.id"
        )
        while rows := cur.fetchmany(BATCH):
            for nid, uid in rows:
                self._add(
                    "trash_untracked",
                    {"node": nid, "user": uid},
                    "a node in the trash without its trash item (no origin record)",
                )

    def check_usage(self) -> None:
        """``usage_bytes`` is what the user's versions hold: every version row of every node
        of theirs (the tree and the trash, the current version and the older ones). Rows
        that share a blob count once each, as the quota does."""
        rows = _q(f'SELECT id, usage_bytes, ({_USAGE_SQL}) FROM "user"').fetchall()  # noqa: S608
        for uid, recorded, actual in rows:
            if int(recorded) == int(actual):
                continue
            p = self._add(
                "usage",
                {"user": uid},
                f"usage total is {recorded} bytes, the user's versions hold {actual}",
                repairable=True,
            )
            if self.repair:
                with self.vault.index.atomic():
                    # One statement: a write committed meanwhile is counted either way.
                    sql = f'UPDATE "user" SET usage_bytes = ({_USAGE_SQL}) WHERE id = ?'  # noqa: S608
                    _q(sql, (uid,))
                self._fixed(p, True)

    def check_dir_tree(self) -> None:
        """``dir_tree`` (directory ETags and ``oc:size``): one row per directory, none for
        anything else, each with the bytes of the files below it (after ``check_nodes``,
        whose size repair it builds on). The change counters cannot be checked (any value
        is valid); a repaired row's goes up, so clients look at that directory again."""
        db = database_proxy.obj
        found = dirtree.drift(db)
        problems = [
            self._add("dir_tree_missing", {"node": d}, "a directory has no dir_tree row", True)
            for d in found.missing
        ]
        problems += [
            self._add("dir_tree_stray", {"node": d}, "a dir_tree row of no directory", True)
            for d in found.stray
        ]
        problems += [
            self._add(
                "dir_bytes",
                {"node": d},
                f"dir_tree records {have} bytes below the directory, its files hold {want}",
                repairable=True,
            )
            for d, (have, want) in found.wrong_bytes.items()
        ]
        if problems and self.repair:
            with self.vault.index.atomic():
                dirtree.repair(db)
            for p in problems:
                self._fixed(p, True)

    # -- blobs -----------------------------------------------------------------------------
    def check_versions(self) -> None:
        total = _q('SELECT COUNT(*) FROM "version"').fetchone()[0]
        self._check_blob_rows(
            "versions",
            int(total),
            "SELECT v.id, v.node_id, v.blob_id, v.plain_size, v.header24, "
            "i.blob_id, LENGTH(i.data) "
            'FROM "version" AS v LEFT JOIN "inline_blob" AS i ON i.blob_id = v.blob_id '
            "WHERE v.id > ? ORDER BY v.id LIMIT ?",
            ("version", "node"),
        )

    def check_labels(self) -> None:
        """The clear ``labelled`` flag (expiry reads it without a key) and the sealed label
        agree: a flag without a label, or a label without the flag, is reported."""
        cur = _q(
            'SELECT id, node_id, labelled FROM "version" WHERE (labelled = ? AND label_ct IS '
            "NULL) OR (labelled = ? AND label_ct IS NOT NULL) ORDER BY id",
            (True, False),
        )
        while rows := cur.fetchmany(BATCH):
            for vid, nid, labelled in rows:
                what = "labelled without a label" if labelled else "a label without the flag"
                self._add("version_label", {"version": vid, "node": nid}, f"the version has {what}")

    def check_chunks(self) -> None:
        total = _q('SELECT COUNT(*) FROM "upload_chunk"').fetchone()[0]
        self._check_blob_rows(
            "chunks",
            int(total),
            "SELECT c.id, c.upload_id, c.blob_id, c.plain_size, c.header24, NULL, NULL "
            'FROM "upload_chunk" AS c WHERE c.id > ? ORDER BY c.id LIMIT ?',
            ("chunk", "upload"),
        )

    def _check_blob_rows(self, what: str, total: int, sql: str, labels: tuple[str, str]) -> None:
        last = ""
        with self.progress(what, total) as bar, ThreadPoolExecutor(STAT_THREADS) as pool:
            while True:
                rows = _q(sql, (last, BATCH)).fetchall()
                if not rows:
                    return
                last = rows[-1][0]
                stored = [r[2] for r in rows if r[5] is None]
                stats = dict(zip(stored, self._map(pool, self._stat, stored), strict=True))
                for rid, owner_id, blob_id, plain, header24, inline_id, inline_len in rows:
                    ids = {labels[0]: rid, labels[1]: owner_id, "blob": blob_id}
                    try:
                        seg_log2, _ = blobfmt.parse_header_ad(_bytes(header24))
                        expected = blobfmt.ciphertext_size(int(plain), seg_log2)
                    except (crypto.CryptoError, ValueError):
                        self._add("bad_header", ids, "the stored header prefix is invalid")
                        continue
                    if inline_id is not None:
                        got: int | None = int(inline_len)
                        where = "in the index"
                    else:
                        st = stats[blob_id]
                        got = None if st is None else st.size
                        where = "in the store"
                    if got != expected and not self._still_there(labels[0], rid):
                        continue  # retired meanwhile (a live server): its blob may be gone
                    if got is None:
                        self._add("blob_missing", ids, "the object is missing from the store")
                    elif got != expected:
                        kind = "blob_truncated" if got < expected else "blob_size"
                        self._add(kind, ids, f"{got} bytes {where}, expected {expected}")
                bar.advance(len(rows))
                self.report.count(what, len(rows))

    def _map(self, pool: ThreadPoolExecutor, fn: Any, items: list[str]) -> Iterable[Any]:
        """``fn`` over ``items``: in the pool for a remote store (requests overlap), in this
        thread for a local one (a ``stat`` is cheaper than handing it to a thread)."""
        if isinstance(self.vault.blobs, LocalBlobStore):
            return map(fn, items)
        return pool.map(fn, items)

    @staticmethod
    def _still_there(label: str, row_id: str) -> bool:
        table = "version" if label == "version" else "upload_chunk"
        return _q(f'SELECT 1 FROM "{table}" WHERE id = ?', (row_id,)).fetchone() is not None  # noqa: S608 - a constant table name

    def _stat(self, blob_id: str) -> BlobStat | None:
        try:
            return self.vault.blobs.stat(blob_id)
        except BlobNotFound:
            return None

    def check_tracking(self) -> None:
        """Tracking rows that contradict the reference count (see the module docstring)."""
        cur = _q(
            'SELECT g.blob_id, g.state, (SELECT COUNT(*) FROM "version" AS v '
            'WHERE v.blob_id = g.blob_id) + (SELECT COUNT(*) FROM "upload_chunk" AS c '
            'WHERE c.blob_id = g.blob_id) FROM "blob_gc" AS g'
        )
        wrong: list[tuple[str, str, int]] = []
        while rows := cur.fetchmany(BATCH):
            wrong += [(b, s, int(n)) for b, s, n in rows if n]  # few: each is a problem
        for blob_id, state, n in wrong:
            what = "unreferenced" if state == "dead" else "an upload in flight"
            p = self._add(
                "refcount",
                {"blob": blob_id},
                f"tracked as {what} ({state}) but {n} rows reference it",
                repairable=True,
            )
            if self.repair:
                with self.vault.index.atomic():
                    n_del = _q(
                        'DELETE FROM "blob_gc" WHERE blob_id = ? AND (EXISTS (SELECT 1 FROM '
                        '"version" WHERE blob_id = ?) OR EXISTS (SELECT 1 FROM "upload_chunk" '
                        "WHERE blob_id = ?))",
                        (blob_id, blob_id, blob_id),
                    ).rowcount
                self._fixed(p, n_del == 1)

    def _track_dead(self, blob_ids: list[str], state: str = "dead") -> set[str]:
        """Add tracking rows so that gc collects these blobs (after its grace period) unless
        a row references them by then; returns the ids now tracked."""
        if not blob_ids:
            return set()
        now = time.time()
        with self.vault.index.atomic():
            BlobGC.insert_many(
                [{"blob_id": b, "state": state, "since": now} for b in blob_ids]
            ).on_conflict_ignore().execute()
        return set(blob_ids)

    def check_inline_orphans(self) -> None:
        cur = _q(
            'SELECT i.blob_id, LENGTH(i.data) FROM "inline_blob" AS i WHERE NOT EXISTS '
            '(SELECT 1 FROM "version" AS v WHERE v.blob_id = i.blob_id) AND NOT EXISTS '
            '(SELECT 1 FROM "blob_gc" AS g WHERE g.blob_id = i.blob_id)'
        )
        found: list[Problem] = []
        while rows := cur.fetchmany(BATCH):
            for blob_id, n in rows:
                self.report.count("inline orphans")
                found.append(
                    self._add(
                        "orphan",
                        {"blob": blob_id},
                        f"{n} bytes in the index, referenced by nothing",
                        repairable=True,
                    )
                )
        if self.repair:
            done = self._track_dead([p.ids["blob"] for p in found])
            for p in found:
                self._fixed(p, p.ids["blob"] in done)

    def check_store_orphans(self) -> None:
        now = time.time()
        with self.progress("objects", None) as bar:
            for batch in _batches(self.vault.blobs.iter_ids()):
                self.report.count("objects", len(batch))
                marks = _marks(len(batch))
                known = {
                    r[0]
                    for r in _q(
                        _KNOWN_SQL.replace("@", marks),
                        batch * 3,
                    ).fetchall()
                }
                found: list[Problem] = []
                for blob_id in batch:
                    if blob_id in known:
                        continue
                    st = self._stat(blob_id)
                    if st is None:
                        continue  # collected meanwhile
                    age = f", stored {_age(now - st.mtime)} ago" if st.mtime is not None else ""
                    found.append(
                        self._add(
                            "orphan",
                            {"blob": blob_id},
                            f"{st.size} bytes in the store, referenced by nothing{age}",
                            repairable=True,
                        )
                    )
                if self.repair and found:
                    done = self._track_dead([p.ids["blob"] for p in found])
                    for p in found:
                        self._fixed(p, p.ids["blob"] in done)
                bar.advance(len(batch))

    def check_partial_uploads(self) -> None:
        grace = self.vault.settings.upload_grace
        for partial in self.vault.blobs.partial_uploads():
            self.report.count("partial uploads")
            if partial.idle < grace:
                continue  # may still be in flight
            if partial.blob_id is not None:
                tracked = _q(
                    'SELECT 1 FROM "blob_gc" WHERE blob_id = ?', (partial.blob_id,)
                ).fetchone()
                if tracked:
                    continue  # gc removes it
            ids = {"handle": partial.handle}
            if partial.blob_id is not None:
                ids["blob"] = partial.blob_id
            p = self._add(
                "partial_upload",
                ids,
                f"an interrupted upload of {partial.size} bytes, idle {_age(partial.idle)}",
                repairable=partial.blob_id is not None,
            )
            if self.repair and partial.blob_id is not None:
                self._fixed(p, bool(self._track_dead([partial.blob_id], "uploading")))


__all__ = ["Fsck", "FsckReport", "Problem"]

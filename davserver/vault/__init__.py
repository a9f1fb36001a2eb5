"""The storage engine: users and their keys, and the entry point to each user's tree.

``Vault`` owns consistency: every change to users or trees is one database transaction here.
It knows nothing of HTTP. The DAV layer and the CLI call it; it calls ``index`` (rows),
``crypto`` (keys, envelopes, blob format, names) and ``blobs`` (ciphertext objects).

- ``Vault.create_user`` / ``change_password`` / ``delete_user`` / ``list_users``: admin.
- ``Vault.login(name, password) -> Session``: password → master key (Argon2id behind a
  semaphore, then cached per process, DESIGN §4), or a device token (``wdvt_…``) → its key,
  without Argon2id (``vault.tokens``, DESIGN §13); ``Session`` (``vault.tree``) holds the keys
  of one logged-in user and offers every tree operation.
- ``Vault.create_token`` / ``create_token_for`` / ``list_tokens`` / ``revoke_token``, and
  recovery codes (``create_recovery_code``, ``reset_password_with_recovery``): ``vault.tokens``.
- ``Vault.open_scoped(user, scope_node_id, dk, perms, token_id) -> Session``: a session
  rooted at one directory, holding only its key (DESIGN §13; ``Session.scope_key`` makes it).
- ``Vault.collect_garbage``: deletes blobs that no version references any more, and those of
  uploads that never committed; ``Vault.reclaim_partial_uploads`` removes what crashed uploads
  left in the store (temp files, incomplete multipart uploads) once idle past
  ``settings.upload_grace``.
- ``Vault.freeing_space``: runs an operation that frees space (DELETE) so that a full disk
  cannot stop it (``vault.reserve``).

Sessions know their vault only as ``vault.engine.Engine`` (a protocol ``Vault`` satisfies),
so that nothing below this package imports it back.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import logging
import os
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import peewee as pw

from davserver import audit, crypto, metrics
from davserver.blobs import BlobStore, PartialUpload
from davserver.crypto import envelopes, kdf
from davserver.crypto import tokens as tokenfmt  # not vault.tokens (the submodule)
from davserver.errors import (
    AlreadyExists,
    AuthError,
    BadRequest,
    BlobNotFound,
    DavServerError,
    DiskFull,
    NotFound,
    StorageError,
)
from davserver.index import Index, fast
from davserver.index.models import (
    BlobGC,
    Envelope,
    InlineBlob,
    Node,
    Upload,
    UploadChunk,
    User,
    Version,
)
from davserver.vault import identity
from davserver.vault.auth import KdfGate, LoginCache
from davserver.vault.engine import VaultSettings as VaultSettings  # re-exported
from davserver.vault.reserve import SpaceReserve
from davserver.vault.tokens import TokenInfo as TokenInfo  # re-exported
from davserver.vault.tokens import TokenOps, looks_like_credential

if TYPE_CHECKING:
    from davserver.vault.tree import Session

log = logging.getLogger(__name__)

KIND_PASSWORD = "password"  # noqa: S105 - an envelope kind, not a password
KIND_TOKEN = tokenfmt.KIND_TOKEN
KIND_SCOPED = tokenfmt.KIND_SCOPED
KIND_RECOVERY = tokenfmt.KIND_RECOVERY

T = TypeVar("T")

#: ``User.last_login`` is written at most this often per user (seconds).
LAST_LOGIN_RESOLUTION = 60.0


@dataclass(frozen=True)
class UserInfo:
    name: str
    id: str
    created: float
    usage_bytes: int
    quota_bytes: int | None
    #: When the user last logged in with a password (Argon2id; logins served from the
    #: login cache are not recorded), to within ``LAST_LOGIN_RESOLUTION``; None = never.
    last_login: float | None = None


def new_id() -> str:
    return crypto.random_id().hex()


def b(id_hex: str | None) -> bytes:
    """The raw 16 bytes of a hex id, as bound into associated data."""
    return bytes.fromhex(id_hex) if id_hex else b""


def check_user_name(name: str) -> str:
    """User names go into Basic auth (no colon) and logs (no control characters)."""
    name = unicodedata.normalize("NFC", name)
    if not 1 <= len(name) <= 64:
        raise BadRequest("user name must be 1 to 64 characters")
    if any(c in name for c in ":/\\") or any(unicodedata.category(c)[0] in "CZ" for c in name):
        raise BadRequest("user name must not contain ':', '/', '\\', spaces or control characters")
    return name


def _check_new_password(password: str) -> None:
    if not password:
        raise BadRequest("password must not be empty")
    if looks_like_credential(password):
        # It would never be tried as a password (a login takes it for a token).
        raise BadRequest("a password must not have the form of a token or recovery code")


def _password_bytes(password: str) -> bytes:
    # Clients differ in how they normalise what users type (macOS sends NFD).
    return unicodedata.normalize("NFC", password).encode("utf-8")


class Vault(TokenOps):
    """The engine. One per process; thread-safe."""

    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        pepper: bytes,
        settings: VaultSettings | None = None,
        reserve: SpaceReserve | None = None,
    ) -> None:
        if len(pepper) != 32:
            raise ValueError("pepper must be 32 bytes")
        self.index = index
        self.blobs = blobs
        self.reserve = reserve  # created by the server's maintenance loop (keep_reserve)
        if reserve is not None:
            # A server started on a full disk needs a little room to open the index at all.
            index.on_disk_full = reserve.release
        self._pepper = pepper
        self.settings = settings or VaultSettings()
        self.clock: Callable[[], float] = time.time
        self._cache: LoginCache[Session] = LoginCache(
            self.settings.login_cache_ttl, self.settings.login_cache_size
        )
        self._gate = KdfGate(self.settings.argon2_concurrency)
        self._opened_tokens = {}
        self._gc_lock = threading.Lock()
        # Blob ids being read by this process (open FileReaders): collect_garbage leaves
        # them for a later run, so a GET of a version replaced meanwhile still reads it.
        self._reading: collections.Counter[str] = collections.Counter()
        self._reading_lock = threading.Lock()
        # Spent on unknown user names, so they cost the same time as wrong passwords.
        self._dummy_params = kdf.KdfParams.for_password(
            self.settings.argon2_opslimit, self.settings.argon2_memlimit
        )

    # -- users ---------------------------------------------------------------------------
    def _new_password_envelope(self, user_id: str, mk: bytes, password: str) -> Envelope:
        params = kdf.KdfParams.for_password(
            self.settings.argon2_opslimit, self.settings.argon2_memlimit
        )
        enc = params.encode()
        with self._gate:
            prk = kdf.derive_prk(_password_bytes(password), params)
        kek = kdf.password_kek(self._pepper, prk)
        env_id = new_id()
        return Envelope(
            id=env_id,
            user=user_id,
            kind=KIND_PASSWORD,
            kdf_params=enc,
            verifier=kdf.make_verifier(kek, enc),
            wrapped=envelopes.wrap_master_key(mk, kek, b(user_id), KIND_PASSWORD, b(env_id), enc),
            created=time.time(),
        )

    def create_user(self, name: str, password: str) -> str:
        """Create a user with an empty root directory; return the user id."""
        name = check_user_name(name)
        _check_new_password(password)
        user_id, root_id = new_id(), new_id()
        mk, root_dk = crypto.random_key(), crypto.random_key()
        env = self._new_password_envelope(user_id, mk, password)
        ident = identity.new_identity(self, user_id, mk)
        now = time.time()

        def once() -> None:
            # A concurrent create of the same name loses on the unique name and is retried:
            # the next attempt sees the winner here.
            with self.index.write(None):
                if User.get_or_none(User.name == name) is not None:
                    raise AlreadyExists("user already exists")
                User.create(
                    id=user_id,
                    name=name,
                    root_id=root_id,
                    created=now,
                    id_pk=ident.pk,
                    id_pk_mac=ident.pk_mac,
                    id_sk_env=ident.sk_env,
                )
                env.save(force_insert=True)
                Node.create(
                    id=root_id,
                    owner=user_id,
                    parent=None,
                    kind="dir",
                    name_mac=b"",
                    name_ct=b"",
                    key_env=envelopes.wrap_root_key(root_dk, mk, b(user_id), b(root_id)),
                    created=now,
                    fileid=fast.new_fileid(),
                )
                fast.execute("dir_tree_insert", (root_id,))

        self.index.run(once)
        audit.emit("user_created", user_id=user_id)
        return user_id

    def _user(self, name: str) -> User:
        u = User.get_or_none(User.name == unicodedata.normalize("NFC", name))
        if u is None:
            raise NotFound("no such user")
        return u

    def list_users(self) -> list[UserInfo]:
        with self.index.connection():
            return [
                UserInfo(u.name, u.id, u.created, u.usage_bytes, u.quota_bytes, u.last_login)
                for u in User.select().order_by(User.name)
            ]

    def user_info(self, name: str) -> UserInfo:
        with self.index.connection():
            u = self._user(name)
            return UserInfo(u.name, u.id, u.created, u.usage_bytes, u.quota_bytes, u.last_login)

    def user_id_of(self, name: str) -> str | None:
        """The id of the user with this name, or None (audit records of failed logins)."""
        with self.index.connection():
            u = User.get_or_none(User.name == unicodedata.normalize("NFC", name))
            return None if u is None else str(u.id)

    def set_quota(self, name: str, quota_bytes: int | None) -> None:
        """Set a user's quota in bytes: None = the server default (``quota.default_bytes``),
        0 = unlimited whatever the default."""
        if quota_bytes is not None and quota_bytes < 0:
            raise BadRequest("a quota cannot be negative")
        with self.index.connection():
            u = self._user(name)
            User.update(quota_bytes=quota_bytes).where(User.id == u.id).execute()
        audit.emit("quota_changed", user_id=u.id, quota_bytes=quota_bytes)

    def _unlock_master_key(self, user: User, password: str) -> bytes | None:
        """Try every password envelope of a user; return the master key or None."""
        pw_bytes = _password_bytes(password)
        envs = list(
            Envelope.select().where(Envelope.user == user.id, Envelope.kind == KIND_PASSWORD)
        )
        for env in envs:
            params_enc = bytes(env.kdf_params)
            try:
                params = kdf.KdfParams.decode(params_enc)
            except crypto.CryptoError:
                log.error("integrity failure: envelope %s has invalid KDF parameters", env.id)
                continue
            with self._gate:
                prk = kdf.derive_prk(pw_bytes, params)
            kek = kdf.password_kek(self._pepper, prk)
            if not kdf.check_verifier(kek, params_enc, bytes(env.verifier)):
                continue
            try:
                return envelopes.unwrap_master_key(
                    bytes(env.wrapped), kek, b(user.id), KIND_PASSWORD, b(env.id), params_enc
                )
            except crypto.AuthenticationFailed:
                log.error("integrity failure: envelope %s verified but did not open", env.id)
                return None
        if not envs:
            self._burn_kdf(pw_bytes)
        return None

    def _burn_kdf(self, pw_bytes: bytes) -> None:
        with self._gate:
            kdf.derive_prk(pw_bytes, self._dummy_params)

    def login(self, name: str, password: str) -> Session:
        """Authenticate and return the user's session; ``AuthError`` on any failure.

        A cached session is returned when (name, password) logged in recently; otherwise
        Argon2id runs. Unknown users cost the same as wrong passwords.

        A password that has the exact form of a device token (``wdvt_`` + 64 base64url
        characters) is only ever a token: its envelope is opened without Argon2id, and a
        cached token session is re-checked against its row (still there, not expired) on
        every use. Recovery codes never log in.
        """
        from davserver.vault.tree import Session

        name = unicodedata.normalize("NFC", name)
        key = self._cache.key(name, _password_bytes(password))
        cached = self._cache.get(key)
        m = metrics.get()
        if cached is not None:
            if self._token_alive(cached):
                m.login_cache.labels("hit").inc()
                return cached
            self._cache.drop(key)
        m.login_cache.labels("miss").inc()
        parsed = tokenfmt.decode(password, tokenfmt.TOKEN_PREFIX)
        if parsed is not None:
            session = self._token_login(name, parsed)
            self._cache.put(key, session.user_id, session)
            return session
        if tokenfmt.decode(password, tokenfmt.RECOVERY_PREFIX) is not None:
            m.logins.labels(KIND_RECOVERY, "failure").inc()
            raise AuthError("a recovery code cannot log in; it can only set a new password")
        try:
            with self.index.connection():
                user = User.get_or_none(User.name == name)
                if user is None:
                    self._burn_kdf(_password_bytes(password))
                    m.logins.labels(KIND_PASSWORD, "failure").inc()
                    raise AuthError("wrong user name or password")
                mk = self._unlock_master_key(user, password)
                if mk is None:
                    m.logins.labels(KIND_PASSWORD, "failure").inc()
                    raise AuthError("wrong user name or password")
                session = Session(self, user.id, user.name, mk, user.root_id)
                self._note_login(user)
                self._after_full_login(session, user, mk)
        except StorageError:
            m.logins.labels(KIND_PASSWORD, "error").inc()
            raise
        m.logins.labels(KIND_PASSWORD, "success").inc()
        self._cache.put(key, user.id, session)
        return session

    def _after_full_login(self, session: Session, user: User, mk: bytes) -> None:
        """What only MK can do, done at a password login: give a user from before schema v10
        an identity key pair, and fold what scoped sessions deleted into the trash. Best
        effort: neither may fail the login (both are done again at the next)."""
        if user.id_pk is None:
            identity.ensure_identity(self, user.id, mk)
        try:
            session._fold_pending()
        except DavServerError as exc:
            log.warning("could not fold pending trash items yet: %s", exc)

    def open_scoped(
        self,
        user: User,
        scope_node_id: str,
        dk: bytes,
        perms: str,
        token_id: str | None = None,
    ) -> Session:
        """A scoped session (DESIGN §13): ``user`` is the owner's ``User`` row (the peewee
        model, as a token lookup has it), ``scope_node_id`` and ``dk`` the directory S and
        its key, as ``Session.scope_key`` returned them (unwrapped from the token), ``perms``
        ``"rw"``, ``"ro"`` or ``"wo"``, ``token_id`` the token's id (kept on the session).

        The session holds no master key and its root ``/`` is S: no path names anything
        outside S, and nothing outside S's subtree can be opened with DK_S. S must exist,
        be a directory of ``user`` and lie in the tree (not in the trash): ``NotFound``
        otherwise, ``ScopeGone`` (a ``Forbidden``) if it was deleted. ``dk`` cannot be
        checked here (S's envelope is wrapped under its parent's key, which this session
        must never have): under a wrong key no name is found and every listed name fails
        authentication (``IntegrityError``). If S is deleted later, every operation of the
        session raises ``ScopeGone``."""
        from davserver.vault.nodes import DIR
        from davserver.vault.tree import Session

        if not isinstance(dk, bytes) or len(dk) != 32:
            raise BadRequest("a scope key is 32 bytes")
        with self.index.connection():
            row = Node.get_or_none((Node.id == scope_node_id) & (Node.owner == user.id))
            if row is None or row.kind != DIR:
                raise NotFound("the directory of this scope does not exist")
            session = Session(
                self,
                user.id,
                user.name,
                None,
                scope_node_id,
                perms=perms,
                token_id=token_id,
                scope_key=dk,
            )
            session._check_scope_alive()
        return session

    def _note_login(self, user: User) -> None:
        """Record ``last_login``, at most once per ``LAST_LOGIN_RESOLUTION`` per user (the
        row was just read: a login within the resolution writes nothing). Best effort: a
        write the index cannot take (a full disk, a busy database) never fails the login."""
        now = time.time()
        last = user.last_login
        if last is not None and now - last < LAST_LOGIN_RESOLUTION:
            return
        try:
            with self.index.atomic():
                User.update(last_login=now).where(
                    (User.id == user.id)
                    & (User.last_login.is_null() | (User.last_login < now - LAST_LOGIN_RESOLUTION))
                ).execute()
        except (pw.DatabaseError, DavServerError) as exc:
            log.warning("could not record a login time: %s", exc)

    def login_cached(self, name: str, password: str) -> Session | None:
        """The session of a recent successful login with exactly these credentials, or None.
        Costs one keyed hash, never Argon2id (lets a rate-limited user with the right
        password straight in)."""
        key = self._cache.key(unicodedata.normalize("NFC", name), _password_bytes(password))
        session = self._cache.get(key)
        if session is not None and not self._token_alive(session):
            self._cache.drop(key)  # revoked or expired: the login that follows refuses it
            return None
        if session is not None:  # a miss is counted by the login that follows
            metrics.get().login_cache.labels("hit").inc()
        return session

    def server_key(self, purpose: bytes) -> bytes:
        """A server-wide key for one purpose, derived from the pepper (which never leaves
        this object): e.g. the MAC and sealing keys of shared lock records."""
        return crypto.subkey(self._pepper, purpose)

    def change_password(self, name: str, old_password: str, new_password: str) -> None:
        """Re-wrap the master key under a new password; nothing else changes (tokens and
        recovery codes wrap MK, not the password: they keep working)."""
        _check_new_password(new_password)
        with self.index.connection():
            user = self._user(name)
            mk = self._unlock_master_key(user, old_password)
            if mk is None:
                raise AuthError("wrong password")
            env = self._new_password_envelope(user.id, mk, new_password)

            def once() -> None:
                with self.index.write(user.id):
                    Envelope.delete().where(
                        Envelope.user == user.id, Envelope.kind == KIND_PASSWORD
                    ).execute()
                    env.save(force_insert=True)

            self.index.run(once)
        self._cache.forget_user(user.id)
        audit.emit("password_changed", user_id=user.id)

    def delete_user(self, name: str) -> None:
        """Remove a user and their whole tree (index first; blobs collected afterwards)."""
        with self.index.connection():
            user = self._user(name)
        self.index.run(lambda: self._delete_user_rows(user))
        self._cache.forget_user(user.id)
        audit.emit("user_deleted", user_id=user.id)
        self.collect_garbage(grace=0)

    def _delete_user_rows(self, user: User) -> None:
        """One transaction, behind the user's row like every write of theirs."""
        with self.index.write(user.id):
            node_ids = Node.select(Node.id).where(Node.owner == user.id)
            blob_ids = [
                v.blob_id for v in Version.select(Version.blob_id).where(Version.node.in_(node_ids))
            ]
            blob_ids += [
                c.blob_id
                for c in UploadChunk.select(UploadChunk.blob_id)
                .join(Upload)
                .where(Upload.owner == user.id)
            ]
            uploads = Upload.select(Upload.id).where(Upload.owner == user.id)
            UploadChunk.delete().where(UploadChunk.upload.in_(uploads)).execute()
            Upload.delete().where(Upload.owner == user.id).execute()
            Version.delete().where(Version.node.in_(node_ids)).execute()
            from davserver.index.models import DeadProps

            DeadProps.delete().where(DeadProps.node.in_(node_ids)).execute()
            # Nodes reference their parents: clear the links, then delete in one statement.
            Node.update(parent=None).where(Node.owner == user.id).execute()
            Node.delete().where(Node.owner == user.id).execute()
            Envelope.delete().where(Envelope.user == user.id).execute()
            User.delete().where(User.id == user.id).execute()
            self.mark_blobs_dead(blob_ids)

    # -- versions and trash (keyless: no user needs to be logged in) ----------------------
    def _keyless(self, user: User) -> Session:
        """A session of ``user`` without their master key: for the operations that need
        only ids and sizes (expiry, admin purge). Opening any key through it fails."""
        from davserver.vault.tree import Session

        return Session(self, user.id, user.name, None, user.root_id)

    def expire_history(self, now: float | None = None) -> tuple[int, int]:
        """Apply ``versions.retention`` and ``trash.retention`` to every user (the
        maintenance loop runs this): thin and age out old versions, purge trash items past
        their time. Returns (versions removed, trash items purged)."""
        when = self.clock() if now is None else now
        versions = items = 0
        with self.index.connection():
            users = list(User.select())
        for user in users:

            def once(u: User = user) -> tuple[int, int]:
                return self._expire_user(u, when)

            v, t = self.index.run(once)
            versions += v
            items += t
        if versions or items:
            log.info("expired %d old versions and %d trash items", versions, items)
            self.collect_garbage(grace=0)
        return versions, items

    def _expire_user(self, user: User, now: float) -> tuple[int, int]:
        from davserver.vault.history import _Stamp

        vp, tp = self.settings.versions_policy, self.settings.trash_policy
        removed = purged = 0
        with self.index.write(user.id):
            if vp.enabled:
                rows: Any = (
                    Version.select(
                        Version.id,
                        Version.blob_id,
                        Version.version_no,
                        Version.created,
                        Version.labelled,
                        Version.plain_size,
                        Version.node,
                    )
                    .join(Node, on=(Node.id == Version.node))
                    .where((Node.owner == user.id) & (Version.id != Node.current_version))
                    .order_by(Version.node, Version.version_no.desc())
                    .tuples()
                )
                by_node: dict[str, list[_Stamp]] = {}
                for r in rows:
                    by_node.setdefault(r[6], []).append(_Stamp(*r[:6]))
                batch: list[tuple[str, tuple[object, ...]]] = []
                freed = 0
                for stamps in by_node.values():
                    for i in vp.expired_versions(now, stamps):
                        batch += [
                            ("version_delete", (stamps[i].id,)),
                            ("gc_dead", (stamps[i].blob_id, time.time())),
                        ]
                        freed += stamps[i].plain_size
                        removed += 1
                if batch:
                    batch.append(("usage_add", (-freed, user.id)))
                    fast.batch(batch)
            if tp.enabled and user.trash_id is not None:
                from davserver.index.models import TrashItem

                keyless = self._keyless(user)
                for item in TrashItem.select().where(TrashItem.owner == user.id):
                    if tp.is_expired(float(item.deleted_at), now):
                        keyless._purge_rows(item.node_id)
                        purged += 1
        return removed, purged

    def purge_trash(self, name: str, older_than: float) -> int:
        """Admin, without the user's password: purge the user's trash items deleted more
        than ``older_than`` seconds ago. Returns how many."""
        from davserver.index.models import TrashItem

        with self.index.connection():
            user = self._user(name)
        cutoff = self.clock() - older_than

        def once() -> int:
            with self.index.write(user.id):
                keyless = self._keyless(user)
                count = 0
                for item in TrashItem.select().where(
                    (TrashItem.owner == user.id) & (TrashItem.deleted_at < cutoff)
                ):
                    keyless._purge_rows(item.node_id)
                    count += 1
                return count

        count = self.index.run(once)
        if count:
            audit.emit("trash_purged", user_id=user.id, items=count)
            self.collect_garbage(grace=0)
        return count

    def usage_breakdown(self, name: str) -> tuple[int, int, int]:
        """(live, versions, trash) bytes of a user: current versions of the tree, older
        versions of the tree, everything in the trash. They add up to the usage."""
        with self.index.connection():
            user = self._user(name)
            db = self.index.db
            p = db.param
            tree = (
                'WITH RECURSIVE t(id) AS (SELECT id FROM "node" WHERE id = {p} '
                'UNION ALL SELECT n.id FROM "node" AS n JOIN t ON n.parent_id = t.id) '
                "SELECT COALESCE(SUM(CASE WHEN v.id = n.current_version THEN v.plain_size "
                "ELSE 0 END), 0), COALESCE(SUM(CASE WHEN v.id = n.current_version THEN 0 "
                'ELSE v.plain_size END), 0) FROM "version" AS v JOIN t ON v.node_id = t.id '
                'JOIN "node" AS n ON n.id = v.node_id'
            ).replace("{p}", p)
            live, old = db.execute_sql(tree, (user.root_id,)).fetchone()  # type: ignore[no-untyped-call]
            trash = 0
            if user.trash_id is not None:
                row = db.execute_sql(tree, (user.trash_id,)).fetchone()  # type: ignore[no-untyped-call]
                trash = int(row[0] or 0) + int(row[1] or 0)
        return int(live or 0), int(old or 0), trash

    # -- garbage ---------------------------------------------------------------------------
    def mark_blobs_dead(self, blob_ids: list[str]) -> None:
        """Within the caller's transaction: queue blobs that no version references any more."""
        if not blob_ids:
            return
        now = time.time()
        for i in range(0, len(blob_ids), 500):
            chunk = list(set(blob_ids[i : i + 500]))
            used = {
                v.blob_id for v in Version.select(Version.blob_id).where(Version.blob_id.in_(chunk))
            } | {
                c.blob_id
                for c in UploadChunk.select(UploadChunk.blob_id).where(
                    UploadChunk.blob_id.in_(chunk)
                )
            }
            rows = [{"blob_id": x, "state": "dead", "since": now} for x in chunk if x not in used]
            if rows:
                BlobGC.insert_many(rows).on_conflict(
                    conflict_target=[BlobGC.blob_id],
                    update={BlobGC.state: "dead", BlobGC.since: now},
                ).execute()

    def pin_blob(self, blob_id: str) -> Callable[[], None]:
        """Keep ``blob_id`` from being collected by this process until the returned function
        is called (a reader of it is open)."""
        with self._reading_lock:
            self._reading[blob_id] += 1
        done = False

        def unpin() -> None:
            nonlocal done
            if done:
                return
            done = True
            with self._reading_lock:
                self._reading[blob_id] -= 1
                if self._reading[blob_id] <= 0:
                    del self._reading[blob_id]

        return unpin

    def _being_read(self, blob_id: str) -> bool:
        with self._reading_lock:
            return blob_id in self._reading

    def collect_garbage(self, grace: float = 0.0) -> int:
        """Delete queued blobs that no version references; return how many were deleted.

        Dead blobs are collected once queued for ``grace`` seconds. A blob whose upload never
        committed (its process died mid-PUT) is collected once its row is older than
        ``settings.upload_grace`` and nothing of it moved for that long: no partial upload of
        it grew, and no object of it was stored, within the grace period (a slow upload still
        in flight is left alone). A row is dropped only after its object and any partial
        upload of it are gone. Best effort: a failure is logged and retried by the next run,
        never raised, since callers run this after their own commit.
        """
        deleted = 0
        if self.index.db.in_transaction():
            # Inside a caller's transaction (a DAV request that changes the tree and its
            # locks in one step): nothing it queued is committed yet; it collects after.
            return 0
        try:
            with self._gc_lock, self.index.connection():
                now = time.time()
                upload_grace = self.settings.upload_grace
                rows = list(
                    BlobGC.select().where(
                        ((BlobGC.state == "dead") & (BlobGC.since <= now - grace))
                        | ((BlobGC.state == "uploading") & (BlobGC.since <= now - upload_grace))
                    )
                )
                partials: dict[str, list[PartialUpload]] | None = None
                for row in rows:
                    if self._being_read(row.blob_id):
                        continue  # a reader of it is open here; the next run collects it
                    with self.index.atomic():
                        if (
                            Version.select().where(Version.blob_id == row.blob_id).exists()
                            or UploadChunk.select()
                            .where(UploadChunk.blob_id == row.blob_id)
                            .exists()
                        ):
                            BlobGC.delete().where(BlobGC.blob_id == row.blob_id).execute()
                            continue
                        if InlineBlob.delete().where(InlineBlob.blob_id == row.blob_id).execute():
                            BlobGC.delete().where(BlobGC.blob_id == row.blob_id).execute()
                            deleted += 1  # it lived in the index: no object to delete
                            continue
                    if row.state == "uploading":
                        try:
                            if partials is None:
                                partials = self._partials_by_blob()
                            if not self._discard_stale_upload(row.blob_id, partials, upload_grace):
                                continue
                        except DavServerError as exc:
                            log.warning("upload of blob %s not cleaned yet: %s", row.blob_id, exc)
                            continue
                    try:
                        self.blobs.delete(row.blob_id)
                    except DavServerError:
                        log.warning("could not delete blob %s; will retry", row.blob_id)
                        continue
                    BlobGC.delete().where(BlobGC.blob_id == row.blob_id).execute()
                    deleted += 1
        except (DavServerError, pw.DatabaseError) as exc:
            log.warning("garbage collection stopped early (%s); the next run retries", exc)
        metrics.get().gc_collected_blobs.inc(deleted)
        self._restore_reserve()
        return deleted

    def _partials_by_blob(self) -> dict[str, list[PartialUpload]]:
        out: dict[str, list[PartialUpload]] = {}
        for p in self.blobs.partial_uploads():
            if p.blob_id is not None:
                out.setdefault(p.blob_id, []).append(p)
        return out

    def _discard_stale_upload(
        self, blob_id: str, partials: dict[str, list[PartialUpload]], grace: float
    ) -> bool:
        """For an upload that never committed: whether it is idle past ``grace`` (then its
        partial uploads are discarded here), or still moving (False: leave it)."""
        mine = partials.get(blob_id, [])
        if any(p.idle < grace for p in mine):
            return False  # still receiving data
        try:
            stored = self.blobs.stat(blob_id)
        except BlobNotFound:
            stored = None
        if stored is not None and stored.mtime is not None and time.time() - stored.mtime < grace:
            return False  # stored just now: its commit may be running
        for p in mine:
            self.blobs.discard_partial(p)
        return True

    def reclaim_partial_uploads(self, grace: float | None = None) -> tuple[int, int]:
        """Remove every partial upload in the store idle for ``grace`` seconds (default
        ``settings.upload_grace``): the temp files and incomplete multipart uploads of
        uploads whose process died. Returns (how many, bytes). Their tracking rows go with
        the next ``collect_garbage``, after the bytes are gone."""
        limit = self.settings.upload_grace if grace is None else grace
        count = size = 0
        for p in self.blobs.partial_uploads():
            if p.idle < limit:
                continue
            try:
                self.blobs.discard_partial(p)
            except DavServerError as exc:
                log.warning("could not remove a partial upload (%s); will retry", exc)
                continue
            count += 1
            size += p.size
        if count:
            log.info("removed %d partial uploads (%d bytes) left by crashes", count, size)
            metrics.get().gc_reclaimed_bytes.inc(size)
        return count, size

    # -- full disks ------------------------------------------------------------------------
    def freeing_space(self, op: Callable[[], T]) -> T:
        """Run ``op``, an operation that frees space (DELETE). Each time it meets a full disk
        (``DiskFull``: nothing was committed), release part of the space reserve and run it
        again, until it succeeds or the reserve is used up: users can always make room."""
        while True:
            try:
                return op()
            except DiskFull:
                if self.reserve is None or not self.reserve.release():
                    raise

    def keep_reserve(self) -> None:
        """Create the space reserve (``davserver serve`` does, once at start); from then
        on every garbage collection fills it up again after a DELETE used some of it."""
        if self.reserve is not None and not self.reserve.ensure():
            log.warning("the disk is too full for the space reserve; will retry")

    def _restore_reserve(self) -> None:
        if self.reserve is not None:
            self.reserve.refill()

    def expire_uploads(self, max_age: float | None = None) -> int:
        """Drop chunked uploads untouched for ``max_age`` seconds (default: the configured
        upload expiry), for every user; their chunks are collected. Returns how many."""
        age = self.settings.upload_expiry if max_age is None else max_age
        cutoff = time.time() - age
        with self.index.connection(), self.index.atomic():
            stale = [u.id for u in Upload.select(Upload.id).where(Upload.touched < cutoff)]
            if not stale:
                return 0
            blob_ids = [
                c.blob_id
                for c in UploadChunk.select(UploadChunk.blob_id).where(
                    UploadChunk.upload.in_(stale)
                )
            ]
            UploadChunk.delete().where(UploadChunk.upload.in_(stale)).execute()
            Upload.delete().where(Upload.id.in_(stale)).execute()
            self.mark_blobs_dead(blob_ids)
        self.collect_garbage(grace=0)
        return len(stale)

    def orphan_blobs(self) -> list[str]:
        """Blob ids present in the store but referenced by no version and not in flight."""
        with self.index.connection():
            known = {v.blob_id for v in Version.select(Version.blob_id)}
            known |= {c.blob_id for c in UploadChunk.select(UploadChunk.blob_id)}
            known |= {g.blob_id for g in BlobGC.select(BlobGC.blob_id)}
        return [x for x in self.blobs.iter_ids() if x not in known]

    def request_scope(self) -> contextlib.AbstractContextManager[None]:
        """Around one request (the server wraps each in it): the index connection the
        request first takes is kept for all its units of work (``Index.sticky``)."""
        return self.index.sticky()

    def close(self) -> None:
        self._cache.clear()
        self.blobs.close()
        self.index.close()


def constant_time_equal(a: bytes, b_: bytes) -> bool:
    return hmac.compare_digest(a, b_)


def random_password(nbytes: int = 18) -> str:
    """A printable random password (for demo users and tests)."""
    import base64

    return base64.urlsafe_b64encode(os.urandom(nbytes)).decode("ascii").rstrip("=")

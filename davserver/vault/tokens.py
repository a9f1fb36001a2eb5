"""Device tokens and recovery codes: envelopes of the master key (or of one directory's key)
that open with a random secret instead of a password (DESIGN §13).

Why they exist: a WebDAV client stores its credentials, and each Basic-auth login with a
password costs one Argon2id run. A token is 32 random bytes, so its KEK is one keyed BLAKE2b
(no stretching needed), it can be revoked alone, and a stolen phone's token is not the
account password. A token names its own envelope (``envelope id ‖ secret``), so a login is
one indexed lookup, one hash, one unwrap.

- kind ``token``: wraps MK, the whole account, with permissions ``rw``/``ro``/``wo``;
- kind ``scoped``: wraps the key of one directory, the token's session is rooted there;
- kind ``recovery``: wraps MK but is accepted only by ``reset_password_with_recovery``,
  never to log in, and is deleted when used.

Kind, scope, permissions and expiry are bound into the envelope's associated data, so the
clear copies in the ``envelope`` row (which a keyless admin lists and the login checks first)
cannot be widened by a database writer. Labels are sealed under a server key, bound to the
envelope and its user: readable by an admin without the user's password, not by a reader
of the database alone.

Revocation deletes the row. Because each worker process keeps its own login cache, a cached
token session is re-checked against its row (one indexed query) on every use, so a
revocation or an expiry takes effect at once everywhere.

``TokenOps`` is mixed into ``Vault``; it uses the vault's index, pepper, login cache and
password unlock, and nothing above the vault.
"""

from __future__ import annotations

import logging
import math
import time
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import peewee as pw

from davserver import audit, crypto, metrics
from davserver.crypto import envelopes, tokens
from davserver.errors import AuthError, BadRequest, DavServerError, Forbidden, NotFound
from davserver.index import fast
from davserver.index.models import Envelope, User

if TYPE_CHECKING:
    from collections.abc import Callable

    from davserver.index import Index
    from davserver.vault.auth import LoginCache
    from davserver.vault.tree import Session

log = logging.getLogger(__name__)

KIND_TOKEN = tokens.KIND_TOKEN
KIND_SCOPED = tokens.KIND_SCOPED
KIND_RECOVERY = tokens.KIND_RECOVERY
PERMS = tokens.PERMS

#: ``Envelope.last_used`` is written at most this often per token (seconds).
LAST_USED_RESOLUTION = 60.0
MAX_LABEL_CHARS = 100

_LABEL_PURPOSE = b"wdv-toklabel-v1"
_LABEL_AD = b"wdv/toklabel/v1"


@dataclass(frozen=True)
class TokenInfo:
    """What ``list_tokens`` shows of a token: never its secret. ``scope_node`` is a node id
    (its path cannot be known without the user's keys)."""

    id: str
    label: str
    kind: str
    scope_node: str | None
    perms: str
    created: float
    expires: float | None
    last_used: float | None


def looks_like_credential(password: str) -> bool:
    """Whether ``password`` has the exact shape of a token or a recovery code: such text is
    never treated as a password (so it must not be set as one)."""
    return (
        tokens.decode(password, tokens.TOKEN_PREFIX) is not None
        or tokens.decode(password, tokens.RECOVERY_PREFIX) is not None
    )


def _b(id_hex: str | None) -> bytes:
    return bytes.fromhex(id_hex) if id_hex else b""


def _check_label(label: str) -> str:
    label = unicodedata.normalize("NFC", label).strip()
    if not 1 <= len(label) <= MAX_LABEL_CHARS:
        raise BadRequest(f"a token label must be 1 to {MAX_LABEL_CHARS} characters")
    if any(unicodedata.category(c)[0] == "C" for c in label):
        raise BadRequest("a token label must not contain control characters")
    return label


def _check_perms(perms: str) -> str:
    if perms not in PERMS:
        raise BadRequest("perms must be rw, ro or wo")
    return perms


def _expiry(expires: float | None, now: float) -> int:
    """Expiry as whole Unix seconds (what the AD binds; 0 = never), rounded up."""
    if expires is None:
        return 0
    if not math.isfinite(expires) or expires <= now:
        raise BadRequest("a token's expiry must be in the future")
    return math.ceil(expires)


def _row_expiry(expires: float | None) -> int | None:
    """The AD's expiry of a row, or None if the stored value cannot be one (tampered)."""
    if expires is None:
        return 0
    value = float(expires)
    if not math.isfinite(value) or value != int(value) or value <= 0:
        return None
    return int(value)


def _envelope_row(
    env_id: str, user_id: str, kind: str, sealed: tokens.SealedToken, **columns: Any
) -> Envelope:
    """The (unsaved) row of a token or recovery envelope: what ``seal_token`` made, and the
    columns the AD binds restated in clear."""
    return Envelope(
        id=env_id,
        user=user_id,
        kind=kind,
        kdf_params=sealed.kdf_params,
        verifier=sealed.verifier,
        wrapped=sealed.wrapped,
        created=time.time(),
        **columns,
    )


class TokenOps:
    """The token half of ``Vault`` (see the module docstring)."""

    #: token id -> (kind, scope_node, perms, expires) of its row when this process opened
    #: it (``_token_alive``).
    _opened_tokens: dict[str, tuple[str, str | None, str | None, float | None]]

    # Provided by Vault.
    index: Index
    _pepper: bytes
    _cache: LoginCache[Session]
    clock: Callable[[], float]

    def _user(self, name: str) -> User:  # pragma: no cover - defined by Vault
        raise NotImplementedError

    def _unlock_master_key(self, user: User, password: str) -> bytes | None:  # pragma: no cover
        raise NotImplementedError

    def _new_password_envelope(
        self, user_id: str, mk: bytes, password: str
    ) -> Envelope:  # pragma: no cover
        raise NotImplementedError

    def server_key(self, purpose: bytes) -> bytes:  # pragma: no cover
        raise NotImplementedError

    def open_scoped(
        self, user: User, scope_node_id: str, dk: bytes, perms: str, token_id: str | None = None
    ) -> Session:  # pragma: no cover - defined by Vault
        raise NotImplementedError

    @staticmethod
    def _fold_pending_of(session: Session) -> None:
        """A whole-account token session is a full session: it folds what scoped devices
        deleted into the trash, as a password login does (best effort: never fails the
        login; the next full session tries again)."""
        try:
            session._fold_pending()
        except DavServerError as exc:
            log.warning("could not fold pending trash items yet: %s", exc)

    # -- labels ------------------------------------------------------------------------------
    def _seal_label(self, user_id: str, env_id: str, label: str) -> bytes:
        return envelopes.seal(
            self.server_key(_LABEL_PURPOSE),
            _LABEL_PURPOSE,
            _LABEL_AD,
            (_b(env_id), _b(user_id)),
            label.encode("utf-8"),
        )

    def _open_label(self, env: Envelope) -> str:
        if env.label_ct is None:
            return ""
        try:
            plain = envelopes.open_sealed(
                self.server_key(_LABEL_PURPOSE),
                _LABEL_PURPOSE,
                _LABEL_AD,
                (_b(env.id), _b(str(env.user_id))),
                bytes(env.label_ct),
            )
            return plain.decode("utf-8")
        except (crypto.AuthenticationFailed, UnicodeDecodeError):
            log.error("integrity failure: the label of token %s did not open", env.id)
            return "(damaged label)"

    # -- creating ----------------------------------------------------------------------------
    def _full_session(self, name: str, password: str) -> Session:
        """A session from the account password (one Argon2id run), for creating a token;
        not cached, not counted as a login."""
        from davserver.vault.tree import Session

        if looks_like_credential(password):
            raise AuthError("a token cannot create tokens; give the account password")
        with self.index.connection():
            user = self._user(name)
            mk = self._unlock_master_key(user, password)
        if mk is None:
            raise AuthError("wrong password")
        return Session(self, user.id, user.name, mk, user.root_id)  # type: ignore[arg-type]

    def create_token(
        self,
        name: str,
        password: str,
        label: str,
        *,
        scope: str | None = None,
        perms: str = "rw",
        expires: float | None = None,
    ) -> tuple[str, str]:
        """A new token for user ``name``, whose account password this is; returns
        ``(token id, token text)``. The text is shown once: only its envelope is stored."""
        session = self._full_session(name, password)
        return self.create_token_for(session, label, scope=scope, perms=perms, expires=expires)

    def create_token_for(
        self,
        session: Session,
        label: str,
        *,
        scope: str | None = None,
        perms: str = "rw",
        expires: float | None = None,
    ) -> tuple[str, str]:
        """A new token from a logged-in whole-account session (a web login, an app password
        request): ``(token id, token text)``.

        ``scope`` (a directory path in the session) makes a scoped token that opens only
        that directory. A token session may create tokens no wider than itself (its own
        perms unless "rw"; expiring no later than it: a later or missing expiry is cut to
        its own); a scoped session none (it has no master key)."""
        label = _check_label(label)
        perms = _check_perms(perms)
        mk = getattr(session, "_mk", None)
        if not isinstance(mk, bytes) or len(mk) != crypto.KEY_BYTES:
            raise Forbidden("only a whole-account session can create tokens")
        held = getattr(session, "perms", "rw")
        if held != "rw" and perms != held:
            raise Forbidden("a token cannot create a token with other permissions than its own")
        now = self.clock()
        exp = _expiry(expires, now)
        parent = getattr(session, "token_id", None)
        if parent is not None:
            opened = self._opened_tokens.get(parent)
            parent_exp = _row_expiry(opened[3]) if opened is not None else None
            if parent_exp is None:  # not opened by this process: cannot tell its limits
                raise Forbidden("this token session cannot create tokens")
            if parent_exp and (exp == 0 or exp > parent_exp):
                exp = parent_exp
        env_id = crypto.random_id().hex()
        secret = tokens.new_secret()
        if scope is None:
            kind, scope_id, key = KIND_TOKEN, None, mk
        else:
            scope_id, key = session.scope_key(scope)
            kind = KIND_SCOPED
        sealed = tokens.seal_token(
            key,
            self._pepper,
            secret,
            _b(session.user_id),
            _b(env_id),
            kind,
            _b(scope_id),
            perms,
            exp,
        )
        row = _envelope_row(
            env_id,
            session.user_id,
            kind,
            sealed,
            label_ct=self._seal_label(session.user_id, env_id, label),
            scope_node=scope_id,
            perms=perms,
            expires=float(exp) if exp else None,
        )

        def once() -> None:
            with self.index.write(session.user_id):
                if not User.select().where(User.id == session.user_id).exists():
                    raise NotFound("no such user")
                row.save(force_insert=True)

        self.index.run(once)
        audit.emit("token_created", user_id=session.user_id, token_id=env_id, kind=kind)
        return env_id, tokens.encode(_b(env_id), secret)

    # -- listing and revoking ----------------------------------------------------------------
    def list_tokens(self, name: str) -> list[TokenInfo]:
        """Every token and recovery code of a user, oldest first; needs no password."""
        with self.index.connection():
            user = self._user(name)
            rows = list(
                Envelope.select()
                .where(
                    (Envelope.user == user.id)
                    & Envelope.kind.in_((KIND_TOKEN, KIND_SCOPED, KIND_RECOVERY))
                )
                .order_by(Envelope.created, Envelope.id)
            )
        return [
            TokenInfo(
                id=env.id,
                label=self._open_label(env),
                kind=env.kind,
                scope_node=env.scope_node,
                perms=env.perms or "rw",
                created=env.created,
                expires=env.expires,
                last_used=env.last_used,
            )
            for env in rows
        ]

    def revoke_token(self, name: str, token_id: str) -> None:
        """Delete a token's envelope (or a recovery code's): it stops working at once in
        every server process. ``NotFound`` if the user has no such token."""
        with self.index.connection():
            user = self._user(name)

            def once() -> int:
                with self.index.write(user.id):
                    return int(
                        Envelope.delete()
                        .where(
                            (Envelope.id == token_id.lower())
                            & (Envelope.user == user.id)
                            & Envelope.kind.in_((KIND_TOKEN, KIND_SCOPED, KIND_RECOVERY))
                        )
                        .execute()
                    )

            if not self.index.run(once):
                raise NotFound("no such token")
        audit.emit("token_revoked", user_id=user.id, token_id=token_id.lower())

    # -- logging in --------------------------------------------------------------------------
    def _token_login(self, name: str, parsed: tokens.ParsedToken) -> Session:
        """A session from a token (``Vault.login`` calls this for ``wdvt_`` text); no
        Argon2id. ``AuthError`` for anything but a live, intact token of this user."""
        from davserver.vault.tree import Session

        m = metrics.get()
        env_id = parsed.envelope_id.hex()
        try:
            with self.index.connection():
                env = fast.token_login(env_id, name)  # one indexed query, by id and user
                if env is None or env.kind not in (KIND_TOKEN, KIND_SCOPED):
                    # A recovery code's envelope never logs in, even named by a token.
                    m.logins.labels(KIND_TOKEN, "failure").inc()
                    raise AuthError("wrong user name or password")
                exp = _row_expiry(env.expires)
                if exp is None or (exp and exp <= self.clock()):
                    m.logins.labels(KIND_TOKEN, "failure").inc()
                    raise AuthError("wrong user name or password")
                try:
                    key = tokens.open_token(
                        tokens.SealedToken(env.kdf_params, env.verifier, env.wrapped),
                        self._pepper,
                        parsed.secret,
                        _b(env.user_id),
                        parsed.envelope_id,
                        env.kind,
                        _b(env.scope_node),
                        env.perms or "",
                        exp,
                    )
                except tokens.WrongSecret:
                    m.logins.labels(KIND_TOKEN, "failure").inc()
                    raise AuthError("wrong user name or password") from None
                except crypto.AuthenticationFailed:
                    log.error(
                        "integrity failure: token envelope %s verified but did not open", env_id
                    )
                    m.logins.labels(KIND_TOKEN, "failure").inc()
                    raise AuthError("wrong user name or password") from None
                session: Session
                if env.kind == KIND_TOKEN:
                    session = Session(
                        self,  # type: ignore[arg-type]
                        env.user_id,
                        env.user_name,
                        key,
                        env.root_id,
                        perms=str(env.perms),
                        token_id=env_id,
                    )
                    self._fold_pending_of(session)
                else:
                    user = User.get_by_id(env.user_id)
                    scope_id = str(env.scope_node)
                    session = self.open_scoped(user, scope_id, key, str(env.perms), env_id)
                self._opened_tokens[env_id] = (env.kind, env.scope_node, env.perms, env.expires)
                self._note_token_use(env_id, env.last_used)
        except DavServerError as exc:
            if not isinstance(exc, AuthError):
                m.logins.labels(KIND_TOKEN, "error").inc()
            raise
        m.logins.labels(KIND_TOKEN, "success").inc()
        return session

    def _token_alive(self, session: Session) -> bool:
        """For a cached token session: whether its envelope row still exists, unchanged
        (the kind, scope, perms and expiry it was opened with), and has not expired. One indexed
        query; revocations made by other processes show here at once, and a row edited to
        widen the token sends the login back to the envelope, which then fails to open."""
        token_id = getattr(session, "token_id", None)
        if token_id is None:
            return True
        opened = self._opened_tokens.get(token_id)
        with self.index.connection():
            row = fast.token_check(token_id, session.user_id)
            if row is None or opened is None or row[:4] != opened:
                self._opened_tokens.pop(token_id, None)
                return False
            expires, last_used = row[3], row[4]
            if expires is not None and float(expires) <= self.clock():
                return False
            self._note_token_use(token_id, last_used)
        return True

    def _note_token_use(self, token_id: str, last_used: float | None) -> None:
        """Record ``last_used`` at most once per ``LAST_USED_RESOLUTION``; best effort (a
        write the index cannot take never fails the login)."""
        now = time.time()
        if last_used is not None and now - float(last_used) < LAST_USED_RESOLUTION:
            return
        try:
            with self.index.atomic():
                fast.execute("token_used", (now, token_id, now - LAST_USED_RESOLUTION))
        except (pw.DatabaseError, DavServerError) as exc:
            log.warning("could not record a token's use: %s", exc)

    # -- recovery codes ----------------------------------------------------------------------
    def create_recovery_code(self, name: str, password: str) -> str:
        """A new recovery code for user ``name`` (the account password unlocks MK): text
        shown once, which can set a new password once. Replaces any older code."""
        session = self._full_session(name, password)
        mk = session._master_key()
        env_id = crypto.random_id().hex()
        secret = tokens.new_secret()
        sealed = tokens.seal_token(
            mk, self._pepper, secret, _b(session.user_id), _b(env_id), KIND_RECOVERY
        )
        row = _envelope_row(env_id, session.user_id, KIND_RECOVERY, sealed, perms="rw")

        def once() -> None:
            with self.index.write(session.user_id):
                Envelope.delete().where(
                    (Envelope.user == session.user_id) & (Envelope.kind == KIND_RECOVERY)
                ).execute()
                row.save(force_insert=True)

        self.index.run(once)
        audit.emit("recovery_code_created", user_id=session.user_id, token_id=env_id)
        return tokens.encode(_b(env_id), secret, tokens.RECOVERY_PREFIX)

    def reset_password_with_recovery(self, name: str, code: str, new_password: str) -> None:
        """Set a new password with a recovery code instead of the old password: the code
        unwraps MK, the password envelopes are replaced, and the code is used up (deleted
        in the same transaction). ``AuthError`` for a wrong, used or damaged code."""
        if not new_password:
            raise BadRequest("password must not be empty")
        if looks_like_credential(new_password):
            raise BadRequest("a password must not have the form of a token or recovery code")
        parsed = tokens.decode(code.strip(), tokens.RECOVERY_PREFIX)
        if parsed is None:
            raise AuthError("this is not a recovery code")
        env_id = parsed.envelope_id.hex()
        with self.index.connection():
            user = self._user(name)
            env = Envelope.get_or_none(
                (Envelope.id == env_id)
                & (Envelope.user == user.id)
                & (Envelope.kind == KIND_RECOVERY)
            )
            if env is None:
                raise AuthError("wrong or used recovery code")
            try:
                mk = tokens.open_token(
                    tokens.SealedToken(
                        bytes(env.kdf_params), bytes(env.verifier), bytes(env.wrapped)
                    ),
                    self._pepper,
                    parsed.secret,
                    _b(user.id),
                    _b(env.id),
                    KIND_RECOVERY,
                    b"",
                    env.perms or "",
                    0,
                )
            except tokens.WrongSecret:
                raise AuthError("wrong or used recovery code") from None
            except crypto.AuthenticationFailed:
                log.error("integrity failure: recovery envelope %s did not open", env.id)
                raise AuthError("the recovery code's envelope is damaged") from None
            new_env = self._new_password_envelope(user.id, mk, new_password)

            def once() -> None:
                with self.index.write(user.id):
                    used = (
                        Envelope.delete()
                        .where((Envelope.id == env_id) & (Envelope.kind == KIND_RECOVERY))
                        .execute()
                    )
                    if not used:  # a concurrent reset used it first
                        raise AuthError("wrong or used recovery code")
                    Envelope.delete().where(
                        (Envelope.user == user.id) & (Envelope.kind == "password")
                    ).execute()
                    new_env.save(force_insert=True)

            self.index.run(once)
        self._cache.forget_user(user.id)
        audit.emit("password_reset_with_recovery_code", user_id=user.id)

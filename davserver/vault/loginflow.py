"""Nextcloud's Login Flow v2, the engine's half: flows in the index, shared by every worker.

A client starts a flow (``start``) and gets two random tokens: the *poll token*, which it
keeps and polls with, and the *login token*, which goes into the URL of the page the user
opens in a browser. The user logs in there with their password; ``approve`` creates a
device token for the client (``Vault.create_token_for``, labelled with the client's name)
and leaves it in the flow's row, encrypted so that only the poll token opens it; the
client's next ``poll`` takes it out, exactly once, and the row is gone. A flow lives
``lifetime`` seconds (20 minutes, as Nextcloud's) from its start; after that every call
treats it as unknown, and the maintenance loop deletes it (``purge_expired``).

Why the rows are safe to lose (DESIGN §15, ``davserver.crypto.loginflow``): tokens are
stored only as keyed hashes under a pepper-derived key; the client's name is sealed under
a key from the login token; the app password is encrypted to a per-flow public key whose
secret key is wrapped under a key from the poll token, which never reaches the index. A
copy of the index, with or without the pepper, holds nothing that logs anyone in.

Worker processes share nothing but the index: each step is one indexed lookup or one
conditional write, and "exactly once" is the delete of the row that a poll wins.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import peewee as pw

from davserver import audit
from davserver.crypto import AuthenticationFailed
from davserver.crypto import loginflow as lfc
from davserver.errors import IntegrityError, Overloaded, RateLimited, StorageError
from davserver.index.models import LoginFlow
from davserver.vault.throttle import address_key

if TYPE_CHECKING:
    from davserver.vault import Vault
    from davserver.vault.tree import Session

log = logging.getLogger(__name__)

#: Seconds a flow lives from its start (Nextcloud's 20 minutes).
LIFETIME = 20 * 60
#: Most flows pending at once from one client address (IPv6: its /64), and server-wide:
#: starting one needs no login, so these bound what anonymous requests can make the index
#: hold (429 with Retry-After, resp. 503, above them).
MAX_PER_ADDRESS = 20
MAX_PENDING = 10_000

_POLL = b"poll"
_LOGIN = b"login"
# secrets.token_urlsafe(48) and (32): 64 and 43 characters of base64url.
POLL_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{64}")
LOGIN_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class NewFlow:
    poll_token: str
    login_token: str


@dataclass(frozen=True)
class Credentials:
    """What the client gets from its successful poll."""

    login_name: str
    app_password: str


class LoginFlows:
    """The flows of one vault (one per process; thread-safe, state in the index only)."""

    def __init__(self, vault: Vault, lifetime: float = LIFETIME) -> None:
        self.vault = vault
        self.lifetime = lifetime
        self._mac_key = vault.server_key(b"wdv-lflow-mac-v1")
        self._tag_key = vault.server_key(b"wdv-lflow-tag-v1")
        self._server_public, self._server_secret = lfc.server_keys(
            vault.server_key(b"wdv-lflow-box-v1")
        )

    # -- helpers ---------------------------------------------------------------------------
    def _cutoff(self) -> int:
        return int(self.vault.clock() - self.lifetime)

    def _tag(self, row: LoginFlow) -> bytes:
        return lfc.row_tag(
            self._tag_key,
            bytes(row.poll_mac),
            bytes(row.login_mac),
            bytes(row.public_key),
            int(row.created),
        )

    def _check_tag(self, row: LoginFlow) -> None:
        if not secrets.compare_digest(self._tag(row), bytes(row.tag)):
            log.error("integrity failure: a login flow row does not match its tag")
            raise IntegrityError("login flow row altered")

    def _open(self, login_token: str) -> tuple[LoginFlow, str] | None:
        """The pending (unexpired, unapproved) flow of ``login_token`` and its client name."""
        if not LOGIN_TOKEN_RE.fullmatch(login_token):
            return None
        login_mac = lfc.token_mac(self._mac_key, _LOGIN, login_token)
        try:
            with self.vault.index.connection():
                row = LoginFlow.get_or_none(
                    (LoginFlow.login_mac == login_mac)
                    & (LoginFlow.created > self._cutoff())
                    & LoginFlow.result_ct.is_null()
                )
        except pw.DatabaseError as exc:
            raise StorageError("index database error") from exc
        if row is None:
            return None
        self._check_tag(row)
        try:
            client = lfc.open_client(bytes(row.client_ct), login_token, login_mac)
        except AuthenticationFailed:
            log.error("integrity failure: a login flow's client name does not open")
            raise IntegrityError("login flow row altered") from None
        return row, client

    # -- the flow --------------------------------------------------------------------------
    def start(self, client: str, addr: str) -> NewFlow:
        """A new flow for the client named ``client`` (shown to the user, and the label of
        the token it gets), started from the address ``addr``."""
        poll_token, login_token = secrets.token_urlsafe(48), secrets.token_urlsafe(32)
        poll_mac = lfc.token_mac(self._mac_key, _POLL, poll_token)
        login_mac = lfc.token_mac(self._mac_key, _LOGIN, login_token)
        public, secret = lfc.flow_keys()
        created = int(self.vault.clock())
        addr_mac = lfc.token_mac(self._mac_key, b"addr", address_key(addr))[:16]
        row = LoginFlow(
            poll_mac=poll_mac,
            login_mac=login_mac,
            created=created,
            client_ct=lfc.seal_client(client, login_token, login_mac),
            public_key=public,
            secret_ct=lfc.seal_flow_secret(secret, poll_token, poll_mac),
            tag=b"",
            result_ct=None,
            addr_mac=addr_mac,
        )
        row.tag = self._tag(row)
        index = self.vault.index

        def once() -> None:
            with index.atomic():
                cutoff = self._cutoff()
                mine = [
                    int(r.created)
                    for r in LoginFlow.select(LoginFlow.created)
                    .where((LoginFlow.addr_mac == addr_mac) & (LoginFlow.created > cutoff))
                    .order_by(LoginFlow.created.desc())
                    .limit(MAX_PER_ADDRESS)
                ]
                if len(mine) >= MAX_PER_ADDRESS:
                    wait = max(1, mine[-1] - cutoff)  # until its oldest counted one expires
                    raise RateLimited("too many login flows pending", retry_after=wait)
                pending = LoginFlow.select().where(LoginFlow.created > cutoff).count()
                if pending >= MAX_PENDING:
                    raise Overloaded("too many login flows pending")
                row.save(force_insert=True)

        index.run(once)
        return NewFlow(poll_token, login_token)

    def client_of(self, login_token: str) -> str | None:
        """The client name of the pending flow of ``login_token``; None if there is none
        (unknown, expired or already approved)."""
        found = self._open(login_token)
        return None if found is None else found[1]

    def approve(self, login_token: str, session: Session, *, perms: str = "rw") -> bool:
        """Give the flow's client a token of ``session``'s user (labelled with the client's
        name); False if the flow is unknown, expired or approved already (then no token
        is left behind)."""
        found = self._open(login_token)
        if found is None:
            return False
        row, client = found
        token_id, token = self.vault.create_token_for(session, client, perms=perms)
        payload = json.dumps(
            {"loginName": session.user_name, "appPassword": token}, ensure_ascii=False
        ).encode("utf-8")
        sealed = lfc.seal_result(payload, bytes(row.public_key), self._server_secret)
        index = self.vault.index
        poll_mac = bytes(row.poll_mac)

        def once() -> int:
            with index.atomic():
                return int(
                    LoginFlow.update(result_ct=sealed)
                    .where(
                        (LoginFlow.poll_mac == poll_mac)
                        & LoginFlow.result_ct.is_null()
                        & (LoginFlow.created > self._cutoff())
                    )
                    .execute()
                )

        try:
            won = index.run(once) == 1
        except BaseException:
            self.vault.revoke_token(session.user_name, token_id)
            raise
        if not won:  # approved by another request meanwhile, or expired just now
            self.vault.revoke_token(session.user_name, token_id)
            return False
        audit.emit("login_flow_approved", user_id=session.user_id, token_id=token_id)
        return True

    def poll(self, poll_token: str) -> Credentials | None:
        """The credentials of an approved flow, once: the row is deleted by the poll that
        gets them. None while pending, and for unknown, expired or delivered flows."""
        if not POLL_TOKEN_RE.fullmatch(poll_token):
            return None
        poll_mac = lfc.token_mac(self._mac_key, _POLL, poll_token)
        index = self.vault.index

        def once() -> LoginFlow | None:
            with index.atomic():
                row = LoginFlow.get_or_none(LoginFlow.poll_mac == poll_mac)
                if row is None:
                    return None
                if int(row.created) <= self._cutoff():
                    LoginFlow.delete().where(LoginFlow.poll_mac == poll_mac).execute()
                    return None
                if row.result_ct is None:
                    return None
                taken = (
                    LoginFlow.delete()
                    .where((LoginFlow.poll_mac == poll_mac) & LoginFlow.result_ct.is_null(False))
                    .execute()
                )
                return row if taken == 1 else None

        row = index.run(once)
        if row is None:
            return None
        try:
            self._check_tag(row)
            secret = lfc.open_flow_secret(bytes(row.secret_ct), poll_token, poll_mac)
            plain = lfc.open_result(bytes(row.result_ct or b""), secret, self._server_public)
            doc = json.loads(plain.decode("utf-8"))
            return Credentials(str(doc["loginName"]), str(doc["appPassword"]))
        except (AuthenticationFailed, ValueError, KeyError, TypeError):
            log.error("integrity failure: an approved login flow does not open")
            raise IntegrityError("login flow row altered") from None

    def purge_expired(self) -> int:
        """Delete the flows past their lifetime (the maintenance loop); how many."""
        with self.vault.index.connection(), self.vault.index.atomic():
            return int(LoginFlow.delete().where(LoginFlow.created <= self._cutoff()).execute())

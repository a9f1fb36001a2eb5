"""The token API of the vault (``Vault.create_token`` and friends, DESIGN §13) on a real
SQLite index: what may create what, what is refused, what is stored, and the calls a scoped
token makes into the scoped sessions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from davserver.blobs.local import LocalBlobStore
from davserver.errors import AuthError, BadRequest, Forbidden, NotFound
from davserver.index.models import Envelope, User
from davserver.vault import Vault
from davserver.vault.tree import Session
from tests.harness.vaults import make_vault

PW = "pw-alice"


@pytest.fixture
def v(tmp_path: Path) -> Any:
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"))
    vault.create_user("alice", PW)
    vault.create_user("bob", "pw-bob")
    yield vault
    vault.close()


def test_the_row_holds_no_secret_and_no_clear_label(v: Vault) -> None:
    token_id, token = v.create_token("alice", PW, "Alice's phone", perms="wo")
    with v.index.connection():
        row = Envelope.get_by_id(token_id)
    raw = b"".join(
        bytes(x) if isinstance(x, bytes | memoryview) else str(x).encode()
        for x in row.__data__.values()
        if x is not None
    )
    assert b"Alice" not in raw and token[5:].encode() not in raw
    assert (row.kind, row.perms, row.expires, row.scope_node) == ("token", "wo", None, None)
    assert len(bytes(row.kdf_params)) == 29 and bytes(row.kdf_params)[0] == 0
    (info,) = v.list_tokens("alice")
    assert info.label == "Alice's phone" and info.perms == "wo"
    assert v.list_tokens("bob") == []


def test_a_label_moved_to_another_row_does_not_open(v: Vault) -> None:
    first, _ = v.create_token("alice", PW, "first")
    second, _ = v.create_token("alice", PW, "second")
    with v.index.connection():
        label = Envelope.get_by_id(first).label_ct
        Envelope.update(label_ct=label).where(Envelope.id == second).execute()
    labels = {t.id: t.label for t in v.list_tokens("alice")}
    assert labels == {first: "first", second: "(damaged label)"}


def test_creating_is_refused_for_bad_input(v: Vault) -> None:
    with pytest.raises(AuthError):
        v.create_token("alice", "wrong", "x")
    with pytest.raises(NotFound):
        v.create_token("nobody", PW, "x")
    with pytest.raises(BadRequest):
        v.create_token("alice", PW, "")
    with pytest.raises(BadRequest):
        v.create_token("alice", PW, "a\nb")
    with pytest.raises(BadRequest):
        v.create_token("alice", PW, "x" * 101)
    with pytest.raises(BadRequest):
        v.create_token("alice", PW, "x", perms="admin")
    with pytest.raises(BadRequest):
        v.create_token("alice", PW, "x", expires=time.time() - 1)
    _tid, token = v.create_token("alice", PW, "x")
    with pytest.raises(AuthError):
        v.create_token("alice", token, "y")  # a token is not the password


def test_passwords_of_the_token_form_are_refused(v: Vault) -> None:
    _tid, token = v.create_token("alice", PW, "x")
    code = v.create_recovery_code("alice", PW)
    for shaped in (token, code):
        with pytest.raises(BadRequest):
            v.create_user("carol", shaped)
        with pytest.raises(BadRequest):
            v.change_password("alice", PW, shaped)


def test_create_token_for_a_session(v: Vault) -> None:
    session = v.login("alice", PW)
    token_id, token = v.create_token_for(session, "web login")
    t = v.login("alice", token)
    assert t.token_id == token_id and t.perms == "rw"
    # A token session may create tokens no wider than itself.
    _rid, ro_token = v.create_token_for(t, "child", perms="ro")
    ro = v.login("alice", ro_token)
    assert ro.perms == "ro"
    v.create_token_for(ro, "grandchild", perms="ro")
    with pytest.raises(Forbidden):
        v.create_token_for(ro, "wider", perms="rw")


def test_a_token_made_by_an_expiring_token_expires_no_later(v: Vault) -> None:
    end = time.time() + 3600
    parent_id, parent = v.create_token("alice", PW, "parent", expires=end)
    session = v.login("alice", parent)
    never_id, _ = v.create_token_for(session, "asks for never")
    later_id, _ = v.create_token_for(session, "asks for later", expires=end + 86400)
    sooner_id, _ = v.create_token_for(session, "asks for sooner", expires=end - 60)
    got = {t.id: t.expires for t in v.list_tokens("alice")}
    assert got[never_id] == got[later_id] == got[parent_id]
    assert got[sooner_id] is not None and got[sooner_id] < got[parent_id]


def test_revoke(v: Vault) -> None:
    token_id, token = v.create_token("alice", PW, "x")
    with pytest.raises(NotFound):
        v.revoke_token("bob", token_id)  # not bob's
    with pytest.raises(NotFound):
        v.revoke_token("alice", "0" * 32)
    v.login("alice", token)
    v.revoke_token("alice", token_id.upper())
    with pytest.raises(AuthError):
        v.login("alice", token)  # the cached session too: its row changed
    assert v.login_cached("alice", token) is None
    with pytest.raises(NotFound):
        v.revoke_token("alice", token_id)
    with v.index.connection():  # password envelopes are never revoked as tokens
        pw_id = Envelope.get(Envelope.user == User.get(User.name == "alice").id).id
    with pytest.raises(NotFound):
        v.revoke_token("alice", pw_id)


def test_last_used_is_written_at_most_once_a_minute(v: Vault) -> None:
    token_id, token = v.create_token("alice", PW, "x")
    assert v.list_tokens("alice")[0].last_used is None
    v.login("alice", token)
    first = v.list_tokens("alice")[0].last_used
    assert first is not None
    for _ in range(3):
        v.login("alice", token)  # cached: re-checked, not rewritten
    assert v.list_tokens("alice")[0].last_used == first
    with v.index.connection():
        Envelope.update(last_used=first - 61).where(Envelope.id == token_id).execute()
    v.login("alice", token)
    assert v.list_tokens("alice")[0].last_used > first - 1


def test_password_envelope_ids_in_a_token_do_not_log_in(v: Vault) -> None:
    from davserver.crypto import tokens as tokenfmt

    with v.index.connection():
        pw_id = Envelope.get(Envelope.kind == "password").id
    forged = tokenfmt.encode(bytes.fromhex(pw_id), b"\x00" * 32)
    with pytest.raises(AuthError):
        v.login("alice", forged)


def test_a_recovery_envelope_named_by_a_token_does_not_log_in(v: Vault) -> None:
    from davserver.crypto import tokens as tokenfmt

    code = v.create_recovery_code("alice", PW)
    parsed = tokenfmt.decode(code, tokenfmt.RECOVERY_PREFIX)
    assert parsed is not None
    as_token = tokenfmt.encode(parsed.envelope_id, parsed.secret)
    with pytest.raises(AuthError):
        v.login("alice", as_token)
    v.reset_password_with_recovery("alice", code, "new")  # the code itself still works


# -- scoped tokens ------------------------------------------------------------------------


def _dir_key(session: Session, path: str) -> tuple[str, bytes]:
    from davserver.vault.nodes import split_path

    with session._db():
        ref = session._walk(split_path(path))
        return ref.row.id, ref.key


def test_a_scoped_token_wraps_the_directory_key(v: Vault) -> None:
    session = v.login("alice", PW)
    session.mkdir("/photos")
    node_id, dk = _dir_key(session, "/photos")
    token_id, token = v.create_token("alice", PW, "frame", scope="/photos", perms="ro")
    (info,) = v.list_tokens("alice")
    assert (info.kind, info.scope_node, info.perms) == ("scoped", node_id, "ro")
    got = v.login("alice", token)
    assert got.scoped and got._mk is None
    assert (got.scope_id, got._scope_key, got.perms, got.token_id) == (
        node_id,
        dk,
        "ro",
        token_id,
    )
    # The scope is bound: the row pointed at another directory no longer opens.
    session.mkdir("/other")
    other_id, _ = _dir_key(session, "/other")
    with v.index.connection():
        Envelope.update(scope_node=other_id).where(Envelope.id == token_id).execute()
    with pytest.raises(AuthError):
        v.login("alice", token)  # the cached session too: its row changed

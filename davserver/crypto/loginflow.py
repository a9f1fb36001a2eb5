"""What a Nextcloud login flow (v2) keeps in the index, sealed so that the index alone, or the
index with the pepper, gives nothing usable (DESIGN §15).

A flow has two secrets that only ever travel to the client: the *poll token* (the client
keeps it and polls with it) and the *login token* (in the URL of the page the user opens).
The index stores keyed hashes of both (``token_mac``) and:

- the client's name, wrapped under a key from the login token (``seal_client``);
- ``flow_keys()``: an X25519 key pair per flow; the public key in clear, the secret key
  wrapped under ``poll_kek(poll token)`` (``seal_flow_secret``), bound to the flow's poll MAC;
- at approval the server has the login token, not the poll token: it encrypts the login
  name and app password to the flow's public key with a box from the server's own key pair
  (``seal_result``; the server key derives from the pepper, so nobody without it can put a
  forged result in a row), and only the holder of the poll token can open it
  (``open_result``);
- ``row_tag``: a MAC of the row's public values under a pepper-derived key, checked before
  the server encrypts anything to a row's public key (a writer of the index cannot make the
  server seal an app password to a key of its own).

Pure functions, no I/O; opening anything malformed raises ``AuthenticationFailed``.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.public

from .primitives import AuthenticationFailed, fields, keyed_hash, unwrap, wrap

_MAC_PERSON = b"wdv-lflow-mac-v1"
_KEK_PERSON = b"wdv-lflow-kek-v1"
_TAG_PERSON = b"wdv-lflow-tag-v1"
_CLIENT_PERSON = b"wdv-lflow-cli-v1"
_LABEL = b"wdv/loginflow/v1"
_RESULT_LABEL = b"wdv/loginflow/result/v1"

PUBLIC_KEY_BYTES = 32


def token_mac(key: bytes, kind: bytes, token: str) -> bytes:
    """The 32-byte keyed hash under which a flow's token of ``kind`` (``b"poll"`` or
    ``b"login"``) is looked up; ``key`` is a server key."""
    return keyed_hash(key, fields(_LABEL, kind, token), _MAC_PERSON)


def poll_kek(poll_token: str) -> bytes:
    """The key that wraps a flow's secret key: only the poll token's holder can derive it."""
    raw = poll_token.encode("ascii")
    if not 16 <= len(raw) <= 64:
        raise ValueError("a poll token is 16 to 64 ASCII characters")
    return keyed_hash(raw, _LABEL, _KEK_PERSON)


def seal_client(name: str, login_token: str, login_mac: bytes) -> bytes:
    """The client's name (shown on the login page, the label of its token), under a key
    only the login token's holder can derive."""
    return wrap(name.encode("utf-8"), _login_kek(login_token), fields(_LABEL, login_mac))


def open_client(sealed: bytes, login_token: str, login_mac: bytes) -> str:
    try:
        kek = _login_kek(login_token)
    except (ValueError, UnicodeEncodeError) as exc:
        raise AuthenticationFailed("malformed login token") from exc
    plain = unwrap(sealed, kek, fields(_LABEL, login_mac))
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AuthenticationFailed("client name is not UTF-8") from exc


def _login_kek(login_token: str) -> bytes:
    raw = login_token.encode("ascii")
    if not 16 <= len(raw) <= 64:
        raise ValueError("a login token is 16 to 64 ASCII characters")
    return keyed_hash(raw, _LABEL, _CLIENT_PERSON)


def flow_keys() -> tuple[bytes, bytes]:
    """(public key, secret key) of a new flow."""
    sk = nacl.public.PrivateKey.generate()
    return bytes(sk.public_key), bytes(sk)


def server_keys(seed: bytes) -> tuple[bytes, bytes]:
    """(public key, secret key) of the server, from a 32-byte server key."""
    sk = nacl.public.PrivateKey(seed)
    return bytes(sk.public_key), bytes(sk)


def seal_flow_secret(secret_key: bytes, poll_token: str, poll_mac: bytes) -> bytes:
    return wrap(secret_key, poll_kek(poll_token), fields(_LABEL, poll_mac))


def open_flow_secret(sealed: bytes, poll_token: str, poll_mac: bytes) -> bytes:
    try:
        kek = poll_kek(poll_token)
    except (ValueError, UnicodeEncodeError) as exc:
        raise AuthenticationFailed("malformed poll token") from exc
    return unwrap(sealed, kek, fields(_LABEL, poll_mac))


def row_tag(
    key: bytes, poll_mac: bytes, login_mac: bytes, public_key: bytes, created: int
) -> bytes:
    """MAC of a flow row's public values (``key``: a server key)."""
    return keyed_hash(key, fields(_LABEL, poll_mac, login_mac, public_key, created), _TAG_PERSON)


def seal_result(payload: bytes, flow_public: bytes, server_secret: bytes) -> bytes:
    """``payload`` (the login name and app password) for the flow's secret key only."""
    box = nacl.public.Box(nacl.public.PrivateKey(server_secret), nacl.public.PublicKey(flow_public))
    return bytes(box.encrypt(fields(_RESULT_LABEL, payload)))


def open_result(sealed: bytes, flow_secret: bytes, server_public: bytes) -> bytes:
    try:
        box = nacl.public.Box(
            nacl.public.PrivateKey(flow_secret), nacl.public.PublicKey(server_public)
        )
        plain = bytes(box.decrypt(sealed))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise AuthenticationFailed("login flow result does not open") from exc
    head = fields(_RESULT_LABEL)
    if not plain.startswith(head) or len(plain) < len(head) + 2:
        raise AuthenticationFailed("login flow result is malformed")
    size = int.from_bytes(plain[len(head) : len(head) + 2], "big")
    body = plain[len(head) + 2 :]
    if len(body) != size:
        raise AuthenticationFailed("login flow result is malformed")
    return body

"""The audit log: security events as JSON lines, one per event, to a file or stderr.

Events (``event`` field) and what else each line holds:

=================  =============================================================
``login_failed``   ``user_id`` (null for an unknown name), ``user_tag``, ``addr_mac``
``login_throttled``  ``user_tag``, ``addr_mac``, ``limit`` (address, pair, user),
                   ``retry_after``
``user_created``   ``user_id``
``user_deleted``   ``user_id``
``password_changed``  ``user_id``
``quota_changed``  ``user_id``, ``quota_bytes`` (null: the server default; 0: unlimited)
``lock_broken``    ``user_id`` (the lock's owner), ``token``
``login_flow_approved``  ``user_id``, ``token_id`` (a login flow gave its client a token)
``app_password_issued``  ``user_id``, ``token_id`` (OCS ``getapppassword``)
``app_password_rotated``  ``user_id``, ``token_id`` (the new one; OCS ``apppassword/rotate``)
=================  =============================================================

Every line also has ``time`` (RFC 3339, UTC), ``ts`` (Unix seconds) and ``pid``. There are
never user names, paths, file names, passwords or addresses in clear: a user is an id (or,
for a name that may not exist, ``user_tag``), an address ``addr_mac``; both tags are keyed
BLAKE2b-128 under a key the vault derives from the pepper (``Vault.server_key``), so they
stay the same across restarts and processes (one can follow an address through the log)
but cannot be reversed or computed without the pepper. Lock tokens are not secrets (WebDAV
shows them to anyone who may read the resource) and are logged as they are.

**Off by default** (``audit.file`` empty): a server should write no file its operator did
not ask for, and with stderr as the default every CLI command would print JSON there;
failed and throttled logins are in the server log anyway (as warnings with tags). Set
``audit.file`` to a path (opened in append mode, 0600, one ``write`` per line so that forked
workers and the CLI can share it) or ``-`` for stderr (the journal under systemd).

A line that cannot be written (a full disk) is counted (``davserver_audit_write_failures``)
and logged; it never fails the operation it records. This module imports nothing of ours
but ``davserver.metrics``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
from typing import Any

from davserver import metrics

log = logging.getLogger(__name__)

#: The purpose under which the vault derives the tag key (``Vault.server_key``).
KEY_PURPOSE = b"wdv-audit-v1"
_ADDR_PERSON = b"wdv-audit-addr"
_USER_PERSON = b"wdv-audit-user"

_lock = threading.Lock()
_fd: int | None = None
_owns_fd = False
_key: bytes | None = None
_target = ""


def configure(target: str, key: bytes) -> None:
    """Write events to ``target`` (a file path, ``-`` for stderr, ``""`` for nowhere), with
    ``key`` (32 bytes) for the address and name tags. Replaces an earlier configuration."""
    global _fd, _owns_fd, _key, _target
    with _lock:
        if _target == target and _key == key:
            return
        _close_locked()
        _key = key
        _target = target
        if not target:
            return
        if target == "-":
            _fd, _owns_fd = sys.stderr.fileno(), False
            return
        _fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        _owns_fd = True


def _close_locked() -> None:
    global _fd, _owns_fd, _target
    if _fd is not None and _owns_fd:
        try:
            os.close(_fd)
        except OSError:
            pass
    _fd, _owns_fd, _target = None, False, ""


def close() -> None:
    with _lock:
        _close_locked()


def enabled() -> bool:
    return _fd is not None


def _tag(data: str, person: bytes) -> str | None:
    if _key is None:
        return None
    return hashlib.blake2b(
        data.encode("utf-8"), key=_key, person=person, digest_size=16
    ).hexdigest()


def addr_mac(addr: str) -> str | None:
    """The tag of a client address (keyed BLAKE2b, hex)."""
    return _tag(addr, _ADDR_PERSON)


def user_tag(name: str) -> str | None:
    """The tag of a user name that was tried (keyed BLAKE2b, hex)."""
    return _tag(name, _USER_PERSON)


def emit(event: str, **fields: Any) -> None:
    """Write one event. Callers pass ids, tags and numbers only (see the module)."""
    fd = _fd
    if fd is None:
        return
    now = time.time()
    record: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "ts": round(now, 3),
        "event": event,
        "pid": os.getpid(),
        **fields,
    }
    line = (json.dumps(record, separators=(",", ":"), sort_keys=False) + "\n").encode("utf-8")
    try:
        os.write(fd, line)  # one write per line: appends from several processes stay whole
    except OSError as exc:
        metrics.get().audit_write_failures.inc()
        log.warning("could not write an audit event (%s): %s", event, exc.strerror or exc)

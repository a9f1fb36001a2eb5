"""What a session may do: the rules of the permissions ``rw``, ``ro`` and ``wo`` in one place.

Every session (full or scoped, DESIGN §13) carries ``perms``; the ``Session`` operations call
``check`` before they touch anything, so the rules hold for every caller (WebDAV, Nextcloud
routes, the CLI) and a refusal is ``Forbidden`` (403 over HTTP).

- ``rw``: everything.
- ``ro``: reading only (contents, listings, properties, versions, the trash); every change is
  refused: PUT, MKCOL, DELETE, MOVE, COPY, PROPPATCH, LOCK, chunked uploads, restores.
- ``wo``, upload only (a camera that adds photos and must never see the library): create new
  files and directories; stat a directory (clients check that a folder exists). Nothing else:
  no reading or stat of a file, no listing, no overwrite, no DELETE/MOVE/COPY/PROPPATCH/LOCK,
  no versions, no trash. That a name is taken still shows (a PUT to it is refused): creating
  a file needs that answer.

The operations, as the vault names them:

- ``READ``: a file's content, a listing, properties, checksums, versions, the trash;
- ``STAT``: one node's own entry (``kind`` says which);
- ``CREATE``: a new file or directory (``exists``: whether the name is taken already, which
  makes it an overwrite);
- ``CHANGE``: anything that alters or removes what exists, and locks.
"""

from __future__ import annotations

from davserver.errors import BadRequest, Forbidden

RW, RO, WO = "rw", "ro", "wo"
PERMS = (RW, RO, WO)

READ, STAT, CREATE, CHANGE = "read", "stat", "create", "change"


def checked(perms: str) -> str:
    """``perms`` if it is one of ``PERMS``; ``BadRequest`` otherwise (never guess)."""
    if perms not in PERMS:
        raise BadRequest(f"unknown permissions {perms!r} (rw, ro or wo)")
    return perms


def allowed(perms: str, op: str, *, kind: str | None = None, exists: bool = False) -> bool:
    """Whether a session with ``perms`` may do ``op``."""
    if perms == RW:
        return True
    if perms == RO:
        return op in (READ, STAT)
    if perms == WO:
        if op == STAT:
            return kind == "dir"
        if op == CREATE:
            return not exists
        return False
    return False  # pragma: no cover - ``checked`` keeps other values out


_WHAT = {
    RO: "this session is read-only",
    WO: "this session may only upload new files",
}


def check(perms: str, op: str, *, kind: str | None = None, exists: bool = False) -> None:
    """``Forbidden`` unless ``allowed``."""
    if not allowed(perms, op, kind=kind, exists=exists):
        raise Forbidden(_WHAT.get(perms, "not permitted"))

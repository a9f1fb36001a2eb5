"""The Nextcloud sync engine's contract: ``oc:id``, ``oc:permissions``, ``oc:size``, the
data fingerprint, and the ``ETag``/``OC-ETag``/``OC-FileId`` headers of a write.

A Nextcloud desktop or mobile client syncs by comparing ETags top down: it descends only into
collections whose ETag changed since its last run (a collection's ETag changes whenever
anything below it does, DESIGN §7), identifies items across renames by ``oc:id``, decides
what it may do by ``oc:permissions``, and after a write reads the new ETag and file id from
the answer's headers instead of asking again. This module is the one place that turns a
vault ``Entry`` into those values.
"""

from __future__ import annotations

from typing import Any

from davserver.vault.tree import Entry

OC_NS = "http://owncloud.org/ns"
OC_SIZE = "{%s}size" % OC_NS  # noqa: UP031 - braces are literal here
OC_DATA_FINGERPRINT = "{%s}data-fingerprint" % OC_NS  # noqa: UP031

# ownCloud/Nextcloud permission letters: R share (a no-op here, but clients expect it),
# G read, D delete, N rename, V move, W write (files), C create files, K create folders.
# No S (shared) or M (mounted): rclone's --webdav-owncloud-exclude-shares/-mounts look for
# those. The root cannot be deleted, renamed or moved.
_PERMISSIONS = {
    # perms of the session: (file, directory, root)
    "rw": ("RGDNVW", "RGDNVCK", "RGCK"),
    "ro": ("G", "G", "G"),
    "wo": ("", "CK", "CK"),
}


def permissions(entry: Entry, session: Any) -> str:
    """``oc:permissions`` of ``entry`` as ``session`` may use it: its ``perms`` ("rw", "ro"
    read-only, "wo" write-only; "rw" when it has none) limit the letters."""
    perms = getattr(session, "perms", "rw")
    file, folder, root = _PERMISSIONS.get(perms, _PERMISSIONS["rw"])
    if not entry.is_dir:
        return file
    # A scoped session's root (a directory S) is its root too: not to be deleted or moved.
    is_root = entry.parent_id is None or entry.id == getattr(session, "root_id", None)
    return root if is_root else folder


def oc_id(entry: Entry, instance_id: str) -> str:
    """``oc:id`` (and ``OC-FileId``) as Nextcloud forms it: the file id, zero-padded to
    eight digits, then the server's instance id (``oc`` and ten letters or digits)."""
    return f"{entry.fileid:08d}{instance_id}"


def quoted_etag(entry: Entry) -> str:
    """The entity-tag with its quotes, as the ``ETag`` header and ``getetag`` carry it."""
    return f'"{entry.etag}"'


def entity_headers(entry: Entry, instance_id: str) -> list[tuple[str, str]]:
    """``ETag``, ``OC-ETag`` (the same value) and ``OC-FileId`` of what a PUT, MKCOL, MOVE,
    COPY or chunk assembly just wrote: the client records them without a PROPFIND."""
    etag = quoted_etag(entry)
    return [("ETag", etag), ("OC-ETag", etag), ("OC-FileId", oc_id(entry, instance_id))]


def write_headers(session: Any, entry: Entry) -> list[tuple[str, str]]:
    """``entity_headers`` with the instance id of ``session``'s index."""
    return entity_headers(entry, session.server_identity()[0])


__all__ = [
    "OC_DATA_FINGERPRINT",
    "OC_SIZE",
    "entity_headers",
    "oc_id",
    "permissions",
    "quoted_etag",
    "write_headers",
]

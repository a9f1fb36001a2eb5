"""``/remote.php/dav/trashbin/USER/``: the trash, as Nextcloud serves it.

::

    trashbin/USER/                 the trash home: trash/, restore/
    trashbin/USER/trash/           every deleted item (PROPFIND); DELETE empties the trash
    trashbin/USER/trash/NAME       one item: PROPFIND, GET/HEAD (a file), DELETE (purge),
                                   MOVE to trashbin/USER/restore/NAME (restore)
    trashbin/USER/trash/NAME/sub/  what a deleted folder held: PROPFIND, GET/HEAD of files
    trashbin/USER/restore/         where an item is moved to restore it (lists nothing)

``NAME`` is the vault's name of the item in the trash (``TrashEntry.name``: ``NAME.d<seconds>``
as in Nextcloud); the original name and location are the ``nc:trashbin-filename`` and
``nc:trashbin-original-location`` properties (decrypted when asked for, never logged),
``nc:trashbin-deletion-time`` is in Unix seconds. A restore puts the item back where it was
(the vault picks a free name at the root if that folder is gone); ``Overwrite`` is ignored,
as Nextcloud does.

``USER`` must be the logged-in user (404 otherwise, as everywhere).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wsgidav import util
from wsgidav.dav_error import HTTP_FORBIDDEN, HTTP_NOT_FOUND, DAVError

from davserver.dav import history, syncprops
from davserver.dav.destination import TRASHBIN_PREFIX, check_user, parse_destination, under
from davserver.dav.history import NC, OC, D, Row
from davserver.dav.resources import forget_resources

if TYPE_CHECKING:
    from davserver.dav.resources import Provider
    from davserver.vault.history import TrashEntry
    from davserver.vault.tree import Entry, Session

TRASHBIN_FILENAME = NC + "trashbin-filename"
TRASHBIN_LOCATION = NC + "trashbin-original-location"
TRASHBIN_DELETED = NC + "trashbin-deletion-time"
_HOME_ALLOW = "OPTIONS, PROPFIND"
_TRASH_ALLOW = "OPTIONS, PROPFIND, DELETE"
_ITEM_ALLOW = "OPTIONS, GET, HEAD, PROPFIND, DELETE, MOVE"


def serve(
    provider: Provider, environ: dict[str, Any], start_response: Any, session: Session, rest: str
) -> Any:
    """Answer one request below ``TRASHBIN_PREFIX`` (``rest`` is the path after it)."""
    return history.answer(
        environ,
        start_response,
        lambda: _route(provider, environ, start_response, session, history.segments(rest)),
    )


def _route(
    provider: Provider,
    environ: dict[str, Any],
    start_response: Any,
    session: Session,
    parts: list[str],
) -> Any:
    base, method, below = history.own_space(environ, session, TRASHBIN_PREFIX, parts)
    if not below or (below == ["restore"]):
        return _home(environ, start_response, session, base, below, method)
    if below[0] != "trash":
        raise DAVError(HTTP_NOT_FOUND)
    if len(below) == 1:
        return _trash(environ, start_response, session, base, method)
    return _item(provider, environ, start_response, session, base, below[1:], method)


def _home(
    environ: dict[str, Any],
    start_response: Any,
    session: Session,
    base: str,
    below: list[str],
    method: str,
) -> Any:
    if method == "OPTIONS":
        return history.options(start_response, _HOME_ALLOW)
    if method != "PROPFIND":
        if method in ("PUT", "MKCOL", "DELETE", "MOVE", "COPY", "PROPPATCH", "LOCK"):
            raise DAVError(HTTP_FORBIDDEN, "this collection cannot be changed")
        raise history.not_allowed(_HOME_ALLOW)
    mode, names = history.parse_propfind(environ)
    depth = history.depth(environ)
    if below:
        rows = [history.collection(base + "/restore/", "restore")]
    else:
        rows = [history.collection(base + "/", session.user_name)]
        if depth == "1":
            rows.append(history.collection(base + "/trash/", "trash"))
            rows.append(history.collection(base + "/restore/", "restore"))
    return history.multistatus(environ, start_response, rows, mode, names)


def _trash(
    environ: dict[str, Any], start_response: Any, session: Session, base: str, method: str
) -> Any:
    if method == "OPTIONS":
        return history.options(start_response, _TRASH_ALLOW)
    if method == "DELETE":
        session.vault.freeing_space(session.trash_empty)  # a full disk cannot stop it
        forget_resources(environ)
        return history.no_content(start_response)
    if method == "PROPFIND":
        mode, names = history.parse_propfind(environ)
        depth = history.depth(environ)
        rows = [history.collection(base + "/trash/", "trash")]
        if depth == "1":
            instance_id = session.server_identity()[0]
            rows += [_item_row(base, item, instance_id) for item in session.trash_items()]
        return history.multistatus(environ, start_response, rows, mode, names)
    if method in ("PUT", "MKCOL", "MOVE", "COPY", "PROPPATCH", "LOCK"):
        raise DAVError(HTTP_FORBIDDEN, "the trash is changed by deleting files")
    raise history.not_allowed(_TRASH_ALLOW)


def _find(session: Session, name: str) -> TrashEntry:
    for item in session.trash_items():
        if item.name == name:
            return item
    raise DAVError(HTTP_NOT_FOUND)


def _entry_props(row: Row, entry: Entry, name: str, instance_id: str) -> Row:
    """What a trashed file or folder (an item or a member of one) has."""
    props = row.props
    props[D + "resourcetype"] = history.resourcetype(entry.is_dir)
    props[D + "displayname"] = name
    props[D + "getlastmodified"] = util.get_rfc1123_time(entry.mtime)
    props[D + "getetag"] = f'"{entry.etag}"'
    props[OC + "fileid"] = str(entry.fileid)
    props[OC + "id"] = syncprops.oc_id(entry, instance_id)
    props[OC + "size"] = str(entry.bytes_below)
    if not entry.is_dir:
        props[D + "getcontentlength"] = str(entry.size)
        props[D + "getcontenttype"] = str(util.guess_mime_type(name))
    return row


def _item_row(base: str, item: TrashEntry, instance_id: str) -> Row:
    slash = "/" if item.entry.is_dir else ""
    row = Row(f"{base}/trash/{item.name}{slash}")
    row.props[TRASHBIN_FILENAME] = item.original_name
    row.props[TRASHBIN_LOCATION] = item.original_location
    row.props[TRASHBIN_DELETED] = str(int(item.deleted_at))
    return _entry_props(row, item.entry, item.original_name, instance_id)


def _member_row(base: str, item: TrashEntry, sub: list[str], entry: Entry, instance_id: str) -> Row:
    """A member of a trashed folder, ``sub`` its path below the item."""
    slash = "/" if entry.is_dir else ""
    row = Row(f"{base}/trash/{item.name}/{'/'.join(sub)}{slash}")
    location = "/".join([item.original_location.strip("/"), *sub]).lstrip("/")
    row.props[TRASHBIN_FILENAME] = entry.name
    row.props[TRASHBIN_LOCATION] = location
    row.props[TRASHBIN_DELETED] = str(int(item.deleted_at))
    return _entry_props(row, entry, entry.name, instance_id)


def _item(
    provider: Provider,
    environ: dict[str, Any],
    start_response: Any,
    session: Session,
    base: str,
    path: list[str],
    method: str,
) -> Any:
    """``trash/NAME`` (``path`` = [NAME]) or a member below it."""
    if method == "OPTIONS":
        return history.options(start_response, _ITEM_ALLOW)
    top = len(path) == 1
    if method == "DELETE":
        if not top:
            raise DAVError(HTTP_FORBIDDEN, "only a whole trash item can be deleted")
        session.vault.freeing_space(lambda: session.trash_purge(path[0]))
        forget_resources(environ)
        return history.no_content(start_response)
    if method == "MOVE":
        if not top:
            raise DAVError(HTTP_FORBIDDEN, "only a whole trash item can be restored")
        return _restore(provider, environ, start_response, session, path[0])
    if method in history.DOWNLOADS:
        return _get(environ, start_response, session, path)
    if method == "PROPFIND":
        mode, names = history.parse_propfind(environ)
        depth = history.depth(environ)
        item = _find(session, path[0])
        sub = path[1:]
        entry = session.trash_stat("/".join(path)) if sub else item.entry
        iid = session.server_identity()[0]
        rows = [_member_row(base, item, sub, entry, iid) if sub else _item_row(base, item, iid)]
        if depth == "1" and entry.is_dir:
            for member in session.trash_list_dir("/".join(path)):
                rows.append(_member_row(base, item, [*sub, member.name], member, iid))
        return history.multistatus(environ, start_response, rows, mode, names)
    if method in ("PUT", "MKCOL", "COPY", "PROPPATCH", "LOCK"):
        raise DAVError(HTTP_FORBIDDEN, "trash items are read-only")
    raise history.not_allowed(_ITEM_ALLOW)


def _get(environ: dict[str, Any], start_response: Any, session: Session, path: list[str]) -> Any:
    trash_path = "/".join(path)
    if len(path) == 1:
        item = _find(session, path[0])
        entry, name = item.entry, item.original_name
    else:
        entry = session.trash_stat(trash_path)
        name = entry.name
    if entry.is_dir:
        raise history.not_allowed("OPTIONS, PROPFIND, DELETE, MOVE")
    return history.download(
        environ,
        start_response,
        name=name,
        size=entry.size,
        mtime=entry.mtime,
        etag=entry.etag,
        opener=lambda: session.trash_open(trash_path),
    )


def _restore(
    provider: Provider, environ: dict[str, Any], start_response: Any, session: Session, name: str
) -> Any:
    """MOVE ``trash/NAME`` to ``restore/…``: back to where it was deleted from."""
    dest = parse_destination(environ)
    rest = under(dest, TRASHBIN_PREFIX)
    if rest is None:
        raise DAVError(HTTP_FORBIDDEN, "a trash item is restored by moving it into restore/")
    parts = history.segments(rest)
    if parts:
        check_user(session, parts[0])
    if len(parts) < 3 or parts[1] != "restore":
        raise DAVError(HTTP_FORBIDDEN, "a trash item is restored by moving it into restore/")
    _find(session, name)
    # Where it goes is known once it is there (its folder, or the root if that is gone): the
    # lock check then rolls the restore back (423) if that folder is locked.
    with history.locks_checked(provider, environ, session, []):
        restored = session.trash_restore(name)
        history.check_unlocked(provider, environ, session, util.get_uri_parent(restored) or "/")
    forget_resources(environ)
    return history.no_content(start_response, "201 Created")

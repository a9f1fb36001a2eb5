"""WsgiDAV resources backed by the vault: one file or directory of the logged-in user's tree.

A resource is built from a vault ``Entry`` (one index lookup, or one ``list_dir`` for all members
of a collection), so PROPFIND never asks the index once per member for sizes, times or ETags.
Dead properties live in the index per node, so they move with it; they are read once per
resource and request.

Tree-wide operations (DELETE, COPY, MOVE) are done natively in one vault call each
(``handle_delete``/``handle_copy``/``handle_move``); the lock checks and lock clean-up that
WsgiDAV would otherwise do per member are therefore done here.
"""

from __future__ import annotations

import contextlib
import logging
import time
import unicodedata
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from wsgidav import util, xml_tools
from wsgidav.dav_error import (
    HTTP_CONFLICT,
    HTTP_INTERNAL_ERROR,
    HTTP_METHOD_NOT_ALLOWED,
    HTTP_NOT_FOUND,
    HTTP_PRECONDITION_FAILED,
    DAVError,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, _DAVResource
from wsgidav.util import etree

from davserver.dav import syncprops
from davserver.dav.errors import vault_call
from davserver.dav.locks import lock_href
from davserver.vault.tree import Entry, Session

if TYPE_CHECKING:
    from davserver.dav.interface import TreeProvider
    from davserver.dav.locks import DavLockManager

    #: The provider as resources and handlers see it (``provider.VaultProvider`` is one).
    Provider = TreeProvider["_VaultResource"]

log = logging.getLogger(__name__)

SESSION_KEY = "davserver.session"
CACHE_KEY = "davserver.resources"
CREATED_KEY = "davserver.created"
MTIME_ACCEPTED_KEY = "davserver.mtime_accepted"

OC_NS = "http://owncloud.org/ns"
OC_CHECKSUMS = "{%s}checksums" % OC_NS  # noqa: UP031 - braces are literal here
OC_FILEID = "{%s}fileid" % OC_NS  # noqa: UP031
OC_ID = "{%s}id" % OC_NS  # noqa: UP031
OC_PERMISSIONS = "{%s}permissions" % OC_NS  # noqa: UP031
# rclone's fastmail vendor reads the SHA-1 from this element; its parser matches the
# namespace "ME:" literally (checked against rclone 1.75).
ME_SHA1 = "{ME:}sha1hex"
OC_SIZE = syncprops.OC_SIZE
OC_DATA_FINGERPRINT = syncprops.OC_DATA_FINGERPRINT
# Read-only properties we compute; PROPPATCH on them is 403 (cannot-modify-protected-property).
COMPUTED_PROPS = (
    OC_CHECKSUMS,
    OC_FILEID,
    OC_ID,
    OC_PERMISSIONS,
    OC_SIZE,
    OC_DATA_FINGERPRINT,
    ME_SHA1,
)
# Set by davserver.dav.nextcloud when a request came through /remote.php/dav/files/USER:
# hrefs in responses then carry that prefix.
HREF_PREFIX_KEY = "davserver.href_prefix"
_HREF_SAFE = "/!*'(),$-_|."
QUOTA_USED = "{DAV:}quota-used-bytes"
QUOTA_AVAILABLE = "{DAV:}quota-available-bytes"
LOCK_PROPS = ("{DAV:}lockdiscovery", "{DAV:}supportedlock")


def session_of(environ: dict[str, Any]) -> Session:
    """The vault session the authenticator put into this request."""
    session = environ.get(SESSION_KEY)
    if session is None:  # pragma: no cover - the authenticator guarantees it
        raise DAVError(401)
    assert isinstance(session, Session)
    return session


def forget_resources(environ: dict[str, Any]) -> None:
    """Drop the per-request resource cache (after anything changed the tree)."""
    environ.pop(CACHE_KEY, None)


def file_id(entry: Entry) -> str:
    """``oc:fileid`` of a node: its ``fileid``, a random positive 63-bit number in decimal
    (clients parse it as one), stable across MOVE, rename and the trash. It is also the
    ``FILEID`` of ``/remote.php/dav/versions/USER/versions/FILEID/``."""
    return str(entry.fileid)


def delete_permanently(environ: dict[str, Any]) -> bool:
    """Nextcloud's ``X-Delete-Permanently: true``: DELETE bypasses the trash."""
    return str(environ.get("HTTP_X_DELETE_PERMANENTLY", "")).strip().lower() == "true"


def ref_url(user_id: str, path: str) -> str:
    """The lock key of ``path`` in one user's namespace: ``/<user id>/<quoted NFC path>``.

    Every user has their own ``/``, so lock URLs are prefixed with the user id; the provider's
    ``ref_url_to_path`` strips it again. Callers pass ``Session.lock_namespace``: the user id
    of a full session, S's id for a session scoped to S (whose paths are relative to S).
    """
    return quote("/" + user_id + unicodedata.normalize("NFC", path))


class _VaultResource(_DAVResource):  # type: ignore[misc]
    """What files and directories share: times, properties, tree operations."""

    entry: Entry
    provider: Provider

    def _init_vault(self, entry: Entry) -> None:
        self.entry = entry
        self._props: dict[str, str] | None = None
        # Set when the dead properties failed an integrity check (logged): a PROPFIND then
        # answers them with one 500 propstat and lists the live properties as usual.
        self.props_failed = False
        # Roots of the locks below the parent collection, fetched once for all members.
        self.known_lock_roots: set[str] | None = None
        # The listing this resource came from: lets per-member properties be fetched for
        # all members at once (see DirResource.member_hashes).
        self.listed_by: DirResource | None = None

    # -- live properties -------------------------------------------------------------------
    def get_creation_date(self) -> float:
        return self.entry.ctime

    def get_last_modified(self) -> float:
        return self.entry.mtime

    def get_display_name(self) -> str:
        return self.entry.name

    def get_ref_url(self) -> str:
        # Asked several times per property of a listing (lock checks): computed once.
        url: str | None = self.__dict__.get("_ref_url")
        if url is None:
            url = self._ref_url = ref_url(
                session_of(self.environ).lock_namespace, self.get_preferred_path()
            )
        return url

    def get_href(self) -> str:
        # Same as WsgiDAV's, plus the Nextcloud alias prefix the request came through.
        prefix = str(self.environ.get(HREF_PREFIX_KEY, ""))
        path = self.provider.mount_path + self.provider.share_path + self.get_preferred_path()
        return quote(prefix + path, safe=_HREF_SAFE)

    def set_last_modified(self, dest_path: str, time_stamp: Any, *, dry_run: bool) -> bool:
        """Used for ``X-OC-Mtime`` on MKCOL; accepts Unix seconds or an HTTP date."""
        mtime = parse_mtime(time_stamp)
        if mtime is None:
            raise DAVError(400, "invalid modification time")
        if not dry_run:
            with vault_call():
                session_of(self.environ).set_mtime(dest_path, mtime)
            forget_resources(self.environ)
        return True

    # -- dead properties -------------------------------------------------------------------
    def dead_props(self) -> dict[str, str]:
        if self.props_failed:
            raise _integrity_failure("dead properties of a listed member")
        if self._props is None:
            with vault_call():
                self._props = session_of(self.environ).get_props(self.path)
        return self._props

    def _set_listed_props(self, props: dict[str, str] | None) -> None:
        """Dead properties from a batched member query; None: they failed an integrity check."""
        if props is None:
            self.props_failed = True
            self._props = {}
        else:
            self._props = dict(props)

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        names = ["{DAV:}resourcetype", "{DAV:}creationdate", "{DAV:}getlastmodified"]
        names.append("{DAV:}displayname")
        if not self.is_collection:
            names += ["{DAV:}getcontentlength", "{DAV:}getcontenttype", "{DAV:}getetag"]
            if is_allprop and self._wants_me_sha1():
                names.append(ME_SHA1)
        else:
            names.append("{DAV:}getetag")
        if self.provider.lock_manager is not None:
            names += LOCK_PROPS
        try:
            names += list(self.dead_props())
        except DAVError as exc:
            if exc.value != HTTP_INTERNAL_ERROR:
                raise
            self.props_failed = True  # the live properties still list (see propfind)
        return names

    def _wants_me_sha1(self) -> bool:
        """rclone's fastmail vendor reads SHA-1s from an allprop PROPFIND. Only rclone gets
        them there: for anyone else an allprop listing stays one query (DESIGN §7)."""
        agent = str(self.environ.get("HTTP_USER_AGENT", ""))
        return agent.startswith("rclone/")

    def _hashes(self) -> dict[str, str]:
        if self.listed_by is not None:
            found = self.listed_by.member_hashes().get(self.entry.name, {})
            if found is None:
                raise _integrity_failure("checksums of a listed member")
            return found
        with vault_call():
            return session_of(self.environ).hashes(self.path)

    def get_properties(self, mode: str, *, name_list: list[str] | None = None) -> list[Any]:
        # rclone reads only the first <propstat> of a response: put the 200 block first.
        props: list[Any] = super().get_properties(mode, name_list=name_list)
        return sorted(props, key=lambda item: isinstance(item[1], DAVError))

    def get_property_value(self, name: str) -> Any:
        if name == "{DAV:}getetag":
            # RFC 4918 §15.6: the property holds the entity-tag, quotes included, as the
            # ETag header does (WsgiDAV would send it bare). A collection's changes with
            # anything below it (DESIGN §7): what a sync client descends by.
            return syncprops.quoted_etag(self.entry)
        if name == "{DAV:}getcontentlength" and self.is_collection:
            return str(self.entry.tree_bytes)  # Nextcloud clients ask for it on folders
        if name == OC_SIZE:
            return str(self.entry.bytes_below)
        if name == OC_DATA_FINGERPRINT and self.entry.parent_id is None:
            return session_of(self.environ).server_identity()[1]
        if name in (QUOTA_USED, QUOTA_AVAILABLE) and self.is_collection:
            used, quota = self.provider.usage(self.environ)
            if name == QUOTA_USED:
                return str(used)
            # RFC 4331 §4: an unlimited quota is reported as a large number, not omitted.
            return str(max(0, quota - used) if quota is not None else 2**50)
        if name == OC_CHECKSUMS and not self.is_collection:
            h = self._hashes()
            el = etree.Element(name)
            # Only the checksums this version has (storage.checksums): "SHA1:<hex> MD5:<hex>".
            etree.SubElement(el, "{%s}checksum" % OC_NS).text = " ".join(  # noqa: UP031
                f"{algo.upper()}:{h[algo]}" for algo in ("sha1", "md5") if h.get(algo)
            )
            return el
        if name == ME_SHA1 and not self.is_collection:
            sha1 = self._hashes().get("sha1")
            if not sha1:
                raise DAVError(HTTP_NOT_FOUND)
            return sha1
        if name == OC_FILEID:
            return file_id(self.entry)
        if name == OC_ID:
            instance_id = session_of(self.environ).server_identity()[0]
            return syncprops.oc_id(self.entry, instance_id)
        if name == OC_PERMISSIONS:
            return syncprops.permissions(self.entry, session_of(self.environ))
        if name == "{DAV:}lockdiscovery" and self.known_lock_roots is not None:
            if self.get_ref_url().rstrip("/") not in self.known_lock_roots:
                return etree.Element(name)  # no lock here: known without a query
        if name == "{DAV:}lockdiscovery" and self._lock_manager() is not None:
            return self._lockdiscovery()
        if name.startswith("{DAV:}"):
            return super().get_property_value(name)
        value = self.dead_props().get(name)
        if value is None:
            raise DAVError(HTTP_NOT_FOUND)
        return xml_tools.string_to_xml(value)

    def _lockdiscovery(self) -> Any:
        """``{DAV:}lockdiscovery`` as WsgiDAV builds it, except that the lock root's href is
        made from the lock's own root URL: WsgiDAV looks the root up as a resource and fails
        (500) when a concurrent request has just removed it."""
        lm = self._lock_manager()
        assert lm is not None
        disco = etree.Element("{DAV:}lockdiscovery")
        prefix = str(self.environ.get(HREF_PREFIX_KEY, ""))
        base = prefix + self.provider.mount_path + self.provider.share_path
        for lock in lm.get_url_lock_list(self.get_ref_url()):
            active = etree.SubElement(disco, "{DAV:}activelock")
            etree.SubElement(etree.SubElement(active, "{DAV:}locktype"), "{DAV:}" + lock["type"])
            scope = etree.SubElement(active, "{DAV:}lockscope")
            etree.SubElement(scope, "{DAV:}" + lock["scope"])
            etree.SubElement(active, "{DAV:}depth").text = lock["depth"]
            if lock["owner"]:
                active.append(xml_tools.string_to_xml(lock["owner"]))
            remaining = max(0, int(lock["expire"] - time.time()))
            left = "Infinite" if lock["timeout"] < 0 else f"Second-{remaining}"
            etree.SubElement(active, "{DAV:}timeout").text = left
            token_el = etree.SubElement(active, "{DAV:}locktoken")
            etree.SubElement(token_el, "{DAV:}href").text = lock["token"]
            root_path = unquote(lock_href(str(lock["root"])))
            root_el = etree.SubElement(active, "{DAV:}lockroot")
            etree.SubElement(root_el, "{DAV:}href").text = quote(base + root_path, safe=_HREF_SAFE)
        return disco

    # -- tree operations -------------------------------------------------------------------
    def _lock_manager(self) -> DavLockManager | None:
        lm = self.provider.lock_manager
        return lm  # type: ignore[no-any-return]

    def _tokens(self) -> list[str]:
        if "wsgidav.conditions.if" not in self.environ:
            util.parse_if_header_dict(self.environ)
        tokens: list[str] = self.environ["wsgidav.ifLockTokenList"]
        return tokens

    def _check_unlocked(self, path: str, depth: str) -> None:
        """423 unless every lock on ``path``, on an ancestor (depth infinity) and, for depth
        infinity, below it was submitted by its owner (RFC 4918 §7.4: removing a member
        modifies the collection)."""
        lm = self._lock_manager()
        if lm is not None:
            lm.check_write_permission(
                url=ref_url(session_of(self.environ).lock_namespace, path),
                depth=depth,
                token_list=self._tokens(),
                principal=self.environ["wsgidav.user_name"],
            )

    def _check_tree_unlocked(self) -> None:
        self._check_unlocked(self.path, "infinity")

    def _drop_locks(self, path: str) -> None:
        lm = self._lock_manager()
        if lm is not None:
            lm.remove_locks_below(session_of(self.environ).lock_namespace, path)

    @contextlib.contextmanager
    def _locked_step(self) -> Iterator[None]:
        """One index transaction around a tree change, its lock checks and the removal of the
        locks of what it removed, serialised with lock grants (``DavLockManager.atomic``): a
        LOCK granted while a DELETE, MOVE or COPY is under way is either seen by its check
        (423) or granted after the change, on what the change left. Blobs the change freed
        are collected after the commit."""
        lm = self._lock_manager()
        session = session_of(self.environ)
        if lm is None:
            yield
        else:
            with lm.atomic(session.lock_namespace):
                yield
        forget_resources(self.environ)
        session.vault.collect_garbage(grace=0)

    def _destination_checks(self, session: Session, dest_path: str) -> None:
        """Locks on the destination (if it exists: on it and below it) or on its parent."""
        if session.lookup(dest_path) is not None:
            self._check_unlocked(dest_path, "infinity")
        else:
            self._check_unlocked(util.get_uri_parent(dest_path) or "/", "0")

    def handle_delete(self) -> bool:
        session = session_of(self.environ)
        permanently = delete_permanently(self.environ)

        def step() -> None:
            with self._locked_step():
                self._check_tree_unlocked()
                self._check_unlocked(util.get_uri_parent(self.path) or "/", "0")
                with vault_call():
                    session.delete(self.path, permanently=permanently)
                self._drop_locks(self.path)

        with vault_call():
            session.vault.freeing_space(step)  # a full disk cannot stop a DELETE
        return True

    def support_recursive_delete(self) -> bool:
        return True

    def delete(self) -> None:  # pragma: no cover - handle_delete does the work
        self.handle_delete()

    def _overwrite(self) -> bool:
        return str(self.environ.get("HTTP_OVERWRITE", "T")).upper() != "F"

    def handle_copy(self, dest_path: str, *, depth_infinity: bool) -> bool:
        session = session_of(self.environ)
        with self._locked_step():
            self._destination_checks(session, dest_path)
            with vault_call():
                existed = session.copy(
                    self.path, dest_path, overwrite=self._overwrite(), depth_infinity=depth_infinity
                )
            if existed:
                self._drop_locks(dest_path)
        self._finish_copy_move(dest_path, existed)
        return True

    def _finish_copy_move(self, dest_path: str, existed: bool) -> None:
        self.environ[CREATED_KEY] = not existed
        # ownCloud clients (rclone) send the modification time with COPY and MOVE too.
        mtime = parse_mtime(self.environ.get("HTTP_X_OC_MTIME"))
        if mtime is not None:
            with vault_call():
                session_of(self.environ).set_mtime(dest_path, mtime)
            self.environ[MTIME_ACCEPTED_KEY] = True

    def handle_move(self, dest_path: str) -> bool:
        # WsgiDAV's checks ran before; they are made again in the transaction that moves.
        session = session_of(self.environ)
        with self._locked_step():
            self._check_tree_unlocked()
            self._check_unlocked(util.get_uri_parent(self.path) or "/", "0")
            self._destination_checks(session, dest_path)
            with vault_call():
                existed = session.move(self.path, dest_path, overwrite=self._overwrite())
            # RFC 4918 §9.9.4: locks stay behind (they belong to URLs, not to the moved node).
            self._drop_locks(self.path)
            if existed:
                self._drop_locks(dest_path)
        self._finish_copy_move(dest_path, existed)
        return True

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    def move_recursive(self, dest_path: str) -> list[Any]:  # pragma: no cover
        self.handle_move(dest_path)
        return []


class FileResource(_VaultResource, DAVNonCollection):  # type: ignore[misc]
    """A file: its size, type and ETag come from the entry; content from the vault."""

    def __init__(self, path: str, environ: dict[str, Any], entry: Entry) -> None:
        DAVNonCollection.__init__(self, path, environ)
        self._init_vault(entry)

    def get_content_length(self) -> int:
        return self.entry.size

    def get_content_type(self) -> str:
        return str(util.guess_mime_type(self.entry.name))

    def get_etag(self) -> str:
        return self.entry.etag

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def get_content(self) -> Any:
        # The version whose size and ETag this resource announced, not whatever is current
        # by now (VersionGone, a 503 with Retry-After, if it has been removed meanwhile).
        with vault_call():
            return session_of(self.environ).open_file(self.path, version_id=self.entry.version_id)

    def begin_write(self, *, content_type: str | None = None) -> Any:  # pragma: no cover
        raise DAVError(500, "PUT is handled by the provider")


class DirResource(_VaultResource, DAVCollection):  # type: ignore[misc]
    """A directory: members come from one ``list_dir`` query."""

    def __init__(self, path: str, environ: dict[str, Any], entry: Entry) -> None:
        DAVCollection.__init__(self, path, environ)
        self._init_vault(entry)
        self._members: list[_VaultResource] | None = None
        self._member_hashes: dict[str, dict[str, str] | None] | None = None

    def get_etag(self) -> None:
        return None

    def get_used_bytes(self) -> int:
        return self.provider.usage(self.environ)[0]

    def get_available_bytes(self) -> int:
        used, quota = self.provider.usage(self.environ)
        return max(0, quota - used) if quota is not None else 2**50

    def get_member_list(self) -> list[_VaultResource]:
        if self._members is None:
            with vault_call():
                listed = session_of(self.environ).list_dir(self.path, with_damaged=True)
            # Damaged members (logged by the vault) are left out of the HTML listing and of
            # WsgiDAV's tree walks; PROPFIND (``iter_members``) answers them with a 500.
            entries = [e for e in listed if not e.damaged]
            self._members = [
                self.provider.resource_from_entry(util.join_uri(self.path, e.name), e, self.environ)
                for e in entries
            ]
            for member in self._members:
                member.listed_by = self
            # Dead properties of all members in one query (a Depth 1 allprop needs them).
            if self._members:
                with vault_call():
                    by_name = session_of(self.environ).list_dir_props(self.path)
                for member in self._members:
                    member._set_listed_props(by_name.get(member.entry.name, {}))
            lm = self._lock_manager()
            if lm is not None and self._members:
                below = lm.storage.get_lock_list(
                    self.get_ref_url(), include_root=False, include_children=True, token_only=False
                )
                roots = {str(lock["root"]).rstrip("/") for lock in below}
                for member in self._members:
                    member.known_lock_roots = roots
        return self._members

    def iter_members(self) -> Iterator[_VaultResource]:
        """The members one at a time, for a listing that streams (PROPFIND): the same
        batched properties and lock roots as ``get_member_list``, without keeping every
        member resource alive at once."""
        if self._members is not None:
            yield from self._members
            return
        session = session_of(self.environ)
        with vault_call():
            entries = session.list_dir(self.path, with_damaged=True)
            by_name = session.list_dir_props(self.path) if entries else {}
        roots: set[str] | None = None
        lm = self._lock_manager()
        if lm is not None and entries:
            below = lm.storage.get_lock_list(
                self.get_ref_url(), include_root=False, include_children=True, token_only=False
            )
            roots = {str(lock["root"]).rstrip("/") for lock in below}
        cls: type[_VaultResource]
        for e in entries:
            cls = DirResource if e.is_dir else FileResource
            member = cls(util.join_uri(self.path, e.name), self.environ, e)
            member.listed_by = self
            if not e.damaged:
                member._set_listed_props(by_name.get(e.name, {}))
            member.known_lock_roots = roots
            yield member

    def member_hashes(self) -> dict[str, dict[str, str] | None]:
        """SHA-1/MD5 of every member file, fetched with one query on first use (None for a
        member whose checksums failed an integrity check)."""
        if self._member_hashes is None:
            with vault_call():
                self._member_hashes = session_of(self.environ).list_dir_hashes(self.path)
        return self._member_hashes

    def get_member_names(self) -> list[str]:
        return [m.entry.name for m in self.get_member_list()]

    def get_member(self, name: str) -> _VaultResource | None:
        res = self.provider.get_resource_inst(util.join_uri(self.path, name), self.environ)
        return res

    def create_empty_resource(self, name: str) -> FileResource:
        """An empty file (LOCK on an unmapped URL, RFC 4918 §7.3). The LOCK handler runs
        this and the lock grant in one transaction (``handlers.lock``): a refused lock
        leaves nothing behind. A file another request created meanwhile is kept as it is."""
        path = util.join_uri(self.path, name)
        session = session_of(self.environ)
        with vault_call():
            entry = session.lookup(path)
            if entry is None:
                entry = session.write_file(path, [], expected_length=0)
            elif entry.is_dir:
                raise DAVError(HTTP_CONFLICT, "a collection was created meanwhile")
        forget_resources(self.environ)
        return FileResource(path, self.environ, entry)

    def create_collection(self, name: str) -> None:
        try:
            with vault_call():
                session_of(self.environ).mkdir(util.join_uri(self.path, name))
        except DAVError as exc:
            if exc.value == HTTP_PRECONDITION_FAILED:
                # Created by a concurrent MKCOL since WsgiDAV looked: RFC 4918 §9.3.1 says
                # 405 when the resource exists.
                raise DAVError(HTTP_METHOD_NOT_ALLOWED, "the resource exists") from None
            raise
        forget_resources(self.environ)


def _integrity_failure(what: str) -> DAVError:
    """The 500 for one damaged part of a listed member (the vault logged the node id)."""
    log.error("integrity failure answered with 500: %s", what)
    return DAVError(HTTP_INTERNAL_ERROR, "stored data failed an integrity check")


def parse_mtime(value: Any) -> float | None:
    """Unix seconds (``X-OC-Mtime``, rclone's ``lastmodified``) or an HTTP date; None if
    neither."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        parsed = util.parse_time_string(text)
        return float(parsed) if parsed else None
    if not 0 <= seconds < 2**40:
        return None
    return seconds

"""Nextcloud-style paths: the files alias, chunked uploads and ``PATCH`` hash recalculation.

rclone's ``nextcloud`` vendor (and Nextcloud/ownCloud sync clients) address a server as
``/remote.php/dav/files/USER/…`` and upload large files in chunks under
``/remote.php/dav/uploads/USER/<upload id>/``. ``NextcloudRouter`` is a WsgiDAV middleware
that runs right after authentication and

- serves ``/remote.php/dav/files/USER/<path>`` (and ownCloud's older
  ``/remote.php/webdav/<path>``) as an alias of the logged-in user's ``/<path>``:
  ``PATH_INFO`` becomes the tree path, the prefix moves to ``SCRIPT_NAME`` and into the hrefs
  of responses (``resources.HREF_PREFIX_KEY``); a ``Destination`` under any prefix is mapped
  to the tree path by ``davserver.dav.destination``;
- answers the uploads namespace itself (it is not a tree): ``MKCOL <id>`` starts an upload,
  ``PUT <id>/<chunk>`` stores one chunk (encrypted as it streams in), ``MOVE <id>/.file``
  with a ``Destination`` assembles the chunks, in name order, into one new version of the
  destination (streaming, so memory stays bounded), ``DELETE <id>`` cancels, ``PROPFIND``
  lists an upload's chunks (how a client resumes);
- hands ``/remote.php/dav/versions/USER/…`` and ``/remote.php/dav/trashbin/USER/…`` to
  ``davserver.dav.versions`` and ``davserver.dav.trashbin`` (Nextcloud's versions and trash);
- answers ``PATCH`` with ``X-Recalculate-Hash: sha1|md5`` (Nextcloud's extension; rclone
  sends it after setting a modification time) with the checksum in ``OC-Checksum``;
- answers ``REPORT`` with an ``oc:filter-files`` body (the favourites list of the Nextcloud
  apps) with an empty multistatus: davserver keeps no favourites. Other reports stay 405.

``USER`` must be the authenticated user: anything else is 404, so one user can neither reach
another's tree or uploads nor learn whether that user exists. The client's upload ids are
kept only as keyed MACs (``davserver.vault.uploads``), so the uploads root lists no members.
Both chunking versions are accepted: v1 names chunks ``<start>-<end>`` (what rclone sends),
v2 numbers them 1…10000 and adds ``Destination`` to MKCOL/PUT and ``OC-Total-Length``.
Abandoned uploads expire (``gc.upload_expiry``, run by the server's maintenance loop).

Only the paths ``/remote.php/dav/files/…``, ``/remote.php/webdav/…``,
``/remote.php/dav/uploads/…``, ``/remote.php/dav/versions/…`` and
``/remote.php/dav/trashbin/…`` are taken: a
user's own top-level ``remote.php`` folder stays reachable everywhere else.
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from wsgidav import util, xml_tools
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_METHOD_NOT_ALLOWED,
    HTTP_NOT_FOUND,
    HTTP_PRECONDITION_FAILED,
    DAVError,
)
from wsgidav.mw.base_mw import BaseMiddleware
from wsgidav.util import etree

from davserver.dav import handlers, syncprops, trashbin, versions
from davserver.dav.destination import (
    FILES_PREFIX,
    TRASHBIN_PREFIX,
    UPLOADS_PREFIX,
    VERSIONS_PREFIX,
    WEBDAV_PREFIX,
    destination_tree_path,
)
from davserver.dav.destination import check_user as _check_user
from davserver.dav.destination import under as _under
from davserver.dav.errors import vault_call
from davserver.dav.resources import (
    HREF_PREFIX_KEY,
    SESSION_KEY,
    forget_resources,
    parse_mtime,
)
from davserver.vault.uploads import Uploads

if TYPE_CHECKING:
    from davserver.dav.resources import Provider
    from davserver.vault.tree import Session

ASSEMBLE_NAME = ".file"
FILTER_FILES = "{http://owncloud.org/ns}filter-files"
_HREF_SAFE = "/!*'(),$-_|.~"
_UPLOAD_ALLOW = "OPTIONS, PROPFIND, MKCOL, PUT, MOVE, DELETE"
_PROPFIND_LIVE = (
    "{DAV:}resourcetype",
    "{DAV:}displayname",
    "{DAV:}getcontentlength",
    "{DAV:}getlastmodified",
)


class NextcloudRouter(BaseMiddleware):  # type: ignore[misc]
    """See the module docstring. Sits after the authenticator in WsgiDAV's stack."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        self.provider: Provider = config["davserver"]["provider"]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = str(environ.get("PATH_INFO", ""))
        method = environ.get("REQUEST_METHOD")
        session = environ.get(SESSION_KEY)
        if session is None:  # anonymous assets of the dir browser
            return self.next_app(environ, start_response)
        rest = _under(path, FILES_PREFIX)
        if rest is not None:
            user, _, tree = rest.partition("/")
            _check_user(session, user)
            self._alias(environ, FILES_PREFIX + "/" + user, tree)
        elif (rest := _under(path, WEBDAV_PREFIX)) is not None:
            self._alias(environ, WEBDAV_PREFIX, rest)
        elif (rest := _under(path, UPLOADS_PREFIX)) is not None:
            return self._uploads(environ, start_response, session, rest)
        elif (rest := _under(path, VERSIONS_PREFIX)) is not None:
            return versions.serve(self.provider, environ, start_response, session, rest)
        elif (rest := _under(path, TRASHBIN_PREFIX)) is not None:
            return trashbin.serve(self.provider, environ, start_response, session, rest)
        # A Destination (COPY, MOVE) is parsed by handlers.copy_move, under any prefix.
        if method == "PATCH":
            return self._patch(environ, start_response, session)
        if method == "REPORT":
            return self._report(environ, start_response, session)
        return self.next_app(environ, start_response)

    def _report(self, environ: dict[str, Any], start_response: Any, session: Session) -> Any:
        """``oc:filter-files`` (favourites): nothing matches, as nothing is a favourite."""
        root = util.parse_xml_body(environ, allow_empty=True)
        if root is None or root.tag != FILTER_FILES:
            raise DAVError(HTTP_METHOD_NOT_ALLOWED)
        with vault_call():
            session.stat(environ["PATH_INFO"])  # 404 for a path that does not exist
        return util.send_multi_status_response(
            environ, start_response, xml_tools.make_multistatus_el()
        )

    @staticmethod
    def _alias(environ: dict[str, Any], prefix: str, tree: str) -> None:
        """Serve the tree path ``/<tree>`` with ``prefix`` in SCRIPT_NAME and in hrefs."""
        environ["SCRIPT_NAME"] = str(environ.get("SCRIPT_NAME", "")).rstrip("/") + prefix
        environ[HREF_PREFIX_KEY] = prefix
        environ["PATH_INFO"] = "/" + tree

    # -- PATCH X-Recalculate-Hash ------------------------------------------------------------
    def _patch(self, environ: dict[str, Any], start_response: Any, session: Session) -> Any:
        algo = str(environ.get("HTTP_X_RECALCULATE_HASH", "")).strip().lower()
        if not algo:
            raise DAVError(HTTP_BAD_REQUEST, "PATCH is only supported with X-Recalculate-Hash")
        if algo not in ("sha1", "md5"):
            raise DAVError(HTTP_BAD_REQUEST, "X-Recalculate-Hash must be sha1 or md5")
        path = environ["PATH_INFO"]
        with vault_call():
            entry = session.stat(path)
            if entry.is_dir:
                raise DAVError(HTTP_BAD_REQUEST, "not a file")
            value = session.hashes(path).get(algo)
        if not value:
            value = self._hash_content(session, path, algo)
        start_response(
            "204 No Content",
            [("OC-Checksum", f"{algo.upper()}:{value}"), ("Content-Length", "0")],
        )
        return [b""]

    @staticmethod
    def _hash_content(session: Session, path: str, algo: str) -> str:
        """Hash the stored plaintext (only for versions written without hashes)."""
        h = hashlib.new(algo, usedforsecurity=False)
        with vault_call():
            reader = session.open_file(path)
            try:
                for chunk in reader.iter_range():
                    h.update(chunk)
            finally:
                reader.close()
        return h.hexdigest()

    # -- the uploads namespace -------------------------------------------------------------
    def _uploads(
        self, environ: dict[str, Any], start_response: Any, session: Session, rest: str
    ) -> Any:
        parts = [p for p in rest.split("/") if p]
        if not parts:
            raise DAVError(HTTP_NOT_FOUND)
        _check_user(session, parts[0])
        if len(parts) > 3:
            raise DAVError(HTTP_NOT_FOUND)
        handle = parts[1] if len(parts) > 1 else None
        chunk = parts[2] if len(parts) > 2 else None
        method = environ["REQUEST_METHOD"]
        base = UPLOADS_PREFIX + "/" + parts[0]
        if method == "OPTIONS":
            headers = [("DAV", handlers.DAV_COMPLIANCE), ("Allow", _UPLOAD_ALLOW)]
            start_response("200 OK", [*headers, ("Content-Length", "0")])
            return [b""]
        if method == "PROPFIND":
            return self._propfind(environ, start_response, session, base, handle, chunk)
        if method == "MKCOL":
            return self._mkcol(environ, start_response, session, handle, chunk)
        if method == "PUT":
            return self._put_chunk(environ, start_response, session, handle, chunk)
        if method == "MOVE":
            return self._assemble(environ, start_response, session, handle, chunk)
        if method == "DELETE":
            if handle is None or chunk is not None:
                raise DAVError(HTTP_FORBIDDEN, "only a whole upload can be deleted")
            with vault_call():
                Uploads(session).delete(handle)
            start_response("204 No Content", [("Content-Length", "0")])
            return [b""]
        raise DAVError(HTTP_METHOD_NOT_ALLOWED, add_headers=[("Allow", _UPLOAD_ALLOW)])

    @staticmethod
    def _exists(session: Session, handle: str) -> bool:
        with vault_call():
            return Uploads(session).exists(handle)

    def _mkcol(
        self,
        environ: dict[str, Any],
        start_response: Any,
        session: Session,
        handle: str | None,
        chunk: str | None,
    ) -> Any:
        if handle is None:
            raise DAVError(HTTP_METHOD_NOT_ALLOWED, "the uploads collection exists")
        if chunk is not None:
            raise DAVError(HTTP_FORBIDDEN, "uploads hold chunks, not collections")
        if handlers._int_header(environ, "CONTENT_LENGTH") or handlers.is_chunked(environ):
            raise DAVError(415, "MKCOL with a body is not supported")  # RFC 4918 §9.3
        dest = None
        if "HTTP_DESTINATION" in environ:  # chunking v2 names the target up front
            dest = destination_tree_path(environ, session)
        if self._exists(session, handle):
            raise DAVError(HTTP_METHOD_NOT_ALLOWED, "the upload exists")
        self._check_room(environ, session, dest, None)
        with vault_call():
            Uploads(session).create(handle)
        start_response("201 Created", [("Content-Length", "0")])
        return [b""]

    @staticmethod
    def _check_room(
        environ: dict[str, Any], session: Session, dest: str | None, handle: str | None
    ) -> None:
        """Chunking v2 announces the whole file's size (``OC-Total-Length``) on MKCOL and on
        every chunk: refuse with 507 up front when it cannot fit, as Nextcloud does."""
        total = handlers._int_header(environ, "HTTP_OC_TOTAL_LENGTH")
        if total is None:
            return
        with vault_call():
            Uploads(session).check_room(total, dest, handle)

    def _put_chunk(
        self,
        environ: dict[str, Any],
        start_response: Any,
        session: Session,
        handle: str | None,
        chunk: str | None,
    ) -> Any:
        if handle is None or chunk is None:
            raise DAVError(HTTP_METHOD_NOT_ALLOWED, "cannot PUT to a collection")
        if chunk == ASSEMBLE_NAME:
            raise DAVError(HTTP_FORBIDDEN, "'.file' is assembled with MOVE")
        if "HTTP_CONTENT_ENCODING" in environ:
            raise DAVError(501, "Content-Encoding is not supported")
        dest = None
        if "HTTP_DESTINATION" in environ:
            dest = destination_tree_path(environ, session)
        if not self._exists(session, handle):
            raise DAVError(HTTP_CONFLICT, "no such upload")  # RFC 4918 §9.7.1
        self._check_room(environ, session, dest, handle)
        limit = self.provider.max_body_bytes
        length, expected = handlers.announced_length(environ, limit)
        with vault_call():
            existed = Uploads(session).has_chunk(handle, chunk)
            body = handlers._body(environ, length, self.provider.block_size, limit)
            Uploads(session).put_chunk(handle, chunk, body, expected)
        start_response("204 No Content" if existed else "201 Created", [("Content-Length", "0")])
        return [b""]

    def _assemble(
        self,
        environ: dict[str, Any],
        start_response: Any,
        session: Session,
        handle: str | None,
        chunk: str | None,
    ) -> Any:
        if handle is None or chunk != ASSEMBLE_NAME:
            raise DAVError(HTTP_FORBIDDEN, "only '<upload>/.file' can be moved")
        dest = destination_tree_path(environ, session)
        if dest.endswith("/") and dest != "/":
            dest = dest.rstrip("/")
        expected = handlers._int_header(environ, "HTTP_OC_TOTAL_LENGTH")
        mtime = None
        if "HTTP_X_OC_MTIME" in environ:
            mtime = parse_mtime(environ["HTTP_X_OC_MTIME"])
            if mtime is None:
                raise DAVError(HTTP_BAD_REQUEST, "invalid X-OC-Mtime header")
        sha1, md5 = handlers._checksums(environ)
        provider = self.provider
        res = provider.get_resource_inst(dest, environ)
        if res is not None and res.is_collection:
            raise DAVError(HTTP_CONFLICT, "the destination is a collection")
        if res is not None and str(environ.get("HTTP_OVERWRITE", "T")).upper() == "F":
            raise DAVError(HTTP_PRECONDITION_FAILED, "destination exists")
        parent = provider.get_resource_inst(util.get_uri_parent(dest) or "/", environ)
        if parent is None or not parent.is_collection:
            raise DAVError(HTTP_CONFLICT, "the destination's parent does not exist")
        if not self._exists(session, handle):
            raise DAVError(HTTP_NOT_FOUND, "no such upload")
        target = res if res is not None else parent
        if "wsgidav.conditions.if" not in environ:
            util.parse_if_header_dict(environ)
        with provider.lock_manager.write_transaction(
            url=target.get_ref_url(),
            token_list=environ["wsgidav.ifLockTokenList"],
            principal=environ.get("wsgidav.auth.user_name", ""),
        ):
            with vault_call():
                entry, existed = Uploads(session).assemble(
                    handle, dest, expected_length=expected, mtime=mtime, sha1=sha1, md5=md5
                )
        forget_resources(environ)
        headers = [*syncprops.write_headers(session, entry), ("Content-Length", "0")]
        if mtime is not None:
            headers.append(("X-OC-Mtime", "accepted"))
        start_response("204 No Content" if existed else "201 Created", headers)
        return [b""]

    def _propfind(
        self,
        environ: dict[str, Any],
        start_response: Any,
        session: Session,
        base: str,
        handle: str | None,
        chunk: str | None,
    ) -> Any:
        depth = str(environ.get("HTTP_DEPTH", "1")).strip().lower() or "1"
        if depth not in ("0", "1"):
            raise DAVError(HTTP_FORBIDDEN, "only Depth 0 and 1 are supported here")
        wanted = _requested_props(environ)
        # (href, is collection, size, mtime, name) of every response.
        rows: list[tuple[str, bool, int, float, str]] = []
        if handle is None:
            rows.append((base + "/", True, 0, 0.0, ""))
        else:
            with vault_call():
                chunks = Uploads(session).list(handle)  # 404 if there is no such upload
            newest = max((t for _, _, t in chunks), default=0.0)
            up_href = f"{base}/{handle}/"
            if chunk is None:
                rows.append((up_href, True, 0, newest, handle))
                if depth == "1":
                    rows += [(up_href + n, False, s, t, n) for n, s, t in chunks]
            else:
                wanted_name = unicodedata.normalize("NFC", chunk)
                found = [(n, s, t) for n, s, t in chunks if n == wanted_name]
                if not found:
                    raise DAVError(HTTP_NOT_FOUND)
                n, s, t = found[0]
                rows.append((up_href + n, False, s, t, n))
        ms = xml_tools.make_multistatus_el()
        for href, is_dir, size, mtime, name in rows:
            util.add_property_response(
                ms, quote(href, safe=_HREF_SAFE), _props(wanted, is_dir, size, mtime, name)
            )
        return util.send_multi_status_response(environ, start_response, ms)


def _requested_props(environ: dict[str, Any]) -> list[str] | None:
    """Names asked for by a PROPFIND body; None for allprop (or no body)."""
    root = util.parse_xml_body(environ, allow_empty=True)
    if root is None:
        return None
    if root.tag != "{DAV:}propfind":
        raise DAVError(HTTP_BAD_REQUEST, "expected a propfind element")
    for child in root:
        if child.tag == "{DAV:}prop":
            return [el.tag for el in child if isinstance(el.tag, str)]
    return None


def _props(
    wanted: list[str] | None, is_dir: bool, size: int, mtime: float, name: str
) -> list[tuple[str, Any]]:
    """Live properties of an upload or chunk; the found ones first (rclone reads only the
    first propstat)."""
    found: list[tuple[str, Any]] = []
    missing: list[tuple[str, Any]] = []
    for prop in wanted if wanted is not None else list(_PROPFIND_LIVE):
        if prop == "{DAV:}resourcetype":
            el = etree.Element(prop)
            if is_dir:
                etree.SubElement(el, "{DAV:}collection")
            found.append((prop, el))
        elif prop == "{DAV:}displayname":
            found.append((prop, name))
        elif prop == "{DAV:}getcontentlength" and not is_dir:
            found.append((prop, str(size)))
        elif prop == "{DAV:}getlastmodified" and mtime:
            found.append((prop, util.get_rfc1123_time(mtime)))
        else:
            missing.append((prop, DAVError(HTTP_NOT_FOUND)))
    return found + missing

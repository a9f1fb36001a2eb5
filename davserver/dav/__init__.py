"""The WebDAV layer: the only code that imports WsgiDAV.

It maps DAV verbs onto the vault (``davserver.vault``) and knows nothing of keys, blobs or SQL:

- ``provider`` / ``resources``: each authenticated user's tree at ``/``, resources built from
  vault entries (one index query per collection listing);
- ``interface``: the ``TreeProvider`` protocol through which resources and handlers use the
  provider (which does not import the handlers: it is handed ``handlers.dispatch``);
- ``handlers``: PUT, GET/HEAD, PROPFIND, PROPPATCH, OPTIONS, COPY/MOVE where WsgiDAV's own
  handlers do not fit a streaming, encrypted store;
- ``nextcloud``: the ``/remote.php/dav/files/USER`` and ``/remote.php/webdav`` aliases, chunked
  uploads under ``/remote.php/dav/uploads/USER`` and ``PATCH`` with ``X-Recalculate-Hash``;
- ``destination``: the URL prefixes of a user's tree and the ``Destination`` header of COPY and
  MOVE, parsed as a URI;
- ``auth``: Basic authentication against the vault, with a failed-login rate limit;
- ``locks``: WsgiDAV's lock manager over the index-backed ``vault.locks.LockStore``;
- ``errors``: the one place engine exceptions become ``DAVError``;
- ``middleware``: early close of unread bodies, body caps and the access log.

``davserver.server`` assembles these into a WSGI application and a cheroot server; the route
table in front of it is ``davserver.web.routes``.
"""

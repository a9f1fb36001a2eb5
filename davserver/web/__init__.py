"""The HTTP surface: one route table in front, one module per prefix that is not WebDAV.

- ``routes``: the table — every URL the server answers, top to bottom, and who owns it;
- ``routing``: ``Route`` (one exact path), ``Mount`` (a prefix) and the ``Router`` that
  dispatches by them (after starlette's ``routing.py``);
- ``health``: ``/healthz`` and ``/readyz`` for load balancers and orchestrators;
- ``loginflow`` (with its pages, ``loginpage``): Nextcloud's Login Flow v2 and v1, how the
  Nextcloud apps get a device token without keeping the password;
- ``origin``: the server's own absolute URL as the client reached it;
- ``ocs``: what Nextcloud's clients call besides WebDAV (status, capabilities, user, app
  passwords).

WebDAV itself (``davserver.dav``, WsgiDAV) is one entry of the table: the route for
everything no other prefix owns. ``davserver.server.build_app`` puts the request guard of
``davserver.dav.middleware`` (body accounting, security headers, access log) in front.
"""

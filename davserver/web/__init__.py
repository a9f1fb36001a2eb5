"""The HTTP surface: one route table in front, one module per prefix that is not WebDAV.

- ``routes``: the table — every URL the server answers, top to bottom, and who owns it;
- ``routing``: ``Route`` (one exact path), ``Mount`` (a prefix) and the ``Router`` that
  dispatches by them (after starlette's ``routing.py``);
- ``health``: ``/healthz`` and ``/readyz`` for load balancers and orchestrators.

WebDAV itself (``davserver.dav``, WsgiDAV) is one entry of the table: the route for
everything no other prefix owns. ``davserver.server.build_app`` puts the request guard of
``davserver.dav.middleware`` (body accounting, security headers, access log) in front.
"""

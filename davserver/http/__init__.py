"""The HTTP/1.1 layer under cheroot: what reaches a worker thread, and how it is framed.

- ``head``: pure checks of a buffered request head (sizes, RFC 9112 framing) and of chunked
  framing; no sockets.
- ``request``: cheroot's request and WSGI gateway with strict chunked bodies, body deadlines
  and the outermost exception guard.
- ``connections``: the selector that holds new, idle and half-sent connections, so that only a
  connection with a complete request head (and the start of its body) takes a worker thread.

Nothing here knows WebDAV; ``davserver.server`` wires it into cheroot.
"""

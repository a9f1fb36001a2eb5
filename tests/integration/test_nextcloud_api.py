"""What the Nextcloud and ownCloud clients call besides WebDAV, over raw HTTP against a real
server, as ``nextcloudcmd``, ``owncloudcmd`` and the Android app send it (issue 12, point 5).

Raw sockets where the request line matters: ``http.client`` would not send the double
slash of the desktop client's ``//remote.php/dav/files/USER/`` unchanged.
"""

from __future__ import annotations

import socket

from tests.harness.davserver import DavServer, basic


def raw(dav: DavServer, request_line: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Send one request with exactly this request line; (status, whole answer)."""
    head = request_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Host: {dav.host}:{dav.port}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((dav.host, dav.port), timeout=15) as s:
        s.sendall(head.encode("latin-1"))
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return int(out.split(b" ", 2)[1]), out


def test_the_desktop_clients_double_slash_reaches_the_files_alias(dav_server: DavServer) -> None:
    alice = dav_server.client("alice")
    assert alice.put("/notes.txt", b"hello").status == 201
    auth = {"Authorization": basic("alice", dav_server.users["alice"]), "Depth": "1"}
    status, out = raw(dav_server, "PROPFIND //remote.php/dav/files/alice/ HTTP/1.1", auth)
    assert status == 207
    assert b"<D:href>/remote.php/dav/files/alice/notes.txt</D:href>" in out
    status, out = raw(dav_server, "GET //remote.php/dav/files/alice/notes.txt HTTP/1.1", auth)
    assert status == 200 and out.endswith(b"\r\n\r\nhello")
    # the query string stays the query string
    status, out = raw(dav_server, "GET ///notes.txt?x=1 HTTP/1.1", auth)
    assert status == 200 and out.endswith(b"hello")
    # another user's alias is still nobody's business, with one slash or two
    status, _ = raw(dav_server, "PROPFIND //remote.php/dav/files/bob/ HTTP/1.1", auth)
    assert status == 404

"""Locks survive a trash round trip over HTTP: a locked file deleted with its token comes
back from the trash locked by the same token, at a path whose lock URL the DAV layer derives,
and writes without the token are refused again (423)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.harness.davserver import DavServer
from tests.integration.test_dav_locks import if_header, lock


def test_a_lock_comes_back_with_its_file(dav_server: DavServer) -> None:
    c = dav_server.client("alice")
    assert c.mkcol("/repörts").status == 201
    assert c.put("/repörts/q 1.txt", b"draft").status == 201
    status, token = lock(c, "/repörts/q 1.txt")
    assert status == 200 and token
    assert c.delete("/repörts").status == 423  # the lock is enforced
    # RFC 4918 §10.4.1: the member's token, in a list tagged with its URL.
    tagged = {"If": f"<{c.url('/repörts/q 1.txt')}> (<{token}>)"}
    assert c.delete("/repörts", tagged).status == 204
    # While it is in the trash, the path is free: a new file there needs no token.
    assert c.mkcol("/other").status == 201
    session = dav_server.vault.login("alice", dav_server.users["alice"])
    (item,) = session.trash_items()
    assert session.trash_restore(item.name) == "/repörts"
    # Back: the same token locks it, at its own URL.
    r = c.propfind("/repörts/q 1.txt", "0")
    assert r.status == 207 and token in r.text
    root = ET.fromstring(r.body).find(".//{DAV:}lockroot/{DAV:}href")
    assert root is not None and root.text == "/rep%C3%B6rts/q%201.txt"
    assert c.put("/repörts/q 1.txt", b"edit").status == 423
    assert c.put("/repörts/q 1.txt", b"edit", if_header(token)).status == 204
    assert c.request("UNLOCK", "/repörts/q 1.txt", None, {"Lock-Token": f"<{token}>"}).status == 204
    assert c.put("/repörts/q 1.txt", b"free").status == 204

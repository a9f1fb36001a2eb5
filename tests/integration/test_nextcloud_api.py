"""What the Nextcloud and ownCloud clients call besides WebDAV, over raw HTTP against a real
server, as ``nextcloudcmd``, ``owncloudcmd`` and the Android app send it (issue 12, point 5).

Raw sockets where the request line matters: ``http.client`` would not send the double
slash of the desktop client's ``//remote.php/dav/files/USER/`` unchanged.
"""

from __future__ import annotations

import http.client
import json
import socket
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from davserver.errors import StorageError
from davserver.index.models import LoginFailure
from davserver.vault.tree import Session
from tests.harness.davserver import DavServer, Response, basic, start_dav_server

V1, V2 = "/ocs/v1.php", "/ocs/v2.php"
# What nextcloudcmd, owncloudcmd and the Android app send with OCS requests.
CLIENT = {"OCS-APIREQUEST": "true", "User-Agent": "Mozilla/5.0 (Linux) mirall/3.7.3"}


def call(
    dav: DavServer,
    target: str,
    *,
    user: str | None = "alice",
    password: str | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> Response:
    """One request with ``target`` sent as it is (query string included, nothing quoted)."""
    hdrs = {**CLIENT, **(headers or {})}
    if user is not None:
        hdrs["Authorization"] = basic(user, password if password is not None else dav.users[user])
    conn = http.client.HTTPConnection(dav.host, dav.port, timeout=30)
    try:
        conn.request(method, target, headers=hdrs)
        resp = conn.getresponse()
        return Response(resp.status, resp.reason, resp.headers, resp.read())
    finally:
        conn.close()


def ocs_json(resp: Response) -> tuple[dict[str, Any], Any]:
    assert (resp.header("Content-Type") or "").startswith("application/json"), resp.text
    doc = json.loads(resp.body)
    return doc["ocs"]["meta"], doc["ocs"]["data"]


def ocs_xml(resp: Response) -> ET.Element:
    assert (resp.header("Content-Type") or "").startswith("application/xml"), resp.text
    root = ET.fromstring(resp.body)
    assert root.tag == "ocs" and [c.tag for c in root] == ["meta", "data"]
    return root


def raw(
    dav: DavServer, request_line: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    """Send one request with exactly this request line; (status, whole answer)."""
    head = request_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Host: {dav.host}:{dav.port}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((dav.host, dav.port), timeout=15) as s:
        s.sendall(head.encode("latin-1") + body)
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


# -- status.php and the connectivity check: no login ------------------------------------------
def test_status_php_answers_without_credentials(dav_server: DavServer) -> None:
    resp = call(dav_server, "/status.php", user=None)
    assert resp.status == 200
    assert resp.header("Content-Type") == "application/json"
    status = json.loads(resp.body)
    assert status == {
        "installed": True,
        "maintenance": False,
        "needsDbUpgrade": False,
        "version": "28.0.0.0",
        "versionstring": "28.0.0",
        "edition": "",
        "productname": "davserver",
        "extendedSupport": False,
    }
    # the clients' version parsing: four numbers, the major one a current Nextcloud
    numbers = [int(n) for n in status["version"].split(".")]
    assert len(numbers) == 4 and numbers[0] >= 25
    # a wrong password does not matter here, and HEAD has no body
    assert call(dav_server, "/status.php", password="wrong").status == 200
    head = call(dav_server, "/status.php", user=None, method="HEAD")
    assert head.status == 200 and head.body == b""
    assert call(dav_server, "/status.php", user=None, method="POST").status == 405


def test_connectivity_check_is_an_empty_204(dav_server: DavServer) -> None:
    resp = call(dav_server, "/index.php/204", user=None)
    assert resp.status == 204 and resp.body == b""


# -- capabilities ----------------------------------------------------------------------------
def test_capabilities_json_v1_as_owncloudcmd_asks(dav_server: DavServer) -> None:
    resp = call(dav_server, V1 + "/cloud/capabilities?format=json")
    assert resp.status == 200
    meta, data = ocs_json(resp)
    assert meta == {
        "status": "ok",
        "statuscode": 100,
        "message": "OK",
        "totalitems": "",
        "itemsperpage": "",
    }
    caps = data["capabilities"]
    assert caps["core"]["webdav-root"] == "remote.php/webdav"
    assert caps["core"]["pollinterval"] == 60
    assert caps["dav"]["chunking"] == "1.0"
    assert caps["files"]["bigfilechunking"] is True
    assert caps["files"]["undelete"] is True and caps["files"]["versioning"] is True
    assert caps["checksums"] == {"supportedTypes": ["SHA1", "MD5"], "preferredUploadType": "SHA1"}
    # no sharing dialog, no notification polling, no user status
    assert caps["files_sharing"]["api_enabled"] is False
    assert "notifications" not in caps
    assert caps["user_status"]["enabled"] is False
    assert data["version"]["major"] == 28 and data["version"]["string"] == "28.0.0"


def test_capabilities_json_v2_by_accept_header(dav_server: DavServer) -> None:
    resp = call(dav_server, V2 + "/cloud/capabilities", headers={"Accept": "application/json"})
    assert resp.status == 200
    meta, data = ocs_json(resp)
    assert meta == {"status": "ok", "statuscode": 200, "message": "OK"}
    assert data["capabilities"]["dav"]["chunking"] == "1.0"


@pytest.mark.parametrize(("base", "code"), [(V1, "100"), (V2, "200")])
def test_capabilities_xml_by_default(dav_server: DavServer, base: str, code: str) -> None:
    resp = call(dav_server, base + "/cloud/capabilities")
    assert resp.status == 200
    root = ocs_xml(resp)
    assert root.findtext("meta/status") == "ok"
    assert root.findtext("meta/statuscode") == code
    caps = root.find("data/capabilities")
    assert caps is not None
    assert caps.findtext("core/webdav-root") == "remote.php/webdav"
    assert caps.findtext("dav/chunking") == "1.0"
    assert caps.findtext("files/bigfilechunking") == "1"  # PHP's XMLWriter writes true as 1
    assert [e.text for e in caps.findall("checksums/supportedTypes/element")] == ["SHA1", "MD5"]
    # ?format=xml wins over an Accept header
    resp = call(
        dav_server, base + "/cloud/capabilities?format=xml", headers={"Accept": "application/json"}
    )
    ocs_xml(resp)


def test_capabilities_follow_storage_checksums(tmp_path: Any) -> None:
    dav = start_dav_server(tmp_path / "data", {"DAVSERVER_STORAGE_CHECKSUMS": "md5"})
    try:
        _, data = ocs_json(call(dav, V2 + "/cloud/capabilities?format=json"))
        assert data["capabilities"]["checksums"] == {
            "supportedTypes": ["MD5"],
            "preferredUploadType": "MD5",
        }
    finally:
        dav.stop()


# -- the user and the quota ---------------------------------------------------------------------
def test_cloud_user_v1_and_v2(dav_server: DavServer) -> None:
    for base, code in ((V1, 100), (V2, 200)):
        resp = call(dav_server, base + "/cloud/user?format=json")
        assert resp.status == 200
        meta, data = ocs_json(resp)
        assert meta["statuscode"] == code
        assert data["id"] == "alice" and data["display-name"] == "alice"
        assert data["email"] is None
        assert data["quota"] == {"free": -3, "used": 0, "total": -3, "relative": 0, "quota": -3}
    root = ocs_xml(call(dav_server, V1 + "/cloud/user"))
    assert root.findtext("data/id") == "alice"
    assert root.findtext("data/display-name") == "alice"


def test_cloud_user_quota_counts_versions_and_trash(dav_server: DavServer) -> None:
    dav_server.vault.set_quota("alice", 10_000)
    alice = dav_server.client("alice")
    assert alice.put("/a.bin", b"x" * 1000).status == 201
    assert alice.put("/a.bin", b"y" * 1000).status == 204  # the first content is a version
    assert alice.put("/b.bin", b"z" * 500).status == 201
    assert alice.delete("/b.bin").status == 204  # into the trash
    used, limit = 2500, 10_000
    assert dav_server.vault.user_info("alice").usage_bytes == used
    _, data = ocs_json(call(dav_server, V2 + "/cloud/user?format=json"))
    assert data["quota"] == {
        "free": limit - used,
        "used": used,
        "total": limit,
        "relative": 25.0,
        "quota": limit,
    }


# -- empty answers where davserver has nothing -------------------------------------------------
def test_empty_answers(dav_server: DavServer) -> None:
    for target in (
        V2 + "/apps/files_sharing/api/v1/shares?format=json",
        V1 + "/apps/files_sharing/api/v1/shares?format=json",
        V2 + "/apps/notifications/api/v2/notifications?format=json",
    ):
        resp = call(dav_server, target)
        assert resp.status == 200, target
        meta, data = ocs_json(resp)
        assert meta["status"] == "ok" and data == [], target
    _, status = ocs_json(call(dav_server, V2 + "/apps/user_status/api/v1/user_status?format=json"))
    assert status["userId"] == "alice" and status["status"] == "offline"
    assert status["message"] is None
    for base in (V1, V2):
        _, config = ocs_json(call(dav_server, base + "/config?format=json", user=None))
        assert config["version"] == "1.7"
        assert config["host"] == f"{dav_server.host}:{dav_server.port}"


# -- errors in the envelope -----------------------------------------------------------------------
@pytest.mark.parametrize("base", [V1, V2])
def test_wrong_password_is_401_with_statuscode_997(dav_server: DavServer, base: str) -> None:
    resp = call(dav_server, base + "/cloud/user?format=json", password="wrong")
    assert resp.status == 401
    assert (resp.header("WWW-Authenticate") or "").startswith("Basic realm=")
    meta, data = ocs_json(resp)
    assert meta["status"] == "failure" and meta["statuscode"] == 997 and data == []
    root = ocs_xml(call(dav_server, base + "/cloud/capabilities", user=None))
    assert root.findtext("meta/statuscode") == "997"
    # a wrong password counts as a failed login, as it does on WebDAV
    with dav_server.vault.index.connection():
        assert LoginFailure.select().count() > 0
    # an unknown user looks exactly like a wrong password
    other = call(dav_server, base + "/cloud/user?format=json", user="nobody", password="x")
    assert other.status == 401 and ocs_json(other)[0]["statuscode"] == 997


def test_unknown_ocs_routes(dav_server: DavServer) -> None:
    # v1: HTTP 200 with statuscode 998; v2: HTTP 404 with 404 in the meta, as Nextcloud does
    v1 = call(dav_server, V1 + "/apps/nope/api/v1/thing?format=json")
    assert v1.status == 200
    assert ocs_json(v1)[0]["statuscode"] == 998
    v2 = call(dav_server, V2 + "/apps/nope/api/v1/thing?format=json", user=None)
    assert v2.status == 404
    assert ocs_json(v2)[0] == {
        "status": "failure",
        "statuscode": 404,
        "message": "Invalid query, please check the syntax.",
    }
    assert ocs_xml(call(dav_server, V2 + "/cloud")).findtext("meta/statuscode") == "404"


def test_malformed_credentials_are_400_in_the_envelope(dav_server: DavServer) -> None:
    resp = call(
        dav_server,
        V2 + "/cloud/user?format=json",
        user=None,
        headers={"Authorization": "Basic not-base64!"},
    )
    assert resp.status == 400
    assert ocs_json(resp)[0]["statuscode"] == 400


def test_the_login_throttle_applies_to_ocs(tmp_path: Any) -> None:
    env = {
        "DAVSERVER_SECURITY_LOGIN_FAIL_LIMIT": "3",
        "DAVSERVER_SECURITY_LOGIN_FAIL_WINDOW": "600",
    }
    dav = start_dav_server(tmp_path / "data", env)
    try:
        statuses = [
            call(dav, V1 + "/cloud/user?format=json", password="wrong").status for _ in range(6)
        ]
        assert statuses[0] == 401 and statuses[-1] == 429, statuses
        refused = call(dav, V2 + "/cloud/user?format=json")  # even the right password
        assert refused.status == 429 and refused.header("Retry-After")
        assert ocs_json(refused)[0]["statuscode"] == 429
        # and the same counters refuse WebDAV
        assert dav.client("alice").propfind("/", depth="0").status == 429
    finally:
        dav.stop()


# -- favourites: REPORT oc:filter-files on the files alias -------------------------------------
FAVOURITES = """<?xml version="1.0" encoding="UTF-8"?>
<oc:filter-files xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns" xmlns:nc="http://nextcloud.org/ns">
  <d:prop><d:getlastmodified/><d:getetag/><oc:fileid/><oc:favorite/></d:prop>
  <oc:filter-rules><oc:favorite>1</oc:favorite></oc:filter-rules>
</oc:filter-files>"""


def test_favourites_report_is_an_empty_multistatus(dav_server: DavServer) -> None:
    alice = dav_server.client("alice")
    assert alice.put("/a.txt", b"a").status == 201
    xml = {"Content-Type": "application/xml; charset=utf-8"}
    for path in ("/remote.php/dav/files/alice/", "/remote.php/webdav/", "/"):
        resp = alice.request("REPORT", path, FAVOURITES, xml)
        assert resp.status == 207, path
        root = ET.fromstring(resp.body)
        assert root.tag == "{DAV:}multistatus" and len(root) == 0, path
    # the desktop client's double slash, on a raw socket
    auth = {"Authorization": basic("alice", dav_server.users["alice"]), **xml}
    body = FAVOURITES.encode()
    auth["Content-Length"] = str(len(body))
    status, _ = raw(dav_server, "REPORT //remote.php/dav/files/alice/ HTTP/1.1", auth, body)
    assert status == 207
    assert (
        alice.request("REPORT", "/remote.php/dav/files/alice/nope/", FAVOURITES, xml).status == 404
    )
    assert alice.request("REPORT", "/remote.php/dav/files/bob/", FAVOURITES, xml).status == 404
    other = '<?xml version="1.0"?><d:sync-collection xmlns:d="DAV:"/>'
    assert alice.request("REPORT", "/", other, xml).status == 405
    anonymous = dav_server.client().request("REPORT", "/", FAVOURITES, xml)
    assert anonymous.status == 401


def test_an_engine_failure_keeps_its_status_in_the_envelope(
    dav_server: DavServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(self: Session) -> tuple[int, int | None]:
        raise StorageError("the index is down", retry_after=7)

    monkeypatch.setattr(Session, "usage", unavailable)
    for base in (V1, V2):
        resp = call(dav_server, base + "/cloud/user?format=json")
        assert resp.status == 503, base  # never a 200 with a failure inside, even in v1
        assert resp.header("Retry-After") == "7"
        meta, _ = ocs_json(resp)
        assert meta["statuscode"] == 503 and meta["message"] == "service unavailable"
        assert "index" not in resp.text  # the reason goes to the log, not to the client

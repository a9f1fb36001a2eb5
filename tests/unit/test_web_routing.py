"""The router: first match wins, exact routes refuse other methods, prefixes own subtrees;
and the route table names the prefixes the DAV app really serves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from davserver.config import default_config
from davserver.dav import destination
from davserver.dav.middleware import QUIET_KEY
from davserver.web.routes import routes
from davserver.web.routing import Mount, Route, Router


def _app(name: str) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", str(len(name)))])
        return [name.encode()]

    return app


def _call(router: Router, method: str, path: str) -> tuple[str, dict[str, str], bytes, dict]:
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        got["status"], got["headers"] = status, dict(headers)

    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path}
    body = b"".join(router(environ, start_response))
    return got["status"], got["headers"], body, environ


ROUTER = Router(
    [
        Route("/healthz", _app("health"), quiet=True),
        Mount("/remote.php/dav/files/", _app("files")),
        Mount("/", _app("dav")),
    ]
)


@pytest.mark.parametrize(
    ("path", "owner"),
    [
        ("/healthz", "health"),
        ("/healthz/", "dav"),  # exact paths only
        ("/healthzx", "dav"),
        ("/remote.php/dav/files/alice/a.txt", "files"),
        ("/remote.php/dav/files", "files"),  # the prefix without its slash
        ("/remote.php/dav/filesx", "dav"),
        ("/", "dav"),
        ("/anything/else", "dav"),
    ],
)
def test_first_match_wins(path: str, owner: str) -> None:
    status, _, body, _ = _call(ROUTER, "GET", path)
    assert status == "200 OK" and body == owner.encode()


def test_an_exact_route_refuses_other_methods_and_marks_quiet_requests() -> None:
    status, headers, body, environ = _call(ROUTER, "PUT", "/healthz")
    assert status == "405 Method Not Allowed" and headers["Allow"] == "GET, HEAD"
    assert body == b"/healthz answers GET, HEAD only\n"  # not the app's answer
    assert environ[QUIET_KEY] is True
    _, _, _, environ = _call(ROUTER, "GET", "/x")
    assert QUIET_KEY not in environ


def test_nothing_matching_is_404() -> None:
    status, _, _, _ = _call(Router([Route("/a", _app("a"))]), "GET", "/b")
    assert status == "404 Not Found"


def test_a_mount_prefix_ends_with_a_slash() -> None:
    with pytest.raises(ValueError, match="ends with"):
        Mount("/x", _app("x"))


def test_the_table_shows_every_prefix_of_the_dav_app(tmp_path: Any) -> None:
    class FakeVault:  # the table is built without touching the vault
        index = None
        blobs = type("Blobs", (), {"probe": lambda self: None})()

    dav = _app("dav")
    table = routes(default_config(tmp_path), FakeVault(), dav)  # type: ignore[arg-type]
    exact = [r.path for r in table if isinstance(r, Route)]
    mounts = {r.prefix: r.app for r in table if isinstance(r, Mount)}
    assert exact[:2] == ["/healthz", "/readyz"]
    for path in (
        "/status.php",
        "/index.php/204",
        "/ocs/v1.php/config",
        "/ocs/v1.php/cloud/capabilities",
        "/ocs/v2.php/cloud/capabilities",
        "/ocs/v1.php/cloud/user",
        "/ocs/v2.php/cloud/user",
    ):
        assert path in exact, path
    assert len(set(exact)) == len(exact)
    assert mounts["/ocs/v1.php/"] is not dav and mounts["/ocs/v2.php/"] is not dav
    for prefix in (destination.FILES_PREFIX, destination.UPLOADS_PREFIX, destination.WEBDAV_PREFIX):
        assert mounts[prefix + "/"] is dav, prefix
    assert mounts["/"] is dav and isinstance(table[-1], Mount) and table[-1].prefix == "/"
    assert all(r.summary for r in table)

"""The OCS envelope: ``{"ocs": {"meta": …, "data": …}}`` in JSON or XML, v1 or v2.

Nextcloud answers every ``/ocs/v1.php/…`` and ``/ocs/v2.php/…`` request in this envelope.
What differs between the two versions, as Nextcloud's ``V1Response``/``V2Response`` and its
legacy ``OC_API`` do it:

- success is ``statuscode`` 100 in v1 and 200 in v2; ``meta.status`` is ``ok`` or
  ``failure``, ``meta.message`` ``OK`` on success;
- v1 meta also carries ``totalitems`` and ``itemsperpage`` (empty strings);
- v1 answers HTTP 200 whatever the OCS code, except 997 (not logged in), which is 401; v2
  maps the code onto HTTP: 997 → 401 (meta keeps 997), 998 (no such route) → 404 (meta
  becomes 404 too), 996/999 → 500, another 2xx to 5xx code as it is. An error that is the
  server's own (5xx) or a login refused for too many failures (429) keeps its HTTP status in
  both versions here: a client or proxy must not take those for a success.

The format is JSON when the query has ``format=json`` or ``Accept`` names
``application/json``, XML otherwise (Nextcloud's default). XML lists are ``<element>``
children, ``true`` is ``1`` and ``false`` and ``null`` are empty, as PHP's XMLWriter writes
them. Nothing here knows an endpoint.
"""

from __future__ import annotations

import http
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs
from xml.etree import ElementTree as ET

V1, V2 = 1, 2
NOT_LOGGED_IN = 997
NO_ROUTE = 998
SERVER_ERROR = 996


def version_of(path: str) -> int:
    """2 for ``/ocs/v2.php/…``, 1 otherwise."""
    return V2 if path.startswith("/ocs/v2.php") else V1


def wants_json(environ: dict[str, Any]) -> bool:
    query = parse_qs(str(environ.get("QUERY_STRING", "")))
    fmt = query.get("format", [""])[-1].lower()
    if fmt in ("json", "xml"):
        return fmt == "json"
    return "application/json" in str(environ.get("HTTP_ACCEPT", "")).lower()


def http_status(version: int, code: int) -> int:
    """The HTTP status of an answer with OCS ``code`` (see the module docstring)."""
    if code in (100, 200):
        return 200
    if code == NOT_LOGGED_IN:
        return 401
    if code == 429 or 500 <= code < 600:
        return code
    if version == V1:
        return 200
    if code == NO_ROUTE:
        return 404
    if code in (SERVER_ERROR, 999):
        return 500
    return code if 200 <= code < 600 else 400


def _meta(version: int, code: int, message: str) -> dict[str, Any]:
    if version == V2 and code == NO_ROUTE:
        code = 404  # what Nextcloud's OC_API writes into the meta of a v2 answer
    ok = code in (100, 200)
    meta: dict[str, Any] = {
        "status": "ok" if ok else "failure",
        "statuscode": code,
        "message": "OK" if ok else message,
    }
    if version == V1:
        meta["totalitems"] = ""
        meta["itemsperpage"] = ""
    return meta


def _xml_value(parent: ET.Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _xml_value(ET.SubElement(parent, str(key)), item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _xml_value(ET.SubElement(parent, "element"), item)
    elif value is True:
        parent.text = "1"
    elif value is None or value is False:
        return
    else:
        parent.text = str(value)


def render(
    environ: dict[str, Any], version: int, code: int, data: Any, message: str = ""
) -> tuple[str, bytes]:
    """(Content-Type, body) of the envelope around ``data``."""
    meta = _meta(version, code, message)
    if wants_json(environ):
        doc = {"ocs": {"meta": meta, "data": data}}
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return "application/json; charset=utf-8", body
    root = ET.Element("ocs")
    _xml_value(ET.SubElement(root, "meta"), meta)
    _xml_value(ET.SubElement(root, "data"), data)
    body = b'<?xml version="1.0"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return "application/xml; charset=utf-8", body + b"\n"


def respond(
    environ: dict[str, Any],
    start_response: Any,
    code: int,
    data: Any,
    message: str = "",
    headers: Sequence[tuple[str, str]] = (),
    *,
    status: int | None = None,
) -> list[bytes]:
    """Answer in the envelope, the version taken from the request's path; ``status`` forces
    the HTTP status (an error of the HTTP layer: malformed credentials, a server failure)."""
    version = version_of(str(environ.get("PATH_INFO", "")))
    ctype, body = render(environ, version, code, data, message)
    if status is None:
        status = http_status(version, code)
    start_response(
        f"{status} {http.HTTPStatus(status).phrase}",
        [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *headers,
        ],
    )
    return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

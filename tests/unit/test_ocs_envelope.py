"""The OCS envelope: Nextcloud's v1/v2 status mapping and its JSON and XML forms."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from davserver.web.ocs import envelope
from davserver.web.ocs.endpoints import quota


@pytest.mark.parametrize(
    ("version", "code", "status"),
    [
        (1, 100, 200),
        (2, 200, 200),
        (1, 997, 401),
        (2, 997, 401),
        (1, 998, 200),  # v1 answers 200 whatever the OCS code, but for 997
        (2, 998, 404),
        (1, 404, 200),
        (2, 404, 404),
        (2, 996, 500),
        (2, 102, 400),  # not an HTTP status: Nextcloud's 400
        (1, 429, 429),  # throttled and server errors keep their status in both versions
        (1, 503, 503),
    ],
)
def test_http_status(version: int, code: int, status: int) -> None:
    assert envelope.http_status(version, code) == status


def _environ(query: str = "", accept: str = "", path: str = "/ocs/v1.php/x") -> dict[str, Any]:
    return {"QUERY_STRING": query, "HTTP_ACCEPT": accept, "PATH_INFO": path}


def test_format_choice() -> None:
    assert envelope.wants_json(_environ("format=json"))
    assert envelope.wants_json(_environ(accept="application/json, text/plain"))
    assert not envelope.wants_json(_environ("format=xml", accept="application/json"))
    assert not envelope.wants_json(_environ())
    assert envelope.version_of("/ocs/v2.php/cloud/user") == 2
    assert envelope.version_of("/ocs/v1.php/cloud/user") == 1


def test_json_meta_of_both_versions() -> None:
    _, body = envelope.render(_environ("format=json"), 1, 100, {"a": [1, None]})
    assert json.loads(body) == {
        "ocs": {
            "meta": {
                "status": "ok",
                "statuscode": 100,
                "message": "OK",
                "totalitems": "",
                "itemsperpage": "",
            },
            "data": {"a": [1, None]},
        }
    }
    _, body = envelope.render(_environ("format=json"), 2, 998, [], "no route")
    assert json.loads(body)["ocs"]["meta"] == {
        "status": "failure",
        "statuscode": 404,
        "message": "no route",
    }


def test_xml_writes_values_as_php_does() -> None:
    data = {"t": True, "f": False, "n": None, "s": "a<b", "i": 3, "l": ["x", "y"], "e": []}
    ctype, body = envelope.render(_environ(), 1, 100, data)
    assert ctype == "application/xml; charset=utf-8"
    assert body.startswith(b'<?xml version="1.0"?>\n<ocs>')
    d = ET.fromstring(body).find("data")
    assert d is not None
    assert [(c.tag, c.text) for c in d if c.tag != "l"] == [
        ("t", "1"),
        ("f", None),
        ("n", None),
        ("s", "a<b"),
        ("i", "3"),
        ("e", None),
    ]
    assert [e.text for e in d.findall("l/element")] == ["x", "y"]


def test_quota() -> None:
    assert quota(5, None) == {"free": -3, "used": 5, "total": -3, "relative": 0, "quota": -3}
    assert quota(250, 1000) == {
        "free": 750,
        "used": 250,
        "total": 1000,
        "relative": 25.0,
        "quota": 1000,
    }
    over = quota(1500, 1000)  # over quota (a lowered quota): nothing free, used as it is
    assert over["free"] == 0 and over["total"] == 1500 and over["relative"] == 100.0
    assert quota(0, 0)["relative"] == 0

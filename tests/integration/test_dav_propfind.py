"""The PROPFIND writer: its shortcuts for common live properties say exactly what the
resources' own ``get_property_value`` says, and its XML is what clients parse."""

from __future__ import annotations

from typing import Any

from lxml import etree

from davserver.dav import propfind
from davserver.dav.resources import SESSION_KEY, DirResource, FileResource
from tests.harness.davserver import DavServer


def _provider(dav: DavServer) -> Any:
    app = dav.server.wsgi_app
    # Walk the middleware stack down to WsgiDAV's app and take our provider from it.
    seen = set()
    stack = [app]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        mapping = getattr(obj, "provider_map", None)
        if mapping:
            return next(iter(mapping.values()))
        stack += [route.app for route in getattr(obj, "routes", ())]  # davserver.web's router
        for attr in ("application", "next_app", "app", "_application", "wsgidav_app"):
            nxt = getattr(obj, attr, None)
            if nxt is not None:
                stack.append(nxt)
    raise AssertionError("provider not found")


def _tree(el: Any) -> Any:
    return (el.tag, (el.text or "").strip(), dict(el.attrib), [_tree(c) for c in el])


def _canon(xml: str) -> Any:
    """The property element as namespaced tags and texts (fragments use the response's
    ``D:`` prefix; WsgiDAV's elements bring their own)."""
    wrapper = etree.fromstring(f'<w xmlns:D="DAV:">{xml}</w>'.encode())
    return _tree(wrapper[0])


def test_fast_values_match_the_resources(dav_server: DavServer) -> None:
    client = dav_server.client("alice")
    assert client.mkcol("/d").status == 201
    assert client.put("/d/report.pdf", b"%PDF-1.4 hello").status == 201
    session = dav_server.vault.login("alice", dav_server.users["alice"])
    provider = _provider(dav_server)
    environ = {SESSION_KEY: session, "wsgidav.provider": provider, "wsgidav.user_name": "alice"}
    resources = [
        DirResource("/d", environ, session.stat("/d")),
        FileResource("/d/report.pdf", environ, session.stat("/d/report.pdf")),
    ]
    writer = propfind._Writer()
    checked = set()
    for res in resources:
        res.provider = provider
        for name in res.get_property_names(is_allprop=True):
            fast = propfind._fast_value(res, name)
            if fast is propfind._MISSING:
                continue
            slow = res.get_property_value(name)
            assert _canon(writer.prop(name, fast)) == _canon(writer.prop(name, slow)), name
            checked.add(name)
    assert {
        "{DAV:}resourcetype",
        "{DAV:}getlastmodified",
        "{DAV:}creationdate",
        "{DAV:}displayname",
        "{DAV:}getcontentlength",
        "{DAV:}getetag",
        "{DAV:}getcontenttype",
        "{DAV:}supportedlock",
    } <= checked


def test_propfind_xml_is_well_formed_with_odd_names(dav_server: DavServer) -> None:
    client = dav_server.client("alice")
    odd = "a&b <c> \"d\" 'e' \u00e9\u4e2d.txt"
    assert client.put("/" + odd, b"x").status == 201
    r = client.propfind("/", "1")
    assert r.status == 207
    root = etree.fromstring(r.body)
    hrefs = [h.text for h in root.iter("{DAV:}href")]
    assert any(h and h.endswith(".txt") for h in hrefs)
    names = [d.text for d in root.iter("{DAV:}displayname")]
    assert odd in names

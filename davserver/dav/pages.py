"""The HTML the server writes itself: error pages and the browser's directory listing.

WsgiDAV's versions announce the product (``WsgiDAV/4.4.0`` in the listing's ``generator``
meta tag, a link in every error page) and the server's clock (``datetime.now()`` in every
error page), and the listing runs an inline ``onload`` handler and an inline style that a
strict ``Content-Security-Policy`` forbids. Here:

- ``ErrorPages``: WsgiDAV's ``ErrorPrinter`` (same statuses, headers and XML condition bodies),
  with an HTML page that says the status and its reason and nothing else;
- ``DirBrowser``: WsgiDAV's directory browser with a template of our own: no product, no
  version, no time, no script, no inline style; it marks the response (``LISTING_KEY``) so
  that ``davserver.dav.middleware`` gives it the listing's policy (its stylesheet and icon
  come from the server itself) instead of the one for everything else.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from html import escape
from typing import Any

from jinja2 import Environment
from wsgidav.dav_error import ERROR_RESPONSES, DAVError, get_http_status_string
from wsgidav.dir_browser import WsgiDavDirBrowser
from wsgidav.error_printer import ErrorPrinter

from davserver.dav.middleware import LISTING_KEY
from davserver.dav.resources import HREF_PREFIX_KEY


def error_page(error: DAVError) -> tuple[str, bytes]:
    """(content type, body) for a DAVError: its XML condition if it has one, else a short
    HTML page with the status and the reason (never a product, version or time)."""
    if error.err_condition:
        return "application/xml; charset=utf-8", error.err_condition.as_string().encode()
    status = get_http_status_string(error)
    # The reason the code gave, or the standard one; never the source exception WsgiDAV's
    # get_user_info() would append.
    reason = str(error.context_info or ERROR_RESPONSES.get(error.value, ""))
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{escape(status)}</title></head>\n<body><h1>{escape(status)}</h1>\n"
        f"<p>{escape(reason)}</p></body></html>\n"
    )
    return "text/html; charset=utf-8", page.encode("utf-8")


def _empty_page() -> tuple[str, bytes]:
    return "text/plain; charset=utf-8", b""


def _quiet_errors(app: Any) -> Any:
    """Wrap a WSGI app so every DAVError leaving it renders with :func:`error_page`.

    A failed download under the Nextcloud paths (``/remote.php/…``, where the sync clients
    and apps fetch files) has an empty body, as Nextcloud's own: the status says it all, and
    no client can mistake a page for the file's content."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        try:
            yield from app(environ, start_response)
        except DAVError as exc:
            download = environ.get("REQUEST_METHOD") in ("GET", "HEAD")
            if download and environ.get(HREF_PREFIX_KEY) and not exc.err_condition:
                exc.get_response_page = _empty_page
            else:
                exc.get_response_page = functools.partial(error_page, exc)
            raise

    return wrapped


class ErrorPages(ErrorPrinter):  # type: ignore[misc]
    """WsgiDAV's ``ErrorPrinter`` with :func:`error_page` as the page."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, _quiet_errors(next_app), config)


_TEMPLATE = """<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>Index of {{ display_path }}</title>
  <link rel="icon" href="{{ htdocs }}/favicon.ico">
  <link rel="stylesheet" href="{{ htdocs }}/style.css">
</head>
<body>
  <h1>Index of {{ display_path }}</h1>
  <hr>
  <table class="dir-listing">
    <thead>
      <tr><th>Name</th><th>Type</th><th>Size</th><th>Last modified</th></tr>
    </thead>
    <tbody>
      {%- if not is_top_dir %}
      <tr class="directory"><td><a href="..">..</a></td><td>Directory</td><td>-</td><td></td></tr>
      {%- endif %}
      {%- for row in rows %}
      <tr class="{{ row.tr_class }}">
        <td><a class="{{ row.a_class }}" href="{{ row.href }}">{{ row.display_name }}</a></td>
        <td>{{ row.display_type }}</td>
        <td>{{ row.str_size }}</td>
        <td>{{ row.str_modified }}</td>
      </tr>
      {%- endfor %}
    </tbody>
  </table>
  <hr>
  {%- if trailer %}
  <p class="trailer">{{ trailer }}</p>
  {%- endif %}
</body>
</html>
"""


class DirBrowser(WsgiDavDirBrowser):  # type: ignore[misc]
    """WsgiDAV's directory browser with the template above."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        self.template = Environment(autoescape=True).from_string(_TEMPLATE)

    def _get_context(self, environ: dict[str, Any], dav_res: Any) -> dict[str, Any]:
        context: dict[str, Any] = super()._get_context(environ, dav_res)
        environ[LISTING_KEY] = True  # only listings are rendered from a context
        context.pop("version", None)
        # Plain text: the configured trailer; WsgiDAV's ${version}/${time} macros are not
        # expanded (and True, which means them, shows nothing).
        trailer = self.dir_config.get("response_trailer")
        context["trailer"] = trailer if isinstance(trailer, str) else ""
        return context

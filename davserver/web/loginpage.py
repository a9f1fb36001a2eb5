"""The login flow's pages (``davserver.web.loginflow``): small, server-rendered, no script,
nothing loaded from anywhere.

Every value from outside (the client's name, the user name typed) is HTML-escaped. The one
stylesheet is inline and allowed by its hash in the ``Content-Security-Policy``, which
otherwise allows nothing but posting the form back to this server; framing is refused
(``frame-ancestors 'none'``, ``X-Frame-Options``), no referrer is sent, and nothing is
cached (the pages hold a CSRF value, and a back button must not show an old form).
"""

from __future__ import annotations

import base64
import hashlib
import http
from html import escape
from typing import Any

_STYLE = (
    "body{font-family:system-ui,sans-serif;background:#f4f6f8;color:#222;margin:0}"
    "main{max-width:26rem;margin:3rem auto;background:#fff;padding:1.5rem 2rem;"
    "border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.15)}"
    "h1{font-size:1.3rem}label{display:block;margin:.8rem 0 .2rem}"
    "input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem}"
    "fieldset{border:0;padding:0;margin:1rem 0}fieldset label{margin:.3rem 0}"
    "button{margin-top:1rem;padding:.6rem 1.2rem;font-size:1rem}"
    ".client{font-weight:bold;word-break:break-all}.msg{color:#a00;font-weight:bold}"
    ".note{color:#555;font-size:.9rem}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
#: Login Flow v1 ends in a redirect to the app's ``nc:`` URL, which the form's submission
#: must be allowed to follow.
LEGACY_POLICY = POLICY.replace("form-action 'self'", "form-action 'self' nc:")
HEADERS = (
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)


def status_line(status: int) -> str:
    return f"{status} {http.HTTPStatus(status).phrase}"


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta name='referrer' content='no-referrer'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><main>\n{body}\n</main></body></html>\n"
    )


def form_page(client: str, server: str, csrf: str, message: str, user: str) -> str:
    """The login form: who asks, for what, and the user's name and password."""
    note = f"<p class='msg' role='alert'>{escape(message)}</p>\n" if message else ""
    body = (
        "<h1>Connect a client to your account</h1>\n"
        f"<p><span class='client'>{escape(client)}</span> asks for access to your account "
        f"on {escape(server)}.</p>\n"
        "<p class='note'>Only continue if you started this yourself, in a client you "
        "trust. It gets a device password of its own, which you can revoke at any time; "
        "your password is not given to it.</p>\n"
        f"{note}"
        "<form method='post' autocomplete='off'>\n"
        f"<input type='hidden' name='csrf' value='{escape(csrf, quote=True)}'>\n"
        "<label for='user'>User name</label>"
        f"<input type='text' id='user' name='user' value='{escape(user, quote=True)}' "
        "autocomplete='username' autocapitalize='none' required autofocus>\n"
        "<label for='password'>Password</label>"
        "<input type='password' id='password' name='password' "
        "autocomplete='current-password' required>\n"
        "<fieldset><legend>Access to grant</legend>\n"
        "<label><input type='radio' name='access' value='full' checked> "
        "Full access to your files</label>\n"
        "<label><input type='radio' name='access' value='read'> "
        "Read-only: list and download, no changes</label>\n"
        "</fieldset>\n"
        "<button type='submit'>Grant access</button>\n"
        "</form>"
    )
    return _page("Connect a client", body)


def done_page(client: str) -> str:
    body = (
        "<h1>Account connected</h1>\n"
        f"<p><span class='client'>{escape(client)}</span> now has access to your account.</p>\n"
        "<p>You can close this window.</p>"
    )
    return _page("Account connected", body)


def gone_page() -> str:
    return message_page(
        "This login link is not valid: it expired, was used already, or never existed. "
        "Start again from your client."
    )


def message_page(text: str) -> str:
    return _page("Connect a client", f"<h1>Connect a client</h1>\n<p>{escape(text)}</p>")


def respond(
    environ: dict[str, Any],
    start_response: Any,
    status: int,
    page: str,
    extra: list[tuple[str, str]] | None = None,
    *,
    policy: str = POLICY,
) -> list[bytes]:
    body = page.encode("utf-8")
    headers = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Content-Security-Policy", policy),
        *HEADERS,
        *(extra or []),
    ]
    start_response(status_line(status), headers)
    return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

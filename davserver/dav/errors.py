"""The one place where engine exceptions become WebDAV errors.

Every call from the DAV layer into the vault runs inside :func:`vault_call`, which turns a
``davserver.errors.DavServerError`` into a WsgiDAV ``DAVError`` carrying the class's HTTP status
(and ``Retry-After`` for 429 and 503, the ``quota-not-exceeded`` or
``sufficient-disk-space`` condition for 507). Messages of our
exceptions never contain names, keys or contents, so they may reach the client; an integrity
failure is logged loudly here and answered with a bare 500.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from wsgidav.dav_error import ERROR_DESCRIPTIONS, DAVError, DAVErrorCondition
from wsgidav.mw.base_mw import BaseMiddleware

from davserver import metrics
from davserver.errors import (
    DavServerError,
    DiskFull,
    InsufficientStorage,
    IntegrityError,
    RateLimited,
    StorageError,
)

log = logging.getLogger(__name__)

QUOTA_NOT_EXCEEDED = "{DAV:}quota-not-exceeded"  # RFC 4331 §6
SUFFICIENT_DISK_SPACE = "{DAV:}sufficient-disk-space"  # RFC 4331 §6: the disk, not a quota

# WsgiDAV words the status line from this table and says "507 Status" for codes it lacks.
for _code, _text in (
    (413, "Payload Too Large"),
    (429, "Too Many Requests"),
    (503, "Service Unavailable"),
    (507, "Insufficient Storage"),
):
    ERROR_DESCRIPTIONS.setdefault(_code, f"{_code} {_text}")


def to_dav_error(exc: DavServerError) -> DAVError:
    """The ``DAVError`` a client gets for an engine exception."""
    status = exc.status
    if isinstance(exc, IntegrityError):
        log.error("integrity failure answered with 500: %s", exc.reason)
        metrics.get().integrity_failures.labels(metrics.integrity_kind(exc.reason)).inc()
        return DAVError(status, "stored data failed an integrity check")
    if isinstance(exc, StorageError) and status >= 500:
        log.error("storage failure answered with %d: %s", status, exc.reason)
    elif status >= 500:  # every 5xx leaves a line in the log
        log.error("%s answered with %d: %s", type(exc).__name__, status, exc.reason)
    headers = None
    if isinstance(exc, RateLimited) or (isinstance(exc, StorageError) and status == 503):
        headers = [("Retry-After", str(max(1, int(exc.retry_after))))]
    condition = None
    if isinstance(exc, DiskFull):
        condition = DAVErrorCondition(SUFFICIENT_DISK_SPACE)
    elif isinstance(exc, InsufficientStorage):
        condition = DAVErrorCondition(QUOTA_NOT_EXCEEDED)
    return DAVError(status, exc.reason, err_condition=condition, add_headers=headers)


@contextlib.contextmanager
def vault_call() -> Iterator[None]:
    """Run vault code; re-raise its exceptions as ``DAVError``."""
    try:
        yield
    except DavServerError as exc:
        raise to_dav_error(exc) from None


#: WSGI environ key set when a response was cut off after it started (its status line and
#: headers are out): the server then closes the connection instead of finishing the body,
#: so the client sees fewer bytes than Content-Length, never a silently short file.
RESPONSE_ABORTED = "davserver.response_aborted"


class ErrorMapper(BaseMiddleware):  # type: ignore[misc]
    """WSGI middleware just inside WsgiDAV's ``ErrorPrinter``: whatever escapes a handler
    reaches the printer as a ``DAVError`` — engine errors with their status, anything else
    as a bare 500 whose details go to the log, not to the client.

    An error after the response started (a GET whose object store fails mid-stream) can no
    longer become an error page: it is logged once as an aborted response (no traceback for
    engine errors) and the connection is closed (``RESPONSE_ABORTED``)."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        app_iter = None
        started = False
        sent = 0
        method = environ.get("REQUEST_METHOD")
        try:
            app_iter = self.next_app(environ, start_response)
            for chunk in app_iter:
                started = True
                sent += len(chunk)
                yield chunk
        except DAVError as exc:
            if not started:
                raise
            _aborted(environ, sent, f"HTTP {exc.value}")
        except DavServerError as exc:
            if not started:
                raise to_dav_error(exc) from None
            _aborted(environ, sent, exc.reason)
        except Exception:
            if started:
                environ[RESPONSE_ABORTED] = True
                log.exception("aborted response: %s failed after %d bytes", method, sent)
                return
            log.exception("unexpected error while handling a %s request", method)
            raise DAVError(500) from None
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()


def _aborted(environ: dict[str, Any], sent: int, reason: str) -> None:
    environ[RESPONSE_ABORTED] = True
    log.warning(
        "aborted response: %s failed after %d bytes: %s",
        environ.get("REQUEST_METHOD"),
        sent,
        reason,
    )

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


class ErrorMapper(BaseMiddleware):  # type: ignore[misc]
    """WSGI middleware just inside WsgiDAV's ``ErrorPrinter``: whatever escapes a handler
    reaches the printer as a ``DAVError`` — engine errors with their status, anything else
    as a bare 500 whose details go to the log, not to the client."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        app_iter = None
        try:
            app_iter = self.next_app(environ, start_response)
            yield from app_iter
        except DAVError:
            raise
        except DavServerError as exc:
            raise to_dav_error(exc) from None
        except Exception:
            log.exception(
                "unexpected error while handling a %s request", environ.get("REQUEST_METHOD")
            )
            raise DAVError(500) from None
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()

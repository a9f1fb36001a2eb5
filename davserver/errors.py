"""The one exception tree of davserver; each class carries the HTTP status it maps to.

::

    DavServerError (500)
    ├── ConfigError (500)               bad or unknown configuration (CLI exit code 2)
    ├── AuthError (401)                 wrong user name, password or token
    │   └── RateLimited (429)           too many failed logins; carries retry_after seconds
    ├── NotFound (404)                  no such user, path, node, version or blob
    ├── Conflict (409)                  parent missing, not a directory, move into itself, …
    ├── AlreadyExists (412)             destination exists and overwrite was not allowed
    ├── Forbidden (403)                 operation not allowed on this node (e.g. delete the root)
    ├── BadRequest (400)                malformed input (bad name, bad checksum header, …)
    ├── LengthMismatch (400)            body shorter or longer than announced; nothing committed
    ├── ChecksumMismatch (400)          body does not match the checksum the client sent
    ├── BadFraming (400)                the HTTP message itself is malformed (chunk size, …);
    │   │                               the connection is closed after the answer
    │   ├── UriTooLong (414)            request line longer than 8 KiB
    │   ├── HeadersTooLarge (431)       header section over 64 KiB or more than 100 fields
    │   ├── UnsupportedCoding (501)     a transfer coding other than chunked
    │   └── RequestTimeout (408)        the request head or body did not arrive in time
    ├── InsufficientStorage (507)       quota exceeded; nothing committed
    │   └── DiskFull (507)              the disk under the blobs or the index is full
    ├── PropertyLimit (507)             too many or too large dead properties on one node
    ├── LockLimit (423)                 one path already holds the most locks allowed
    ├── IntegrityError (500)            ciphertext, envelope or index row failed authentication
    ├── Overloaded (503)                too many partly received requests held; retry later
    └── StorageError (503)              the blob store or database is unreachable or failing;
        │                               carries retry_after seconds (Retry-After header)
        ├── BlobNotFound (500)          an object the index points at is missing from the store
        ├── StoreUnavailable (503)      the blob store timed out, refused or lost the
        │                               connection, or the guard fails fast (blobs/guard.py)
        ├── IndexFailure (500)          the index database refused a statement (a bug or a
        │                               damaged schema; unavailability is StorageError)
        └── VersionGone (503)           the version a GET announced was replaced and removed

Lower layers raise these; the DAV layer converts them to ``DAVError`` in one place and the CLI
to a message and exit code. Messages must never contain keys, passwords, file names or contents.
"""

from __future__ import annotations


class DavServerError(Exception):
    """Base class. ``status`` is the HTTP status the DAV layer answers with."""

    status = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)

    @property
    def reason(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigError(DavServerError):
    """Invalid configuration."""

    status = 500


class AuthError(DavServerError):
    """Authentication failed."""

    status = 401


class RateLimited(AuthError):
    """Too many failed login attempts; retry later."""

    status = 429

    def __init__(self, message: str = "", retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFound(DavServerError):
    """Not found."""

    status = 404


class Conflict(DavServerError):
    """Conflict with the current state of the tree."""

    status = 409


class AlreadyExists(DavServerError):
    """Destination exists."""

    status = 412


class Forbidden(DavServerError):
    """Operation not allowed."""

    status = 403


class ScopeGone(Forbidden):
    """The directory a scoped session (device token) is rooted at was deleted: moved to the
    trash or purged. Everything the session does is refused (403), not answered from the
    trash it has no business in."""


class BadRequest(DavServerError):
    """Malformed request."""

    status = 400


class LengthMismatch(BadRequest):
    """Body length does not match the announced length."""

    status = 400


class ChecksumMismatch(BadRequest):
    """Body does not match the announced checksum."""

    status = 400


class BadFraming(BadRequest):
    """Malformed HTTP message framing; the connection is closed."""

    status = 400


class UriTooLong(BadFraming):
    """Request line too long."""

    status = 414


class HeadersTooLarge(BadFraming):
    """Request header fields too large."""

    status = 431


class UnsupportedCoding(BadFraming):
    """Transfer coding not implemented."""

    status = 501


class RequestTimeout(BadFraming):
    """The request did not arrive in time."""

    status = 408


class InsufficientStorage(DavServerError):
    """Quota exceeded or storage full."""

    status = 507


class DiskFull(InsufficientStorage):
    """No space left on the disk under the blob store or the index; nothing committed."""

    status = 507


class PropertyLimit(DavServerError):
    """Too many dead properties, or too many bytes of them, on one node; nothing changed.
    507 as RFC 4918 §9.2.1 has it for a property the server has no room to record (not an
    InsufficientStorage: no quota or disk is involved)."""

    status = 507


class LockLimit(DavServerError):
    """The path already holds the most locks allowed (``quota.max_shared_locks``). 423: to
    the new locker the resource is locked, as with a conflicting lock, until one of the
    existing locks is released or expires."""

    status = 423


class IntegrityError(DavServerError):
    """Stored data failed authentication."""

    status = 500


class Overloaded(DavServerError):
    """The server holds too many partly received requests; retry later."""

    status = 503
    retry_after = 5


class StorageError(DavServerError):
    """Storage backend unavailable or failing; ``retry_after`` seconds is a hint for clients."""

    status = 503

    def __init__(self, message: str = "", retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class VersionGone(StorageError):
    """The file version a read announced (size, ETag) was replaced and removed before its
    bytes could be read; a new attempt reads the current one."""

    status = 503

    def __init__(self, message: str = "the file changed while it was read") -> None:
        super().__init__(message, retry_after=1)


class BlobNotFound(StorageError):
    """A blob the index refers to is missing."""

    status = 500


class StoreUnavailable(StorageError):
    """The blob store did not answer in time or could not be reached; retry later."""

    status = 503


class IndexFailure(StorageError):
    """The index database refused a statement."""

    status = 500

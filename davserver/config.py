"""Configuration: one schema, a frozen dataclass per section, a YAML file and the environment.

This module owns the option schema and nothing else. Every option is a dataclass field
carrying its default, help text and converter (Radicale style); that one schema drives
validation, environment overrides, ``config/davserver.example.yaml`` and what ``davserver
init`` writes. It must not open sockets, databases or blob stores, and it never shows a
secret: the S3 secret key is a :class:`Secret`, database passwords are masked.

Sources, later beats earlier: defaults < YAML file < ``DAVSERVER_<SECTION>_<OPTION>``
environment variables (nested sections joined by ``_``: ``DAVSERVER_STORAGE_S3_ACCESS_KEY``).
Unknown keys in the file are errors; so are ``DAVSERVER_*`` variables that start like a
section but name no option (``DAVSERVER_SERVER_PROT``), except ``DAVSERVER_TEST_*`` and
``DAVSERVER_CACHE_DIR``. Every problem is a :class:`~davserver.errors.ConfigError` naming
the file (or variable), the section and the option.

Relative paths resolve against ``data_dir`` at load time, so a loaded :class:`Config` holds
absolute paths; ``data_dir`` itself resolves against the directory of the config file.
"""

from __future__ import annotations

import dataclasses
import difflib
import hmac
import ipaddress
import json
import os
import re
import textwrap
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from davserver.errors import ConfigError

T = TypeVar("T")
ENV_PREFIX = "DAVSERVER_"
# Owned by the test harness and tools; never taken for typos of an option.
_ENV_IGNORED = ("DAVSERVER_TEST_", "DAVSERVER_CACHE_DIR")
_MASK = "********"


class Secret:
    """A string that does not show itself: repr/str are masked; ``get()`` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')" if self._value else "Secret('')"

    def __str__(self) -> str:
        return _MASK if self._value else ""

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


_NO_SECRET = Secret("")


def mask_url(url: str) -> str:
    """``scheme://user:password@host/...`` with the password replaced by ``***``."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:).*@", r"\1***@", url)


class _BadValueError(ValueError):
    """Raised by converters; the message completes "expected ..."."""


@dataclass(frozen=True)
class Option:
    """One option: help text and converter (for YAML values and environment strings)."""

    help: str
    convert: Callable[[object], Any]
    # How a rejected value is quoted in an error message (None: not at all).
    show: Callable[[object], str | None] = repr
    # Makes a relative path absolute, given data_dir.
    resolve: Callable[[Any, Path], Any] | None = None


def _opt(default: T, convert: Callable[[object], T], help: str, **kw: Any) -> T:
    return field(default=default, metadata={"option": Option(help, convert, **kw)})


# -- converters: take a YAML value or an environment string, return the typed value --------


def _integer(lo: int, hi: int | None = None) -> Callable[[object], int]:
    between = f"between {lo} and {hi}" if hi is not None else f">= {lo}"

    def convert(value: object) -> int:
        n: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            n = int(value)
        if n is None or n < lo or (hi is not None and n > hi):
            raise _BadValueError(f"an integer {between}")
        return n

    return convert


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if isinstance(value, str | int) else ""
    if word not in _TRUE | _FALSE:
        raise _BadValueError("a boolean (true/false/yes/no/1/0)")
    return word in _TRUE


def _string(nonempty: bool = False, forbid: str = "", what: str = "") -> Callable[[object], str]:
    expected = what or ("a non-empty string" if nonempty else "a string")
    if forbid and not what:
        expected += " without " + " or ".join(repr(c) for c in forbid)

    def convert(value: object) -> str:
        # Numbers are refused, not stringified: YAML reads 0123 as 83.
        if not isinstance(value, str) or (nonempty and not value.strip()):
            raise _BadValueError(expected)
        if any(c in value for c in forbid) or any(ord(c) < 32 for c in value):
            raise _BadValueError(expected)
        return value

    return convert


def _optional(convert: Callable[[object], T]) -> Callable[[object], T | None]:
    def optional(value: object) -> T | None:
        # An empty string is how the environment says null.
        return None if value is None or value == "" else convert(value)

    return optional


def _checksum_list(value: object) -> tuple[str, ...]:
    """``sha1,md5`` / ``sha1`` / ``md5`` / ``none`` (or a YAML list of them)."""
    items: list[object]
    if isinstance(value, str):
        items = [p.strip().lower() for p in value.split(",") if p.strip()]
    elif isinstance(value, (list, tuple)):
        items = [p.strip().lower() if isinstance(p, str) else p for p in value]
    else:
        raise _BadValueError("a list of checksums: sha1, md5, or none")
    if items == ["none"] or not items:
        return ()
    if any(p not in ("sha1", "md5") for p in items) or len(set(items)) != len(items):
        raise _BadValueError("a list of checksums: sha1, md5, or none")
    return tuple(sorted(set(items), key=("sha1", "md5").index))  # type: ignore[arg-type]


def _choice(*choices: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise _BadValueError("one of " + ", ".join(choices))

    return convert


def _ip_list(value: object) -> tuple[str, ...]:
    items: list[object] | None = None
    if isinstance(value, str):
        items = [p for p in value.split(",") if p.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    try:
        if items is not None:
            return tuple(str(ipaddress.ip_address(str(i).strip())) for i in items)
    except ValueError:
        pass
    raise _BadValueError("a list of IP addresses (comma-separated in the environment)")


def _secret(value: object) -> Secret:
    if not isinstance(value, str):
        raise _BadValueError("a string (quote it in YAML)")
    return Secret(value)


def _db_url(value: object) -> str:
    if isinstance(value, str):
        if value.startswith("sqlite:///") and value != "sqlite:///":
            return value
        scheme, sep, rest = value.partition("://")
        database = rest.partition("/")[2].partition("?")[0]
        if sep and scheme in ("postgresql", "postgres") and database:
            return value
    raise _BadValueError("a sqlite:///path or postgresql://user:password@host:port/db URL")


def _show_url(value: object) -> str:
    return repr(mask_url(value) if isinstance(value, str) else value)


def _resolve_path(value: str, data_dir: Path) -> str:
    return os.path.normpath(data_dir / Path(value).expanduser())


def _resolve_db_url(url: str, data_dir: Path) -> str:
    path, q, query = url.removeprefix("sqlite:///").partition("?")
    if url == path or path == ":memory:" or Path(path).is_absolute():
        return url  # not SQLite, in memory, or already absolute
    return "sqlite:///" + _resolve_path(path, data_dir) + q + query


_PATH = {"resolve": _resolve_path}
_SOME_STR = _string(nonempty=True)

# -- the schema ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """HTTP listener (cheroot)."""

    host: str = _opt("127.0.0.1", _SOME_STR, "Address to listen on; :: or 0.0.0.0 is all.")
    port: int = _opt(8080, _integer(0, 65535), "TCP port (0 picks a free port).")
    threads: int = _opt(32, _integer(1, 4096), "Worker threads (cheroot numthreads).")
    workers: int = _opt(
        1,
        _integer(0, 256),
        "Server processes sharing the port (SO_REUSEPORT), each with its threads; 0 = one "
        "per CPU core. Python runs one thread at a time per process: more processes use "
        "more cores. Login caches are per process; failed-login counters live in the index "
        "and are shared by all.",
    )
    timeout: int = _opt(
        300,
        _integer(1),
        "Socket timeout in seconds; generous so that a slow client uploading a large "
        "file is not cut off mid-body.",
    )
    tls_cert: str | None = _opt(
        None,
        _optional(_SOME_STR),
        "PEM certificate chain for HTTPS, set together with tls_key; null serves plain "
        "HTTP (e.g. behind a TLS-terminating reverse proxy).",
        **_PATH,
    )
    tls_key: str | None = _opt(None, _optional(_SOME_STR), "PEM private key for tls_cert.", **_PATH)
    block_size: int = _opt(
        1048576, _integer(4096, 1 << 28), "Bytes per read/write when streaming bodies."
    )
    max_body_bytes: int = _opt(
        0, _integer(0), "Largest request body accepted, in bytes (0 = unlimited)."
    )
    access_log: bool = _opt(True, _boolean, "Log one line per request.")
    log_level: str = _opt(
        "info",
        _choice("debug", "info", "warning", "error"),
        "Log level: debug, info, warning or error.",
    )
    realm: str = _opt(
        "davserver",
        _string(nonempty=True, forbid='"\\'),
        "HTTP Basic authentication realm shown by clients.",
    )
    trusted_proxies: tuple[str, ...] = _opt(
        tuple[str, ...](),
        _ip_list,
        "IP addresses of reverse proxies whose X-Forwarded-For header is honoured "
        "(comma-separated in the environment).",
    )
    head_timeout: int = _opt(
        20,
        _integer(1, 3600),
        "Seconds a request head (request line and headers) may take in total, counted from "
        "the accept (TLS handshake included) or from its first byte on a kept-alive "
        "connection; then 408 and close. Waiting costs no thread.",
    )
    idle_timeout: int = _opt(
        60,
        _integer(1, 86400),
        "Seconds a kept-alive connection may wait for its next request before it is closed.",
    )
    body_timeout: int = _opt(
        300,
        _integer(1),
        "Seconds a request body may take, plus one second per body_min_rate bytes "
        "received (a slow sender of a large file is not cut off); then 408 and close.",
    )
    body_min_rate: int = _opt(
        1024,
        _integer(1),
        "Bytes per second that earn a request body one more second (see body_timeout).",
    )


@dataclass(frozen=True)
class LocalStorageConfig:
    """Settings for backend: local."""

    path: str = _opt("blobs", _SOME_STR, "Directory holding the encrypted blobs.", **_PATH)


@dataclass(frozen=True)
class S3StorageConfig:
    """Settings for backend: s3."""

    endpoint: str = _opt(
        "",
        _string(forbid="/", what="host[:port] without scheme or path"),
        "host[:port] without scheme, e.g. minio.internal:9000 (see secure).",
    )
    bucket: str = _opt("", _string(), "Bucket name.")
    access_key: str = _opt("", _string(), "Access key id.")
    secret_key: Secret = field(
        default=_NO_SECRET,
        metadata={
            "option": Option(
                "Secret access key; never logged or shown.", _secret, show=lambda value: None
            )
        },
    )
    secure: bool = _opt(True, _boolean, "Use HTTPS to reach the endpoint.")
    region: str | None = _opt(
        None, _optional(_SOME_STR), "Region; null lets the client discover it."
    )
    prefix: str = _opt(
        "", _string(), "Key prefix inside the bucket, so several servers can share one."
    )
    part_size: int = _opt(
        8388608,
        _integer(8 << 20, 5 << 30),
        "Multipart upload part size in bytes (8 MiB to 5 GiB).",
    )
    create_bucket: bool = _opt(
        False, _boolean, "Create the bucket at startup if it does not exist."
    )
    upload_concurrency: int = _opt(
        3,
        _integer(1, 16),
        "Parts of one upload sent at once; memory per upload is about (this + 1) part sizes.",
    )
    connect_timeout: int = _opt(
        3,
        _integer(1, 60),
        "Seconds to wait for a connection to the endpoint (and for it to accept each block "
        "of a request body). Timeouts are not retried: a hung store gives a 503 after one.",
    )
    read_timeout: int = _opt(
        5,
        _integer(1, 600),
        "Seconds to wait for an answer, or for each block of a download; a transfer that "
        "progresses is never cut. Keep connect/read timeouts under 10 s so clients get "
        "their 503 before they give up.",
    )
    retries: int = _opt(
        2,
        _integer(0, 10),
        "Retries (with jittered backoff) of a refused or dropped connection and of a 5xx answer.",
    )
    max_waiting: int = _opt(
        0,
        _integer(0, 4096),
        "Most request threads that may wait on the object store at once; more get 503 at "
        "once, so requests that never touch it (PROPFIND, LOCK, small files) keep threads "
        "to run on. Reading a download that progresses is not waiting. 0 = three quarters "
        "of server.threads.",
    )
    breaker_failures: int = _opt(
        3,
        _integer(1, 1000),
        "Consecutive timeouts or connection failures after which every object-store call "
        "fails at once (503) for breaker_reset seconds.",
    )
    breaker_reset: int = _opt(
        5,
        _integer(1, 300),
        "Seconds to fail fast before one request probes whether the object store is back.",
    )


@dataclass(frozen=True)
class StorageConfig:
    """Where the encrypted blobs are stored."""

    backend: str = _opt(
        "local",
        _choice("local", "s3"),
        "Where encrypted blobs live: local (a directory) or s3 (any S3-compatible "
        "store; endpoint, bucket, access_key and secret_key are then required).",
    )
    inline_max: int = _opt(
        16384,
        _integer(0, 1 << 20),
        "Files of at most this many bytes (with a known length) are stored, encrypted like "
        "any blob, in the index instead of the blob store: one database write and no object "
        "store round trip per small file. 0 turns it off; at most 1 MiB.",
    )
    checksums: tuple[str, ...] = _opt(
        ("sha1", "md5"),
        _checksum_list,
        "Checksums of each file's plaintext computed while it is uploaded, kept encrypted and "
        "offered to clients (oc:checksums: rclone's owncloud/nextcloud vendors, Nextcloud "
        "clients): sha1, md5, both (sha1,md5) or none. They cost CPU: on the benchmark "
        "machine MD5 ~1.6 s and SHA-1 ~0.6 s per GiB. A checksum a client announces "
        "(OC-Checksum) is always verified.",
        show=lambda value: ",".join(value) or "none",
    )
    reserve_bytes: int = _opt(
        16777216,
        _integer(0),
        "Bytes of disk kept in reserve (a file named space-reserve on each file system that "
        "holds the SQLite index or the local blobs), released when a DELETE meets a full "
        "disk so that users can still free space; re-created once there is room again. "
        "0 turns it off.",
    )
    local: LocalStorageConfig = field(default_factory=LocalStorageConfig)
    s3: S3StorageConfig = field(default_factory=S3StorageConfig)


@dataclass(frozen=True, repr=False)
class IndexConfig:
    """The index database (tree, versions, users)."""

    url: str = _opt(
        "sqlite:///index.db",
        _db_url,
        "Database URL: sqlite:///path (relative to data_dir) or "
        "postgresql://user:password@host:port/database.",
        show=_show_url,
        resolve=_resolve_db_url,
    )
    connect_timeout: int = _opt(
        2,
        _integer(2, 600),
        "PostgreSQL: seconds to wait for a new connection (libpq connect_timeout, at least "
        "2) or a free pooled one; an unreachable server then gets a 503 with Retry-After, "
        "not a hung request.",
    )
    statement_timeout: int = _opt(
        30,
        _integer(0, 86400),
        "PostgreSQL: seconds any one statement may run before the server cancels it "
        "(0 = no limit).",
    )
    lock_timeout: int = _opt(
        10,
        _integer(0, 86400),
        "PostgreSQL: seconds a statement may wait for a row lock before giving up "
        "(0 = no limit); writers of one user queue on that user's row.",
    )
    pool_size: int = _opt(
        64,
        _integer(1, 10000),
        "PostgreSQL: most connections one server process keeps (each request thread and "
        "the maintenance loop hold at most one at a time; at least server.threads + 1).",
    )

    def __repr__(self) -> str:
        return f"IndexConfig(url={mask_url(self.url)!r})"


@dataclass(frozen=True)
class SecurityConfig:
    """Passwords, logins, rate limits."""

    pepper_file: str = _opt(
        "pepper",
        _SOME_STR,
        "File holding the server pepper; keep it out of index backups.",
        **_PATH,
    )
    argon2_opslimit: int = _opt(3, _integer(1), "Argon2id passes for new passwords.")
    argon2_memlimit: int = _opt(
        67108864, _integer(8192), "Argon2id memory in bytes for new passwords."
    )
    login_cache_ttl: int = _opt(600, _integer(1), "Seconds an idle login stays cached in memory.")
    login_cache_size: int = _opt(1024, _integer(1), "Most logins kept in the cache.")
    login_fail_limit: int = _opt(
        10, _integer(1), "Failed logins from one address per window before answering it 429."
    )
    login_fail_window: int = _opt(300, _integer(1), "Window in seconds for counting failed logins.")
    argon2_concurrency: int = _opt(0, _integer(0), "Argon2id computations at once (0 = CPU count).")
    login_fail_pair_limit: int = _opt(
        5,
        _integer(1),
        "Failed logins of one user from one address per window before that pair gets 429 "
        "(login_fail_limit is per address, for all users).",
    )
    login_fail_user_limit: int = _opt(
        10,
        _integer(1),
        "Failed logins of one user per window, from anywhere, after which only addresses with "
        "fewer than 2 failures against that user may still try it; addresses without "
        "failures of their own are never refused, so nobody can lock a user out.",
    )


@dataclass(frozen=True)
class QuotaConfig:
    """Storage quotas."""

    default_bytes: int = _opt(0, _integer(0), "Quota of new users (0 = unlimited).")
    max_dead_props: int = _opt(
        256, _integer(1), "Most dead (client-set) properties per file or directory (else 507)."
    )
    max_dead_props_bytes: int = _opt(
        65536,
        _integer(1024),
        "Most bytes of dead properties (names and XML values) per file or directory (else 507).",
    )
    max_shared_locks: int = _opt(
        64, _integer(1), "Most locks on one file or directory at once (else 423)."
    )


@dataclass(frozen=True)
class GcConfig:
    """Garbage collection of blobs and abandoned uploads."""

    upload_expiry: int = _opt(
        86400, _integer(1), "Seconds before an abandoned upload is collected."
    )
    interval: int = _opt(300, _integer(1), "Seconds between garbage-collection runs.")
    upload_grace: int = _opt(
        86400,
        _integer(1),
        "Seconds a partial upload left by a crash (a temporary blob file, an incomplete S3 "
        "multipart upload) may sit idle before the maintenance loop removes it. Idle means "
        "no byte written (local) or no part stored (S3, 8 MiB or more each) for that long, "
        "so keep it well above server.timeout and the time a slow client takes per part.",
    )


def _retention(kind: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        from davserver.retention import Retention

        text = str(value)
        try:
            Retention.parse(text, kind)
        except ValueError as exc:
            raise _BadValueError(str(exc)) from exc
        return text

    return check


@dataclass(frozen=True)
class VersionsConfig:
    """Previous versions of overwritten files (Nextcloud's rules; see davserver.retention)."""

    retention: str = _opt(
        "auto",
        _retention("versions"),
        "How long overwritten versions are kept, in Nextcloud's versions_retention_obligation "
        "grammar: 'auto' (thinned: all for 10 s, then one per 10 s for a minute, per minute for "
        "an hour, per hour for a day, per day for 30 days, per week after; removed when space "
        "is needed), 'D, auto' (at least D days), 'auto, D' (at most D days), 'D1, D2' (at "
        "least D1, at most D2 days, no thinning) or 'disabled' (an overwrite replaces). "
        "Labelled versions are never thinned.",
    )


@dataclass(frozen=True)
class TrashConfig:
    """Deleted files and folders (Nextcloud's rules; see davserver.retention)."""

    retention: str = _opt(
        "auto",
        _retention("trash"),
        "How long deleted items stay in the trash, in Nextcloud's trashbin_retention_obligation "
        "grammar: 'auto' (30 days; sooner when space is needed), 'D, auto', 'auto, D', "
        "'D1, D2' or 'disabled' (every DELETE is final). A request with the header "
        "X-Delete-Permanently: true skips the trash.",
    )


@dataclass(frozen=True)
class HealthConfig:
    """The health endpoints /healthz and /readyz (unauthenticated; see docs/operations.md)."""

    timeout: int = _opt(
        2,
        _integer(1, 60),
        "Seconds each /readyz check (an index query, a blob-store probe) may take before "
        "/readyz answers 503 naming it; set the load balancer's probe timeout above this.",
    )


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics on a listener of their own (off unless a port is set)."""

    host: str = _opt(
        "127.0.0.1",
        _SOME_STR,
        "Address of the metrics listener; keep it on loopback or a private network (the "
        "metrics need no login).",
    )
    port: int = _opt(
        0,
        _integer(0, 65535),
        "TCP port of the metrics listener (GET /metrics, Prometheus text format); 0 = no "
        "metrics listener.",
    )


def _resolve_audit(value: str, data_dir: Path) -> str:
    return value if value in ("", "-") else _resolve_path(value, data_dir)


@dataclass(frozen=True)
class AuditConfig:
    """The audit log of security events (JSON lines)."""

    file: str = _opt(
        "",
        _string(),
        "File the audit log is appended to (relative to data_dir), - for stderr, empty for "
        "none: failed and throttled logins, users created or deleted, passwords and quotas "
        "changed, locks broken; with user ids and keyed address tags, never names.",
        resolve=_resolve_audit,
    )


_DATA_DIR = Option(
    "Directory that relative paths below resolve against; itself relative to the "
    "directory holding this file.",
    _SOME_STR,
)


@dataclass(frozen=True)
class Config:
    """The whole configuration; paths in it are absolute (resolved against data_dir)."""

    data_dir: Path = field(metadata={"option": _DATA_DIR})
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    gc: GcConfig = field(default_factory=GcConfig)
    versions: VersionsConfig = field(default_factory=VersionsConfig)
    trash: TrashConfig = field(default_factory=TrashConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    def resolve_path(self, p: str | os.PathLike[str]) -> Path:
        """``p`` relative to data_dir (absolute paths are returned unchanged)."""
        return Path(os.path.normpath(self.data_dir / Path(p).expanduser()))


# -- walking the schema ----------------------------------------------------------------------


def _default(f: dataclasses.Field[Any]) -> Any:
    # Config.data_dir is a required field (the loader always knows it); in the schema its
    # default is ".", i.e. the directory holding the config file.
    return "." if f.name == "data_dir" else f.default


def _children(cls: Any) -> dict[str, Option | Any]:
    """name -> Option, or name -> the dataclass of a subsection."""
    return {f.name: f.metadata.get("option") or f.default_factory for f in dataclasses.fields(cls)}


def iter_options(
    cls: Any = Config, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, str, Option]]:
    """Every option as (dotted name, environment variable, Option), in schema order."""
    for name, child in _children(cls).items():
        if isinstance(child, Option):
            yield ".".join((*path, name)), ENV_PREFIX + "_".join((*path, name)).upper(), child
        else:
            yield from iter_options(child, (*path, name))


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _convert(option: Option, value: object, where: str) -> Any:
    try:
        return option.convert(value)
    except _BadValueError as exc:
        shown = option.show(value)
        got = f", got {shown}" if shown is not None else ""
        raise ConfigError(f"{where}: expected {exc}{got}") from None


# -- reading ---------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = self.construct_scalar(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}'", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path, label: str) -> dict[Any, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise ConfigError(f"{label}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: not valid UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark else label
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping of sections at the top level")
    return data


def _merge_file(
    raw: Mapping[Any, Any], cls: Any, path: tuple[str, ...], label: str, out: dict[str, Any]
) -> None:
    children = _children(cls)
    for key, value in raw.items():
        name, child = str(key), children.get(str(key))
        dotted = ".".join((*path, name))
        if child is None:
            top_section = not path and (value is None or isinstance(value, dict))
            kind = "section" if top_section else "option"
            hint = _suggest(dotted, [".".join((*path, c)) for c in children])
            raise ConfigError(f"{label}: unknown {kind} '{dotted}'{hint}")
        if isinstance(child, Option):
            out[name] = _convert(child, value, f"{label}: {dotted}")
        elif value is None or isinstance(value, dict):
            _merge_file(value or {}, child, (*path, name), label, out.setdefault(name, {}))
        else:
            raise ConfigError(f"{label}: {dotted}: expected a mapping of options")


def _merge_env(environ: Mapping[str, str], out: dict[str, Any]) -> None:
    known = {env: (dotted, opt) for dotted, env, opt in iter_options()}
    known_dotted = [dotted for dotted, _ in known.values() if "." in dotted]
    # DAVSERVER_SERVER_, DAVSERVER_STORAGE_S3_, ...: a variable starting so must be known.
    sections = tuple(
        {f"{ENV_PREFIX}{d.rpartition('.')[0]}_".replace(".", "_").upper() for d in known_dotted}
    )
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var.startswith(_ENV_IGNORED):
            continue
        if var in known:
            dotted, opt = known[var]
            *parents, name = dotted.split(".")
            target = out
            for part in parents:
                target = target.setdefault(part, {})
            where = f"environment variable {var} ({dotted})"
            target[name] = _convert(opt, environ[var], where)
        elif var.startswith(sections):
            hint = _suggest(var, list(known))
            raise ConfigError(f"environment variable {var}: unknown option{hint}")


def _build(cls: Any, values: Mapping[str, Any], data_dir: Path) -> Any:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        opt: Option | None = f.metadata.get("option")
        if opt is None:
            kwargs[f.name] = _build(f.default_factory, values.get(f.name, {}), data_dir)
            continue
        value = values.get(f.name, _default(f))
        if opt.resolve is not None and value is not None:
            value = opt.resolve(value, data_dir)
        kwargs[f.name] = value
    return cls(**kwargs)


def _finish(values: dict[str, Any], base: Path, label: str) -> Config:
    raw_dir = Path(values.pop("data_dir", ".")).expanduser()
    data_dir = Path(os.path.normpath(base.absolute() / raw_dir))
    config: Config = _build(Config, {**values, "data_dir": data_dir}, data_dir)
    server, s3 = config.server, config.storage.s3
    if (server.tls_cert is None) != (server.tls_key is None):
        need = "tls_cert" if server.tls_cert is None else "tls_key"
        have = "tls_key" if need == "tls_cert" else "tls_cert"
        raise ConfigError(f"{label}: server.{need}: required when server.{have} is set")
    if config.storage.backend == "s3":
        for name in ("endpoint", "bucket", "access_key", "secret_key"):
            if not getattr(s3, name):
                raise ConfigError(
                    f"{label}: storage.s3.{name}: required when storage.backend is 's3'"
                )
    return config


def load(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (None: no file), apply ``DAVSERVER_*`` variables from ``environ``
    (None: ``os.environ``) and validate. Raises ConfigError naming file or variable,
    section and option. Relative ``data_dir`` resolves against the file's directory
    (the working directory without a file)."""
    values: dict[str, Any] = {}
    label, base = "configuration", Path.cwd()
    if path is not None:
        label, base = os.fspath(path), Path(path).absolute().parent
        _merge_file(_read_yaml(Path(path), label), Config, (), label, values)
    _merge_env(os.environ if environ is None else environ, values)
    return _finish(values, base, label)


def default_config(data_dir: str | os.PathLike[str]) -> Config:
    """The all-defaults configuration rooted at ``data_dir`` (no file, no environment)."""
    return _finish({}, Path(data_dir), "configuration")


# -- rendering -------------------------------------------------------------------------------

_EXAMPLE_HEADER = """\
davserver configuration: every option at its default, each with its help text.
Generated from davserver/config.py by render_example(); regenerate it, do not edit it.

Relative paths resolve against data_dir. Every option can also be set by an environment
variable DAVSERVER_<SECTION>_<OPTION> (DAVSERVER_SERVER_PORT, DAVSERVER_DATA_DIR,
DAVSERVER_STORAGE_S3_SECRET_KEY, ...), which beats this file. Unknown options are errors."""

_INIT_HEADER = """\
davserver configuration written by `davserver init`: blobs in a local directory, the
index in SQLite, every path relative to data_dir so the directory can move as a whole.

Every option can also be set by an environment variable DAVSERVER_<SECTION>_<OPTION>
(e.g. DAVSERVER_SERVER_PORT), which beats this file. Unknown options are errors."""


def _yaml_value(value: object) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    text = value.get() if isinstance(value, Secret) else str(value)
    if text and yaml.safe_load(f"k: {text}") == {"k": text}:
        return text
    return json.dumps(text)  # a JSON string is a valid double-quoted YAML scalar


def _render_section(cls: Any, indent: int, overrides: Mapping[str, object]) -> list[str]:
    pad, lines = " " * indent, []
    for f in dataclasses.fields(cls):
        opt: Option | None = f.metadata.get("option")
        text = opt.help if opt else f.default_factory.__doc__
        comment = textwrap.wrap(text or "", 90 - indent)
        lines += ([""] if opt is None else []) + [f"{pad}# {c}" for c in comment]
        if opt is None:
            lines.append(f"{pad}{f.name}:")
            lines += _render_section(f.default_factory, indent + 2, {})
        else:
            value = overrides.get(f.name, _default(f))
            lines.append(f"{pad}{f.name}: {_yaml_value(value)}")
    return lines


def _render(header: str, overrides: Mapping[str, object]) -> str:
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    return "\n".join([*lines, "", *_render_section(Config, 0, overrides)]) + "\n"


def render_example() -> str:
    """The text of config/davserver.example.yaml: every option at its default, with help."""
    return _render(_EXAMPLE_HEADER, {})


def render_for_init(
    data_dir: str | os.PathLike[str], config_dir: str | os.PathLike[str] | None = None
) -> str:
    """What ``davserver init`` writes: local blobs and SQLite, paths relative to data_dir.

    The file is meant to live in ``config_dir`` (default: ``data_dir`` itself, giving
    ``data_dir: .``); data_dir is written relative to it so both can move together.
    """
    here = Path(data_dir if config_dir is None else config_dir).absolute()
    rel = os.path.relpath(Path(data_dir).absolute(), here)
    return _render(_INIT_HEADER, {"data_dir": Path(rel).as_posix()})

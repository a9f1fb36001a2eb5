"""Assembling the engine from a ``Config``: pepper, index, blob store, vault.

Shared by the CLI and the server so both open a data directory the same way. It holds no SQL
and no crypto of its own.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from davserver import audit
from davserver.blobs import BlobStore
from davserver.blobs.metered import MeteredBlobStore
from davserver.config import Config
from davserver.errors import ConfigError, DiskFull, StorageError
from davserver.index import IndexSettings, is_disk_full, open_index
from davserver.vault import Vault, VaultSettings
from davserver.vault.reserve import SpaceReserve

PEPPER_BYTES = 32


def write_pepper(path: Path) -> None:
    """Create the pepper file: 32 random bytes, mode 0400, never overwritten."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.write(fd, os.urandom(PEPPER_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_pepper(path: Path) -> bytes:
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"pepper file {path} is missing: without it no stored data can be decrypted"
        ) from exc
    except PermissionError as exc:
        raise ConfigError(f"cannot read pepper file {path}: permission denied") from exc
    if len(data) != PEPPER_BYTES:
        raise ConfigError(f"pepper file {path} is damaged (expected {PEPPER_BYTES} bytes)")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"pepper file {path} is readable by other users; run: chmod 400 {path}")
    return data


def make_blob_store(config: Config) -> BlobStore:
    storage = config.storage
    if storage.backend == "s3":
        from davserver.blobs.guard import GuardedBlobStore
        from davserver.blobs.s3 import S3BlobStore

        s3 = storage.s3
        store = S3BlobStore(
            endpoint=s3.endpoint,
            bucket=s3.bucket,
            access_key=s3.access_key,
            secret_key=s3.secret_key.get(),
            secure=s3.secure,
            region=s3.region,
            part_size=s3.part_size,
            create_bucket=s3.create_bucket,
            prefix=s3.prefix,
            upload_concurrency=s3.upload_concurrency,
            connect_timeout=s3.connect_timeout,
            read_timeout=s3.read_timeout,
            retries=s3.retries,
            # One pooled connection per request thread and part sender: with fewer, urllib3
            # discards connections under load (and logs a warning for each).
            max_connections=max(16, config.server.threads + 4 * s3.upload_concurrency),
        )
        # A remote store can hang or vanish: bound how many request threads wait on it and
        # fail fast while it is down (a local disk that hangs is not guarded).
        max_waiting = s3.max_waiting or max(1, config.server.threads * 3 // 4)
        return GuardedBlobStore(
            store,
            max_waiting=max_waiting,
            failure_threshold=s3.breaker_failures,
            reset_after=float(s3.breaker_reset),
        )
    from davserver.blobs.local import LocalBlobStore

    return LocalBlobStore(config.resolve_path(storage.local.path))


def vault_settings(config: Config) -> VaultSettings:
    sec = config.security
    return VaultSettings(
        argon2_opslimit=sec.argon2_opslimit,
        argon2_memlimit=sec.argon2_memlimit,
        argon2_concurrency=sec.argon2_concurrency,
        login_cache_ttl=sec.login_cache_ttl,
        login_cache_size=sec.login_cache_size,
        default_quota=config.quota.default_bytes,
        upload_expiry=config.gc.upload_expiry,
        upload_grace=config.gc.upload_grace,
        inline_max=config.storage.inline_max,
        checksums=config.storage.checksums,
        max_dead_props=config.quota.max_dead_props,
        max_dead_props_bytes=config.quota.max_dead_props_bytes,
        max_shared_locks=config.quota.max_shared_locks,
        versions_retention=config.versions.retention,
        trash_retention=config.trash.retention,
    )


def index_settings(config: Config) -> IndexSettings:
    ix = config.index
    return IndexSettings(
        connect_timeout=ix.connect_timeout,
        statement_timeout=ix.statement_timeout,
        lock_timeout=ix.lock_timeout,
        pool_size=ix.pool_size,
    )


def open_vault(config: Config) -> Vault:
    """Open the data directory described by ``config`` (the index is migrated if needed)."""
    pepper = read_pepper(config.resolve_path(config.security.pepper_file))
    reserve = space_reserve(config)
    settings = index_settings(config)
    try:
        index = open_index(config.index.url, config.data_dir, settings=settings)
    except (StorageError, DiskFull) as exc:
        # Opening SQLite after its last connection closed needs room for its -shm file:
        # a server started on a full disk takes it from the reserve.
        full = isinstance(exc, DiskFull) or is_disk_full(exc)
        if reserve is None or not full or not reserve.release():
            raise
        index = open_index(config.index.url, config.data_dir, settings=settings)
    blobs = MeteredBlobStore(make_blob_store(config))  # davserver_blobstore_* metrics
    vault = Vault(index, blobs, pepper, vault_settings(config), reserve)
    try:
        audit.configure(config.audit.file, vault.server_key(audit.KEY_PURPOSE))
    except OSError as exc:
        vault.close()
        raise ConfigError(f"audit.file: cannot open it: {exc.strerror or exc}") from exc
    return vault


def space_reserve(config: Config) -> SpaceReserve | None:
    """The reserve files (``storage.reserve_bytes``): one on each file system holding the
    SQLite index or the local blobs; none when the size is 0 or neither is local."""
    size = config.storage.reserve_bytes
    dirs: list[Path] = []
    url = config.index.url  # made absolute by the config loader
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///").partition("?")[0]
        if path != ":memory:":
            dirs.append(Path(path).parent)
    if config.storage.backend == "local":
        dirs.append(config.resolve_path(config.storage.local.path))
    if size <= 0 or not dirs:
        return None
    return SpaceReserve(dirs, size)

"""``davserver backup`` and ``restore``: a consistent copy of a data directory, taken live.

A backup directory holds:

- ``index.db`` — the index at one point in time, always as a SQLite file. From SQLite it is
  taken with SQLite's online backup API (``sqlite3.Connection.backup``: WAL readers do not
  block the running server's writers); from PostgreSQL the same tables are exported in one
  ``REPEATABLE READ READ ONLY`` transaction (``davserver.index.copy``). ``restore`` loads it
  back into SQLite, or into PostgreSQL with ``index_url``;
- ``davserver.yaml`` — the configuration as it was;
- ``blobs/`` — for the local backend, every object the snapshot references. Objects are
  immutable and ids are never reused, so copying them *after* the snapshot is consistent as
  long as none of them is deleted meanwhile. One that was (its file deleted or overwritten
  on the live server after the snapshot) makes the backup take a fresh snapshot and copy
  what that one references in addition, until a snapshot's objects are all there
  (``MAX_ROUNDS``). For S3 the objects stay in the bucket; docs/operations.md gives the
  ``mc mirror`` / ``rclone copy`` step that follows;
- ``pepper`` — only with ``include_pepper``: whoever holds an index and its pepper can try
  passwords offline, so the pepper belongs in a different place than index backups;
- ``manifest.json`` — davserver and schema version, time, row counts per table, the blob
  backend, the objects copied and a SHA-256 of every file above.

``restore`` refuses a non-empty target, checks the checksums, writes a config pointing at
the new data directory, and verifies at its end: row counts against the manifest, and every
referenced object present with exactly the ciphertext length of its version (DESIGN §5).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from davserver import __version__
from davserver.blobs import BlobStore
from davserver.config import Config, load
from davserver.crypto import blobfmt
from davserver.errors import BlobNotFound, ConfigError, StorageError
from davserver.index import SCHEMA_VERSION, connect, instance
from davserver.index.copy import (
    copy_index,
    count_rows,
    non_empty_tables,
    referenced_blobs,
    snapshot,
)
from davserver.runtime import make_blob_store

MANIFEST = "manifest.json"
INDEX_FILE = "index.db"
CONFIG_FILE = "davserver.yaml"
PEPPER_FILE = "pepper"
BLOBS_DIR = "blobs"
MAX_ROUNDS = 5
FORMAT = 1

Advance = Callable[[int], None]


def _noop(n: int) -> None:
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _require_empty(path: Path, what: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"{what} {path} exists and is not empty; refusing to overwrite it")


def _sqlite_file(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///").partition("?")[0])


def _blob_path(root: Path, blob_id: str) -> Path:
    return root / blob_id[0:2] / blob_id[2:4] / blob_id


def _expected_size(plain_size: int, header24: bytes) -> int:
    seg_log2, _ = blobfmt.parse_header_ad(header24)
    return blobfmt.ciphertext_size(plain_size, seg_log2)


def snapshot_index(config: Config, target: Path) -> dict[str, int]:
    """Write the index as it is now to the SQLite file ``target``; return its row counts."""
    tmp = target.with_name(target.name + ".part")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    path = _sqlite_file(config.index.url)
    if path is not None:
        try:
            src = sqlite3.connect(path, timeout=30)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the index database: {exc}") from exc
        dst = sqlite3.connect(tmp)
        try:
            # pages=-1: one step, under one read transaction: one point in time.
            src.backup(dst, pages=-1)
        except sqlite3.Error as exc:
            raise StorageError(f"index snapshot failed: {exc}") from exc
        finally:
            dst.close()
            src.close()
    else:
        src_db = connect(config.index.url, config.data_dir)
        dst_db = connect(f"sqlite:///{tmp}")
        try:
            copy_index(src_db, dst_db)
        finally:
            dst_db.close()
            src_db.close()
    os.replace(tmp, target)
    db = connect(f"sqlite:///{target}")
    try:
        with snapshot(db):
            return count_rows(db)
    finally:
        db.close()


def _copy_file(src: Path, dst: Path) -> int:
    """Copy via a temp name, so a file that exists is whole. Not fsynced one by one (10,000
    small objects took 23 s that way): ``backup`` syncs once before writing the manifest."""
    dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst.stat().st_size


@dataclass
class BlobCopy:
    objects: int = 0
    bytes: int = 0
    rounds: int = 0


def _copy_referenced(index_file: Path, store_root: Path, dest: Path, advance: Advance) -> int:
    """Copy what the snapshot references that is not in ``dest`` yet; return how many
    referenced objects were missing in the store (deleted since the snapshot)."""
    db = connect(f"sqlite:///{index_file}")
    missing = 0
    try:
        with snapshot(db):
            for blob_id, plain, header in referenced_blobs(db):
                target = _blob_path(dest, blob_id)
                advance(1)
                if target.exists():
                    continue
                try:
                    size = _copy_file(_blob_path(store_root, blob_id), target)
                except FileNotFoundError:
                    missing += 1
                    continue
                if size != _expected_size(plain, header):
                    target.unlink()
                    raise StorageError(f"object {blob_id} in the store has the wrong length")
    finally:
        db.close()
    return missing


def _count_dir(root: Path) -> tuple[int, int]:
    n = size = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            n += 1
            size += os.path.getsize(os.path.join(dirpath, name))
    return n, size


def backup(
    config: Config,
    config_path: Path,
    dest: Path,
    include_pepper: bool = False,
    advance: Advance = _noop,
) -> dict[str, Any]:
    """Back the data directory of ``config`` up into the new or empty directory ``dest``
    (see the module docstring); returns the manifest."""
    _require_empty(dest, "backup target")
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    started = time.time()
    index_file = dest / INDEX_FILE
    counts = snapshot_index(config, index_file)
    blobs = BlobCopy()
    if config.storage.backend == "local":
        store_root = config.resolve_path(config.storage.local.path)
        while True:
            blobs.rounds += 1
            missing = _copy_referenced(index_file, store_root, dest / BLOBS_DIR, advance)
            if not missing:
                break
            if blobs.rounds >= MAX_ROUNDS:
                raise StorageError(
                    f"{missing} objects were deleted while being backed up, "
                    f"{MAX_ROUNDS} times in a row; run the backup again"
                )
            counts = snapshot_index(config, index_file)  # a later point: copy what it needs
        blobs.objects, blobs.bytes = _count_dir(dest / BLOBS_DIR)
    _copy_file(config_path, dest / CONFIG_FILE)
    os.chmod(dest / CONFIG_FILE, 0o600)
    files = [INDEX_FILE, CONFIG_FILE]
    if include_pepper:
        _copy_file(config.resolve_path(config.security.pepper_file), dest / PEPPER_FILE)
        os.chmod(dest / PEPPER_FILE, 0o400)
        files.append(PEPPER_FILE)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "davserver_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "created_unix": started,
        "index_source": "postgresql" if _sqlite_file(config.index.url) is None else "sqlite",
        "tables": counts,
        "blob_backend": config.storage.backend,
        "blobs": {
            "copied": config.storage.backend == "local",
            "objects": blobs.objects,
            "bytes": blobs.bytes,
            "rounds": blobs.rounds,
        },
        "pepper_included": include_pepper,
        "files": {name: _sha256(dest / name) for name in files},
    }
    os.sync()  # everything above on disk before the manifest says the backup is complete
    tmp = dest / (MANIFEST + ".part")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, dest / MANIFEST)
    return manifest


# -- restore ---------------------------------------------------------------------------------


@dataclass
class RestoreReport:
    manifest: dict[str, Any]
    data_dir: Path
    pepper: str  # "from backup" | "from file" | "missing"
    problems: list[str] = field(default_factory=list)
    objects_checked: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "data_dir": str(self.data_dir),
            "pepper": self.pepper,
            "problems": self.problems,
            "objects_checked": self.objects_checked,
            "tables": self.manifest.get("tables", {}),
        }


def read_manifest(src: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{src} is not a davserver backup (no {MANIFEST})") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {src / MANIFEST}: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{src}: unknown backup format {manifest.get('format')!r}")
    if int(manifest.get("schema_version", 0)) > SCHEMA_VERSION:
        raise ConfigError(
            f"{src} has schema version {manifest['schema_version']}, newer than this "
            f"davserver supports ({SCHEMA_VERSION}); restore it with a newer davserver"
        )
    for name, digest in manifest.get("files", {}).items():
        path = src / name
        if not path.is_file() or _sha256(path) != digest:
            raise ConfigError(f"{path} is missing or does not match its checksum in the manifest")
    return manifest


def _restored_config(src_config: Path, backend: str, index_url: str | None) -> str:
    """The backed-up config, pointed at the new data directory (everything relative to it)."""
    data = yaml.safe_load(src_config.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{src_config} is not a davserver configuration")
    data["data_dir"] = "."
    data.setdefault("index", {})["url"] = index_url or f"sqlite:///{INDEX_FILE}"
    data.setdefault("security", {})["pepper_file"] = PEPPER_FILE
    if backend == "local":
        data.setdefault("storage", {}).setdefault("local", {})["path"] = BLOBS_DIR
    header = (
        "# davserver configuration written by `davserver restore` from a backup's\n"
        "# davserver.yaml: the same settings, with data_dir, index.url, pepper_file and the\n"
        "# local blob path pointing at this directory.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def verify(config: Config, manifest: dict[str, Any], advance: Advance = _noop) -> RestoreReport:
    """Row counts against the manifest; every referenced object present with its exact
    ciphertext length. Keyless: needs neither pepper nor password."""
    report = RestoreReport(manifest, config.data_dir, "")
    db = connect(config.index.url, config.data_dir)
    store: BlobStore = make_blob_store(config)
    try:
        with snapshot(db):
            counts = count_rows(db)
            for table, expected in manifest.get("tables", {}).items():
                if counts.get(table) != expected:
                    report.problems.append(
                        f"table {table}: {counts.get(table)} rows, the backup had {expected}"
                    )
            for blob_id, plain, header in referenced_blobs(db):
                advance(1)
                report.objects_checked += 1
                try:
                    size = store.stat(blob_id).size
                except BlobNotFound:
                    report.problems.append(f"object {blob_id} is missing")
                    continue
                expected_size = _expected_size(plain, header)
                if size != expected_size:
                    report.problems.append(
                        f"object {blob_id} has {size} bytes, its version needs {expected_size}"
                    )
    finally:
        store.close()
        db.close()
    return report


def restore(
    src: Path,
    data_dir: Path,
    pepper_file: Path | None = None,
    index_url: str | None = None,
    advance: Advance = _noop,
) -> RestoreReport:
    """Restore the backup ``src`` into the new or empty ``data_dir``; see the module."""
    manifest = read_manifest(src)
    _require_empty(data_dir, "data directory")
    backend = str(manifest.get("blob_backend", "local"))
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data_dir, 0o700)
    if index_url is None:
        _copy_file(src / INDEX_FILE, data_dir / INDEX_FILE)
        os.chmod(data_dir / INDEX_FILE, 0o600)
    else:
        snap = connect(f"sqlite:///{(src / INDEX_FILE).absolute()}")
        target = connect(index_url, data_dir)
        try:
            busy = non_empty_tables(target)
            if busy:
                raise ConfigError(f"the target index is not empty (tables {', '.join(busy)})")
            copy_index(snap, target)
        finally:
            target.close()
            snap.close()
    if backend == "local":
        blobs = data_dir / BLOBS_DIR
        if (src / BLOBS_DIR).is_dir():
            shutil.copytree(src / BLOBS_DIR, blobs)
        blobs.mkdir(exist_ok=True, mode=0o700)
        os.chmod(blobs, 0o700)
    pepper = "missing"
    if (src / PEPPER_FILE).is_file():
        _copy_file(src / PEPPER_FILE, data_dir / PEPPER_FILE)
        pepper = "from backup"
    elif pepper_file is not None:
        _copy_file(pepper_file, data_dir / PEPPER_FILE)
        pepper = "from file"
    if pepper != "missing":
        os.chmod(data_dir / PEPPER_FILE, 0o400)
    cfg = data_dir / CONFIG_FILE
    cfg.write_text(_restored_config(src / CONFIG_FILE, backend, index_url), encoding="utf-8")
    os.chmod(cfg, 0o600)
    try:
        # The environment may point the copy at its bucket (DAVSERVER_STORAGE_S3_BUCKET, ...);
        # where the data directory and the index are was decided just now.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DAVSERVER_DATA_DIR", "DAVSERVER_INDEX_URL")
        }
        config = load(cfg, env)
    except ConfigError as exc:
        raise ConfigError(f"the restored configuration is not valid: {exc.reason}") from exc
    os.sync()
    report = verify(config, manifest, advance)
    report.pepper = pepper
    _renew_fingerprint(config)
    return report


def _renew_fingerprint(config: Config) -> None:
    """The restored index is older data than the clients have seen: a new data fingerprint
    (``oc:data-fingerprint``) makes Nextcloud clients keep, not delete, what it lacks.
    After ``verify``, which compares the tables as the backup had them."""
    db = connect(config.index.url, config.data_dir)
    try:
        db.connect(reuse_if_open=True)
        with db.atomic():
            instance.renew_fingerprint(db)
    finally:
        db.close()


__all__ = ["backup", "read_manifest", "restore", "snapshot_index", "verify"]

"""Fixtures that open a real vault: SQLite index + local blob directory, or + the real MinIO.

``vault`` is parametrized over both blob backends, so every engine test runs on each.
Argon2id runs with small parameters here to keep the suite fast (one test in
``test_vault_users`` runs the production parameters).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from davserver.blobs import BlobStore
from davserver.blobs.local import LocalBlobStore
from davserver.index import open_index
from davserver.vault import Vault, VaultSettings

FAST = VaultSettings(argon2_opslimit=1, argon2_memlimit=8 * 1024 * 1024)
#: Without versions and trash: an overwrite replaces, a DELETE is final (the engine's paths
#: for ``versions.retention: disabled`` and ``trash.retention: disabled``).
PLAIN = dataclasses.replace(FAST, versions_retention="disabled", trash_retention="disabled")


def make_vault(
    workdir: Path,
    blobs: BlobStore,
    index_url: str = "sqlite:///index.db",
    settings: VaultSettings = FAST,
    pepper: bytes | None = None,
) -> Vault:
    index = open_index(index_url, workdir)
    return Vault(index, blobs, pepper or os.urandom(32), settings)


@pytest.fixture(params=["local", "s3"])
def blob_backend(request: Any, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
    else:
        from tests.harness.minio import make_s3_store

        server = request.getfixturevalue("minio_server")
        bucket = request.getfixturevalue("s3_bucket")
        prefix = os.urandom(4).hex() + "/"
        yield make_s3_store(server, bucket, prefix=prefix)


@pytest.fixture
def vault(tmp_path: Path, blob_backend: BlobStore) -> Iterator[Vault]:
    v = make_vault(tmp_path, blob_backend)
    yield v
    v.close()


@pytest.fixture
def plain_vault(tmp_path: Path, blob_backend: BlobStore) -> Iterator[Vault]:
    """``vault`` with versions and trash disabled."""
    v = make_vault(tmp_path, blob_backend, settings=PLAIN)
    yield v
    v.close()


@pytest.fixture
def local_vault(tmp_path: Path) -> Iterator[Vault]:
    v = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"))
    yield v
    v.close()


def stored_blob_ids(vault: Vault) -> set[str]:
    """Every blob the vault holds: objects in its blob store and blobs kept in the index
    (``storage.inline_max``); never both for one id."""
    from davserver.index.models import InlineBlob

    in_store = set(vault.blobs.iter_ids())
    with vault.index.connection():
        inline = {row.blob_id for row in InlineBlob.select(InlineBlob.blob_id)}
    assert not in_store & inline, "a blob is both in the store and in the index"
    return in_store | inline

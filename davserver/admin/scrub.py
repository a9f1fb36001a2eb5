"""``davserver scrub``: re-read stored objects and compare them with their keyless digests.

Every version records the BLAKE2b-256 digest of its whole ciphertext object, computed while
it was uploaded (``davserver.blobs.DigestingChunks``); inline blobs record it in the index
beside their bytes. Scrub needs no key: it re-reads each object, hashes it, and reports an
object whose digest or length differs (bit rot, a truncated or replaced object) or that is
gone. Versions stored before digests existed get theirs recorded on their first scrub (from
the bytes as they are then: a fsck ``--deep`` vouches for those).

Each object scrubbed stamps ``scrubbed_at`` on its version rows, and a run takes the
least recently scrubbed objects first (never-scrubbed ones before all others), so a run
limited to some bytes or a percentage of the store (restic's ``--read-data-subset``) started
by cron every night covers the whole store in turn. An object found damaged is stamped too,
so a damaged object does not stall the rotation; it is reported again on its next turn.

Reading is streamed (one block in memory), and rows are taken in batches.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Any

import peewee as pw

from davserver import crypto
from davserver.admin import ProgressFactory, no_progress
from davserver.admin.fsck import BATCH, Problem, _bytes, _marks, _q
from davserver.blobs import object_digest
from davserver.crypto import blobfmt
from davserver.errors import BlobNotFound, StorageError
from davserver.vault import Vault

READ_BLOCK = 1 << 20
STAMP_EVERY = 100  # objects stamped per transaction (one commit per object cost half the time)
_COLUMNS = 'blob_id, plain_size, header24, digest, scrubbed_at FROM "version"'
_NEVER_SCRUBBED = f"SELECT {_COLUMNS} WHERE scrubbed_at IS NULL LIMIT ?"
_STAMP = 'UPDATE "version" SET scrubbed_at = ? WHERE blob_id IN (@)'  # "@": the placeholders
_OLDEST_SCRUBBED = f"SELECT {_COLUMNS} WHERE scrubbed_at < ? ORDER BY scrubbed_at LIMIT ?"


@dataclass
class ScrubReport:
    problems: list[Problem] = field(default_factory=list)
    objects: int = 0  # objects re-read
    bytes: int = 0  # ciphertext bytes re-read
    recorded: int = 0  # digests recorded for the first time
    total_objects: int = 0
    total_bytes: int = 0  # the store's ciphertext bytes (all referenced objects)

    def to_json(self) -> dict[str, Any]:
        return {
            "problems": [p.to_json() for p in self.problems],
            "objects": self.objects,
            "bytes": self.bytes,
            "recorded": self.recorded,
            "total_objects": self.total_objects,
            "total_bytes": self.total_bytes,
            "clean": not self.problems,
        }


def parse_limit(text: str) -> tuple[int | None, float | None]:
    """``--limit``: ``10%`` (a fraction of the store) or a byte count with an optional
    K/M/G/T suffix (powers of 1024). Returns (bytes, fraction); ``ValueError`` if invalid."""
    t = text.strip().upper()
    if t.endswith("%"):
        pct = float(t[:-1])
        if not 0 < pct <= 100:
            raise ValueError("a percentage must be above 0 and at most 100")
        return None, pct / 100
    mult = 1
    for i, suffix in enumerate("KMGT", 1):
        for form in (suffix + "IB", suffix + "B", suffix):
            if t.endswith(form):
                t, mult = t[: -len(form)], 1024**i
                break
        if mult != 1:
            break
    t = t.removesuffix("B")
    value = int(float(t) * mult)
    if value <= 0:
        raise ValueError("the byte limit must be positive")
    return value, None


class Scrub:
    """One scrub run over a vault's stored objects."""

    def __init__(self, vault: Vault, progress: ProgressFactory = no_progress) -> None:
        self.vault = vault
        self.progress = progress
        self.report = ScrubReport()

    def run(self, limit_bytes: int | None = None, fraction: float | None = None) -> ScrubReport:
        try:
            with self.vault.index.connection():
                return self._run(limit_bytes, fraction)
        except (pw.OperationalError, pw.InterfaceError) as exc:
            raise StorageError("cannot read the index database") from exc

    def _run(self, limit_bytes: int | None, fraction: float | None) -> ScrubReport:
        rep = self.report
        n_objects, plain = _q(
            "SELECT COUNT(*), COALESCE(SUM(p), 0) FROM (SELECT blob_id, MAX(plain_size) AS p "
            'FROM "version" GROUP BY blob_id) AS t'
        ).fetchone()
        rep.total_objects = int(n_objects)
        # Ciphertext adds 56 bytes and a 16-byte tag per 64 KiB segment (about 0.03 %).
        rep.total_bytes = int(plain) + 72 * rep.total_objects
        budget = limit_bytes
        if fraction is not None:
            budget = max(1, int(rep.total_bytes * fraction))
        start = time.time()
        total = rep.total_objects if budget is None else None
        with self.progress("scrub", total) as bar:
            while budget is None or rep.bytes < budget:
                # Never scrubbed first, then the least recently scrubbed; both read the
                # index on scrubbed_at, so a batch costs the same at any store size.
                rows = (
                    _q(_NEVER_SCRUBBED, (BATCH,)).fetchall()
                    or _q(_OLDEST_SCRUBBED, (start, BATCH)).fetchall()
                )
                if not rows:
                    break
                seen: dict[str, tuple[int, bytes, bytes | None]] = {}
                for blob_id, size, header24, digest, _ in rows:
                    known = seen.get(blob_id)
                    d = _bytes(digest) if digest is not None else None
                    if known is None or (known[2] is None and d is not None):
                        seen[blob_id] = (int(size), _bytes(header24), d)
                done: list[str] = []
                try:
                    for blob_id, (size, header24, digest) in seen.items():
                        if budget is not None and rep.bytes >= budget:
                            break
                        rep.bytes += self._scrub_one(blob_id, size, header24, digest)
                        rep.objects += 1
                        done.append(blob_id)
                        bar.advance()
                        if len(done) >= STAMP_EVERY:
                            self._stamp(done)
                finally:
                    self._stamp(done)
        return rep

    def _stamp(self, blob_ids: list[str]) -> None:
        """Record that these objects were just scrubbed (one transaction), and forget them."""
        if not blob_ids:
            return
        with self.vault.index.atomic():
            _q(
                _STAMP.replace("@", _marks(len(blob_ids))),
                (time.time(), *blob_ids),
            )
        blob_ids.clear()

    def _scrub_one(self, blob_id: str, size: int, header24: bytes, digest: bytes | None) -> int:
        """Re-read one object; returns the bytes read."""
        ids = {"blob": blob_id}
        try:
            seg_log2, _ = blobfmt.parse_header_ad(header24)
            expected_len: int | None = blobfmt.ciphertext_size(size, seg_log2)
        except (crypto.CryptoError, ValueError):
            expected_len = None
        inline = _q(
            'SELECT data, digest FROM "inline_blob" WHERE blob_id = ?', (blob_id,)
        ).fetchone()
        h = object_digest()
        if inline is not None:
            data = _bytes(inline[0])
            h.update(data)
            n = len(data)
            if digest is None and inline[1] is not None:
                digest = _bytes(inline[1])
        else:
            try:
                n = 0
                with self.vault.blobs.open(blob_id) as reader:
                    while block := reader.read(READ_BLOCK):
                        h.update(block)
                        n += len(block)
            except BlobNotFound:
                self.report.problems.append(
                    Problem("blob_missing", ids, "the object is missing from the store")
                )
                return 0
            except StorageError as exc:
                if exc.status == 503:
                    raise
                self.report.problems.append(
                    Problem("unreadable", ids, f"the object could not be read: {exc.reason}")
                )
                return 0
        got = h.digest()
        if expected_len is not None and n != expected_len:
            self.report.problems.append(
                Problem("blob_size", ids, f"{n} bytes, expected {expected_len}")
            )
        elif digest is None:
            with self.vault.index.atomic():
                _q(
                    'UPDATE "version" SET digest = ? WHERE blob_id = ? AND digest IS NULL',
                    (got, blob_id),
                )
                if inline is not None:
                    _q(
                        'UPDATE "inline_blob" SET digest = ? WHERE blob_id = ? AND digest IS NULL',
                        (got, blob_id),
                    )
            self.report.recorded += 1
        elif not hmac.compare_digest(got, digest):
            where = "in the index" if inline is not None else "in the store"
            self.report.problems.append(
                Problem("digest_mismatch", ids, f"the object {where} differs from its digest")
            )
        return n


__all__ = ["Scrub", "ScrubReport", "parse_limit"]

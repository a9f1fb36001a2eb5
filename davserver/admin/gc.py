"""``davserver gc``: the maintenance loop's collection on demand, plus orphan objects.

What it removes (or, with ``dry_run``, only lists), in this order:

1. chunked uploads untouched for ``gc.upload_expiry`` (their chunks become dead blobs);
2. partial uploads idle for ``gc.upload_grace`` (temp files, incomplete multipart uploads);
3. dead blobs queued for longer than the grace period, and blobs of uploads that never
   committed (``Vault.collect_garbage``);
4. *orphans*: objects in the store that no index row knows at all (no version, chunk,
   tracking or inline row), older than the grace period — what a crash between a put and
   its tracking row, a restore of blobs without their index, or a bug leaves behind.

Orphans are found by merging two sorted streams in constant memory: the store's listing
(both backends list in id order) and the ids the index tracks, read table by table in
keyset pages of ``PAGE`` ids and merged with ``heapq.merge``. No set of all ids is built.
An orphan is deleted only after one more look at the index, so an id that became tracked
meanwhile is left alone (ids are random: a new upload never reuses an old id).
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from davserver.errors import BlobNotFound, ConfigError, DavServerError
from davserver.index.models import BlobGC, InlineBlob, Upload, UploadChunk, Version
from davserver.vault import Vault

PAGE = 5000

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``30m``, ``24h``, ``7d``, ``2w``, or plain seconds."""
    m = _DURATION.match(text.lower())
    if not m:
        raise ConfigError(f"bad duration {text!r}: use e.g. 3600, 30m, 24h or 7d")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class Item:
    """One thing gc removes: ``kind`` is ``orphan``, ``dead``, ``stale-upload`` (a blob of
    an upload that never committed), ``partial`` or ``expired-upload``."""

    kind: str
    id: str
    bytes: int
    age: float


@dataclass
class GcReport:
    dry_run: bool
    grace: float
    items: list[Item] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.items)

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "grace_seconds": self.grace,
            "removed" if not self.dry_run else "would_remove": [i.__dict__ for i in self.items],
            "bytes": self.bytes,
            "failed": self.failed,
        }


def _tracked_stream(vault: Vault, model: Any, column: Any) -> Iterator[str]:
    """Distinct ids of one column in ascending order, ``PAGE`` at a time (keyset paging on
    its index: each page is one indexed range scan, memory one page). PostgreSQL compares
    in byte order (``COLLATE "C"``), as Python and SQLite do, whatever the database's
    locale."""
    key = column if vault.index.is_sqlite else column.collate('"C"')
    last = ""
    while True:
        page = [
            r[0]
            for r in model.select(key)
            .where(key > last)
            .distinct()
            .order_by(key)
            .limit(PAGE)
            .tuples()
        ]
        if not page:
            return
        yield from page
        last = page[-1]


def tracked_ids(vault: Vault) -> Iterator[str]:
    """Every blob id some index row knows, ascending, duplicates possible."""
    return heapq.merge(
        _tracked_stream(vault, Version, Version.blob_id),
        _tracked_stream(vault, UploadChunk, UploadChunk.blob_id),
        _tracked_stream(vault, BlobGC, BlobGC.blob_id),
        _tracked_stream(vault, InlineBlob, InlineBlob.blob_id),
    )


def find_orphans(vault: Vault, advance: Callable[[int], None] = lambda n: None) -> Iterator[str]:
    """Object ids in the store that no index row tracks, in id order (a merge of the sorted
    store listing with ``tracked_ids``)."""
    known = tracked_ids(vault)
    cur = next(known, None)
    for blob_id in vault.blobs.iter_ids():
        advance(1)
        while cur is not None and cur < blob_id:
            cur = next(known, None)
        if cur != blob_id:
            yield blob_id


def _is_tracked(blob_id: str) -> bool:
    return any(
        m.select().where(c == blob_id).exists()
        for m, c in (
            (Version, Version.blob_id),
            (UploadChunk, UploadChunk.blob_id),
            (BlobGC, BlobGC.blob_id),
            (InlineBlob, InlineBlob.blob_id),
        )
    )


def _size_of(vault: Vault, blob_id: str) -> tuple[int, float | None]:
    inline = InlineBlob.get_or_none(InlineBlob.blob_id == blob_id)
    if inline is not None:
        return len(inline.data), None
    try:
        st = vault.blobs.stat(blob_id)
    except BlobNotFound:
        return 0, None
    return st.size, st.mtime


def _queued(vault: Vault, grace: float, now: float) -> list[Item]:
    """What ``collect_garbage(grace)`` would delete now (the tracking rows it considers,
    minus those a version or chunk references again)."""
    upload_grace = vault.settings.upload_grace
    items = []
    rows = BlobGC.select().where(
        ((BlobGC.state == "dead") & (BlobGC.since <= now - grace))
        | ((BlobGC.state == "uploading") & (BlobGC.since <= now - upload_grace))
    )
    for row in rows.iterator():
        if (
            Version.select().where(Version.blob_id == row.blob_id).exists()
            or UploadChunk.select().where(UploadChunk.blob_id == row.blob_id).exists()
        ):
            continue
        size, mtime = _size_of(vault, row.blob_id)
        if row.state == "uploading" and mtime is not None and now - mtime < upload_grace:
            continue  # stored just now: its commit may be running
        kind = "dead" if row.state == "dead" else "stale-upload"
        items.append(Item(kind, row.blob_id, size, now - row.since))
    return items


def run_gc(
    vault: Vault,
    grace: float,
    dry_run: bool,
    advance: Callable[[int], None] = lambda n: None,
) -> GcReport:
    """Collect (or with ``dry_run`` only list) what the module docstring names."""
    report = GcReport(dry_run, grace)
    now = time.time()
    with vault.index.connection():
        query: Any = (
            Upload.select(Upload.id, Upload.touched)
            .where(Upload.touched < now - vault.settings.upload_expiry)
            .tuples()
        )
        expired: list[tuple[str, float]] = list(query)
        for uid, touched in expired:
            chunks = UploadChunk.select(UploadChunk.blob_id).where(UploadChunk.upload == uid)
            size = sum(_size_of(vault, c.blob_id)[0] for c in chunks.iterator())
            report.items.append(Item("expired-upload", uid, size, now - touched))
        partials = [
            p for p in vault.blobs.partial_uploads() if p.idle >= vault.settings.upload_grace
        ]
        report.items += [Item("partial", p.blob_id or p.handle, p.size, p.idle) for p in partials]
    if not dry_run:
        vault.expire_uploads()
        vault.reclaim_partial_uploads()
        now = time.time()
    with vault.index.connection():
        # After the expiry: the chunks it queued are dead now and collected with the rest.
        queued = _queued(vault, grace, now)
    report.items += queued
    if not dry_run:
        vault.collect_garbage(grace)
        with vault.index.connection():
            still = [i for i in queued if BlobGC.get_or_none(BlobGC.blob_id == i.id)]
        report.failed += [i.id for i in still]
        report.items = [i for i in report.items if i not in still]
    with vault.index.connection():
        for blob_id in find_orphans(vault, advance):
            try:
                st = vault.blobs.stat(blob_id)
            except BlobNotFound:
                continue  # deleted meanwhile
            age = now - (st.mtime or 0.0)
            if age < grace:
                continue
            if not dry_run:
                if _is_tracked(blob_id):
                    continue
                try:
                    vault.blobs.delete(blob_id)
                except DavServerError:
                    report.failed.append(blob_id)
                    continue
            report.items.append(Item("orphan", blob_id, st.size, age))
    return report


__all__ = ["GcReport", "Item", "find_orphans", "parse_duration", "run_gc", "tracked_ids"]

"""The operator's services, used by the CLI: checking the store (``fsck``), re-reading it for
bit rot (``scrub``), collecting garbage (``gc``), backups
(``backup``) and moving the index (``migrate``).

Each module here is one concept. They call ``vault``, ``index``, ``blobs`` and ``crypto``; they
never import ``dav`` or ``cli``, and they report problems by ids, never by names or paths.
Walking the store is done in batches (keyset pagination, batched lookups), so memory stays
bounded whatever the number of rows and objects.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol


class Ticker(Protocol):
    """What a service needs of a progress bar: to be told that work was done."""

    def advance(self, n: int = 1) -> None: ...


class _NoTicker:
    def advance(self, n: int = 1) -> None:
        pass


#: Opens a progress bar for one phase: ``(description, total or None)``.
ProgressFactory = Callable[[str, int | None], AbstractContextManager[Ticker]]


def no_progress(description: str, total: int | None) -> AbstractContextManager[Ticker]:
    """The default ``ProgressFactory``: shows nothing."""
    return nullcontext(_NoTicker())


__all__ = ["ProgressFactory", "Ticker", "no_progress"]

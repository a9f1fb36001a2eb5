"""The blob-store wrappers (the outage guard, the metrics layer) forward every method of the
``BlobStore`` interface to the store they wrap.

A method the interface gives a default for (``probe``, ``partial_uploads``…) and a wrapper
does not define would silently answer the default instead of the wrapped store's own: the
local store's ``probe`` checks its directory, and ``/readyz`` said "ok" for a missing one.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator

import pytest

from davserver.blobs import BlobReader, BlobStat, BlobStore, PartialUpload
from davserver.blobs.guard import GuardedBlobStore
from davserver.blobs.metered import MeteredBlobStore

INTERFACE = sorted(
    name
    for name, member in inspect.getmembers(BlobStore, inspect.isfunction)
    if not name.startswith("_")
)


@pytest.mark.parametrize("wrapper", [GuardedBlobStore, MeteredBlobStore])
@pytest.mark.parametrize("method", INTERFACE)
def test_wrapper_defines_every_interface_method(wrapper: type, method: str) -> None:
    assert method in vars(wrapper), f"{wrapper.__name__} does not forward {method}"


class _Probed(BlobStore):
    """A store whose own ``probe`` says it is not ready."""

    def put(self, blob_id: str, chunks: Iterable[bytes]) -> int:
        raise NotImplementedError

    def open(self, blob_id: str, start: int = 0, end: int | None = None) -> BlobReader:
        raise NotImplementedError

    def stat(self, blob_id: str) -> BlobStat:
        raise NotImplementedError

    def delete(self, blob_id: str) -> None:
        raise NotImplementedError

    def iter_ids(self) -> Iterator[str]:
        return iter(())

    def partial_uploads(self) -> Iterator[PartialUpload]:
        return iter(())

    def probe(self) -> None:
        raise RuntimeError("not ready")


def test_probe_reaches_the_wrapped_store() -> None:
    inner = _Probed()
    for store in (MeteredBlobStore(inner), GuardedBlobStore(inner, max_waiting=2)):
        with pytest.raises(RuntimeError, match="not ready"):
            store.probe()

"""The Nextcloud sync contract's values made from an entry (``davserver.dav.syncprops``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from davserver.dav import syncprops
from davserver.vault.tree import Entry

FILE = Entry("a" * 32, "b" * 32, "f", "file", 7, 0.0, 0.0, "c" * 32, fileid=42)
FOLDER = Entry("d" * 32, "b" * 32, "d", "dir", 0, 0.0, 0.0, None, fileid=43, changes=5)
ROOT = Entry("b" * 32, None, "", "dir", 0, 0.0, 0.0, None, fileid=44, changes=9, tree_bytes=70)


@pytest.mark.parametrize(
    ("perms", "file", "folder", "root"),
    [
        (None, "RGDNVW", "RGDNVCK", "RGCK"),  # a session without ``perms``: read-write
        ("rw", "RGDNVW", "RGDNVCK", "RGCK"),
        ("ro", "G", "G", "G"),
        ("wo", "", "CK", "CK"),
    ],
)
def test_permissions_follow_the_session(
    perms: str | None, file: str, folder: str, root: str
) -> None:
    session = SimpleNamespace() if perms is None else SimpleNamespace(perms=perms)
    got = [syncprops.permissions(e, session) for e in (FILE, FOLDER, ROOT)]
    assert got == [file, folder, root]


def test_ids_etags_and_headers() -> None:
    assert syncprops.oc_id(FILE, "ocabcdefghij") == "00000042ocabcdefghij"
    big = Entry("a" * 32, None, "", "dir", 0, 0.0, 0.0, None, fileid=123456789012)
    assert syncprops.oc_id(big, "ocabcdefghij") == "123456789012ocabcdefghij"
    assert syncprops.quoted_etag(FILE) == '"' + "c" * 32 + '"'
    assert syncprops.quoted_etag(FOLDER) == '"' + "d" * 32 + '-5"'
    assert ROOT.bytes_below == 70 and FILE.bytes_below == 7
    assert syncprops.entity_headers(FOLDER, "ocabcdefghij") == [
        ("ETag", '"' + "d" * 32 + '-5"'),
        ("OC-ETag", '"' + "d" * 32 + '-5"'),
        ("OC-FileId", "00000043ocabcdefghij"),
    ]

"""Failed-login counters in the index (davserver.vault.throttle), shared by processes."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path

from davserver.blobs.local import LocalBlobStore
from davserver.index.models import LoginFailure
from davserver.vault import Vault
from davserver.vault.throttle import LoginThrottle
from tests.harness.vaults import make_vault


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def rows(vault: Vault) -> int:
    with vault.index.connection():
        return int(LoginFailure.select().count())


def test_window_limit_and_reset(local_vault: Vault) -> None:
    clock = Clock()
    t = LoginThrottle(local_vault, limit=3, window=60, clock=clock)
    keys = ["u:x", "a:192.0.2.7"]
    for _ in range(3):
        assert t.retry_after(keys) is None
        t.failed(keys)
        clock.now += 1
    wait = t.retry_after(keys)
    assert wait is not None and 55 <= wait <= 58  # the first failure ages out at +60
    assert t.retry_after(["u:other"]) is None
    t.failed(keys)  # over the limit: not recorded, the table does not grow
    assert rows(local_vault) == 6
    clock.now += 57
    assert t.retry_after(keys) is None  # the first failure left the window
    t.failed(["u:x"])
    assert t.retry_after(["u:x"]) is not None
    t.reset("u:x")
    assert t.retry_after(["u:x"]) is None
    assert t.retry_after(["a:192.0.2.7"]) is None  # 2 left in the window: under the limit
    clock.now += 61
    assert t.purge() == 3 and rows(local_vault) == 0


def _other_worker(tmp_path: Path, pepper: bytes, failures: int) -> None:
    """What another server process on the same index does (runs in a forked child)."""
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), pepper=pepper)
    try:
        t = LoginThrottle(vault, limit=4, window=300)
        for _ in range(failures):
            t.failed(["a:198.51.100.1"])
    finally:
        vault.close()


def test_counts_are_shared_by_every_process_on_the_index(tmp_path: Path) -> None:
    pepper = os.urandom(32)
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), pepper=pepper)
    try:
        mine = LoginThrottle(vault, limit=4, window=300)
        mine.failed(["a:198.51.100.1"])
        mine.failed(["a:198.51.100.1"])
        assert mine.retry_after(["a:198.51.100.1"]) is None
        child = multiprocessing.get_context("fork").Process(
            target=_other_worker, args=(tmp_path, pepper, 2)
        )
        child.start()
        child.join(60)
        assert child.exitcode == 0
        assert rows(vault) == 4
        assert mine.retry_after(["a:198.51.100.1"]) is not None  # 2 here + 2 there
    finally:
        vault.close()


def test_table_holds_no_names_or_addresses(local_vault: Vault, tmp_path: Path) -> None:
    t = LoginThrottle(local_vault, limit=5, window=300)
    t.failed(["u:secret-user-name", "a:203.0.113.99"])
    con = sqlite3.connect(next(tmp_path.rglob("index.db")))
    try:
        values = con.execute("select key_mac, at from login_failure").fetchall()
    finally:
        con.close()
    assert len(values) == 2
    for mac, _at in values:
        assert len(mac) == 16
        assert b"secret" not in mac and b"203.0" not in mac

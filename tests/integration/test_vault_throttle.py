"""Failed-login counters in the index (davserver.vault.throttle), shared by processes."""

from __future__ import annotations

import hashlib
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


def test_window_limit_cap_and_reset(local_vault: Vault) -> None:
    clock = Clock()
    t = LoginThrottle(local_vault, limit=3, window=60, clock=clock, pair_limit=3, user_limit=3)
    keys = ["u:x", "a:192.0.2.7"]
    for _ in range(3):
        assert t.retry_after(keys) is None
        t.failed(keys)
        clock.now += 1
    wait = t.retry_after(keys)
    assert wait is not None and 55 <= wait <= 58  # the first failure ages out at +60
    assert t.retry_after(["u:other"]) is None
    t.failed(keys)  # at the cap: the oldest row is replaced, the table does not grow
    assert rows(local_vault) == 6
    clock.now += 57
    # The replaced first failure no longer counts; the latest three (at +1, +2, +3) do.
    assert t.retry_after(keys) is not None
    clock.now += 2
    assert t.retry_after(keys) is None  # +1 left the window
    t.reset("u:x")
    assert t.retry_after(["u:x"], limit=1) is None
    assert t.retry_after(["a:192.0.2.7"], limit=1) is not None  # reset touched only u:x
    clock.now += 61
    assert t.purge() == 3 and rows(local_vault) == 0


A, B, C = "198.51.100.10", "198.51.100.20", "198.51.100.30"


def test_a_guesser_cannot_lock_a_user_out(local_vault: Vault) -> None:
    """Per pair, per address and per user, but an address without failures of its own is
    never refused."""
    clock = Clock()
    t = LoginThrottle(local_vault, limit=10, window=300, clock=clock, pair_limit=5, user_limit=10)
    for _ in range(5):
        assert t.check(A, "alice") is None
        t.login_failed(A, "alice")
        clock.now += 1
    r = t.check(A, "alice")
    assert r is not None and r.reason == "pair" and 290 <= r.retry_after <= 300
    assert t.check(B, "alice") is None  # another address: verified as usual
    assert t.check(A, "bob") is None  # A may still try other users, up to its own limit
    for i in range(5):
        t.login_failed(A, f"user{i}")
    r = t.check(A, "bob")
    assert r is not None and r.reason == "address"  # 10 failures from A: it is guessing
    # Ten more addresses guess alice: she is guarded now, well past every limit.
    for i in range(10):
        for _ in range(2):
            t.login_failed(f"203.0.113.{i}", "alice")
    assert t.check("203.0.113.3", "alice") is not None  # a guessing address: refused
    assert t.check(B, "alice") is None  # a clean address: verified as usual
    t.login_failed(C, "alice")  # alice mistypes once from C
    assert t.check(C, "alice") is None  # one failure is within the guarded budget
    t.login_failed(C, "alice")
    r = t.check(C, "alice")
    assert r is not None and r.reason == "user" and 1 <= r.retry_after <= 300
    t.login_succeeded(C, "alice")  # e.g. she got in from C after all
    assert t.check(C, "alice") is None
    # The user's own success does not wipe the guesser's traces.
    assert t.check("203.0.113.3", "alice") is not None
    assert t.check(A, "bob") is not None
    clock.now += 301
    assert t.check(A, "alice") is None and t.check("203.0.113.3", "alice") is None


def test_rows_per_key_are_capped(local_vault: Vault) -> None:
    clock = Clock()
    t = LoginThrottle(local_vault, limit=4, window=300, clock=clock, pair_limit=2, user_limit=3)
    for _ in range(20):  # as if the checks were raced past: the table still stays small
        t.login_failed(A, "alice")
        clock.now += 1
    assert rows(local_vault) == 3 * 4  # address, user and pair keys; cap = largest limit


def test_log_tag_is_keyed(tmp_path: Path) -> None:
    """Log lines name users by a MAC under a server secret: without the pepper, a log reader
    cannot compute the tag of a guessed name."""
    for sub in ("1", "2"):
        (tmp_path / sub).mkdir()
    one = make_vault(tmp_path / "1", LocalBlobStore(tmp_path / "1" / "blobs"))
    two = make_vault(tmp_path / "2", LocalBlobStore(tmp_path / "2" / "blobs"))
    try:
        t1, t2 = LoginThrottle(one, 10, 300), LoginThrottle(two, 10, 300)
        tag = t1.log_tag("alice")
        assert tag == t1.log_tag("alice") and len(tag) == 16
        assert tag != t2.log_tag("alice")  # another pepper, another tag
        assert tag != t1.log_tag("bob")
        for unkeyed in (
            hashlib.blake2b(b"alice", digest_size=16).hexdigest(),
            hashlib.blake2b(b"alice", digest_size=8).hexdigest(),
            hashlib.sha256(b"alice").hexdigest(),
        ):
            assert tag not in unkeyed and unkeyed[:8] not in tag
    finally:
        one.close()
        two.close()


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
    t.login_failed("203.0.113.99", "secret-user-name")
    con = sqlite3.connect(next(tmp_path.rglob("index.db")))
    try:
        values = con.execute("select key_mac, at from login_failure").fetchall()
    finally:
        con.close()
    assert len(values) == 3  # address, user and the pair
    for mac, _at in values:
        assert len(mac) == 16
        assert b"secret" not in mac and b"203.0" not in mac


def test_policy_on_postgres(tmp_path: Path, postgres_db_url: str) -> None:
    """The per-request check (hand-written SQL) and the policy on a PostgreSQL index."""
    vault = make_vault(tmp_path, LocalBlobStore(tmp_path / "blobs"), index_url=postgres_db_url)
    try:
        t = LoginThrottle(vault, limit=10, window=300, pair_limit=2, user_limit=3)
        for _ in range(2):
            assert t.check(A, "alice") is None
            t.login_failed(A, "alice")
        r = t.check(A, "alice")
        assert r is not None and r.reason == "pair"
        t.login_failed(B, "alice")  # alice is guarded now (3 failures)
        assert t.check(B, "alice") is None  # one failure: within the budget
        assert t.check(C, "alice") is None  # clean
        t.login_succeeded(A, "alice")
        assert t.check(A, "alice") is None
    finally:
        with vault.index.connection(), vault.index.atomic():
            LoginFailure.delete().execute()
        vault.close()

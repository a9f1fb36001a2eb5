"""pytest plugin: a real, throwaway PostgreSQL server for integration tests.

Fixtures:

``postgres_url`` (session)
    ``postgresql://user:password@127.0.0.1:PORT/dbname`` of a database owned by a role that
    may create databases. ``DAVSERVER_TEST_POSTGRES_URL`` wins when set (that role needs
    CREATEDB for ``postgres_db_url``). Otherwise a private cluster is created with the
    installed ``initdb``/``pg_ctl`` (Debian: ``/usr/lib/postgresql/<ver>/bin``) in a temporary
    directory, listening on a free 127.0.0.1 port with its unix socket inside that directory,
    ``fsync=off`` for speed; it is stopped and deleted at the end of the session. As root the
    server runs as the ``postgres`` system user (``runuser``), since PostgreSQL refuses root.

``postgres_db_url`` (function)
    A fresh, empty database on that server for one test; dropped afterwards.

Without PostgreSQL installed the fixtures skip with the reason printed; with
``DAVSERVER_TEST_REQUIRE_POSTGRES=1`` (set it in CI) they fail instead, so a broken CI image
cannot turn the PostgreSQL tests into silent skips.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

ENV_URL = "DAVSERVER_TEST_POSTGRES_URL"
ENV_REQUIRE = "DAVSERVER_TEST_REQUIRE_POSTGRES"
NOT_INSTALLED = "PostgreSQL not installed: apt-get install postgresql"


def _unavailable(reason: str) -> NoReturn:
    """Skip (or, when PostgreSQL is required, fail) with a reason the user sees."""
    print(f"\n[tests.harness.postgres] {reason}", file=sys.stderr)
    if os.environ.get(ENV_REQUIRE, "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} ({ENV_REQUIRE} is set)", pytrace=False)
    pytest.skip(reason)


def _find_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: newest Debian version first, then PATH."""

    def version(p: str) -> tuple[int, ...]:
        name = Path(p).parent.parent.name
        return tuple(int(x) for x in name.split(".") if x.isdigit())

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(on_path)
    for initdb in candidates:
        bindir = Path(initdb).parent
        if (bindir / "pg_ctl").exists() and (bindir / "postgres").exists():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(dbname)))


class _Cluster:
    """A private PostgreSQL cluster in a temporary directory."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_postgres = os.geteuid() == 0
        # Directly under the system temp dir: the postgres user must be able to reach it,
        # and the unix socket path must stay under ~100 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="davserver-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = 0
        self.started = False
        self.options = ""

    def run(self, tool: str, *args: str) -> None:
        argv = [str(self.bindir / tool), *args]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        proc = subprocess.run(
            argv, cwd=self.root, env=env, capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{tool} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n{log}"
            )

    def start(self) -> None:
        self.sock.mkdir()
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
        self.run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
        )  # fmt: skip
        for attempt in range(3):  # the free port can be taken between probe and bind
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                f"-c unix_socket_directories='{self.sock}' -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            self.options = options
            try:
                self.run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                    "-w", "-t", "60", "start",
                )  # fmt: skip
                self.started = True
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def admin_connect(self) -> Any:
        import psycopg2

        # Superuser over the private unix socket (trust auth; nobody else can reach it).
        return psycopg2.connect(host=str(self.sock), port=self.port, user="postgres")

    def server_stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m MODE``) but keep the cluster for a restart."""
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def server_start(self) -> None:
        """Start a stopped server again, on the same port."""
        self.run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self.options,
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def server_restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m MODE`` (same port and options)."""
        self.run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self.options,
            "-m", mode, "-w", "-t", "60", "restart",
        )  # fmt: skip

    def stop(self) -> None:
        try:
            if self.started:
                self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _create_role_and_db(cluster: _Cluster) -> str:
    from psycopg2 import sql

    user, password, dbname = "davserver_test", secrets.token_urlsafe(18), "davserver_test"
    conn = cluster.admin_connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(user), sql.Literal(password)
                )
            )
            cur.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(user)
                )
            )
    finally:
        conn.close()
    return f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:{cluster.port}/{dbname}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database whose role may create databases (see module docstring)."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("psycopg2 not installed: pip install psycopg2-binary")
    external = os.environ.get(ENV_URL)
    if external:
        yield external
        return
    bindir = _find_bindir()
    if bindir is None:
        _unavailable(NOT_INSTALLED)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root, but there is no 'postgres' user to run PostgreSQL as")
        if shutil.which("runuser") is None:
            _unavailable("running as root, but runuser is missing to run PostgreSQL as postgres")
    cluster = _Cluster(bindir)
    try:
        try:
            cluster.start()
            url = _create_role_and_db(cluster)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            pytest.fail(f"could not start a throwaway PostgreSQL: {exc}", pytrace=False)
        yield url
    finally:
        cluster.stop()


@pytest.fixture
def postgres_db_url(postgres_url: str) -> Iterator[str]:
    """A fresh empty database for one test (CREATE DATABASE; DROP ... WITH (FORCE) after)."""
    import psycopg2
    from psycopg2 import sql

    name = f"t_{int(time.time())}_{secrets.token_hex(6)}"
    conn = psycopg2.connect(postgres_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield _with_dbname(postgres_url, name)
    finally:
        try:
            with conn.cursor() as cur:
                # FORCE (PostgreSQL 13+) ends connections a test left open.
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        finally:
            conn.close()


@pytest.fixture
def private_postgres() -> Iterator[tuple[_Cluster, str]]:
    """A PostgreSQL cluster of this test's own, which it may stop, restart and kill:
    (cluster, URL of a database owned by a CREATEDB role). Use ``cluster.server_stop(mode)``,
    ``server_start()`` and ``server_restart(mode)``; the cluster is removed afterwards."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("psycopg2 not installed: pip install psycopg2-binary")
    bindir = _find_bindir()
    if bindir is None:
        _unavailable(NOT_INSTALLED)
    cluster = _Cluster(bindir)
    try:
        try:
            cluster.start()
            url = _create_role_and_db(cluster)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            pytest.fail(f"could not start a throwaway PostgreSQL: {exc}", pytrace=False)
        yield cluster, url
    finally:
        try:
            cluster.stop()
        except RuntimeError:
            pass  # the test left the server stopped: nothing to stop, the files are gone

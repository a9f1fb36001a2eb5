"""Builds the WSGI application and the cheroot HTTP(S) server from a ``Config``.

The test suite and ``davserver serve`` share this module: ``make_server(config, vault)`` returns
a bound (not yet serving) cheroot server and its URL; ``serve(config)`` runs one until SIGTERM or
SIGINT. Nothing here knows WebDAV beyond wiring ``davserver.dav`` into WsgiDAV, and nothing
here routes: the route table is ``davserver.web.routes``.

Measured cheroot facts this module answers (DESIGN §10): ``numthreads`` caps concurrent
requests (set from ``server.threads``); the 10 s default socket timeout cuts off slow uploads
(``server.timeout``, 300 s by default); and a request answered before its body was read must
close the connection rather than let cheroot read the rest into memory (``ClosingGateway``).
Connections wait in a selector, not in threads, until a request is there, under total
deadlines and strict framing: ``davserver.http``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from wsgidav import util as wsgidav_util
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from davserver import metrics
from davserver.config import Config
from davserver.dav import handlers
from davserver.dav.auth import DavAuthenticator, VaultDomainController
from davserver.dav.errors import RESPONSE_ABORTED, ErrorMapper
from davserver.dav.locks import DavLockManager, VaultLockStorage
from davserver.dav.middleware import RequestGuard
from davserver.dav.nextcloud import NextcloudRouter
from davserver.dav.pages import DirBrowser, ErrorPages
from davserver.dav.provider import VaultProvider
from davserver.errors import ConfigError
from davserver.http.connections import Deadlines, SelectingServer, raise_open_file_limit
from davserver.http.instrument import RequestMetrics
from davserver.http.request import GuardedGateway
from davserver.httpio import DavConnection
from davserver.vault import Vault
from davserver.vault.locks import LockStore
from davserver.vault.loginflow import LoginFlows
from davserver.vault.throttle import LoginThrottle
from davserver.web import routes

if TYPE_CHECKING:
    from davserver.monitoring import MetricsListener

log = logging.getLogger(__name__)

SERVER_NAME = "davserver"


class ClosingGateway(GuardedGateway):  # type: ignore[misc]
    """Honours ``Connection: close`` set by the application.

    cheroot keeps a connection alive unless *it* decided to close it, and before answering it
    reads the unread rest of a request body into memory (``rfile.read(remaining)``). A
    response marked ``Connection: close`` now closes the connection instead, and so does a
    response cut off mid-body.
    """

    def respond(self) -> None:
        try:
            super().respond()
        finally:
            if self.env.get(RESPONSE_ABORTED):
                # Cut off mid-body (davserver.dav.errors): close, and never end a chunked
                # body with its last chunk, so the client cannot take it for complete.
                self.req.close_connection = True
                self.req.chunked_write = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        write = super().start_response(status, headers, exc_info)
        for key, value in headers:
            if key.lower() == "connection" and "close" in value.lower():
                self.req.close_connection = True
        return write


class DavHTTPServer(SelectingServer):  # type: ignore[misc]
    """cheroot's WSGI server with davserver's connection handling (``davserver.http``),
    remembering the vault it serves (closed by ``serve``)."""

    vault: Vault


def build_app(config: Config, vault: Vault) -> Callable[..., Any]:
    """The complete WSGI application: metrics → guard → one index connection per request →
    router (``davserver.web.routes``) → health probes, or WsgiDAV for everything else."""
    router = routes.router(config, vault, dav=build_dav_app(config, vault))
    return RequestMetrics(RequestGuard(RequestScoped(router, vault)))


def build_dav_app(config: Config, vault: Vault) -> Callable[..., Any]:
    """WsgiDAV (errors, auth, Nextcloud paths, dir browser, DAV) on the vault's trees."""
    server = config.server
    provider = VaultProvider(
        handlers.dispatch, block_size=server.block_size, max_body_bytes=server.max_body_bytes
    )
    dav_config: dict[str, Any] = {
        "provider_mapping": {"/": provider},
        "verbose": 2,  # WsgiDAV's own request log shows paths and user names: ours does not
        "logging": {"enable": False},
        "suppress_version_info": True,
        "block_size": server.block_size,
        "lock_storage": False,  # replaced below by the index-backed lock manager
        "property_manager": None,  # dead properties live in the vault
        "honor_mtime_header": True,  # X-OC-Mtime on MKCOL (PUT handles it itself)
        "add_header_MS_Author_Via": True,
        "middleware_stack": [
            ErrorPages,  # WsgiDAV's ErrorPrinter without product, version or time
            ErrorMapper,
            DavAuthenticator,
            NextcloudRouter,  # /remote.php/dav/files|uploads/USER/…, PATCH (after auth)
            DirBrowser,  # WsgiDAV's, with a template that names no product and runs no script
            RequestResolver,
        ],
        "http_authenticator": {
            "domain_controller": VaultDomainController,
            "accept_basic": True,
            "accept_digest": False,  # a digest cannot carry the password that is the key
            "default_to_digest": False,
            "trusted_auth_header": None,
        },
        "dir_browser": {
            "enable": True,
            "response_trailer": "davserver",
            "davmount": True,
            "ms_sharepoint_support": False,
            "libre_office_support": False,
        },
        "davserver": {
            "vault": vault,
            "provider": provider,
            "realm": server.realm,
            "login_fail_limit": config.security.login_fail_limit,
            "login_fail_window": config.security.login_fail_window,
            "login_fail_pair_limit": config.security.login_fail_pair_limit,
            "login_fail_user_limit": config.security.login_fail_user_limit,
            "trusted_proxies": server.trusted_proxies,
        },
    }
    app = WsgiDAVApp(dav_config)
    # Error pages and the dir browser name WsgiDAV; its version is nobody's business.
    wsgidav_util.public_wsgidav_info = "WsgiDAV"
    lock_manager = DavLockManager(VaultLockStorage(LockStore(vault)))
    app.lock_manager = lock_manager
    provider.set_lock_manager(lock_manager)
    return app  # type: ignore[no-any-return]


class RequestScoped:
    """Each request (with the iteration of its response) inside ``vault.request_scope()``:
    one index connection per request, not one per unit of work."""

    def __init__(self, app: Callable[..., Any], vault: Vault) -> None:
        self.app = app
        self.vault = vault

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        with self.vault.request_scope():
            app_iter = self.app(environ, start_response)
            try:
                yield from app_iter
            finally:
                close = getattr(app_iter, "close", None)
                if close is not None:
                    close()


def _url(host: str, port: int, tls: bool) -> str:
    shown = host
    if host in ("0.0.0.0", ""):  # noqa: S104 - display only
        shown = "127.0.0.1"
    elif host == "::":
        shown = "[::1]"
    elif ":" in host:
        shown = f"[{host}]"
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


def make_server(
    config: Config,
    vault: Vault | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    reuse_port: bool = False,
) -> tuple[DavHTTPServer, str]:
    """A cheroot server bound to ``host:port`` (config values by default; port 0 picks a free
    port) but not yet serving; call ``serve()`` (blocking) or run it in a thread, and
    ``stop()`` it. Returns (server, base URL). The vault is opened from ``config`` unless
    given; ``server.vault`` holds it."""
    if vault is None:
        from davserver.runtime import open_vault

        vault = open_vault(config)
    opts = config.server
    bind_host = opts.host if host is None else host
    bind_port = opts.port if port is None else port
    raise_open_file_limit()  # every waiting connection holds a descriptor
    server = DavHTTPServer(
        (bind_host, bind_port),
        build_app(config, vault),
        numthreads=opts.threads,
        max=opts.threads,
        timeout=opts.timeout,
        shutdown_timeout=5,
        request_queue_size=1024,  # a burst of connections waits in the kernel, not dropped
        server_name=SERVER_NAME,
        reuse_port=reuse_port,
    )
    server.gateway = ClosingGateway
    server.deadlines = Deadlines(
        head_timeout=opts.head_timeout,
        idle_timeout=opts.idle_timeout,
        body_timeout=opts.body_timeout,
        body_min_rate=opts.body_min_rate,
    )
    server.ConnectionClass = DavConnection  # bulk reads/writes without _pyio's copies
    tls = opts.tls_cert is not None and opts.tls_key is not None
    if tls:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        try:
            server.ssl_adapter = BuiltinSSLAdapter(opts.tls_cert, opts.tls_key)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"server.tls_cert/tls_key: cannot load them: {exc}") from exc
    try:
        server.prepare()  # binds: with port 0 the real port is known from here on
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {bind_host}:{bind_port}: {exc.strerror or exc}"
        ) from exc
    server.vault = vault
    actual_port = int(server.bind_addr[1])
    return server, _url(bind_host, actual_port, tls)


def _throttle(config: Config, vault: Vault) -> LoginThrottle:
    sec = config.security
    return LoginThrottle(vault, sec.login_fail_limit, sec.login_fail_window)


def _maintenance(
    vault: Vault, interval: float, stop: threading.Event, throttle: LoginThrottle
) -> None:
    """Every ``interval`` seconds: purge expired locks, failed logins older than their
    window and login flows past their lifetime, drop chunked uploads abandoned for longer
    than ``gc.upload_expiry``, remove what crashed uploads left in the blob store once idle
    for ``gc.upload_grace`` (temp files, incomplete multipart uploads), collect dead blobs
    and the rows of uploads that never committed, and put the space reserve back if a
    DELETE on a full disk used it (created here, before the first round)."""
    vault.keep_reserve()
    store = LockStore(vault)
    steps: list[Callable[[], object]] = [
        store.purge_expired,
        throttle.purge,
        LoginFlows(vault).purge_expired,
        vault.expire_uploads,
        vault.expire_history,  # versions.retention, trash.retention
        vault.reclaim_partial_uploads,
        vault.collect_garbage,  # after the reclaim: rows go once their bytes are gone
    ]
    while not stop.wait(interval):
        for step in steps:  # one failing step (e.g. the object store is down) skips no other
            try:
                step()
            except Exception:  # keep serving; the next round retries
                log.exception("maintenance step %s failed", getattr(step, "__name__", step))


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas before the worker threads start.

    By default glibc gives each thread that allocates concurrently an arena of its own (up
    to 8 per core) and keeps what is freed there for that arena. With 32 request threads,
    every thread that once built a large answer kept its memory: sequential PROPFINDs of a
    10,000-entry directory took the server from 69 to 200 MiB. Two arenas keep it flat
    (the same setting as MALLOC_ARENA_MAX=2, which many Python servers use). No-op off glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_arena_max = -8  # from malloc.h
    mallopt(m_arena_max, arenas)


def disable_core_dumps() -> None:
    """No core dumps of a process that holds users' keys: RLIMIT_CORE 0 (soft and hard, so
    the process cannot raise it again) and, on Linux, ``prctl(PR_SET_DUMPABLE, 0)``, which
    also covers dumps through a ``core_pattern`` pipe and keeps other processes of the same
    user from ptrace-attaching or reading /proc/PID/mem. Inherited by forked workers. A
    platform without either gets what it has; nothing here fails the server."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):  # pragma: no cover - platform dependent
        log.warning("could not disable core dumps (RLIMIT_CORE)")
    if not sys.platform.startswith("linux"):
        return
    pr_set_dumpable = 4  # from linux/prctl.h
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        failed = libc.prctl(pr_set_dumpable, 0, 0, 0, 0) != 0
    except (OSError, AttributeError):  # pragma: no cover - libc without prctl
        failed = True
    if failed:
        log.warning("could not mark the process undumpable (prctl PR_SET_DUMPABLE)")


def serve(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly (finish requests, close the vault).

    With ``server.workers`` above 1, that many processes are forked, each serving the same
    port (SO_REUSEPORT: the kernel spreads connections) with its own vault connection; this
    process supervises them, restarts one that dies, and stops them all on SIGTERM/SIGINT.
    """
    disable_core_dumps()
    workers = config.server.workers or os.cpu_count() or 1
    if workers > 1:
        _serve_forked(config, workers, host=host, port=port, ready=ready)
        return
    _serve_one(config, host=host, port=port, ready=ready)


def _serve_one(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    ready: Callable[[str], None] | None = None,
    reuse_port: bool = False,
    maintenance: bool = True,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    limit_malloc_arenas()
    server, url = make_server(config, host=host, port=port, reuse_port=reuse_port)
    vault: Vault = server.vault
    try:
        listener = start_metrics(config, vault) if maintenance else None
    except ConfigError:
        server.stop()
        vault.close()
        raise
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in signals}
    worker = threading.Thread(target=server.serve, name="davserver-http", daemon=True)
    janitor = threading.Thread(
        target=_maintenance,
        args=(vault, float(config.gc.interval), stop, _throttle(config, vault)),
        daemon=True,
    )
    try:
        worker.start()
        if maintenance:
            janitor.start()
        if ready is not None:
            ready(url)
        while not stop.wait(0.5):
            if not worker.is_alive():
                raise RuntimeError("the HTTP server stopped unexpectedly")
        log.info("shutting down")
    finally:
        stop.set()
        server.stop()
        worker.join(10)
        if listener is not None:
            listener.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        vault.close()


def _serve_forked(
    config: Config,
    workers: int,
    *,
    host: str | None,
    port: int | None,
    ready: Callable[[str], None] | None,
) -> None:
    """The supervisor of ``workers`` forked server processes (see ``serve``)."""
    opts = config.server
    bind_host = opts.host if host is None else host
    # Reserve the port (port 0 picks one) with a bound, never-listening socket that joins
    # the workers' SO_REUSEPORT group, so every worker binds the same port.
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((bind_host, opts.port if port is None else port))
    except OSError as exc:
        holder.close()
        raise ConfigError(f"cannot listen on {bind_host}: {exc.strerror or exc}") from exc
    actual_port = int(holder.getsockname()[1])
    metrics_dir = _merged_metrics(config)
    stop = threading.Event()
    ready_r, ready_w = os.pipe()  # each worker writes one byte once it listens

    def spawn(index: int) -> int:
        pid = os.fork()
        if pid == 0:  # the worker: serve until SIGTERM, then exit without returning
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides
                os.close(ready_r)
                _serve_one(
                    config,
                    host=bind_host,
                    port=actual_port,
                    ready=lambda url: _say_ready(ready_w),
                    reuse_port=True,
                    maintenance=index == 0,
                    signals=(signal.SIGTERM,),
                )
            except BaseException:
                log.exception("server worker %d failed", index)
                code = 1
            finally:
                with contextlib.suppress(Exception):
                    metrics.mark_process_dead(os.getpid())
                os._exit(code)
        return pid

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    children = {spawn(i): i for i in range(workers)}
    tls = opts.tls_cert is not None and opts.tls_key is not None
    try:
        _await_workers(ready_r, workers, timeout=60.0)
        if ready is not None:
            ready(_url(bind_host, actual_port, tls))
        while not stop.wait(0.5):
            for pid, index in list(children.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    del children[pid]
                    metrics.mark_process_dead(pid)
                    log.error("server worker %d exited (status %d); restarting it", index, status)
                    time.sleep(1)  # a worker failing at start must not spin
                    children[spawn(index)] = index
        log.info("shutting down %d workers", len(children))
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for pid in children:
            while time.monotonic() < deadline:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        holder.close()
        os.close(ready_r)
        os.close(ready_w)
        if metrics_dir is not None:
            os.environ.pop(metrics.MULTIPROC_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)
        for s, handler in previous.items():
            signal.signal(s, handler)


def start_metrics(config: Config, vault: Vault) -> MetricsListener | None:
    """The Prometheus listener (``metrics.host``/``metrics.port``), or None when
    ``metrics.port`` is 0. In ``server.workers`` mode the worker that runs the maintenance
    loop serves it, with every worker's values merged (``_merged_metrics``)."""
    opts = config.metrics
    if not opts.port:
        return None
    from davserver.monitoring import start_metrics_listener

    try:
        listener = start_metrics_listener(opts.host, opts.port, vault)
    except OSError as exc:
        raise ConfigError(
            f"metrics: cannot listen on {opts.host}:{opts.port}: {exc.strerror or exc}"
        ) from exc
    log.info("metrics at %s", listener.url)
    return listener


def _merged_metrics(config: Config) -> str | None:
    """Before forking workers: prometheus_client's multiprocess mode, its files in a private
    temporary directory (removed at the end; a worker's live gauges go when it exits)."""
    if not config.metrics.port:
        return None
    directory = tempfile.mkdtemp(prefix="davserver-metrics-")
    try:
        metrics.enable_multiprocess(directory)
    except RuntimeError as exc:
        log.warning("metrics of the workers cannot be merged: %s", exc)
        shutil.rmtree(directory, ignore_errors=True)
        return None
    return directory


def _say_ready(fd: int) -> None:
    os.write(fd, b".")


def _await_workers(fd: int, count: int, timeout: float) -> None:
    """Wait until ``count`` workers said they listen (a byte each on ``fd``)."""
    deadline = time.monotonic() + timeout
    got = 0
    while got < count:
        left = deadline - time.monotonic()
        if left <= 0:
            log.warning("only %d of %d server workers started", got, count)
            return
        readable, _, _ = select.select([fd], [], [], left)
        if readable:
            got += len(os.read(fd, count - got))


def configure_logging(config: Config) -> None:
    """Log to stderr at ``server.log_level``; the access log only if ``server.access_log``.

    WsgiDAV's own messages are kept to errors (its info and warning lines name paths and
    users) unless the level is debug.
    """
    level = getattr(logging, config.server.log_level.upper(), logging.INFO)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("wsgidav").setLevel(
        logging.DEBUG if level <= logging.DEBUG else logging.ERROR
    )
    logging.getLogger("davserver.access").setLevel(
        level if config.server.access_log else logging.WARNING
    )

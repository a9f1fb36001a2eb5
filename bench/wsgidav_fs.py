#!/usr/bin/env python3
"""The ``wsgidav-fs`` baseline of bench/run.py: WsgiDAV's own FilesystemProvider on a plain
directory, served by cheroot the way davserver's server.py serves davserver (32 threads, a
300 s timeout, block_size 1 MiB), with Basic auth for one user and no encryption or index.

Usage: BENCH_WSGIDAV_USER=u BENCH_WSGIDAV_PASSWORD=p python bench/wsgidav_fs.py ROOT PORT
Serves 127.0.0.1:PORT until SIGTERM or SIGINT.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from cheroot import wsgi
from wsgidav.fs_dav_provider import FilesystemProvider
from wsgidav.wsgidav_app import WsgiDAVApp


def main(root: str, port: int) -> int:
    user, password = os.environ["BENCH_WSGIDAV_USER"], os.environ["BENCH_WSGIDAV_PASSWORD"]
    app = WsgiDAVApp(
        {
            "provider_mapping": {"/": FilesystemProvider(root)},
            "block_size": 1 << 20,
            "verbose": 1,
            "logging": {"enable": False},
            "http_authenticator": {
                "domain_controller": None,  # SimpleDomainController over simple_dc
                "accept_basic": True,
                "accept_digest": False,
                "default_to_digest": False,
            },
            "simple_dc": {"user_mapping": {"*": {user: {"password": password}}}},
        }
    )
    server = wsgi.Server(
        ("127.0.0.1", port), app, numthreads=32, max=32, timeout=300, request_queue_size=64
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.prepare()
    threading.Thread(target=server.serve, daemon=True).start()
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))

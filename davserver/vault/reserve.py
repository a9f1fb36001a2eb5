"""The space reserve: a file of ``storage.reserve_bytes`` kept on each file system that holds
the index or the blobs, so that a full disk cannot stop users from deleting.

Deleting needs a little space before it frees any: SQLite writes the changed pages to its
write-ahead log before the commit, and a full disk refuses that commit as it refuses a PUT.
So the server keeps this much disk to itself (``ensure`` when ``davserver serve`` starts its
maintenance loop, then ``refill`` after every garbage collection; the CLI and embedded uses
never create it) and gives some of it up (``release``: one eighth at a time, so that one delete
cannot use it all) only when a DELETE meets a full disk, which then runs once more, or when
the index cannot even be opened (SQLite's 32 KiB -shm file, re-created by the first
connection after the last one closed, e.g. when the server starts on a full disk). PUTs never
release it: on a full disk they are refused (507), and the reserve stays for the deletes that
make room. Once there is room again (the missing part plus the whole size free), it is
filled up again.

The file holds random bytes, not zeros, so that compressing or deduplicating file systems
really set the space aside. This module knows directories and byte counts, nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "space-reserve"
_BLOCK = 1 << 20
_STEPS = 8  # a release gives back 1/8 of the reserve


def free_bytes(directory: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``directory``."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


class SpaceReserve:
    """Reserve files of ``size`` bytes, one per distinct file system among ``directories``
    (directories that do not exist are skipped). Thread-safe."""

    def __init__(self, directories: Iterable[str | os.PathLike[str]], size: int) -> None:
        self.size = size
        self.kept = False  # set by the first ensure(): refill() does nothing before
        self._lock = threading.Lock()
        self.paths: list[Path] = []
        devices: set[int] = set()
        for d in directories:
            try:
                dev = os.stat(d).st_dev
            except OSError:
                continue
            if dev not in devices:
                devices.add(dev)
                self.paths.append(Path(d) / FILE_NAME)

    @property
    def held(self) -> bool:
        """Whether every reserve file is in place at its full size."""
        return all(_size(p) >= self.size for p in self.paths)

    def ensure(self) -> bool:
        """Create or fill up the reserve files where the missing part plus the whole size is
        free; return whether every one is now complete. Never raises (a full or failing disk
        is logged)."""
        self.kept = True
        if self.size <= 0:
            return True
        with self._lock:
            ok = True
            for path in self.paths:
                have = _size(path)
                if have >= self.size:
                    continue
                try:
                    if free_bytes(path.parent) < 2 * self.size - have:
                        ok = False
                        continue
                    self._fill(path, have)
                    log.info("space reserve of %d bytes in place", self.size)
                except OSError as exc:
                    ok = False
                    log.warning("cannot create the space reserve: %s", _code(exc))
            return ok

    def refill(self) -> None:
        """``ensure`` once more if the reserve is kept (``ensure`` ran) and not complete."""
        if self.kept and not self.held:
            self.ensure()

    def _fill(self, path: Path, have: int) -> None:
        """Append random bytes up to ``size``; a new file is written aside and renamed."""
        target = path if have else path.with_name(path.name + ".tmp")
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if have else os.O_TRUNC)
        try:
            fd = os.open(target, flags, 0o600)
            try:
                left = self.size - have
                while left > 0:
                    left -= os.write(fd, os.urandom(min(_BLOCK, left)))
                os.fsync(fd)
            finally:
                os.close(fd)
            if not have:
                os.replace(target, path)
        except BaseException:
            if not have:
                with contextlib.suppress(OSError):
                    os.unlink(target)
            raise
        _fsync_dir(path.parent)

    def release(self) -> bool:
        """Give back one eighth of each reserve file (truncate it; the last step removes
        it); return whether there was any space to give back."""
        freed = False
        step = max(1, self.size // _STEPS)
        with self._lock:
            for path in self.paths:
                have = _size(path)
                if have <= 0:
                    continue
                try:
                    try:
                        if have <= step:
                            raise PermissionError  # the last step: remove the file
                        os.truncate(path, have - step)
                    except PermissionError:  # or another user's file (e.g. made by root)
                        os.unlink(path)
                        with contextlib.suppress(OSError):
                            _fsync_dir(path.parent)
                except OSError as exc:
                    log.error("cannot release the space reserve: %s", _code(exc))
                    continue
                freed = True
        if freed:
            log.warning("disk full: released part of the space reserve")
        return freed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _code(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""A per-key writer lock for the store: the second run of the same stage waits for the first and takes
its result instead of computing it again.

``flock`` on a lock file beside the entry; the holder unlinks the file before it unlocks, and a waiter
that wakes on an unlinked file retries, so no lock file outlives a normal release. The kernel drops the
lock when its holder dies (SIGKILL included): a crashed writer never blocks anyone; its lock file stays
until the next writer of that key takes and removes it. Where ``fcntl`` does not exist (Windows) the
lock is a no-op and concurrent identical runs both compute (their equal results still commit safely).
On network file systems ``flock`` is only as good as the server's lock support.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def key_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock named by ``path`` (created if needed, removed on release)."""
    if fcntl is None:
        yield
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False  # the previous holder removed it while we waited: lock the new one
            if same:
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)

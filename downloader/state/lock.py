"""One run per output folder: an exclusive flock on DIR/.lock, released by the kernel on death.

Because the kernel drops a flock when its process dies (even by kill -9), a lock left by a dead
run is simply taken over; the pid written inside only serves the error message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from downloader.core.errors import LockedError

LOCK_FILE = ".lock"


class DirLock:
    """`with DirLock(dir):` holds the folder or raises LockedError naming the holder's pid."""

    def __init__(self, folder: Path) -> None:
        self._path = folder / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> DirLock:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LockedError(f"{self._path.parent} is in use by a running job (pid {holder}); "
                              "wait for it to finish or use another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *_: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

"""Conditions of the machine the tool runs on: full disks, folders that vanish or turn read-only, open-file limits.

These are conditions of the run, not internal errors and not a patent's fault. An `OSError` met
while writing output (images, temp files, manifest, summary, the embedded state store) is named
here, once, by its errno:

    ENOSPC, EDQUOT                          → OutputError: no space left on DIR (N MB free)
    EROFS                                   → OutputError: DIR is read-only
    EACCES, EPERM                           → OutputError: DIR cannot be written (permission denied)
    ENOENT, ESTALE, ENOTCONN, ENODEV, ENXIO → OutputError: DIR went away (unmounted, removed, replaced)
    EIO and any other errno                 → OutputError: DIR cannot be written (the OS's own words)
    EMFILE, ENFILE                          → LocalResourceError: transient, back off and retry

A space reserve (a plain file of `RESERVE_BYTES` in DIR, and beside the embedded state store when
that lives elsewhere, made at start) is given back on the first "no space" of its file system: the
room it frees lets the billed answers already in flight be recorded and the manifest and summary be
written, so a full disk stops the run cleanly.

Open files: `raise_open_file_limit` lifts the soft RLIMIT_NOFILE to the hard limit (as aria2 and
nginx do), and `fit_concurrency` (pure) caps the concurrencies when even that is too low.

The garbage collector: `settle_collector`, for a process that is one run (the CLI's, a helper's).
"""

from __future__ import annotations

import errno
import gc
import os
import resource
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from downloader.core.errors import LocalResourceError, OutputError

RESERVE_FILE = ".reserve"
RESERVE_BYTES = 2 * 1024 * 1024

FULL = {errno.ENOSPC, errno.EDQUOT}  # no space, or over quota
_READ_ONLY = {errno.EROFS}
_DENIED = {errno.EACCES, errno.EPERM}
_GONE = {errno.ENOENT, errno.ESTALE, errno.ENOTCONN, errno.ENODEV, errno.ENXIO, errno.ENOTDIR}
_NO_FDS = {errno.EMFILE, errno.ENFILE}
# SQLite reports the OS's refusal by its own codes (the errno is not kept): the primary code decides.
_SQLITE_ERRNO = {13: errno.ENOSPC, 8: errno.EROFS, 10: errno.EIO, 14: errno.ENOENT}  # FULL, READONLY, IOERR, CANTOPEN


# --- naming OS errors ----------------------------------------------------------------------------


def out_refusal(folder: str | os.PathLike[str], err: OSError) -> str:
    """The usage error's line for an --out folder that cannot be made: a file in its way is named as such."""
    wanted = path = os.path.abspath(folder)
    while path != os.path.dirname(path):
        if os.path.exists(path) and not os.path.isdir(path):
            return f"--out {folder} is a file, not a folder" if path == wanted else (
                f"--out {folder}: {path} is a file, not a folder")
        path = os.path.dirname(path)
    return f"cannot write to --out {folder}: {err.strerror or err}"



def output_error(err: OSError, folder: str) -> OutputError | LocalResourceError:
    """What `err`, met while writing under `folder`, means for the run."""
    code = err.errno
    why = err.strerror or str(err)
    if code in _NO_FDS:
        return LocalResourceError(f"too many open files ({why})")
    if code in FULL:
        what = "disk quota exceeded" if code == errno.EDQUOT else "no space left"
        error = OutputError(f"{what} on {folder} ({_free_text(folder)} free)",
                            hint="free some space and run the same command")
        release_reserve(folder)  # after measuring: the line tells what the run met
        return error
    if code in _READ_ONLY:
        return OutputError(f"{folder} is read-only ({why})", hint="make it writable again and run the same command")
    if code in _DENIED:
        return OutputError(f"{folder} cannot be written ({why})",
                           hint="give this user write access again and run the same command")
    if code in _GONE:
        return OutputError(f"{folder} went away: unmounted, removed or replaced during the run ({why})",
                           hint="mount or restore it and run the same command")
    return OutputError(f"{folder} cannot be written ({why})", hint="check the disk and run the same command")


@contextmanager
def output_faults(folder: str) -> Iterator[None]:
    """Re-raise an OSError met while writing under `folder` as the condition it names."""
    try:
        yield
    except OSError as err:
        raise output_error(err, folder) from err


def state_error(err: sqlite3.Error, folder: str) -> OutputError | LocalResourceError | None:
    """The condition behind a SQLite error of the state store in `folder`, or None when it is not the OS's."""
    code = getattr(err, "sqlite_errorcode", None)
    mapped = None if code is None else _SQLITE_ERRNO.get(code & 0xFF)
    if mapped is None:
        return None
    return output_error(OSError(mapped, f"{os.strerror(mapped)}: {err}"), folder)


def free_bytes(folder: str) -> int | None:
    """Bytes free for this user on `folder`'s file system, or None when it cannot be told."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _free_text(folder: str) -> str:
    free = free_bytes(folder)
    if free is None:
        return "unknown space"
    mb = free / 1e6
    return f"{mb:.0f} MB" if mb >= 10 or mb < 0.05 else f"{mb:.1f} MB"


# --- the space reserve ---------------------------------------------------------------------------

_reserves: dict[int, set[str]] = {}  # st_dev → reserve files held on that file system
_reserves_lock = threading.Lock()  # the state store's worker thread may release them too


def hold_reserve(folder: str, size: int = RESERVE_BYTES) -> str:
    """Set aside `size` bytes in `folder` (a file of zeros); OutputError when there is not that much room.
    A reserve already held (the output folder's, when the state store lives there too) is held once."""
    path = os.path.abspath(os.path.join(folder, RESERVE_FILE))
    with _reserves_lock:
        if any(path in paths for paths in _reserves.values()):
            return path
    with output_faults(folder):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            _allocate(fd, size)
            device = os.fstat(fd).st_dev
        except OSError:
            unlink_quietly(path)
            raise
        finally:
            os.close(fd)
    with _reserves_lock:
        _reserves.setdefault(device, set()).add(path)
    return path


def hold_reserve_beside(path: str, size: int = RESERVE_BYTES) -> str:
    """`hold_reserve` in the folder of the file at `path` (the embedded state store)."""
    return hold_reserve(os.path.dirname(os.path.abspath(path)), size)


def release_reserve(folder: str) -> bool:
    """Give back the reserves held on `folder`'s file system; True when there were any."""
    try:
        device = os.stat(folder).st_dev
    except OSError:
        return False
    with _reserves_lock:
        paths = _reserves.pop(device, set())
    for path in paths:
        unlink_quietly(path)
    return bool(paths)


def drop_reserve(path: str) -> None:
    """Remove a reserve at the end of a run (whether or not it was released)."""
    with _reserves_lock:
        for paths in _reserves.values():
            paths.discard(path)
    unlink_quietly(path)


def _allocate(fd: int, size: int) -> None:
    if os.fstat(fd).st_blocks * 512 >= size:
        return  # left by a killed run: already there
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.ftruncate(fd, 0)
        block = b"\0" * (1 << 16)
        for _ in range(0, size, len(block)):
            os.write(fd, block)


def unlink_quietly(path: str | os.PathLike[str]) -> None:
    """Remove a file if it can be: gone already, or the folder went read-only or away, and the next
    run's prepare clears it."""
    try:
        os.unlink(path)
    except OSError:
        pass


# --- open files ----------------------------------------------------------------------------------

# What a run opens besides its connections and temp files, on top of what is open when it starts
# (stdio): the event loop and its wake-up pipe, the folder lock, the log, the state store (two
# SQLite connections with their -wal and -shm), SQLite's temp files, DNS lookups. Measured at about
# 10 on Linux; the rest is headroom for connections still closing.
RESERVED_FDS = 24


@dataclass(frozen=True, slots=True)
class Fit:
    """Concurrencies that fit an open-file limit; `capped` says whether they were lowered."""

    api: int
    downloads: int
    capped: bool


def fit_concurrency(limit: int, in_use: int, api: int, downloads: int) -> Fit:
    """The concurrencies that fit in `limit` open files (pure).

    An API request holds one socket (the session keeps two spare); a download holds one socket
    and, while its body streams, one temp file. Downloads are capped first, then API requests;
    neither goes below 1.
    """
    spare = limit - in_use - RESERVED_FDS
    if spare >= api + 2 + 2 * downloads:
        return Fit(api, downloads, False)
    fitted_downloads = max(1, min(downloads, (spare - api - 2) // 2))
    fitted_api = max(1, min(api, spare - 2 - 2 * fitted_downloads))
    return Fit(fitted_api, fitted_downloads, True)


def open_file_limit() -> int:
    """The soft RLIMIT_NOFILE as it is (unlimited counts as very large)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_open_file_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (where the OS allows); returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # some sandboxes refuse: keep what there is and fit the concurrencies to it
    return soft


# Allocations between collections of the youngest generation (CPython's default is 700). Each collection
# walks every young object still alive, and a run always has thousands alive (64 downloads in flight, their
# buffers and futures): at 700 that was ~540 collections and ~0.19 s of CPU per 20,000 images (3% of the
# run); at 10,000, ~20 collections and ~0.015 s, and the oldest generation was not collected at all.
YOUNG_COLLECTION = 10_000


def settle_collector() -> None:
    """Collect the youngest generation every YOUNG_COLLECTION allocations. Reference counting still frees
    nearly everything at once; only garbage in cycles waits a little longer. Process-wide, so only a process
    that is the tool (the console script, a helper worker) calls it, never the library for its caller."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION, middle, oldest)


def open_files() -> int:
    """How many file descriptors this process holds now (0 when the OS does not say)."""
    for where in ("/proc/self/fd", "/dev/fd"):
        try:
            return max(0, len(os.listdir(where)) - 1)  # less the descriptor of the listing itself
        except OSError:
            continue
    return 0

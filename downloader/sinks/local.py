"""The local folder sink (the embedded default): temp file, verified, atomic rename into images/.

Bytes go to a temporary file under `DIR/.partial/` (same file system, so the final rename is
atomic), then are renamed to their place under `images/`. A kill at any instant leaves either
no final file or a complete one; leftovers in `.partial/` are removed by the next run.

Writes go straight from the event loop into a buffered file: a page-cache write of a chunk costs
microseconds, far less than a thread hop per chunk (measured ~10x slower per small image). With
--durable the fsyncs, which can block for milliseconds, run in a worker thread. On a file system
that can block (NFS, SMB, FUSE: see `filesystems`), or with --io threads, each finished image is
written and renamed in one aiofiles worker-thread hop instead.

Faults of the folder (full, read-only, gone) are named by `machine.output_error` at this one
boundary: a temp file that cannot be written is removed, and the run stops with an OutputError.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
from pathlib import Path

import aiofiles.os
import anyio

from downloader import machine
from downloader.core.errors import LocalResourceError, OutputError, UsageError
from downloader.sinks.filesystems import io_mode

PARTIAL_DIR = ".partial"


class LocalSink:
    """A local output folder: images/, manifests, summary, rejects, report."""

    def __init__(self, root: Path, *, durable: bool = False, io: str = "auto") -> None:
        self.root = Path(root)
        self.location = str(root)
        self.durable = durable
        self._io_requested = io
        self.io = "direct"  # decided by prepare(): "threads" on a file system that can block
        # Plain strings and os functions below: pathlib's object churn showed up per image.
        self._root = str(root)
        self._partial = os.path.join(self._root, PARTIAL_DIR)
        self._made: set[str] = set()
        self._names = itertools.count()
        self._pid = os.getpid()  # a system call each time: read once (helpers are new processes, not forks)
        self._owner = False  # holds the job's lock: may clear and remove .partial/
        self._identity: tuple[int, int] | None = None
        self._reserve: str | None = None
        self.refused: OutputError | None = None  # once the folder could not take a write: no more images

    async def prepare(self, *, clean: bool = True) -> None:
        """Create the folders, check they can be written, remove an interrupted run's partial files,
        and (as the lock's holder) set the space reserve aside: OutputError when the disk is already full."""
        try:
            os.makedirs(self._root, exist_ok=True)
            self._owner = clean
            if clean:
                shutil.rmtree(self._partial, ignore_errors=True)
                for stale in self.root.glob(".*.tmp"):
                    stale.unlink(missing_ok=True)
            os.makedirs(self._partial, exist_ok=True)
            self.io = io_mode(self.root, self._io_requested)
            info = os.stat(self._root)
        except OSError as err:
            if err.errno in machine.FULL:
                raise machine.output_error(err, self._root) from None
            raise UsageError(machine.out_refusal(self._root, err)) from None
        self._identity = (info.st_dev, info.st_ino)
        if clean:
            self._reserve = machine.hold_reserve(self._root)

    def begin(self) -> LocalUpload | ThreadedUpload:
        """A new temporary file (unique: named by process and counter; .partial/ starts empty)."""
        path = f"{self._partial}/{self._pid}-{next(self._names)}.part"
        return ThreadedUpload(self, path) if self.io == "threads" else LocalUpload(self, path)

    async def close(self) -> None:
        """Remove this process's partial files and the space reserve when the run ends (best effort:
        the folder may be full, read-only or gone, and the next run's `prepare` clears what is left)."""
        if self._reserve is not None:
            machine.drop_reserve(self._reserve)
            self._reserve = None
        try:
            names = os.listdir(self._partial)  # noqa: ASYNC240 - one call at the end of a run
        except OSError:
            return
        for name in names:
            if name.startswith(f"{self._pid}-"):
                machine.unlink_quietly(os.path.join(self._partial, name))
        if self._owner:  # the helpers have stopped by now; never remove it under a working helper
            try:
                os.rmdir(self._partial)
            except OSError:
                pass

    def staging(self, name: str) -> Path:
        """A temp file beside the final one (same file system: the rename is atomic).

        Raises OutputError when DIR is no longer the folder the run started in (unmounted or replaced):
        a manifest written into whatever is there now would be lost or misleading.
        """
        try:
            info = os.stat(self._root)
            same = self._identity is None or (info.st_dev, info.st_ino) == self._identity
        except OSError as err:
            raise machine.output_error(err, self._root) from err
        if not same:
            raise machine.output_error(OSError(errno.ENOENT, "no longer the same folder"), self._root)
        return self.root / f".{name}.{self._pid}.tmp"

    async def publish(self, name: str, staged: Path, *, content_type: str) -> None:
        """Rename the staged file over `name` (fsynced first with --durable)."""
        with machine.output_faults(self._root):
            if self.durable:
                await anyio.to_thread.run_sync(_fsync_path, str(staged))
            os.replace(staged, self.root / name)
            if self.durable:
                await anyio.to_thread.run_sync(_fsync_path, self._root)

    def url_of(self, name: str) -> str:
        """The file's path."""
        return str(self.root / name)

    def _commit(self, temp: str, relative: str) -> str:
        # `relative` is a naming.py path ("images/ab/c/NAME.png"): plain string work, not posixpath's calls.
        final = f"{self._root}/{relative}"
        parent = final[:final.rfind("/")]
        if parent not in self._made:
            _makedirs_below(self._root, parent)
            self._made.add(parent)
        os.replace(temp, final)
        return parent

    def fault(self, err: OSError) -> OutputError | LocalResourceError:
        """What an OSError met while writing into this folder means for the run. After an OutputError the
        sink takes no more image bytes: the room the reserve gave back is for the state and the manifest."""
        fault = machine.output_error(err, self._root)
        if isinstance(fault, OutputError) and self.refused is None:
            self.refused = fault
        return fault


class LocalUpload:
    """One image being written to `.partial/`; opened lazily on the first chunk.

    A plain file descriptor, no Python file object: chunks are whole socket reads, so a buffer
    gains nothing, and building one cost ~8 µs an image.
    """

    __slots__ = ("_sink", "_path", "_fd")

    def __init__(self, sink: LocalSink, path: str) -> None:
        self._sink = sink
        self._path = path
        self._fd: int | None = None

    def write(self, chunk: bytes) -> None:
        """Append bytes to the temporary file (OutputError or LocalResourceError when the OS refuses)."""
        if self._sink.refused is not None:
            self._drop()
            raise self._sink.refused
        try:
            if self._fd is None:
                self._fd = os.open(self._path, _CREATE, 0o666)
            while chunk:  # a short write (rare on a local file) is followed by the rest, or by its error
                written = os.write(self._fd, chunk)
                if written <= 0:
                    raise OSError(errno.EIO, "the file system wrote nothing")
                chunk = chunk[written:]
        except OSError as err:
            self._drop()
            raise self._sink.fault(err) from err

    async def commit(self, relative: str, *, content_type: str, sha256: str) -> None:
        """Close, (fsync), and rename into place under `relative`; the temp file is gone either way."""
        if self._fd is None:
            self.write(b"")
        assert self._fd is not None
        try:
            if self._sink.durable:
                await anyio.to_thread.run_sync(os.fsync, self._fd)
            fd, self._fd = self._fd, None
            os.close(fd)  # where a network file system may report a full disk
            parent = self._sink._commit(self._path, relative)
        except OSError as err:
            self._drop()
            raise self._sink.fault(err) from err
        except BaseException:
            self._drop()
            raise
        if self._sink.durable:
            with machine.output_faults(self._sink.location):
                await anyio.to_thread.run_sync(_fsync_path, parent)

    async def discard(self) -> None:
        """Close and remove the temporary file."""
        self._drop()

    def _drop(self) -> None:
        """Close and remove the temp file, whatever state the disk is in."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass  # the unwritten tail goes with the file
        machine.unlink_quietly(self._path)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


class ThreadedUpload:
    """One image for a folder whose calls can block (--io threads): bytes kept in memory, then
    written, (fsynced) and renamed in one worker-thread hop through aiofiles."""

    __slots__ = ("_sink", "_path", "_chunks")

    def __init__(self, sink: LocalSink, path: str) -> None:
        self._sink = sink
        self._path = path
        self._chunks: list[bytes] = []

    def write(self, chunk: bytes) -> None:
        """Keep the bytes (an image is capped by the fetcher)."""
        self._chunks.append(chunk)

    async def commit(self, relative: str, *, content_type: str, sha256: str) -> None:
        """Write, fsync with --durable, rename into place: one hop to a thread for the whole file."""
        if self._sink.refused is not None:
            raise self._sink.refused
        try:
            await _place(self._sink, self._path, relative, self._chunks)
        except OSError as err:  # the temp file is already gone
            raise self._sink.fault(err) from err

    async def discard(self) -> None:
        """Nothing was written yet."""
        self._chunks = []


def _place_now(sink: LocalSink, temp: str, relative: str, chunks: list[bytes]) -> None:
    try:
        with open(temp, "wb") as out:
            out.writelines(chunks)
            if sink.durable:
                out.flush()
                os.fsync(out.fileno())
        parent = sink._commit(temp, relative)
    except BaseException:
        machine.unlink_quietly(temp)
        raise
    if sink.durable:
        _fsync_path(parent)


_place = aiofiles.os.wrap(_place_now)


def _makedirs_below(root: str, path: str) -> None:
    """os.makedirs, but never DIR itself: a folder removed under the run must not come back half-empty."""
    if len(os.path.normpath(path)) <= len(os.path.normpath(root)):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), root)
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except FileNotFoundError:
        _makedirs_below(root, os.path.dirname(path))
        os.makedirs(path, exist_ok=True)  # its parent is there now


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""A loopback TCP proxy between one worker and PostgreSQL that a test can stall, release and cut.

- `stall()`: bytes stop flowing both ways, connections stay open (a network partition or a paused
  machine, as the worker sees it: its statements hang, nothing fails); `release()` lets the held
  bytes through again, in order.
- `stall_after(n)`: the next `n` bytes towards the server go through, then the stall begins (a worker
  cut off in the middle of what it was sending: the server got the first part of it).
- `cut()`: every connection is closed and new ones are closed at once (a server that went away);
  `restore()` accepts again.

It runs its own asyncio loop in a daemon thread, so it serves subprocesses and sync or async tests
alike; `close()` stops it. Everything listens on 127.0.0.1, on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator

_CHUNK = 64 * 1024


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port` (see the module docstring)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._flowing: asyncio.Event | None = None
        self._budget: int | None = None  # bytes towards the server still let through before a stall
        self._refusing = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0  # accepted so far
        self._thread = threading.Thread(target=self._serve, name="tcp-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    # --- the test's side (any thread) ---------------------------------------------------------

    def stall(self) -> None:
        """Hold every byte from now on, in both directions; connections stay open."""
        self._call(lambda: self._flow().clear())

    def stall_after(self, nbytes: int) -> None:
        """Let `nbytes` more bytes through towards the server (any connection's), then stall as `stall()`."""
        self._call(lambda: setattr(self, "_budget", nbytes))

    def release(self) -> None:
        """Let the held bytes (and new ones) through again."""
        self._call(lambda: self._flow().set())

    def cut(self) -> None:
        """Close every connection, and each new one at once, until `restore()`."""
        def cut() -> None:
            self._refusing = True
            for writer in list(self._writers):
                writer.transport.abort()
        self._call(cut)

    def restore(self) -> None:
        """Accept and forward connections again."""
        def restore() -> None:
            self._refusing = False
        self._call(restore)

    def close(self) -> None:
        """Stop serving and drop every connection."""
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _call(self, action: Callable[[], object]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                action()
            finally:
                done.set()
        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    # --- the proxy's loop ---------------------------------------------------------------------

    def _flow(self) -> asyncio.Event:
        assert self._flowing is not None
        return self._flowing

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pump(reader, up_writer, upstream=True), self._pump(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool = False) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(_CHUNK):
                if upstream and self._budget is not None and self._flow().is_set():
                    head, data = data[:self._budget], data[self._budget:]
                    self._budget -= len(head)
                    writer.write(head)
                    await writer.drain()
                    if self._budget == 0:
                        self._budget = None
                        self._flow().clear()
                await self._flow().wait()  # a stall holds what was read, and everything after it
                if data:
                    writer.write(data)
                    await writer.drain()
        writer.transport.abort()


@contextlib.contextmanager
def tcp_proxy(target_host: str, target_port: int) -> Iterator[TcpProxy]:
    """A TcpProxy for the duration of the block."""
    proxy = TcpProxy(target_host, target_port)
    try:
        yield proxy
    finally:
        proxy.close()

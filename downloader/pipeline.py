"""The one task group: planner → API workers → download workers → recorder.

Theory of operation. Stages are joined by bounded memory object streams, so a slow stage
holds back the ones before it: the planner cannot batch ahead of the API workers, and the API
workers cannot resolve URLs faster than images are downloaded (at most a couple of batches of
URLs wait in the download queue, minutes at worst, never hours: no URL expires in a queue).
Every result goes through one recorder task, which writes it to the state store in batched
transactions; the API workers hand resolved URLs to the recorder before they hand them to the
downloaders, so "resolved" is always written before "downloaded".

A run is a series of rounds. A round asks for everything unsettled and downloads what it can;
a URL that expired before its download sends its key back to `pending`, and the next round asks
for it again. Stops: a fatal API answer cancels the workers at once; a budget or time cap stops
asking but lets paid-for downloads finish; a signal stops asking, cancels downloads, and gives
in-flight API calls a few seconds to land (they are billed). In every case the recorder drains
what it was sent and commits it before the round returns.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from downloader.core.errors import FatalApiError
from downloader.core.events import BatchDone, ImageDone, Notice, Planned, Sink
from downloader.core.model import Batch, Downloaded, Failed, ImageJob, NoImage, NotFound, Outcome, Resolved, UrlExpired
from downloader.core.protocol import batches
from downloader.net.api import PatsnapClient
from downloader.net.cdn import ImageFetcher
from downloader.state.sqlite import StateStore

T = TypeVar("T")
MAX_ROUNDS = 50
MAX_EXPIRIES = 5
_FLUSH_ITEMS = 500
_FLUSH_SECONDS = 0.25
_SIGNAL_GRACE = 3.0

Record = Sequence[Outcome | Downloaded | UrlExpired]


@dataclass
class Control:
    """Why the run stops early, if it does; shared by every stage."""

    deadline: float | None = None
    stop_reason: str | None = None  # "budget" | "runtime" | "interrupted"
    fatal: FatalApiError | None = None
    # Made anew by each round (a cancelled scope cannot be entered again).
    cancel_all: anyio.CancelScope | None = None
    cancel_downloads: anyio.CancelScope | None = None

    def cancel(self, downloads_only: bool = False) -> None:
        """Cancel the current round's downloads, or all of its workers."""
        scope = self.cancel_downloads if downloads_only else self.cancel_all
        if scope is not None:
            scope.cancel()

    def stopping(self) -> bool:
        """True once no new API call may start."""
        if self.stop_reason is None and self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop_reason = "runtime"
        return self.stop_reason is not None or self.fatal is not None


@dataclass
class Pipeline:
    """One job's stages; `run()` performs rounds until nothing is left or a stop."""

    state: StateStore
    run_id: int
    client: PatsnapClient
    fetcher: ImageFetcher
    sink: Sink
    batch_size: int = 100
    api_concurrency: int = 4
    download_concurrency: int = 32
    expiry_margin: float = 120.0
    control: Control = field(default_factory=Control)

    async def run(self, handle_signals: bool = True) -> None:
        """Rounds until the work is done or a stop; raises FatalApiError after recording state."""
        async with anyio.create_task_group() as outer:
            if handle_signals:
                outer.start_soon(self._watch_signals, outer)
            for number in range(1, MAX_ROUNDS + 1):
                left_before = self._unsettled()
                await self._round(number)
                if self.control.stopping():
                    break
                failed = await anyio.to_thread.run_sync(self.state.fail_expired_repeatedly, self.run_id,
                                                        MAX_EXPIRIES)
                if failed:
                    self.sink(Notice("failed", f"{failed} patents: URL expired {MAX_EXPIRIES} times"))
                left = self._unsettled()
                if left == 0 or left >= left_before:  # done, or a round that changed nothing
                    break
            outer.cancel_scope.cancel()
        if self.control.fatal is not None:
            raise self.control.fatal

    def _unsettled(self) -> int:
        counts = self.state.counts(self.run_id)
        return counts.get("pending", 0) + counts.get("resolved", 0)

    async def _round(self, number: int) -> None:
        to_results, results = anyio.create_memory_object_stream[Record](64)
        self.control.cancel_all = anyio.CancelScope()
        self.control.cancel_downloads = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._record, results)
            with self.control.cancel_all:
                async with to_results, anyio.create_task_group() as workers:
                    self._start_workers(workers, number, to_results)

    def _start_workers(self, tg: TaskGroup, number: int, to_results: MemoryObjectSendStream[Record]) -> None:
        to_api, api_in = anyio.create_memory_object_stream[Batch](self.api_concurrency)
        to_downloads, downloads_in = anyio.create_memory_object_stream[ImageJob](2 * self.download_concurrency)
        tg.start_soon(self._plan, number, to_api, to_downloads.clone())
        for _ in range(self.api_concurrency):
            tg.start_soon(self._api_worker, api_in.clone(), to_downloads.clone(), to_results.clone())
        ticking = anyio.CancelScope()
        tg.start_soon(self._tick, to_results.clone(), ticking)
        tg.start_soon(self._download_stage, downloads_in, to_results.clone(), ticking)
        api_in.close()
        to_downloads.close()

    async def _plan(self, number: int, to_api: MemoryObjectSendStream[Batch],
                    to_downloads: MemoryObjectSendStream[ImageJob]) -> None:
        """Known good URLs go straight to the downloaders; the rest is batched for the API."""
        usable_after = time.time() + self.expiry_margin
        async with to_api, to_downloads:
            pending = self.state.counts(self.run_id).get("pending", 0)
            to_ask = pending + self.state.count_expired(self.run_id, usable_after)
            self.sink(Planned(to_ask, self.state.count_reusable(self.run_id, usable_after), number))
            for job in self.state.iter_reusable(self.run_id, usable_after):
                await _send_quietly(to_downloads, job)
            for batch in batches(self.state.iter_to_ask(self.run_id, usable_after), self.batch_size):
                if self.control.stopping():
                    return
                await to_api.send(batch)

    async def _api_worker(self, batches_in: MemoryObjectReceiveStream[Batch],
                          to_downloads: MemoryObjectSendStream[ImageJob],
                          to_results: MemoryObjectSendStream[Record]) -> None:
        async with batches_in, to_downloads, to_results:
            async for batch in batches_in:
                if self.control.stopping():
                    continue  # drain without asking: these keys stay pending for the next run
                try:
                    result = await self.client.resolve(batch)
                except FatalApiError as err:
                    self._fatal(err)
                    return
                if result.unasked:
                    self._stop("budget", "the --max-charged budget is spent; the next run continues")
                await _deliver(to_results, result.outcomes)  # billed: recorded even when stopping
                images = [o for o in result.outcomes if isinstance(o, Resolved)]
                self.sink(BatchDone(len(result.outcomes), len(images), result.charged))
                for o in result.outcomes:
                    if isinstance(o, Failed):
                        self.sink(Notice("failed", f"{o.key.value}: {o.error}"))
                for o in images:
                    await _send_quietly(to_downloads, ImageJob(o.key, o.pn, o.num, o.url, o.expires_at))

    async def _download_stage(self, jobs: MemoryObjectReceiveStream[ImageJob],
                              to_results: MemoryObjectSendStream[Record], ticking: anyio.CancelScope) -> None:
        """The download workers; the last stage to finish, so it also stops the ticker."""
        assert self.control.cancel_downloads is not None
        try:
            with self.control.cancel_downloads:
                async with jobs, to_results, anyio.create_task_group() as tg:
                    for _ in range(self.download_concurrency):
                        tg.start_soon(self._download_worker, jobs.clone(), to_results.clone())
        finally:
            ticking.cancel()

    async def _tick(self, to_results: MemoryObjectSendStream[Record], ticking: anyio.CancelScope) -> None:
        """Wake the recorder every _FLUSH_SECONDS (an empty record) so slow trickles get written."""
        with ticking:
            async with to_results:
                while True:
                    await anyio.sleep(_FLUSH_SECONDS)
                    try:
                        to_results.send_nowait([])
                    except anyio.WouldBlock:
                        pass  # the recorder has plenty to wake it

    async def _download_worker(self, jobs: MemoryObjectReceiveStream[ImageJob],
                               to_results: MemoryObjectSendStream[Record]) -> None:
        async with jobs, to_results:
            while True:
                try:
                    job = await _receive(jobs)
                except anyio.EndOfStream:
                    return
                result = await self.fetcher.fetch(job)
                await _deliver(to_results, [result])  # a file renamed into place is recorded even when stopping
                self.sink(_image_event(result))

    async def _record(self, results: MemoryObjectReceiveStream[Record]) -> None:
        """The single writer: batches results into transactions, flushing at least every 0.25 s.

        The wake-ups come from `_tick`, not from a timed receive: a receive cancelled by its
        timeout just as an item arrives would lose that item.

        An API answer is flushed at once: it was billed, and a kill before its commit would make
        the next run pay for it again. Download results can wait for company.
        """
        pending: list[Outcome | Downloaded | UrlExpired] = []
        due = math.inf
        async with results:
            while True:
                try:
                    items = await _receive(results)  # at least a tick every _FLUSH_SECONDS
                except anyio.EndOfStream:
                    break
                now = time.monotonic()
                if items:
                    pending.extend(items)
                    billed = any(isinstance(i, Resolved | NoImage | NotFound) for i in items)
                    due = now if billed else min(due, now + _FLUSH_SECONDS)
                if pending and (len(pending) >= _FLUSH_ITEMS or now >= due):
                    await self._flush(pending)
                    pending, due = [], math.inf
        if pending:
            await self._flush(pending)

    async def _flush(self, pending: list[Outcome | Downloaded | UrlExpired]) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.state.apply, pending)

    def _fatal(self, err: FatalApiError) -> None:
        if self.control.fatal is None:
            self.control.fatal = err
            self.sink(Notice("fatal", f"stopping: {err}"))
        self.control.cancel()

    def _stop(self, reason: str, message: str) -> None:
        if self.control.stop_reason is None:
            self.control.stop_reason = reason
            self.sink(Notice(reason, message))

    async def _watch_signals(self, outer: TaskGroup) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                self._stop("interrupted", f"{signal.Signals(signum).name}: stopping, state is being saved")
                self.control.cancel(downloads_only=True)
                outer.start_soon(self._cancel_later)

    async def _cancel_later(self) -> None:
        await anyio.sleep(_SIGNAL_GRACE)
        self.control.cancel()


# Stream hand-offs try the no-wait path first. anyio's awaited send/receive start with a
# checkpoint, and a shielded or timed wait builds a cancel scope; per image that machinery
# (current_async_library, current_task) profiled at ~13% of the CPU. Waiting is only needed
# when the buffer is full or empty, and then the full path runs.


async def _receive(stream: MemoryObjectReceiveStream[T]) -> T:
    """The next item; EndOfStream once all senders closed."""
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        return await stream.receive()


async def _deliver(stream: MemoryObjectSendStream[T], item: T) -> None:
    """Send even when this task is being cancelled: what it carries is on disk or billed."""
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        with anyio.CancelScope(shield=True):
            await stream.send(item)


async def _send_quietly(stream: MemoryObjectSendStream[ImageJob], job: ImageJob) -> None:
    """Hand a job to the downloaders unless they were stopped (the URL is recorded anyway)."""
    try:
        stream.send_nowait(job)
    except anyio.WouldBlock:
        try:
            await stream.send(job)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass


def _image_event(result: Downloaded | UrlExpired | Failed) -> ImageDone:
    match result:
        case Downloaded(key, _, size, _):
            return ImageDone("downloaded", size, key=key.value)
        case UrlExpired(key, reason):
            return ImageDone("expired", 0, reason, key.value)
        case Failed(key, error):
            return ImageDone("failed", 0, error, key.value)
    raise TypeError(result)

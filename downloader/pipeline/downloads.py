"""The download stage: `concurrency` workers take image jobs (from the planner and the API workers),
fetch each under its claim's lease (the `Fetcher`: stream, hash, verify, put in place) and send the
result to the recorder. It is the last stage to finish, so it also stops the recorder's ticker.

A job whose lease this worker no longer holds is left alone (another worker may hold the key now);
a FatalError (the output cannot take the image, the CDN is out of reach) goes to the pipeline, which
decides what stops. The lookahead hears when each download starts and how long it took.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from downloader.core.errors import FatalError, LeaseLostError
from downloader.core.events import ImageDone, Sink
from downloader.core.lookahead import Lookahead
from downloader.core.model import Deferred, Downloaded, Failed, ImageJob, UrlExpired
from downloader.core.ports import Fetched, Fetcher
from downloader.pipeline.recorder import Record
from downloader.pipeline.streams import deliver, receive
from downloader.state.base import Held, StateStore


@dataclass(eq=False, kw_only=True)
class Downloads:
    """The download workers of one pipeline, and what they tell it.

    `fatal` hears of a condition that stops the run, `fenced` of keys this worker's lease no longer
    covers, `moved` that a download finished (room for more URLs), `done` of each result once the
    recorder has it.
    """

    store: StateStore
    fetcher: Fetcher
    lookahead: Lookahead
    events: Sink
    concurrency: int
    fatal: Callable[[FatalError], Awaitable[None]]
    fenced: Callable[[Sequence[str]], None]
    moved: Callable[[], None]
    done: Callable[[Fetched], None]

    async def run(self, jobs: MemoryObjectReceiveStream[ImageJob], to_results: MemoryObjectSendStream[Record],
                  scope: anyio.CancelScope, ticking: anyio.CancelScope) -> None:
        """Download until the job stream ends or `scope` is cancelled; then stop the ticker."""
        try:
            with scope:
                async with jobs, to_results, anyio.create_task_group() as tg:
                    for _ in range(self.concurrency):
                        tg.start_soon(self._worker, jobs.clone(), to_results.clone())
        finally:
            ticking.cancel()

    async def _worker(self, jobs: MemoryObjectReceiveStream[ImageJob],
                      to_results: MemoryObjectSendStream[Record]) -> None:
        async with jobs, to_results:
            while True:
                try:
                    job = await receive(jobs)
                except anyio.EndOfStream:
                    return
                self.lookahead.started()
                started = time.monotonic()
                try:
                    if not self.store.holds(job.lease):
                        raise LeaseLostError(job.key.value)
                    result = await self.fetcher.fetch(job)
                except FatalError as err:  # the output cannot take the image, or the CDN is out of reach
                    self.lookahead.finished(None)
                    await self.fatal(err)
                    continue
                except LeaseLostError:  # another worker may hold the key now: leave it to them
                    self.lookahead.finished(None)
                    self.fenced([job.key.value])
                    continue
                self.lookahead.finished(time.monotonic() - started if isinstance(result, Downloaded) else None)
                self.moved()
                await deliver(to_results, [Held(result, job.lease)])  # a file in place is recorded anyway
                self.events(_image_event(result))
                self.done(result)


def _image_event(result: Fetched) -> ImageDone:
    match result:
        case Downloaded(key, _, size, _):
            return ImageDone("downloaded", size, key=key.value)
        case UrlExpired(key, reason, _):
            return ImageDone("expired", 0, reason, key.value)
        case Failed(key, error):
            return ImageDone("failed", 0, error, key.value)
        case Deferred(key, error, _):
            return ImageDone("deferred", 0, error, key.value)
    raise TypeError(result)

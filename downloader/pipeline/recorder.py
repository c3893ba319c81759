"""The pipeline's single writer: every result goes through one recorder task, which writes it to
the state store in batched transactions, flushing at least every FLUSH_SECONDS.

An API answer is flushed at once: it was billed, and a kill before its commit would make the next
run pay for it again. Download results can wait for company.

Its API worker waits for that commit before it asks again (`record_answer` gives it the
acknowledgement to wait on: set after the transaction that holds the answer). So a worker killed
with -9 has at most one billed answer per API worker that no store holds (its request in flight,
or its answer not yet committed), never both: the others pay again for those batches only. The
flush is at once, and the wait overlaps the hand-off of the answer's URLs and the planner's next
batch, so it costs the asking worker a commit, not the pipeline its pace.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from downloader.core.errors import FatalError
from downloader.pipeline.streams import deliver, receive
from downloader.state.base import Held, StateStore

FLUSH_ITEMS = 500
# Room for the results that arrive while the recorder waits on a flush: with 64, half of the
# deliveries found it full and took the slow path (a shielded, awaited send) at ~1,500 images/s.
RESULTS_BUFFER = 4 * FLUSH_ITEMS
FLUSH_SECONDS = 0.25

Record = Sequence[Held]


class Acked(list[Held]):
    """A record whose sender waits for `committed`: set after the transaction that holds it (or once the
    store failed for good, when the run stops asking anyway)."""

    def __init__(self, items: Iterable[Held]) -> None:
        super().__init__(items)
        self.committed = anyio.Event()


async def record_answer(to_results: MemoryObjectSendStream[Record], items: Iterable[Held]) -> anyio.Event:
    """Send an API answer's results to the recorder; wait on the event before the next request."""
    record = Acked(items)
    if record:
        await deliver(to_results, record)  # billed: sent even when this task is being cancelled
    else:
        record.committed.set()
    return record.committed


@dataclass(eq=False)
class Recorder:
    """Writes what the stages send; `fatal` hears of a store that cannot take more, `refused` of
    results the store refused (this worker's lease lapsed). `recorded` is set, and replaced, after
    every commit: the planner waits on it when others hold keys."""

    store: StateStore
    fatal: Callable[[FatalError], Awaitable[None]]
    refused: Callable[[Sequence[str]], None]
    recorded: anyio.Event = field(default_factory=anyio.Event)

    async def run(self, results: MemoryObjectReceiveStream[Record]) -> None:
        """Batch results into transactions until every sender closed, then commit the rest.

        The wake-ups come from `tick`, not from a timed receive: a receive cancelled by its
        timeout just as an item arrives would lose that item.
        """
        pending: list[Held] = []
        waiting: list[anyio.Event] = []  # the acknowledgements of the Acked records in `pending`
        due = math.inf
        async with results:
            while True:
                try:
                    items = await receive(results)  # at least a tick every FLUSH_SECONDS
                except anyio.EndOfStream:
                    break
                now = time.monotonic()
                if items:
                    pending.extend(items)
                    if isinstance(items, Acked):  # an API answer (billed): its worker waits for the commit
                        waiting.append(items.committed)
                    due = now if waiting else min(due, now + FLUSH_SECONDS)
                if pending and (len(pending) >= FLUSH_ITEMS or now >= due):
                    due = math.inf
                    if await self._flush(pending):
                        pending = []
                    _acknowledge(waiting)  # committed; or the store failed for good and the run stops asking
        if pending:
            await self._flush(pending)
        _acknowledge(waiting)

    async def _flush(self, pending: list[Held]) -> bool:
        """Commit `pending`; False when the store's disk cannot take it (kept and tried again at the end,
        when the downloads' temp files are gone and the space reserve is given back)."""
        try:
            with anyio.CancelScope(shield=True):
                refused = await self.store.apply(pending)
        except FatalError as err:
            await self.fatal(err)
            return False
        self.refused([w.event.key.value for w in refused])
        self.recorded.set()
        self.recorded = anyio.Event()
        return True


def _acknowledge(waiting: list[anyio.Event]) -> None:
    for event in waiting:
        event.set()
    waiting.clear()


async def tick(to_results: MemoryObjectSendStream[Record], ticking: anyio.CancelScope) -> None:
    """Wake the recorder every FLUSH_SECONDS (an empty record) so slow trickles get written."""
    with ticking:
        async with to_results:
            while True:
                await anyio.sleep(FLUSH_SECONDS)
                try:
                    to_results.send_nowait([])
                except anyio.WouldBlock:
                    pass  # the recorder has plenty to wake it

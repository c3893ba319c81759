"""The pipeline's single writer: every result goes through one recorder task, which writes it to
the state store in batched transactions, flushing at least every FLUSH_SECONDS.

An API answer is flushed at once: it was billed, and a kill before its commit would make the next
run pay for it again. Download results can wait for company.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from downloader.core.errors import FatalError
from downloader.core.model import NoImage, NotFound, Resolved
from downloader.pipeline.streams import receive
from downloader.state.base import Held, StateStore

FLUSH_ITEMS = 500
# Room for the results that arrive while the recorder waits on a flush: with 64, half of the
# deliveries found it full and took the slow path (a shielded, awaited send) at ~1,500 images/s.
RESULTS_BUFFER = 4 * FLUSH_ITEMS
FLUSH_SECONDS = 0.25

Record = Sequence[Held]


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
                    billed = any(isinstance(i.event, Resolved | NoImage | NotFound) for i in items)
                    due = now if billed else min(due, now + FLUSH_SECONDS)
                if pending and (len(pending) >= FLUSH_ITEMS or now >= due):
                    due = math.inf
                    if await self._flush(pending):
                        pending = []
        if pending:
            await self._flush(pending)

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

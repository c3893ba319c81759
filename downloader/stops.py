"""The one stop watcher of a worker process (`execution` runs it).

It hears SIGINT/SIGTERM when the caller asked for signal handling, and in a --workers helper the
death of the process that started it (that process held the lock the helper works under). Either
stops the run as an interrupt: nothing new is claimed, billed answers land, state is kept. That
stop can take a while (the manifest of a long list; up to --state-patience while PostgreSQL is
unreachable), so a second signal means "now": `at_once` is called, and it does not return.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import nullcontext
from typing import NoReturn

import anyio

ORPHANED = "the parent process is gone"


async def watch_stops(interrupt: Callable[[str], None], signals: bool, parent: int | None,
                      at_once: Callable[[str], NoReturn] | None = None) -> None:
    """Call `interrupt(why)` at a stop (a signal's name, or ORPHANED), and `at_once(why)` at a second signal
    (when given); return once the parent is gone."""
    wanted = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) if signals else nullcontext(None)
    heard = 0
    with wanted as incoming:
        while True:
            why = await _next_stop(incoming, parent)
            if why is not None and why != ORPHANED:
                heard += 1
                if heard > 1 and at_once is not None:
                    at_once(why)
            if why is not None:
                interrupt(why)
            if why == ORPHANED:
                return


async def _next_stop(signals: AsyncIterator[int] | None, parent: int | None) -> str | None:
    """Wait for the next reason to stop (a signal's name, or the parent gone); None: look again."""
    if parent is not None and os.getppid() != parent:
        return ORPHANED
    if signals is None:
        await anyio.sleep(0.5 if parent is not None else math.inf)
        return None
    with anyio.move_on_after(0.5 if parent is not None else math.inf):
        return signal.Signals(await signals.__anext__()).name  # a signal cancelled here stays queued
    return None

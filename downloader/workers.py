"""--workers N on one machine: N processes that share one job through the state store's claims.

The first process (the one the user started) holds the folder lock, reads the inputs, then starts
N-1 helper processes (`python -m downloader.helper`) and works as a worker itself. Every worker
claims batches from the same store under its own lease, so one machine's cores and several
machines are the same design (a PostgreSQL store just lets the workers live elsewhere). The
first process shows the one progress display (the helpers' counters arrive through their
heartbeats), forwards SIGINT/SIGTERM, waits for the helpers, and writes the one manifest and
summary. A helper whose parent dies stops by itself: it never outlives the lock it worked under.

The settings (credentials included) reach a helper on its stdin, never on its command line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

import anyio
from anyio.abc import Process

from downloader.core.busy import SAMPLE_SECONDS, BusyWatch, helper_pays
from downloader.core.events import Elsewhere, Notice, Sink
from downloader.core.settings import Settings
from downloader.state.base import StateStore

HELPER_MODULE = "downloader.helper"  # a helper's entry point (it imports the job; this module must not)
MAX_DEFAULT_WORKERS = 8
KEYS_PER_WORKER = 5000  # below this much work, another process costs more than it brings


def default_workers(settings: Settings, unsettled: int) -> int:
    """--workers, else the number of cores (capped), but never more processes than the work needs (by
    default, helpers up to this count are started only while the first process is CPU-bound)."""
    if settings.workers is not None:
        return settings.workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_DEFAULT_WORKERS, unsettled // KEYS_PER_WORKER))


class Helpers:
    """The helper workers of a run: started at once (--workers N) or one by one (`start`)."""

    def __init__(self, out: str, settings: Settings, run_id: int) -> None:
        self.procs: list[Process] = []
        self._payload = json.dumps({"out": out, "run_id": run_id, "settings": asdict(settings),
                                    "use_uvloop": _running_on_uvloop()}).encode()

    async def start(self, count: int = 1) -> None:
        """Start `count` more helpers (the settings reach each on its stdin)."""
        for _ in range(count):
            proc = await anyio.open_process([sys.executable, "-m", HELPER_MODULE], stdin=subprocess.PIPE,
                                            stdout=None, stderr=None)
            self.procs.append(proc)
            assert proc.stdin is not None
            await proc.stdin.send(self._payload)
            await proc.stdin.aclose()


@asynccontextmanager
async def helpers(count: int, out: str, settings: Settings, run_id: int) -> AsyncIterator[Helpers]:
    """Start `count` helper workers for run `run_id` (more may be started later); on exit, wait for them."""
    group = Helpers(out, settings, run_id)
    try:
        await group.start(count)
        yield group
    finally:
        with anyio.CancelScope(shield=True):
            for proc in group.procs:
                await proc.wait()


@dataclass(frozen=True)
class Outlook:
    """What this process knows of its own pace, for `help_when_busy`: the images it has done so far,
    the images/s the account's API rate allows (None: no answer yet), and images per patent."""

    done: Callable[[], int]
    ceiling: Callable[[], float | None]
    images_per_patent: Callable[[], float]


async def help_when_busy(group: Helpers, most: int, store: StateStore, run_id: int, events: Sink,
                         interrupted: Callable[[], bool], outlook: Outlook,
                         demand: Callable[[], float] | None = None) -> None:
    """Start a helper each time this process's event loop is CPU-bound for a while (core/busy.py) and a
    helper would pay (the API rate leaves room for it, enough work is left), up to `most`, unless the run
    was `interrupted()`. `demand`: the loop thread's cumulative demand (a test gives its own)."""
    watch, demand = BusyWatch(), demand or loop_demand
    watch.sample(time.monotonic(), demand(), outlook.done())  # the window may begin as the run does
    while len(group.procs) < most:
        await anyio.sleep(SAMPLE_SECONDS)
        now = time.monotonic()
        if not watch.sample(now, demand(), outlook.done()) or interrupted():
            continue
        watch.settle(now)
        counts = await store.counts(run_id)
        keys_left = counts.get("pending", 0) + counts.get("resolved", 0)
        processes = 1 + len(group.procs)
        if keys_left < KEYS_PER_WORKER or not helper_pays(watch.rate, processes, outlook.ceiling(),
                                                          keys_left * outlook.images_per_patent()):
            continue
        await group.start()
        events(Notice("workers", f"this process is CPU-bound: helper {len(group.procs)} started"))


async def relay_progress(store: StateStore, run_id: int, me: str, events: Sink) -> None:
    """Turn the other workers' heartbeat counters into progress events for the one display (worker `me`'s)."""
    seen: dict[str, dict[str, int]] = {}
    while True:
        await anyio.sleep(0.5)
        for w in await store.workers(run_id):
            if w.worker == me:
                continue
            now = {k: int(v) for k, v in (w.info.get("counters") or {}).items()}
            before = seen.get(w.worker, {})
            delta = {k: now.get(k, 0) - before.get(k, 0) for k in ("asked", "images", "bytes", "charged")}
            seen[w.worker] = now
            if any(delta.values()):
                events(Elsewhere(delta["asked"], delta["images"], delta["bytes"], delta["charged"]))


def loop_demand() -> float:
    """Seconds the calling thread (the event loop's) ran or was runnable, so far (see core/busy.py);
    where the kernel does not say, its CPU time alone."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            ran, waited = f.read().split()[:2]
        return (int(ran) + int(waited)) / 1e9
    except (OSError, ValueError):
        return time.thread_time()


def stop_helpers(procs: list[Process], asked: set[int]) -> None:
    """Ask every helper still running to stop as after SIGTERM (state kept), once each (`asked` holds the
    pids already asked): a Ctrl-C in a terminal reaches the helpers too, and one stop is enough."""
    for proc in procs:
        if proc.returncode is None and proc.pid not in asked:
            asked.add(proc.pid)
            _signal(proc, signal.SIGTERM)


def kill_helpers(procs: list[Process]) -> None:
    """End every helper still running at once (this process is ending at once: a second stop signal)."""
    for proc in procs:
        if proc.returncode is None:
            _signal(proc, signal.SIGKILL)


def _signal(proc: Process, signum: signal.Signals) -> None:
    try:
        proc.send_signal(signum)
    except ProcessLookupError:
        pass


def _running_on_uvloop() -> bool:
    """Whether this process runs its job on uvloop: its helpers then do too, so every process agrees."""
    import asyncio

    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")

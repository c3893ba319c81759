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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict

import anyio
from anyio.abc import Process

from downloader.core.settings import Settings

HELPER_MODULE = "downloader.helper"  # a helper's entry point (it imports the job; this module must not)
MAX_DEFAULT_WORKERS = 8
KEYS_PER_WORKER = 5000  # below this much work, another process costs more than it brings


def default_workers(settings: Settings, unsettled: int) -> int:
    """--workers, else the number of cores (capped), but never more processes than the work needs."""
    if settings.workers is not None:
        return settings.workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_DEFAULT_WORKERS, unsettled // KEYS_PER_WORKER))


@asynccontextmanager
async def helpers(count: int, out: str, settings: Settings, run_id: int) -> AsyncIterator[list[Process]]:
    """Start `count` helper workers for run `run_id`; on exit, wait for them (forwarding a stop)."""
    procs: list[Process] = []
    payload = json.dumps({"out": out, "run_id": run_id, "settings": asdict(settings),
                          "use_uvloop": _running_on_uvloop()}).encode()
    try:
        for _ in range(count):
            proc = await anyio.open_process([sys.executable, "-m", HELPER_MODULE], stdin=subprocess.PIPE,
                                            stdout=None, stderr=None)
            procs.append(proc)
            assert proc.stdin is not None
            await proc.stdin.send(payload)
            await proc.stdin.aclose()
        yield procs
    finally:
        with anyio.CancelScope(shield=True):
            for proc in procs:
                await proc.wait()


def stop_helpers(procs: list[Process]) -> None:
    """Ask every helper still running to stop as after SIGTERM (state kept)."""
    for proc in procs:
        if proc.returncode is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass


def _running_on_uvloop() -> bool:
    """Whether this process runs its job on uvloop: its helpers then do too, so every process agrees."""
    import asyncio

    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")

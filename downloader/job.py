"""The library's face: `Job(out, settings)` with `run`, `plan`, `status` and `report`, and their sync twins.

    job = Job("out/", Settings(client_id=..., client_secret=...))
    summary = await job.run(["patents.csv"])      # frozen Summary: exit_code, stop_reason, by_status, charged …
    plan = await job.plan(["patents.csv"])        # frozen Plan: api_calls, charged_at_most … (no request at all)
    status = await job.status()                   # frozen JobStatus: by_status, live workers, recent runs
    page = await job.report()                     # the path (or s3:// URL) of report.html

A fatal condition (exit 3), a budget or time cap (4) and an interrupt (130) are results: the
Summary says which (`stop_reason`, `exit_code`) and carries the error with its hint (`error`).
Only what the caller must handle raises, each exception with its `exit_code`: UsageError (2),
InputError (2), LockedError (2, another run holds the folder), StateError (2).

The library leaves the process alone unless asked: it installs no signal handler
(`handle_signals=True` asks for SIGINT/SIGTERM to stop the run cleanly, main thread only), does not
raise the open-file limit (`raise_open_files=True` asks; otherwise the concurrencies are fitted to
the limit there is), and sets no event-loop policy. The CLI asks for both.

The sync twins (`run_job`, `plan_job`, `job_status`, `report_job`) run the same coroutine on a
fresh event loop: in the calling thread when it has none (a script, a worker thread), else in a
worker thread of their own (a notebook cell, whose loop is running). PATENT_IMAGES_LOOP picks the
loop they make (asyncio, uvloop, or auto: uvloop when installed); it is never made the default.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import anyio

from downloader import machine
from downloader.core.errors import UsageError
from downloader.core.events import Notice, Sink
from downloader.core.outcome import Summary
from downloader.core.settings import Settings
from downloader.dryrun import Plan, make_plan
from downloader.execution import Execution
from downloader.inputs.reader import check_inputs
from downloader.jobstatus import JobStatus, read_status
from downloader.report.html import write_report

__all__ = ["LOOP_ENV", "Job", "job_status", "plan_job", "report_job", "run_job"]

LOOP_ENV = "PATENT_IMAGES_LOOP"  # asyncio | uvloop | auto (default): which event loop the sync twins make
T = TypeVar("T")
Inputs = Iterable[str | Path]


class Job:
    """One job folder (or bucket, `s3://bucket/prefix`) and the settings to run it with.

    `events` hears what the run does (frozen records of `core/events.py`: progress, notices); it
    must be quick and must not raise.
    """

    def __init__(self, out: str | Path, settings: Settings | None = None, *, events: Sink | None = None,
                 handle_signals: bool = False, raise_open_files: bool = False) -> None:
        self.out = str(out)
        self.settings = settings or Settings()
        self.events: Sink = events or _ignore
        self.handle_signals = handle_signals
        self.raise_open_files = raise_open_files

    async def run(self, inputs: Inputs) -> Summary:
        """Download what the inputs name and write the manifest; the frozen Summary of how it went.

        Raises UsageError (bad settings, no credentials, `dry_run=True`: a dry run never bills, call
        `plan`), InputError, LockedError or StateError; every other way a run ends is in the Summary.
        """
        paths = list(inputs)
        if self.settings.dry_run:
            raise UsageError("Settings(dry_run=True) would bill if run: call plan() for the dry run")
        if self.handle_signals and threading.current_thread() is not threading.main_thread():
            raise UsageError("handle_signals=True needs the main thread (signal handlers live there)")
        await anyio.to_thread.run_sync(check_inputs, [str(p) for p in paths], self.settings.column)
        self.settings.require_credentials()
        settings = fit_open_files(self.settings, self.events, raise_limit=self.raise_open_files)
        return await Execution(paths, self.out, settings, self.events, self.handle_signals).run()

    async def plan(self, inputs: Inputs) -> Plan:
        """The dry run: what `run` would ask and cost. No request of any kind; creates no folder or file."""
        paths = list(inputs)
        await anyio.to_thread.run_sync(check_inputs, [str(p) for p in paths], self.settings.column)
        return await make_plan(paths, self.out, self.settings)

    async def status(self, runs: int = 10) -> JobStatus:
        """Counts by status, the live workers and the last `runs` runs, from the state store (no call)."""
        return await read_status(self.out, self.settings.state_url, runs)

    async def report(self, to: str | Path | None = None) -> str:
        """Write report.html (into `to`, default beside the manifest); returns its path or s3:// URL."""
        return await write_report(self.out, Path(to) if to is not None else None,
                                  state_url=self.settings.state_url, endpoint_url=self.settings.s3_endpoint_url)


def run_job(inputs: Inputs, out: str | Path, settings: Settings | None = None, *, events: Sink | None = None,
            handle_signals: bool = False, raise_open_files: bool = False) -> Summary:
    """`Job(out, settings).run(inputs)` from synchronous code (a script, a thread, a notebook cell)."""
    job = Job(out, settings, events=events, handle_signals=handle_signals, raise_open_files=raise_open_files)
    paths = list(inputs)
    return call_sync(lambda: job.run(paths))


def plan_job(inputs: Inputs, out: str | Path, settings: Settings | None = None) -> Plan:
    """`Job(out, settings).plan(inputs)` from synchronous code."""
    paths = list(inputs)
    return call_sync(lambda: Job(out, settings).plan(paths))


def job_status(out: str | Path, settings: Settings | None = None, *, runs: int = 10) -> JobStatus:
    """`Job(out, settings).status(runs)` from synchronous code."""
    return call_sync(lambda: Job(out, settings).status(runs))


def report_job(out: str | Path, to: str | Path | None = None, settings: Settings | None = None) -> str:
    """`Job(out, settings).report(to)` from synchronous code."""
    return call_sync(lambda: Job(out, settings).report(to))


def call_sync(call: Callable[[], Awaitable[T]]) -> T:
    """Run `call()` to completion on a fresh event loop: here when this thread runs none, else in a
    worker thread (a running loop cannot be re-entered). Exceptions come back as they are."""
    use_uvloop = _has_uvloop()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(call, backend_options={"use_uvloop": use_uvloop})
    with ThreadPoolExecutor(1, thread_name_prefix="patent-images") as pool:
        return pool.submit(lambda: anyio.run(call, backend_options={"use_uvloop": use_uvloop})).result()


def fit_open_files(settings: Settings, events: Sink, *, raise_limit: bool) -> Settings:
    """Fit the concurrencies to the open-file limit, lowering them (said once, as a "limits" notice) when
    it is too low. With `raise_limit` the soft limit is first raised to the hard one (process-wide: the
    CLI asks for it; helper workers inherit it)."""
    limit = machine.raise_open_file_limit() if raise_limit else machine.open_file_limit()
    fit = machine.fit_concurrency(limit, machine.open_files(), settings.api_concurrency,
                                  settings.download_concurrency)
    if not fit.capped:
        return settings
    events(Notice("limits", f"the open-file limit (ulimit -n) is {limit}, too low for --download-concurrency "
                            f"{settings.download_concurrency} and --api-concurrency {settings.api_concurrency}: "
                            f"using {fit.downloads} and {fit.api}; raise the limit to go faster"))
    return replace(settings, api_concurrency=fit.api, download_concurrency=fit.downloads)


def _has_uvloop(environ: Mapping[str, str] = os.environ) -> bool:
    """uvloop (the optional `fast` extra) when installed: a quicker event loop, same behaviour.

    PATENT_IMAGES_LOOP=asyncio|uvloop forces one (the benchmark measures both); `auto` or unset
    takes uvloop when it is installed. Either way only the loop of this job is made, no policy is set.
    """
    wanted = environ.get(LOOP_ENV, "").strip().lower() or "auto"
    if wanted not in ("auto", "asyncio", "uvloop"):
        raise UsageError(f"{LOOP_ENV}={wanted}: expected asyncio, uvloop or auto")
    installed = importlib.util.find_spec("uvloop") is not None
    if wanted == "uvloop" and not installed:
        raise UsageError(f"{LOOP_ENV}=uvloop, but uvloop is not installed (pip install 'patent-images[fast]')")
    return installed if wanted == "auto" else wanted == "uvloop"


def _ignore(event: object) -> None:
    """The events hook when the caller gives none."""

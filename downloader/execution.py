"""One run of a job from inputs to manifest: what `Job.run` does, and the life of a --workers helper.

Order of work: open the sink (folder or bucket) and the state store (embedded SQLite, locked to
this run; or shared PostgreSQL, coordinated by leases) → read inputs into the store (streaming,
de-duplicated there, idempotent across workers) → the pipeline → manifest, summary and run history,
written whatever happened (fatal condition, cap, signal), so the next run continues from them. With
several workers the one that settles the last key writes them. When the output has no room (or
went away), each of these is tried and what could not be written is named on the OutputError; the
state store stays consistent either way.

A fatal condition, a cap or an interrupt is the run's result (the frozen Summary says which and
carries the error), not an exception. The one stop watcher (`stops.watch_stops`) hears SIGINT/SIGTERM
only when the caller asked for signal handling, and in a helper the death of its parent.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import anyio
from anyio.abc import Process

from downloader import machine
from downloader.core.errors import (
    DownloaderError,
    FatalError,
    InputError,
    Interrupted,
    OutputError,
    UsageError,
    cause_of,
)
from downloader.core.events import Notice, Sink
from downloader.core.model import Counters, PatentKey, Reject
from downloader.core.outcome import StopReason, Summary, exit_code
from downloader.core.settings import Settings
from downloader.inputs.reader import read_inputs
from downloader.outputs import RejectsWriter, write_manifest, write_summary
from downloader.pipeline import Pipeline, PipelineConfig, PipelineResult
from downloader.sinks import open_sink
from downloader.sinks.base import ImageSink
from downloader.state import is_shared, open_store, state_folder
from downloader.state.base import StateStore
from downloader.state.lock import DirLock
from downloader.state.sqlite import STATE_FILE
from downloader.stops import watch_stops
from downloader.wiring import http_clients
from downloader.workers import (
    Outlook,
    default_workers,
    help_when_busy,
    helpers,
    kill_helpers,
    relay_progress,
    stop_helpers,
)

_INTERRUPTED = "interrupted; state and manifest are saved, run the same command to continue"


@asynccontextmanager
async def opened(out: str | Path, settings: Settings, *,
                 lock: bool = True) -> AsyncIterator[tuple[ImageSink, StateStore]]:
    """The sink and the store of a job (and, for the embedded store, the folder's lock)."""
    sink = open_sink(out, endpoint_url=settings.s3_endpoint_url, durable=settings.durable, io=settings.io)
    folder = state_folder(out)
    guard: AbstractContextManager[Any] = nullcontext()
    owner = lock and not is_shared(settings.state_url)  # this process holds the folder's lock and its reserves
    if owner:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(machine.out_refusal(folder, err)) from None
        guard = DirLock(folder)
    with guard:
        await sink.prepare(clean=owner)
        store = await open_store(settings.state_url, folder / STATE_FILE, durable=settings.durable,
                                 patience=settings.state_patience)
        reserve = None
        try:
            if owner and store.location != ":memory:":
                # Room to commit billed answers when the disk under the state fills up (see machine.py).
                reserve = await anyio.to_thread.run_sync(machine.hold_reserve_beside, store.location)
            yield sink, store
        finally:
            with anyio.CancelScope(shield=True):
                await store.close()
                await sink.close()
                if reserve is not None:
                    machine.drop_reserve(reserve)


@dataclass
class Execution:
    """One worker's run of a job; `run()` for the process the caller started, `help()` for a helper."""

    inputs: list[str | Path]
    out: str
    settings: Settings
    events: Sink
    handle_signals: bool
    counters: Counters = field(default_factory=Counters)  # the network side's tallies (API calls, bytes …)
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    helpers: list[Process] = field(default_factory=list)
    _asked: set[int] = field(default_factory=set)  # helpers asked to stop (their pids)
    deadline: float | None = None  # time.monotonic() after which nothing new is claimed (--max-runtime)
    interrupted: bool = False  # a signal (or, for a helper, its parent's death) asked the run to stop
    fatal: FatalError | None = None  # the condition that stopped the run, from the pipeline or while finishing
    result: PipelineResult = PipelineResult()  # how this worker's pipeline ended (its counts so far)
    _pipeline: Pipeline | None = None
    _error: DownloaderError | None = None

    async def run(self) -> Summary:
        """The whole run; its Summary whatever stopped it. Raises only what the caller must handle."""
        try:
            async with opened(self.out, self.settings) as (sink, store), anyio.create_task_group() as tg:
                if self.handle_signals:
                    tg.start_soon(watch_stops, self._interrupt, True, None, self._stop_now)
                summary = await self._run(sink, store)
                tg.cancel_scope.cancel()
            return summary
        except BaseExceptionGroup as group:  # task groups wrap what they raise: the cause decides the exit
            raise cause_of(group) from None

    async def help(self, run_id: int, parent: int) -> None:
        """The helper's whole life: work on the parent's run, then say it finished."""
        try:
            async with opened(self.out, self.settings, lock=False) as (sink, store):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch_stops, self._interrupt, True, parent)  # a second stop: the parent kills it
                    try:
                        await self._execute(sink, store, run_id)
                    finally:
                        with anyio.CancelScope(shield=True):
                            await store.heartbeat(run_id, self.worker, self._info(self.result),
                                                  self.settings.lease, finished=True)
                        tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise cause_of(group) from None
        if self.fatal is not None:
            raise self.fatal  # the helper's exit status says so (the halt record told the others)

    async def _run(self, sink: ImageSink, store: StateStore) -> Summary:
        started = time.time()
        await check_drawings_kind(store, self.settings.drawings)
        shared = is_shared(self.settings.state_url)
        if not shared:  # this process holds the folder lock: claims left by a killed run are stale
            await store.release(None)
        run_id = await store.start_run(_options(self.inputs, self.settings), join=shared)
        # At once, so that a worker starting a moment later joins this run instead of starting another.
        await store.heartbeat(run_id, self.worker, self._info(self.result), self.settings.lease)
        self.deadline = None if self.settings.max_runtime is None else time.monotonic() + self.settings.max_runtime
        draft: dict[str, Any] = {"run_id": run_id, "manifest": sink.url_of("manifest.csv")}
        try:
            await self._ingest(sink, store, run_id, draft)
            counts = await store.counts(run_id)
            draft["nothing_to_do"] = not (counts.get("pending", 0) or counts.get("resolved", 0))
            if not draft["nothing_to_do"]:
                await self._work(sink, store, run_id, counts)
        except FatalError as err:
            self.fatal = self.fatal or err
        except Interrupted:  # a stop while the inputs were read: the rows read so far are in the store
            self.interrupted = True
        finally:
            with anyio.CancelScope(shield=True):
                summary = await self._finish(sink, store, draft, started, shared)
        return summary

    async def _work(self, sink: ImageSink, store: StateStore, run_id: int, counts: Mapping[str, int]) -> None:
        """The pipeline of this process, with the helper processes --workers asks for beside it."""
        most = default_workers(self.settings, counts.get("pending", 0) + counts.get("resolved", 0)) - 1
        first = most if self.settings.workers is not None else 0  # by default, helpers only when busy
        async with helpers(first, self.out, self.settings, run_id) as group:
            self.helpers = procs = group.procs
            async with anyio.create_task_group() as tg:
                if most:
                    tg.start_soon(relay_progress, store, run_id, self.worker, self.events)
                if most > first:
                    tg.start_soon(help_when_busy, group, most, store, run_id, self.events, lambda: self.interrupted,
                                  Outlook(lambda: self.counters.images, self._api_ceiling, self._images_per_patent))
                try:
                    await self._execute(sink, store, run_id, counts)  # counted above: not again
                finally:
                    if self.interrupted or self.result.stopped or self.fatal is not None:
                        stop_helpers(procs, self._asked)
                    tg.cancel_scope.cancel()

    async def _ingest(self, sink: ImageSink, store: StateStore, run_id: int, draft: dict[str, Any]) -> None:
        rejects = RejectsWriter(sink)
        try:
            counts = await store.ingest(_keys(read_inputs(self.inputs, self.settings.column), rejects, self), run_id)
        except BaseException:
            rejects.drop()
            raise
        await rejects.publish()
        draft.update(new=counts.new, known=counts.known, duplicates=counts.duplicates, rejected=rejects.count,
                     unique=counts.new + counts.known)
        if counts.new + counts.known == 0:
            raise InputError(f"no patent numbers or ids in the inputs ({rejects.count} rows rejected, "
                             f"see {sink.url_of('rejects.csv')})")
        recheck = self.settings.recheck_after_days
        await store.reopen(run_id, retry_failed=self.settings.retry_failed,
                           recheck_before=None if recheck is None else time.time() - recheck * 86400)

    async def _execute(self, sink: ImageSink, store: StateStore, run_id: int,
                       counts: Mapping[str, int] | None = None) -> None:
        s = self.settings
        batch = 1 if s.drawings == "all" else s.batch_size  # P042 asks one patent a call
        config = PipelineConfig(batch_size=batch, api_concurrency=s.api_in_flight,
                                download_concurrency=s.download_concurrency, expiry_margin=s.expiry_margin,
                                lease=s.lease, deadline=self.deadline)
        async with http_clients(s, sink, store, run_id, self.counters, self.events, self.worker) as (client, fetcher):
            self._pipeline = Pipeline(store=store, run_id=run_id, worker=self.worker, resolver=client,
                                      fetcher=fetcher, events=self.events, config=config, info=self._info,
                                      planned=counts, url_clock=fetcher.clock)
            if self.interrupted:  # a stop that came while the clients were being made
                self._pipeline.interrupt("stopping, state is being saved")
            try:
                self.result = await self._pipeline.run()
            finally:
                self._pipeline = None
        self.fatal = self.fatal or self.result.fatal

    def _api_ceiling(self) -> float | None:
        """Images/s the account's API rate allows this job (--rate × the URLs an answer brings); None before any."""
        per = self._pipeline.lookahead.images_per_answer if self._pipeline is not None else None
        return None if per is None else self.settings.rate * per

    def _images_per_patent(self) -> float:
        return self._pipeline.lookahead.images_per_patent if self._pipeline is not None else 1.0

    def _info(self, so_far: PipelineResult) -> dict[str, Any]:
        """What this worker's heartbeat carries: where it runs, and its counts (the other workers' progress)."""
        return {"host": socket.gethostname(), "pid": os.getpid(), "counters": asdict(self._counts(so_far))}

    def _counts(self, so_far: PipelineResult) -> Counters:
        """The network side's tallies with the pipeline's own (keys answered, results paid again)."""
        return replace(self.counters, asked=so_far.asked, recharged=so_far.recharged, fenced=so_far.fenced)

    async def _finish(self, sink: ImageSink, store: StateStore, draft: dict[str, Any], started: float,
                      shared: bool) -> Summary:
        """Manifest, summary.json and the run's history row: written on every way out, as far as there is room."""
        run_id, unsaved = draft["run_id"], list[str]()
        with self._saving("the worker record", []):
            await store.heartbeat(run_id, self.worker, self._info(self.result), self.settings.lease, finished=True)
        draft["by_status"] = await store.counts(run_id)
        if self.settings.drawings == "all":
            draft["drawings"] = await store.drawing_counts(run_id)
        workers = await store.workers(run_id)
        complete = not any(draft["by_status"].get(s, 0) for s in ("pending", "resolved"))
        superseded = shared and await _superseded(store, run_id)
        if superseded:  # the newer run took this one's keys over: its manifest is the one to keep
            self.events(Notice("superseded", f"a newer run started while this worker was cut off: it writes "
                                             f"the manifest and summary.json, run {run_id} only records its end"))
        elif shared and complete and not await store.update_shared(f"finished:{run_id}", _first(self.worker)):
            return self._summary(draft, started, workers)  # another worker writes them
        summary = self._summary(draft, started, workers)
        if summary.nothing_to_do and not superseded and await _manifest_current(store, self.inputs, summary):
            draft["manifest_rows"] = summary.unique  # same inputs, all settled before: the manifest stands
        elif not superseded:
            with self._saving("manifest.csv, manifest.jsonl", unsaved):
                draft["manifest_rows"] = await write_manifest(sink, store.rows(run_id),
                                                              drawings=self.settings.drawings == "all")
        summary = self._summary(draft, started, workers)
        if not (summary.nothing_to_do or superseded):  # summary.json keeps the last real run's figures
            with self._saving("summary.json", unsaved):
                await write_summary(sink, summary.to_dict())
        summary = self._summary(draft, started, workers)
        with self._saving("the run history", []):
            await store.finish_run(run_id, summary.exit_code, summary.to_dict())
        if isinstance(self.fatal, OutputError):
            self.fatal.unsaved = unsaved
        return self._summary(draft, started, workers)

    def _summary(self, draft: Mapping[str, Any], started: float, workers: Iterable[Any]) -> Summary:
        """The frozen Summary of the run as it stands: its figures summed over its workers, why it stopped."""
        totals = self._counts(self.result)
        others = [w for w in workers if w.worker != self.worker]
        for w in others:
            for name, value in (w.info.get("counters") or {}).items():
                if hasattr(totals, name):
                    setattr(totals, name, getattr(totals, name) + int(value))
        seconds = round(time.time() - started, 3)
        stop = self.stop_reason()
        return Summary(**draft, **asdict(totals), workers=1 + len(others), seconds=seconds,
                       images_per_second=round(totals.images / seconds, 1) if seconds else 0.0,
                       peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                       stop_reason=stop, fatal=str(self.fatal) if self.fatal is not None else None,
                       exit_code=exit_code(stop, draft.get("by_status", {})), error=self._stop_error(stop))

    def stop_reason(self) -> StopReason | None:
        """Why the run stopped early: its fatal condition, the pipeline's reason, or an interrupt it never saw."""
        if self.fatal is not None:
            return StopReason.FATAL
        return self.result.stop_reason or (StopReason.INTERRUPTED if self.interrupted else None)

    def _stop_error(self, stop: StopReason | None) -> DownloaderError | None:
        if self.fatal is not None:
            return self.fatal
        if stop == StopReason.INTERRUPTED:
            self._error = self._error or Interrupted(_INTERRUPTED)
            return self._error
        return None

    @contextmanager
    def _saving(self, what: str, unsaved: list[str]) -> Iterator[None]:
        """Write one output on the way out; when the output or the store cannot take it, note it and go on."""
        try:
            yield
        except FatalError as err:
            self.fatal = self.fatal or err
            unsaved.append(what)
            self.events(Notice("unsaved", f"{what} not written: {err}"))

    def _stop_now(self, why: str) -> NoReturn:
        """A second stop signal: end this process now, as kill -9 would (the store keeps what it committed,
        the next run continues), its helpers too (SIGKILL: a Ctrl-C in a terminal reaches them as well, so
        they take no second signal to mean "now" themselves). Only with signal handling, which the caller
        asked for."""
        kill_helpers(self.helpers)
        message = (f"{why} again: stopping at once, without waiting to save state or write the manifest (as "
                   "kill -9 would). The state store keeps what it committed: run the same command to continue; "
                   "answers that were in flight may be asked for, and paid, again")
        self.events(Notice("at_once", message))  # for the log file: the line below is the terminal's
        sys.stderr.write(f"patent-images: {message}\n")
        sys.stderr.flush()
        os._exit(130)

    def _interrupt(self, why: str) -> None:
        if not self.interrupted and self.result.stop_reason is None:
            self.events(Notice("interrupted", f"{why}: stopping, state is being saved"))
        self.interrupted = True
        stop_helpers(self.helpers, self._asked)
        if self._pipeline is not None:
            self._pipeline.interrupt(f"{why}: stopping, state is being saved")


async def check_drawings_kind(store: StateStore, wanted: str) -> None:
    """One job holds one kind of drawings: asking the other kind of it is a usage error (exit 2)."""
    held = await store.drawings_kind(wanted)
    if held is not None and held != wanted:
        raise UsageError(f"{store.location} holds a --drawings {held} job; --drawings {wanted} needs its own "
                         "--out (or --state)")


def run_helper(out: str, settings: Settings, run_id: int, *, parent: int, use_uvloop: bool = False) -> None:
    """A helper worker of --workers N: claim and work for run `run_id` until nothing is left."""
    execution = Execution([], out, settings, lambda event: None, handle_signals=True)
    anyio.run(execution.help, run_id, parent, backend_options={"use_uvloop": use_uvloop})


async def _manifest_current(store: StateStore, inputs: Sequence[str | Path], summary: Summary) -> bool:
    """Whether the manifest in place is the one this run would write: the last finished run had the same
    inputs, and left the store's keys (and drawings) in the states they are in now. Keys it left pending that
    settled later without a run writing the manifest after them (a fleet worker's) make it out of date; so
    does a run over another list in between, even one with nothing to do (it wrote that list's manifest)."""
    if summary.new or summary.by_status.get("failed"):
        return False
    for run in await store.runs(10):
        if run.id == summary.run_id or run.exit_code is None:  # this one, or one that never wrote a manifest
            continue
        return (run.options.get("inputs") == [str(p) for p in inputs]
                and run.summary.get("manifest_rows") == summary.unique
                and run.summary.get("by_status") == summary.by_status
                and run.summary.get("drawings") == summary.drawings)
    return False


async def _superseded(store: StateStore, run_id: int) -> bool:
    """Whether a newer run started on this shared store: one whose worker came after every lease of this
    run had lapsed (this worker was cut off). Its rows now belong to that run, so this run's manifest
    would be empty or partial and must not replace the newer run's."""
    newest = await store.runs(1)
    return bool(newest) and newest[0].id > run_id


def _first(worker: str) -> Any:
    """The change that elects `worker` as the one that writes a finished run's files (first come)."""
    def change(old: dict[str, Any] | None, now: float) -> tuple[dict[str, Any], bool]:
        if old:
            return old, old.get("worker") == worker
        return {"worker": worker, "at": now}, True
    return change


def _keys(rows: Iterable[PatentKey | Reject], rejects: RejectsWriter, execution: Execution) -> Iterator[PatentKey]:
    for row in rows:
        if execution.interrupted:
            raise Interrupted("interrupted while reading the inputs; state is saved")
        if isinstance(row, Reject):
            rejects.add(row)
        else:
            yield row


def _options(inputs: Sequence[str | Path], settings: Settings) -> dict[str, Any]:
    """The options worth keeping in the run history (never credentials)."""
    return {"inputs": [str(p) for p in inputs], "rate": settings.rate, "batch_size": settings.batch_size,
            "api_concurrency": settings.api_concurrency, "download_concurrency": settings.download_concurrency,
            "retry_failed": settings.retry_failed, "max_charged": settings.max_charged,
            "max_runtime": settings.max_runtime, "recheck_after_days": settings.recheck_after_days,
            "drawings": settings.drawings,
            "api_base": settings.api_base}

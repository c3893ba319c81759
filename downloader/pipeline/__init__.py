"""The one task group: planner → API workers → download workers → recorder, plus a lease keeper.

Theory of operation. The planner *claims* work from the state store under this worker's lease:
still-valid URLs first (downloaded without any API call), else one batch of keys of one kind for
the API. Several workers (processes, machines) claim from the same store and never get the same
key; a dead worker's keys come back after its lease, and its resolved URLs are downloaded, not
paid for again. When nothing is free the planner waits while keys are held under live leases
(its own in-flight work included) or deferred keys are due soon, and stops when none are left.

Stages are joined by bounded memory object streams, so a slow stage holds back the ones before
it: the planner cannot claim ahead of the API workers, and the API workers cannot resolve URLs
faster than images are downloaded (the download workers: `downloads`). Every result goes through
one recorder task (`recorder`), which writes it to the state store in batched transactions; the
API workers hand resolved URLs to the recorder before they hand them to the downloaders, so
"resolved" is always written before "downloaded", and a billed answer is committed at once; an
API worker asks again only after that commit (the recorder acknowledges it), so a kill -9 leaves
at most one billed, unrecorded answer per API worker for the others to pay again.

Seams: the pipeline sees a `Resolver` and a `Fetcher` (`core/ports.py`), an event hook, a state
store and a frozen `PipelineConfig`; it never knows which client is behind them. `run()` returns a
frozen `PipelineResult` (why it stopped, what it counted; both in `control`): nothing is shared with
the caller while it runs except through `interrupt()`, which the caller's one stop watcher calls.

Stops: a fatal condition cancels the workers at once and is written to the shared halt record, so
every worker of the run stops; a budget or time cap stops claiming but lets paid-for downloads
finish; an interrupt stops claiming, cancels downloads, and gives in-flight API calls a few seconds to
land (they are billed). In every case the recorder drains what it was sent and commits it, and
the worker's remaining claims are released.

An output that cannot take more (full, read-only, gone: an OutputError from the fetcher, the
recorder or the lease keeper) stops claiming and asking at once and cancels the downloads (their
temp files go, their keys keep their URLs for the next run), but gives API calls in flight a few
seconds to land: they are billed, and the recorder keeps what it could not commit to try again
at the end, when the space reserve was given back.

Cost. The planner claims no more for the API than this worker's downloads can use before the URLs
expire (`core/lookahead.py`: measured download rate × remaining URL life), so short-lived URLs
shrink batches instead of being paid for twice. A key asked again because its URL expired unused
(the claim says which) counts as `recharged`. Problems are counted by kind (one line per kind at
the end; each patent's detail goes to the log), and transport failures defer keys, never fail
them; when the API or the CDN fails every call for a while the run stops (OutageError).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from downloader.core import halt
from downloader.core.errors import FatalError, OutputError
from downloader.core.events import BatchDone, Notice, Planned, Problem, Sink
from downloader.core.expiry import margin, parse_url_signed_at
from downloader.core.lookahead import Lookahead
from downloader.core.model import (
    Batch,
    Deferred,
    Downloaded,
    Failed,
    ImageJob,
    Listed,
    NoImage,
    PatentKey,
    Resolved,
)
from downloader.core.outcome import StopReason
from downloader.core.ports import Fetched, Fetcher, Resolver
from downloader.core.problems import Problems
from downloader.core.urlclock import UrlClock
from downloader.pipeline.control import Control, PipelineConfig, PipelineResult
from downloader.pipeline.downloads import Downloads
from downloader.pipeline.recorder import RESULTS_BUFFER, Record, Recorder, record_answer, tick
from downloader.pipeline.streams import send_quietly
from downloader.state.base import Held, StateStore

_SIGNAL_GRACE = 3.0
_IDLE_POLL = 0.5  # how often an idle planner looks again while others hold keys
_SOON = 60.0  # deferred keys due within this many seconds are waited for


@dataclass(kw_only=True)
class Pipeline:
    """One worker's stages; `run()` works until nothing is left for anyone, or a stop.

    `info(so_far)` gives what the heartbeat carries for this worker (the pipeline passes its own
    counts so far); `planned` the run's counts by status when the caller just read them.
    """

    store: StateStore
    run_id: int
    worker: str
    resolver: Resolver
    fetcher: Fetcher
    events: Sink
    config: PipelineConfig = PipelineConfig()
    info: Callable[[PipelineResult], Mapping[str, Any]] = lambda so_far: {}
    planned: Mapping[str, int] | None = None
    url_clock: UrlClock = field(default_factory=UrlClock)  # what the CDN has shown: the fetcher's, shared
    _asked: int = field(default=0, init=False)
    _recharged: int = field(default=0, init=False)
    _fenced: int = field(default=0, init=False)
    _control: Control = field(default_factory=Control, init=False)
    _recorder: Recorder = field(init=False)
    _outer: TaskGroup | None = field(default=None, init=False)
    _moved: anyio.Event = field(default_factory=anyio.Event, init=False)  # downloads or answers made room
    _repeats: set[PatentKey] = field(default_factory=set, init=False)  # claimed keys whose URL expired unused
    _problems: Problems = field(default_factory=Problems, init=False)
    lookahead: Lookahead = field(init=False)

    def __post_init__(self) -> None:
        self.lookahead = Lookahead(self.config.batch_size, self.config.download_concurrency, clock=self.url_clock)
        self._control.deadline = self.config.deadline
        self._recorder = Recorder(self.store, self._fatal, self._note_fenced)

    async def run(self) -> PipelineResult:
        """Work until done or stopped; state is recorded either way, and the result says how it ended."""
        try:
            async with anyio.create_task_group() as outer:
                self._outer = outer
                outer.start_soon(self._keep_lease)
                await self._announce()
                await self._work()
                outer.cancel_scope.cancel()
        finally:
            self._outer = None
            for line in self._problems.lines():
                self.events(Notice("problems", line))
            with anyio.CancelScope(shield=True):
                try:
                    await self.store.release(self.worker)
                except FatalError as err:  # the store's disk is full or gone: the leases lapse instead
                    self._control.fatal = self._control.fatal or err
        return self.so_far()

    def so_far(self) -> PipelineResult:
        """How the pipeline stands now (its final result once `run` returned)."""
        c = self._control
        return PipelineResult(c.stop_reason, c.fatal, self._asked, self._recharged, self._fenced)

    def interrupt(self, message: str) -> None:
        """Stop as after SIGINT: claim nothing more, cancel the downloads now, and give API calls in
        flight a few seconds to land (they are billed) before cancelling the rest."""
        self._stop(StopReason.INTERRUPTED, message)
        self._control.cancel(downloads_only=True)
        if self._outer is not None:
            self._outer.start_soon(self._cancel_later)

    async def _announce(self) -> None:
        counts = self.planned if self.planned is not None else await self.store.counts(self.run_id)
        self.events(Planned(counts.get("pending", 0), counts.get("resolved", 0), 1))

    async def _work(self) -> None:
        to_results, results = anyio.create_memory_object_stream[Record](RESULTS_BUFFER)
        self._control.cancel_all = anyio.CancelScope()
        self._control.cancel_downloads = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._recorder.run, results)
            with self._control.cancel_all:
                async with to_results, anyio.create_task_group() as workers:
                    self._start_workers(workers, to_results)

    def _start_workers(self, tg: TaskGroup, to_results: MemoryObjectSendStream[Record]) -> None:
        to_api, api_in = anyio.create_memory_object_stream[Batch](self.config.api_concurrency)
        to_downloads, downloads_in = anyio.create_memory_object_stream[ImageJob](2 * self.config.download_concurrency)
        tg.start_soon(self._plan, to_api, to_downloads.clone())
        for _ in range(self.config.api_concurrency):
            tg.start_soon(self._api_worker, api_in.clone(), to_downloads.clone(), to_results.clone())
        ticking = anyio.CancelScope()
        tg.start_soon(tick, to_results.clone(), ticking)
        assert self._control.cancel_downloads is not None
        downloads = Downloads(store=self.store, fetcher=self.fetcher, lookahead=self.lookahead, events=self.events,
                              concurrency=self.config.download_concurrency, fatal=self._fatal,
                              fenced=self._note_fenced, moved=self._move, done=self._downloaded)
        tg.start_soon(downloads.run, downloads_in, to_results.clone(), self._control.cancel_downloads, ticking)
        api_in.close()
        to_downloads.close()

    async def _plan(self, to_api: MemoryObjectSendStream[Batch],
                    to_downloads: MemoryObjectSendStream[ImageJob]) -> None:
        """Claim work until nothing is left for anyone: known good URLs to the downloaders, the rest to the API."""
        async with to_api, to_downloads:
            while not self._control.stopping():
                recorded = self._recorder.recorded
                limit = self.lookahead.allowed()
                if limit == 0:  # the downloads cannot use more URLs before they would expire
                    self._moved = anyio.Event()  # made here, not per image: only this wait needs a fresh one
                    with anyio.move_on_after(_IDLE_POLL):
                        await self._moved.wait()
                    continue
                # URLs not yet expired are claimed for download; the fetcher applies each one's margin.
                claim = await self.store.claim(self.run_id, self.worker, limit=limit, usable_after=time.time(),
                                               lease=self.config.lease)
                self._reusing(claim.to_download)
                for job in claim.to_download:
                    await send_quietly(to_downloads, job)
                if claim.to_ask is not None:
                    self.lookahead.claimed(len(claim.to_ask.keys))
                    self._repeats.update(PatentKey(claim.to_ask.kind, k) for k in claim.repeats)
                    await to_api.send(claim.to_ask)
                if not claim.empty:
                    continue
                due_soon = claim.next_retry is not None and claim.next_retry - time.time() < _SOON
                if claim.waiting == 0 and not due_soon:
                    return
                with anyio.move_on_after(_IDLE_POLL):
                    await recorded.wait()

    async def _api_worker(self, batches_in: MemoryObjectReceiveStream[Batch],
                          to_downloads: MemoryObjectSendStream[ImageJob],
                          to_results: MemoryObjectSendStream[Record]) -> None:
        committed: anyio.Event | None = None  # the previous answer's commit: asked again only after it
        async with batches_in, to_downloads, to_results:
            async for batch in batches_in:
                if committed is not None:
                    await committed.wait()
                if self._control.stopping():
                    self.lookahead.dropped(len(batch.keys))
                    continue  # drain without asking: these keys stay pending (released at the end)
                try:
                    result = await self.resolver.resolve(batch)
                except FatalError as err:
                    await self._fatal(err)
                    return
                if result.stops:
                    self._stop(StopReason.BUDGET, "the --max-charged budget is spent; the next run continues")
                committed = await record_answer(to_results, (Held(o, batch.lease) for o in result.outcomes))
                # A drawing downloaded before and listed again keeps its file: recorded (its new figure), not fetched.
                images = [o for o in result.outcomes if isinstance(o, Resolved) and o.key not in batch.stored]
                self._answered(batch, result.outcomes, images, len(result.unasked))
                answered = sum(not isinstance(o, Deferred) and type(o.key) is PatentKey for o in result.outcomes)
                self._asked += answered
                self._recharged += result.recharged  # an answer lost on the way and asked again
                self.events(BatchDone(answered, len(images), result.charged))
                for o in result.outcomes:
                    if isinstance(o, Failed | Deferred):
                        self._problem(o)
                    else:
                        self._problems.settled(o.key.value)
                for o in images:
                    await send_quietly(to_downloads, ImageJob(o.key, o.pn, o.num, o.url, o.expires_at, o.signed_at,
                                                              batch.lease))

    def _answered(self, batch: Batch, outcomes: Sequence[object], images: Sequence[Resolved], unasked: int) -> None:
        """Count recharges, and tell the lookahead how much URL life and how many images the answer gave."""
        if self._repeats:  # nearly always empty: a key per answer would be built and hashed for nothing
            for o in outcomes:
                if isinstance(o, Resolved | Listed | NoImage) and o.key in self._repeats:
                    self._recharged += 1
            self._repeats.difference_update(PatentKey(batch.kind, k) for k in batch.keys)
        now = time.time()
        first = min(images, key=lambda o: o.expires_at, default=None)
        life = None if first is None else first.expires_at - now
        kept = None if first is None else margin(first.expires_at, first.signed_at, now, self.config.expiry_margin)
        age = 0.0 if first is None or first.signed_at is None else max(0.0, now - first.signed_at)
        self.lookahead.dropped(unasked)
        self.lookahead.answered(len(batch.keys) - unasked, len(images), life, kept, age)
        self._move()

    def _reusing(self, jobs: Sequence[ImageJob]) -> None:
        """Known URLs go to the downloads; the first tells the lookahead how long URLs live, if it can."""
        self.lookahead.reused(len(jobs))
        if jobs and not self.lookahead.lives:
            signed = parse_url_signed_at(jobs[0].url)
            if signed is not None:
                life = jobs[0].expires_at - signed
                kept = margin(jobs[0].expires_at, signed, signed, self.config.expiry_margin)
                self.lookahead.lifetime_seen(life, kept)

    def _problem(self, outcome: Failed | Deferred) -> None:
        """Count a patent's problem by kind (stderr gets one line per kind); the log keeps the detail."""
        kind = "failed" if isinstance(outcome, Failed) else "deferred"
        self._problems.add(outcome.key.value, kind, outcome.error)
        self.events(Problem(outcome.key.value, kind, outcome.error))

    def _move(self) -> None:
        self._moved.set()

    def _downloaded(self, result: Fetched) -> None:
        """Count a download's problem by kind, or the patent as settled once its image is in place."""
        if isinstance(result, Failed | Deferred):
            self._problem(result)
        elif isinstance(result, Downloaded):
            self._problems.settled(result.key.value)

    async def _keep_lease(self) -> None:
        """Renew this worker's claims and heartbeat; stop when another worker halted the run."""
        # Often enough that a slow round trip or two never lets a claim outlive what the lease book trusts
        # (three quarters of the lease from when the renewal was sent): a lapsed claim is paid for again.
        every = max(0.2, min(self.config.lease / 6, 5.0))
        while True:
            try:
                await self.store.renew(self.worker, self.config.lease)  # first: a late renewal may lose claims
                await self.store.heartbeat(self.run_id, self.worker, self.info(self.so_far()), self.config.lease)
            except FatalError as err:  # the store's disk is full or gone
                await self._fatal(err)
                return
            record = await self.store.read_shared(halt.RECORD)
            stopped = halt.error_from(record, self.run_id)
            if stopped is not None and self._control.fatal is None:
                await self._fatal(stopped)
            outage = self.resolver.outage_error() or self.fetcher.outage_error()
            if outage is not None and self._control.fatal is None:  # every call failed for a while
                await self._fatal(outage)
            await anyio.sleep(every)

    async def _fatal(self, err: FatalError) -> None:
        first = self._control.fatal is None
        if first:
            self._control.fatal = err
            self.events(Notice("fatal", f"stopping: {err}"))
        # Cancel before the halt record's await: downloads still running would fill the room just freed.
        if not isinstance(err, OutputError):
            self._control.cancel()
        elif first:  # downloads cannot be stored; billed API answers in flight still can
            self._control.cancel(downloads_only=True)
            if self._outer is not None:
                self._outer.start_soon(self._cancel_later)
        if first:
            with anyio.CancelScope(shield=True):
                try:
                    await self.store.update_shared(halt.RECORD, halt.record(err, self.run_id, self.worker))
                except FatalError:
                    pass  # the store's own disk is the full one: this worker stops all the same

    def _note_fenced(self, keys: Sequence[str]) -> None:
        """Results refused, or images not put in place: this worker's lease lapsed (it was cut off from the
        store, or paused) and the keys may be another worker's now. It goes on with what it can claim."""
        self._fenced += len(keys)
        for key in keys:
            self._problems.add(key, "fenced", "LeaseLostError: this worker's lease lapsed (cut off from the "
                                              "state store, or paused)")

    def _stop(self, reason: StopReason, message: str) -> None:
        if self._control.stop_reason is None:
            self._control.stop_reason = reason
            self.events(Notice(reason.value, message))

    async def _cancel_later(self) -> None:
        await anyio.sleep(_SIGNAL_GRACE)
        self._control.cancel()


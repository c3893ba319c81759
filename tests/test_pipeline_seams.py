"""The pipeline driven in memory through its seams: a fake Resolver and a fake Fetcher, no network.

The state store is the real embedded one in tmp_path; the fakes are this file's own. Each test
asserts on the pipeline's frozen result, the store's counts and what the fakes were asked.
"""

from __future__ import annotations

import time

import anyio
import pytest

from downloader.core.errors import FatalError, OutageError
from downloader.core.events import BatchDone, ImageDone, Notice, Recording
from downloader.core.model import (
    Batch,
    Deferred,
    Downloaded,
    ImageJob,
    Kind,
    NoImage,
    NotFound,
    PatentKey,
    Resolved,
)
from downloader.core.outcome import StopReason
from downloader.core.ports import BatchResult, Fetched, Fetcher, Resolver
from downloader.pipeline import Pipeline, PipelineConfig, PipelineResult
from downloader.state.sqlite import SqliteStore


class FakeResolver:
    """Numbers ending in 7 are unknown, in 3 have no drawing, the rest resolve to a URL an hour long."""

    def __init__(self, fatal_on_call: int | None = None, budget: int | None = None) -> None:
        self.batches: list[Batch] = []
        self.fatal_on_call = fatal_on_call
        self.budget = budget

    async def resolve(self, batch: Batch) -> BatchResult:
        self.batches.append(batch)
        if self.fatal_on_call == len(self.batches):
            raise FatalError("the account's balance is spent")
        granted = len(batch.keys) if self.budget is None else min(self.budget, len(batch.keys))
        if self.budget is not None:
            self.budget -= granted
        outcomes = [self._answer(PatentKey(batch.kind, k)) for k in batch.keys[:granted]]
        unasked = tuple(PatentKey(batch.kind, k) for k in batch.keys[granted:])
        return BatchResult(outcomes, unasked, charged=granted)

    @staticmethod
    def _answer(key: PatentKey) -> Resolved | NoImage | NotFound:
        digits = key.value.removesuffix("B2")
        if digits.endswith("7"):
            return NotFound(key)
        if digits.endswith("3"):
            return NoImage(key, key.value, "id-" + key.value)
        now = time.time()
        return Resolved(key, key.value, "id-" + key.value, "1", f"mem://cdn/{key.value}.png", now + 3600, now)

    def outage_error(self) -> OutageError | None:
        return None


class FakeFetcher:
    """Stores nothing: says each image was downloaded (after `delay` seconds), or defers one key."""

    def __init__(self, delay: float = 0.0, defer: str | None = None) -> None:
        self.jobs: list[ImageJob] = []
        self.delay = delay
        self.defer = defer

    async def fetch(self, job: ImageJob) -> Fetched:
        self.jobs.append(job)
        await anyio.sleep(self.delay)
        if job.key.value == self.defer:
            return Deferred(job.key, "TransientDownloadError: the CDN reset the connection", time.time() + 3600)
        return Downloaded(job.key, f"images/{job.pn}.png", 100, "0" * 64)

    def outage_error(self) -> OutageError | None:
        return None


def _keys(n: int) -> list[PatentKey]:
    return [PatentKey(Kind.NUMBER, f"US{1000 + i}B2") for i in range(n)]


async def _drive(tmp_path, resolver: Resolver, fetcher: Fetcher, keys: list[PatentKey],
                 **config: object) -> tuple[PipelineResult, dict[str, int], Recording]:
    store = await SqliteStore.open(tmp_path / "state.sqlite")
    try:
        run_id = await store.start_run({})
        await store.ingest(keys, run_id)
        events = Recording()
        pipeline = Pipeline(store=store, run_id=run_id, worker="w1", resolver=resolver, fetcher=fetcher,
                            events=events, config=PipelineConfig(**config))
        result = await pipeline.run()
        return result, await store.counts(run_id), events
    finally:
        await store.close()


async def test_every_key_settles_with_one_call_per_batch_and_one_fetch_per_image(tmp_path):
    """250 keys at 100 a batch: 3 calls, each resolved key fetched once, nothing left unsettled."""
    resolver, fetcher = FakeResolver(), FakeFetcher()
    result, counts, events = await _drive(tmp_path, resolver, fetcher, _keys(250))
    assert result == PipelineResult(stop_reason=None, fatal=None, asked=250, recharged=0)
    assert sorted(len(b.keys) for b in resolver.batches) == [50, 100, 100]
    assert counts == {"downloaded": 200, "no_image": 25, "not_found": 25}
    assert len(fetcher.jobs) == len({j.key for j in fetcher.jobs}) == 200
    assert sum(e.asked for e in events.events if isinstance(e, BatchDone)) == 250
    assert sum(isinstance(e, ImageDone) and e.status == "downloaded" for e in events.events) == 200


async def test_a_fatal_answer_is_the_result_and_what_was_billed_before_it_is_kept(tmp_path):
    """The second call raises FatalError: the result carries it (no raise), the first batch stays settled."""
    resolver = FakeResolver(fatal_on_call=2)
    result, counts, events = await _drive(tmp_path, resolver, FakeFetcher(), _keys(300), api_concurrency=1)
    assert isinstance(result.fatal, FatalError) and result.stopped
    assert "balance is spent" in str(result.fatal)
    assert counts["downloaded"] + counts.get("no_image", 0) + counts.get("not_found", 0) == 100
    assert counts["pending"] == 200 and result.asked == 100
    assert any(isinstance(e, Notice) and e.kind == "fatal" for e in events.events)


async def test_a_spent_budget_stops_claiming_with_the_budget_reason(tmp_path):
    """The resolver grants 120 results: the rest stay pending and the result says budget."""
    result, counts, _ = await _drive(tmp_path, FakeResolver(budget=120), FakeFetcher(), _keys(300),
                                     api_concurrency=1)
    assert result.stop_reason == StopReason.BUDGET and result.fatal is None
    assert result.asked == 120 and counts["pending"] == 180


async def test_a_deferred_download_keeps_its_url_and_is_not_failed(tmp_path):
    """The fetcher defers one key: it stays resolved (tried later), never failed."""
    result, counts, _ = await _drive(tmp_path, FakeResolver(), FakeFetcher(defer="US1000B2"), _keys(10))
    assert result.stop_reason is None and result.fatal is None
    assert counts == {"downloaded": 7, "no_image": 1, "not_found": 1, "resolved": 1}


async def test_an_interrupt_stops_claiming_and_cancels_slow_downloads_with_state_kept(tmp_path):
    """Downloads take 30 s each; interrupt() after the first answer: the run ends within seconds,
    the answered keys keep their URLs (resolved) and nothing is failed."""
    store = await SqliteStore.open(tmp_path / "state.sqlite")
    run_id = await store.start_run({})
    await store.ingest(_keys(500), run_id)
    resolver = FakeResolver()
    pipeline = Pipeline(store=store, run_id=run_id, worker="w1", resolver=resolver,
                        fetcher=FakeFetcher(delay=30.0), events=Recording(),
                        config=PipelineConfig(api_concurrency=1, download_concurrency=4))
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        async def interrupt_after_first_answer() -> None:
            while not resolver.batches:
                await anyio.sleep(0.01)
            pipeline.interrupt("SIGINT")
        tg.start_soon(interrupt_after_first_answer)
        result = await pipeline.run()
    counts = await store.counts(run_id)
    await store.close()
    assert time.monotonic() - started < 10
    assert result.stop_reason == StopReason.INTERRUPTED and result.fatal is None
    assert "failed" not in counts and counts.get("downloaded", 0) == 0
    answered = [k for b in resolver.batches for k in b.keys]
    with_url = [k for k in answered if k.removesuffix("B2")[-1] not in "37"]
    assert counts["resolved"] == len(with_url) and counts["pending"] == 500 - len(answered)


async def test_a_deadline_in_the_past_claims_nothing(tmp_path):
    """--max-runtime already reached: no call, every key still pending, the result says runtime."""
    resolver = FakeResolver()
    result, counts, _ = await _drive(tmp_path, resolver, FakeFetcher(), _keys(20), deadline=time.monotonic() - 1)
    assert result.stop_reason == StopReason.RUNTIME and not resolver.batches
    assert counts == {"pending": 20}


@pytest.mark.parametrize("broken", ["resolver", "fetcher"])
async def test_an_outage_seen_on_the_timer_stops_the_run(tmp_path, broken):
    """A seam that reports an outage stops the run with that OutageError, even with nothing in flight."""
    class Down:
        def outage_error(self) -> OutageError:
            return OutageError(f"the {broken} failed every call")

    resolver, fetcher = FakeResolver(), FakeFetcher(delay=0.05)
    if broken == "resolver":
        resolver.outage_error = Down().outage_error
    else:
        fetcher.outage_error = Down().outage_error
    result, _, _ = await _drive(tmp_path, resolver, fetcher, _keys(2000), api_concurrency=1, lease=1.0)
    assert isinstance(result.fatal, OutageError) and broken in str(result.fatal)


class SlowCommits(SqliteStore):
    """The embedded store, each transaction `delay` seconds slower; `committed` holds the keys written."""

    delay = 0.1

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.committed: set[str] = set()

    async def apply(self, events):
        await anyio.sleep(self.delay)
        refused = await super().apply(events)
        self.committed.update(e.event.key.value for e in events)
        return refused


class CountingUnrecorded(FakeResolver):
    """Notes, at each call, how many keys answered by earlier calls the store has not committed yet."""

    def __init__(self, store: SlowCommits) -> None:
        super().__init__()
        self.store = store
        self.unrecorded: list[int] = []

    async def resolve(self, batch: Batch) -> BatchResult:
        answered = {k for b in self.batches for k in b.keys}
        self.unrecorded.append(len(answered - self.store.committed))
        return await super().resolve(batch)


@pytest.mark.parametrize("api_concurrency", [1, 3])
async def test_an_api_worker_asks_again_only_after_its_last_answer_is_committed(tmp_path, api_concurrency):
    """Commits take 0.1 s: no call goes out while the asking worker's previous answer is uncommitted, so
    at most one billed answer per other API worker is unrecorded at any call (what a kill -9 would lose)."""
    store = await SlowCommits.open(tmp_path / "state.sqlite")
    run_id = await store.start_run({})
    await store.ingest(_keys(1000), run_id)
    resolver = CountingUnrecorded(store)
    pipeline = Pipeline(store=store, run_id=run_id, worker="w1", resolver=resolver, fetcher=FakeFetcher(),
                        events=Recording(), config=PipelineConfig(api_concurrency=api_concurrency))
    result = await pipeline.run()
    counts = await store.counts(run_id)
    await store.close()
    assert result.asked == 1000 and counts == {"downloaded": 800, "no_image": 100, "not_found": 100}
    assert len(resolver.unrecorded) == 10 and resolver.unrecorded[0] == 0
    assert max(resolver.unrecorded) <= (api_concurrency - 1) * 100, resolver.unrecorded

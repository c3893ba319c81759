"""One job from inputs to manifest: `run_job(inputs, out, settings)` is what the CLI calls.

Order of work: check inputs and DIR → lock DIR → read inputs into the state store (streaming,
de-duplicated there) → the async pipeline → manifest, summary and run history, written whatever
happened (fatal answer, cap, signal), so the next run continues from them.
"""

from __future__ import annotations

import importlib.util
import resource
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from downloader.core.budget import Budget
from downloader.core.errors import FatalApiError, InputError, Interrupted, UsageError
from downloader.core.events import Notice, Sink
from downloader.core.model import Counters, PatentKey, Reject, Status
from downloader.core.settings import Settings
from downloader.inputs.reader import check_inputs, read_inputs
from downloader.net import retrying
from downloader.net.api import PatsnapClient
from downloader.net.auth import OAuthToken, StaticToken, TokenProvider
from downloader.net.cdn import ImageFetcher
from downloader.net.ratelimit import AdaptiveRate
from downloader.outputs import RejectsWriter, remove_stale_temps, write_manifest, write_summary
from downloader.pipeline import Control, Pipeline
from downloader.sinks.local import LocalStore
from downloader.state.lock import DirLock
from downloader.state.sqlite import STATE_FILE, StateStore


def run_job(inputs: Sequence[str | Path], out: str | Path, settings: Settings, *,
            sink: Sink | None = None, handle_signals: bool = False) -> dict[str, Any]:
    """Run the whole job; returns the summary (its `exit_code` is 0, 1 or 4).

    Raises UsageError/InputError/LockedError (exit 2), FatalApiError (3) or Interrupted (130),
    in the last two cases after state, manifest and summary are written.
    """
    sink = sink or (lambda event: None)
    folder = _prepare_folder(Path(out), [str(p) for p in inputs], settings.column)
    if settings.dry_run:
        from downloader.dryrun import dry_run
        return dry_run(inputs, folder, settings)
    settings.require_credentials()
    with DirLock(folder):
        remove_stale_temps(folder)
        store = StateStore(folder / STATE_FILE, durable=settings.durable)
        try:
            return _run_locked(inputs, folder, settings, store, sink, handle_signals)
        finally:
            store.close()


def _prepare_folder(folder: Path, inputs: list[str], column: str | None) -> Path:
    check_inputs(inputs, column)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"cannot write to --out {folder}: {err.strerror or err}") from None
    return folder


def _run_locked(inputs: Sequence[str | Path], folder: Path, settings: Settings, store: StateStore,
                sink: Sink, handle_signals: bool) -> dict[str, Any]:
    started = time.time()
    run_id = store.start_run(_options(inputs, settings))
    counters = Counters()
    control = Control()
    summary: dict[str, Any] = {}
    exit_code = 1  # an unforeseen error, unless one of the cases below says otherwise
    try:
        ingest, rejected = _ingest(inputs, folder, settings, store, run_id)
        summary.update(ingest)
        if summary["unique"] == 0:
            raise InputError(f"no patent numbers or ids in the inputs ({rejected} rows rejected, "
                             f"see {folder / 'rejects.csv'})")
        recheck = settings.recheck_after_days
        store.reopen(run_id, retry_failed=settings.retry_failed,
                     recheck_before=None if recheck is None else time.time() - recheck * 86400)
        control = anyio.run(_execute, settings, store, run_id, folder, counters, sink, handle_signals,
                            backend_options={"use_uvloop": _has_uvloop()})
        exit_code = _exit_code(control, store.counts(run_id))
    except InputError:
        exit_code = 2
        raise
    except FatalApiError:
        exit_code = 3
        raise
    except KeyboardInterrupt:
        exit_code = 130
        raise Interrupted("interrupted while reading the inputs; state is saved") from None
    finally:
        summary = _finish(summary, folder, store, run_id, counters, control, started, exit_code,
                          settings.durable)
    if control.stop_reason == "interrupted":
        raise Interrupted("interrupted; state and manifest are saved, run the same command to continue")
    return summary


def _ingest(inputs: Sequence[str | Path], folder: Path, settings: Settings, store: StateStore,
            run_id: int) -> tuple[dict[str, Any], int]:
    rejects = RejectsWriter(folder)
    ok = False
    try:
        counts = store.ingest(_keys(read_inputs(inputs, settings.column), rejects), run_id)
        ok = True
    finally:
        rejects.close(ok)
    return {"new": counts.new, "known": counts.known, "duplicates": counts.duplicates,
            "rejected": rejects.count, "unique": counts.new + counts.known}, rejects.count


def _keys(rows: Iterable[PatentKey | Reject], rejects: RejectsWriter) -> Iterator[PatentKey]:
    for row in rows:
        if isinstance(row, Reject):
            rejects.add(row)
        else:
            yield row


async def _execute(settings: Settings, store: StateStore, run_id: int, folder: Path, counters: Counters,
                   sink: Sink, handle_signals: bool) -> Control:
    """Open the two HTTP sessions and run the pipeline; returns how it stopped."""
    control = Control(deadline=None if settings.max_runtime is None
                      else time.monotonic() + settings.max_runtime)
    files = LocalStore(folder, durable=settings.durable)
    files.prepare()
    async with _session(settings.api_concurrency + 2, settings.api_timeout, settings.api_timeout) as api_http, \
            _session(settings.download_concurrency, settings.download_timeout, settings.stall_timeout) as cdn:
        tokens = _tokens(settings, api_http, counters, sink)
        rate = AdaptiveRate(settings.rate)

        def policy() -> retrying.RetryPolicy:
            return retrying.RetryPolicy(settings.retries, settings.backoff_initial, settings.backoff_max,
                                        settings.throttle_budget, on_retry=lambda err: _count_retry(counters))

        client = PatsnapClient(api_http, settings.api_base, settings.effective_api_key or "", tokens, rate,
                               policy, counters, Budget(settings.max_charged),
                               log=lambda kind, fields: sink(Notice(kind, _fields_text(fields))))
        fetcher = ImageFetcher(cdn, files, counters, policy=policy, expiry_margin=settings.expiry_margin,
                               max_bytes=settings.max_image_bytes)
        pipeline = Pipeline(store, run_id, client, fetcher, sink, settings.batch_size,
                            settings.api_concurrency, settings.download_concurrency,
                            settings.expiry_margin, control)
        try:
            await pipeline.run(handle_signals)
        finally:
            counters.token_refreshes = tokens.refreshes
            files.finish()
    return control


def _session(limit: int, total: float, stall: float) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=total, sock_connect=30, sock_read=stall)
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300)
    # Proxies from the environment are applied per request by proxies.proxy_for (cached).
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


def _tokens(settings: Settings, session: aiohttp.ClientSession, counters: Counters, sink: Sink) -> TokenProvider:
    if settings.client_id and settings.client_secret:
        return OAuthToken(session, settings.api_base, settings.client_id, settings.client_secret,
                          on_refresh=lambda: sink(Notice("token", "token refreshed")))
    assert settings.token is not None
    return StaticToken(settings.token)


def _has_uvloop() -> bool:
    """uvloop (the optional `fast` extra) when installed: a quicker event loop, same behaviour."""
    return importlib.util.find_spec("uvloop") is not None


def _fields_text(fields: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in fields.items())


def _count_retry(counters: Counters) -> None:
    counters.retries += 1


def _exit_code(control: Control, counts: dict[str, int]) -> int:
    if control.fatal is not None:
        return 3
    if control.stop_reason == "interrupted":
        return 130
    if control.stop_reason in ("budget", "runtime"):
        return 4
    unsettled = sum(counts.get(s, 0) for s in (Status.FAILED, Status.PENDING, Status.RESOLVED))
    return 1 if unsettled else 0


def _finish(summary: dict[str, Any], folder: Path, store: StateStore, run_id: int, counters: Counters,
            control: Control, started: float, exit_code: int, durable: bool) -> dict[str, Any]:
    """Manifest, summary.json and the run's history row: written on every way out."""
    seconds = time.time() - started
    counts = store.counts(run_id)
    summary = {**summary, "run_id": run_id, "exit_code": exit_code, "seconds": round(seconds, 3),
               "by_status": counts, "stop_reason": control.stop_reason,
               **asdict(counters),
               "images_per_second": round(counters.images / seconds, 1) if seconds else 0.0,
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if control.fatal is not None:
        summary["fatal"] = str(control.fatal)
    summary["manifest_rows"] = write_manifest(folder, store.iter_manifest(run_id), durable)
    write_summary(folder, summary, durable)
    store.finish_run(run_id, exit_code, summary)
    return summary


def _options(inputs: Sequence[str | Path], settings: Settings) -> dict[str, Any]:
    """The options worth keeping in the run history (never credentials)."""
    return {"inputs": [str(p) for p in inputs], "rate": settings.rate, "batch_size": settings.batch_size,
            "api_concurrency": settings.api_concurrency, "download_concurrency": settings.download_concurrency,
            "retry_failed": settings.retry_failed, "max_charged": settings.max_charged,
            "max_runtime": settings.max_runtime, "recheck_after_days": settings.recheck_after_days,
            "api_base": settings.api_base}

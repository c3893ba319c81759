"""`run --dry-run`: what a run would cost, from the inputs and the state store, calling nothing."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio

from downloader.core.errors import UsageError
from downloader.core.model import PatentKey, Reject
from downloader.core.settings import Settings
from downloader.inputs.reader import check_inputs, read_inputs
from downloader.sinks import is_remote
from downloader.state import is_shared, open_store
from downloader.state.sqlite import STATE_FILE


def dry_run(inputs: Sequence[str | Path], out: str | Path, settings: Settings) -> dict[str, Any]:
    """Counts of a planned run; writes nothing, not even a state file where there was none.

    A dry run beside a live run is fine: the plan only writes a temporary table.
    """
    check_inputs([str(p) for p in inputs], settings.column)
    return anyio.run(_dry_run, list(inputs), out, settings)


async def _dry_run(inputs: list[str | Path], out: str | Path, settings: Settings) -> dict[str, Any]:
    from downloader.job import state_folder

    path = state_folder(out) / STATE_FILE
    if not is_remote(out):
        path.parent.mkdir(parents=True, exist_ok=True)  # the folder the real run would use; nothing in it
    embedded_missing = not is_shared(settings.state_url) and not settings.state_url and not path.exists()
    store = await open_store(":memory:" if embedded_missing else settings.state_url, path)
    rejected = [0]
    try:
        held = await store.drawings_kind(None)
        if held is not None and held != settings.drawings:
            raise UsageError(f"{store.location} holds a --drawings {held} job; --drawings {settings.drawings} "
                             "needs its own --out (or --state)")
        drawings = await store.drawing_counts() if settings.drawings == "all" else {}
        recheck = settings.recheck_after_days
        plan = await store.plan(_keys(read_inputs(inputs, settings.column), rejected),
                                usable_after=time.time() + settings.expiry_margin,
                                retry_failed=settings.retry_failed,
                                recheck_before=None if recheck is None else time.time() - recheck * 86400)
    finally:
        await store.close()
    to_ask = plan["to_ask_numbers"] + plan["to_ask_ids"]
    if settings.drawings == "all":  # P042: a call per patent at least, and a page more per 100 drawings
        calls = to_ask
        plan["reusable_urls"] = drawings.get("resolved", 0)
    else:
        size = settings.batch_size
        calls = math.ceil(plan["to_ask_numbers"] / size) + math.ceil(plan["to_ask_ids"] / size)
    return {"dry_run": True, **plan, "rejected": rejected[0], "to_ask": to_ask, "api_calls": calls,
            "drawings": settings.drawings, "seconds_at_rate": round(calls / settings.rate, 1),
            "max_charged": to_ask if settings.max_charged is None else min(to_ask, settings.max_charged),
            "exit_code": 0}


def _keys(rows: Iterable[PatentKey | Reject], rejected: list[int]) -> Iterator[PatentKey]:
    for row in rows:
        if isinstance(row, Reject):
            rejected[0] += 1
        else:
            yield row


def describe_plan(plan: dict[str, Any]) -> str:
    """The dry run as a few lines for a person ("1 call", "2 calls", thousands separated)."""
    to_ask, new = plan["to_ask"], plan["new"]
    hours = plan.get("seconds_at_rate", 0.0) / 3600
    head = [
        f"inputs: {_n(plan['rows'], 'key')} read, {plan['unique']:,} unique, {_n(plan['duplicates'], 'duplicate')}; "
        f"{_n(plan['rejected'], 'row')} rejected",
        f"already settled: {plan['settled']:,}   new: {new:,}   failed earlier (kept): {plan['failed_kept']:,}",
    ]
    if plan.get("drawings") == "all":
        return "\n".join([
            *head,
            f"would ask P042 for every drawing of {_n(to_ask, 'patent')}: at least {_n(plan['api_calls'], 'call')} "
            f"(one per patent, a page more per 100 drawings), at least {hours:.1f} h at --rate",
            f"would download {_n(plan['reusable_urls'], 'drawing')} from still-valid URLs without any call",
        ])
    return "\n".join([
        *head,
        f"would ask the API for {_n(to_ask, 'key')} ({new:,} new, {to_ask - new:,} left from earlier runs) in "
        f"{_n(plan['api_calls'], 'call')} (at most {_n(plan['max_charged'], 'charged result')}), "
        f"about {hours:.1f} h at --rate",
        f"would download {_n(plan['reusable_urls'], 'image')} from still-valid URLs without any call",
    ])


def _n(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"

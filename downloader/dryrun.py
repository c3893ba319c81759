"""What a run would do and cost (`Job.plan`, `run --dry-run`), from the inputs and the state store alone.

No request of any kind goes out, and nothing is created: not the --out folder, not a state file
where there was none (the plan is then made in an in-memory store). Beside a live run the plan
still answers: it only writes a TEMP table of its own connection.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from downloader.core.errors import UsageError
from downloader.core.model import PatentKey, Reject
from downloader.core.settings import Settings
from downloader.inputs.reader import read_inputs
from downloader.state import is_shared, open_store, state_folder
from downloader.state.sqlite import STATE_FILE


@dataclass(frozen=True, slots=True)
class Plan:
    """A dry run's figures: what the inputs hold, what the store already settled, what a run would ask.

    `api_calls` is exact for the keys to ask at the current --batch-size; `charged_at_most` bounds the
    charged results (by --max-charged too); `seconds_at_rate` is the least time those calls take at
    --rate. `reusable_urls` images would be downloaded from still-valid URLs without any call.
    """

    rows: int
    unique: int
    duplicates: int
    new: int
    settled: int
    failed_kept: int
    reusable_urls: int
    to_ask_numbers: int
    to_ask_ids: int
    rejected: int
    to_ask: int
    api_calls: int
    charged_at_most: int
    seconds_at_rate: float
    drawings: str = "abstract"  # abstract (P021) or all (P042, a call per patent at least)
    dry_run: bool = True
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (what `run --dry-run --json` prints)."""
        return asdict(self)


async def make_plan(inputs: Sequence[str | Path], out: str | Path, settings: Settings) -> Plan:
    """The plan of a run of `inputs` into `out` (the inputs were checked by the caller)."""
    path = state_folder(out) / STATE_FILE
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
        counts = await store.plan(_keys(read_inputs(inputs, settings.column), rejected),
                                  usable_after=time.time() + settings.expiry_margin,
                                  retry_failed=settings.retry_failed,
                                  recheck_before=None if recheck is None else time.time() - recheck * 86400)
    finally:
        await store.close()
    return plan_from(counts, drawings, rejected[0], settings)


def plan_from(counts: dict[str, int], drawings: dict[str, int], rejected: int, settings: Settings) -> Plan:
    """The plan from the store's counts (pure): calls per kind of key (P042: a call per patent at least, a
    page more per 100 drawings), the charge bound, the time those calls take at --rate."""
    to_ask = counts["to_ask_numbers"] + counts["to_ask_ids"]
    reusable = counts["reusable_urls"]
    if settings.drawings == "all":
        calls, reusable = to_ask, drawings.get("resolved", 0)
    else:
        size = settings.batch_size
        calls = math.ceil(counts["to_ask_numbers"] / size) + math.ceil(counts["to_ask_ids"] / size)
    charged = to_ask if settings.max_charged is None else min(to_ask, settings.max_charged)
    return Plan(rows=counts["rows"], unique=counts["unique"], duplicates=counts["duplicates"], new=counts["new"],
                settled=counts["settled"], failed_kept=counts["failed_kept"], reusable_urls=reusable,
                to_ask_numbers=counts["to_ask_numbers"], to_ask_ids=counts["to_ask_ids"], rejected=rejected,
                to_ask=to_ask, api_calls=calls, charged_at_most=charged,
                seconds_at_rate=round(calls / settings.rate, 1), drawings=settings.drawings)


def _keys(rows: Iterable[PatentKey | Reject], rejected: list[int]) -> Iterator[PatentKey]:
    for row in rows:
        if isinstance(row, Reject):
            rejected[0] += 1
        else:
            yield row


def describe_plan(plan: Plan) -> str:
    """The dry run as a few lines for a person ("1 call", "2 calls", thousands separated)."""
    to_ask, new = plan.to_ask, plan.new
    hours = plan.seconds_at_rate / 3600
    head = [
        f"inputs: {_n(plan.rows, 'key')} read, {plan.unique:,} unique, {_n(plan.duplicates, 'duplicate')}; "
        f"{_n(plan.rejected, 'row')} rejected",
        f"already settled: {plan.settled:,}   new: {new:,}   failed earlier (kept): {plan.failed_kept:,}",
    ]
    if plan.drawings == "all":
        return "\n".join([
            *head,
            f"would ask P042 for every drawing of {_n(to_ask, 'patent')}: at least {_n(plan.api_calls, 'call')} "
            f"(one per patent, a page more per 100 drawings), at least {hours:.1f} h at --rate",
            f"would download {_n(plan.reusable_urls, 'drawing')} from still-valid URLs without any call",
        ])
    return "\n".join([
        *head,
        f"would ask the API for {_n(to_ask, 'key')} ({new:,} new, {to_ask - new:,} left from earlier runs) in "
        f"{_n(plan.api_calls, 'call')} (at most {_n(plan.charged_at_most, 'charged result')}), "
        f"about {hours:.1f} h at --rate",
        f"would download {_n(plan.reusable_urls, 'image')} from still-valid URLs without any call",
    ])


def _n(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"

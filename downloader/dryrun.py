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
        recheck = settings.recheck_after_days
        counts = await store.plan(_keys(read_inputs(inputs, settings.column), rejected),
                                  usable_after=time.time() + settings.expiry_margin,
                                  retry_failed=settings.retry_failed,
                                  recheck_before=None if recheck is None else time.time() - recheck * 86400)
    finally:
        await store.close()
    return plan_from(counts, rejected[0], settings)


def plan_from(counts: dict[str, int], rejected: int, settings: Settings) -> Plan:
    """The plan from the store's counts (pure): calls per kind of key, the charge bound, the time at --rate."""
    size = settings.batch_size
    calls = math.ceil(counts["to_ask_numbers"] / size) + math.ceil(counts["to_ask_ids"] / size)
    to_ask = counts["to_ask_numbers"] + counts["to_ask_ids"]
    charged = to_ask if settings.max_charged is None else min(to_ask, settings.max_charged)
    return Plan(rows=counts["rows"], unique=counts["unique"], duplicates=counts["duplicates"], new=counts["new"],
                settled=counts["settled"], failed_kept=counts["failed_kept"], reusable_urls=counts["reusable_urls"],
                to_ask_numbers=counts["to_ask_numbers"], to_ask_ids=counts["to_ask_ids"], rejected=rejected,
                to_ask=to_ask, api_calls=calls, charged_at_most=charged,
                seconds_at_rate=round(calls / settings.rate, 1))


def _keys(rows: Iterable[PatentKey | Reject], rejected: list[int]) -> Iterator[PatentKey]:
    for row in rows:
        if isinstance(row, Reject):
            rejected[0] += 1
        else:
            yield row


def describe_plan(plan: Plan) -> str:
    """The dry run as a few lines for a person."""
    return "\n".join([
        f"inputs: {plan.rows} keys read, {plan.unique} unique, {plan.duplicates} duplicates; "
        f"{plan.rejected} row{'' if plan.rejected == 1 else 's'} rejected",
        f"already settled: {plan.settled}   new: {plan.new}   failed earlier (kept): {plan.failed_kept}",
        f"would ask the API for {plan.to_ask} keys ({plan.new} new, {plan.to_ask - plan.new} left "
        f"from earlier runs) in {plan.api_calls} calls (at most {plan.charged_at_most} charged results)",
        f"would download {plan.reusable_urls} images from still-valid URLs without any call",
    ])

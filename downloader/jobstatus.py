"""What the state store says about a job (`Job.status`, `patent-images status`), read without calling anything.

A run still going (its workers' leases are live) is shown as it stands: the time since it started,
its keys settled so far out of its total, and the calls, charges and images its workers' last
heartbeats report. A run that ended has its summary; one that was killed stays "unfinished".
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from downloader.core.outcome import settled_count
from downloader.state import open_existing, state_folder
from downloader.state.base import RunRecord, StateStore, WorkerRecord
from downloader.state.sqlite import STATE_FILE

_LIVE_FIGURES = ("api_calls", "charged", "recharged", "images", "bytes")


@dataclass(frozen=True, slots=True)
class RunStatus:
    """One run of the history. For a live run `summary` holds its figures so far (`seconds` since it
    started, and the counters of its workers' heartbeats) and `settled`/`total` its progress."""

    id: int
    started: float
    ended: float | None
    exit_code: int | None
    options: Mapping[str, Any]
    summary: Mapping[str, Any]
    live: bool = False
    settled: int = 0
    total: int = 0


@dataclass(frozen=True, slots=True)
class JobStatus:
    """Totals by status over every key the store holds, the live workers, and the recent runs (newest first)."""

    folder: str
    state: str
    by_status: Mapping[str, int]
    workers: tuple[WorkerRecord, ...] = ()
    runs: tuple[RunStatus, ...] = field(default=())
    # --drawings all: the drawings (`total`, `by_status`) and patents by their drawing count (`per_patent`)
    drawings: Mapping[str, Any] | None = None

    @property
    def total(self) -> int:
        """Every key the store holds."""
        return sum(self.by_status.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (what `status --json` prints)."""
        data = {"folder": self.folder, "state": self.state, "total": self.total, "by_status": dict(self.by_status),
                "workers": [asdict(w) for w in self.workers], "runs": [_run_dict(r) for r in self.runs]}
        if self.drawings is not None:
            data["drawings"] = dict(self.drawings)
        return data


async def read_status(out: str | Path, state_url: str | None, runs: int = 10) -> JobStatus:
    """The status of the job at `out`; UsageError when no state store is there."""
    store = await open_existing(state_url, state_folder(out) / STATE_FILE)
    try:
        by_status = await store.counts()
        now = time.time()
        live = tuple(w for w in await store.workers() if not w.finished and w.lease_until >= now)
        history = [r for r in await store.runs(runs) if not r.summary.get("nothing_to_do")]
        statuses = tuple([await _run_status(store, r, live, now) for r in history])
        drawings = await _drawings(store)
    finally:
        await store.close()
    return JobStatus(str(out), store.location, by_status, live, statuses, drawings)


async def _drawings(store: StateStore) -> dict[str, Any] | None:
    """--drawings all: the drawings by status, and how many patents have how many drawings; else None."""
    if await store.drawings_kind(None) != "all":
        return None
    drawings, figures = await store.drawing_counts(), await store.figure_counts()
    return {"total": sum(drawings.values()), "by_status": drawings,
            "per_patent": {str(n): c for n, c in sorted(figures.items())}}


async def _run_status(store: StateStore, run: RunRecord, live: Sequence[WorkerRecord], now: float) -> RunStatus:
    workers = [w for w in live if w.run_id == run.id]
    if run.exit_code is not None or not workers:
        return RunStatus(run.id, run.started, run.ended, run.exit_code, run.options, run.summary)
    counts = await store.counts(run.id)
    figures = {name: sum(int((w.info.get("counters") or {}).get(name, 0)) for w in workers)
               for name in _LIVE_FIGURES}
    return RunStatus(run.id, run.started, None, None, run.options, {**figures, "seconds": round(now - run.started, 1)},
                     live=True, settled=settled_count(counts), total=sum(counts.values()))


def _run_dict(run: RunStatus) -> dict[str, Any]:
    data = asdict(run)
    data["summary"], data["options"] = dict(run.summary), dict(run.options)
    return data

"""The state store protocol: what the pipeline and the commands need from wherever state lives.

Two implementations: `sqlite.SqliteStore` (the embedded default, a file in DIR) and
`postgres.PostgresStore` (shared by workers on several machines). A third one (say, another
database) implements this protocol and is chosen by `state.open_store(url)`; nothing else changes.

Every method is async: no database call may block the event loop (SQLite runs in a worker
thread, PostgreSQL through psycopg's async driver). Nothing here is SQL-shaped.

Claims. Several workers (processes on one machine with --workers N, or machines sharing a
PostgreSQL store) share one job. A worker *claims* work under a lease (`claim`), keeps the lease
alive (`renew`), and its results release the keys as they settle (`apply`). A key whose lease ran
out (its worker died) is claimable again: a resolved one with a still-valid URL is downloaded
without a new API call, so a dead worker costs at most the batches it had in flight.

Fencing. Every claim gets a new generation (`Batch.lease`, `ImageJob.lease`), stored on its keys.
A result written under it (`Held`) is applied only while the key still has that generation, so
a worker whose lease lapsed (a network partition, a paused machine) cannot overwrite the keys
another worker claimed since: `apply` returns such writes as refused. `holds` answers, without
I/O, whether a claim is still provably this process's (`core.leases`): an image goes under its
final name only then, so no row ever points at a file that a stale worker replaces afterwards.

Shared records. The account-wide rate bucket, the OAuth token and the halt record are small JSON
values that every worker reads and changes under the store's own transaction (`update_shared`),
so the logic stays in pure functions of `core` and each store only provides the atomic update.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

from downloader.core.model import Batch, Deferred, Downloaded, ImageJob, Kind, Outcome, PatentKey, Status, UrlExpired

T = TypeVar("T")
StateEvent = Outcome | Downloaded | UrlExpired | Deferred
Shared = dict[str, Any]


class Held(NamedTuple):
    """A result of work done under a claim: written only while the key still has that generation."""

    event: StateEvent
    lease: int


@dataclass(frozen=True, slots=True)
class IngestCounts:
    """What reading the inputs found: new keys, keys known from earlier runs, repeats."""

    new: int = 0
    known: int = 0
    duplicates: int = 0


class PatentRow(NamedTuple):
    """One key as the store holds it: what manifests, reports and status read. A named tuple: one is
    made for every row of every manifest, and a frozen dataclass took ~5x longer to make (2.3 µs)."""

    kind: Kind
    key: str
    status: Status
    pn: str | None = None
    patent_id: str | None = None
    num: str | None = None
    url: str | None = None
    expires_at: float | None = None
    local_file: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    error: str | None = None
    updated_at: float | None = None
    figure: int | None = None  # --drawings all: a row per drawing (None: the patent has none, or not yet)
    image_type: str | None = None


_KINDS = {k.value: k for k in Kind}  # a dict lookup is ~15x cheaper than Kind(value), once per manifest row
_STATUSES = {s.value: s for s in Status}


def patent_row(r: Sequence[Any]) -> PatentRow:
    """A PatentRow from a store's row (kind, key, status, then the other columns in field order)."""
    return PatentRow(_KINDS[r[0]], r[1], _STATUSES[r[2]], *r[3:])


@dataclass(frozen=True, slots=True)
class Claim:
    """Work a worker now holds under its lease.

    `to_ask`: keys of one kind that need the API (never more than the claim's limit).
    `repeats`: the keys of `to_ask` that were paid for before and never used: their URL expired unused
    (a UrlExpired event, or a resolved key whose URL is past `usable_after`; with --drawings all,
    a drawing's URL), or their answer was lost on the way (a Deferred with `billed`): asking them
    again is a recharge, counted as such. `to_ask.stored` names their
    drawings already downloaded, which keep their row and file when the patent is listed again.
    `to_download`: keys whose signed URL is still good: download them without an API call.
    Keys whose `retry_at` is in the future (a Deferred event set it) are in neither.
    When both are empty, what is left of the run and why nobody can take it now:
    `waiting`: unsettled keys held under a live lease (by any worker, this one included);
    `deferred`: unsettled keys (pending or resolved) whose `retry_at` is still in the future,
    with `next_retry` the earliest such time. All zero: the run has nothing left for anyone.
    """

    to_ask: Batch | None = None
    repeats: tuple[str, ...] = ()
    to_download: tuple[ImageJob, ...] = ()
    waiting: int = 0
    deferred: int = 0
    next_retry: float | None = None

    @property
    def empty(self) -> bool:
        """True when the claim holds no work."""
        return self.to_ask is None and not self.to_download

    @property
    def lease(self) -> int:
        """The claim's generation (0 for an empty claim)."""
        if self.to_ask is not None:
            return self.to_ask.lease
        return self.to_download[0].lease if self.to_download else 0


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run in the history."""

    id: int
    started: float
    ended: float | None
    exit_code: int | None
    options: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A worker of a run, as its last heartbeat left it (`info` holds its host, pid and counters)."""

    worker: str
    run_id: int
    lease_until: float
    info: dict[str, Any] = field(default_factory=dict)
    claimed: int = 0
    finished: bool = False


class StateStore(Protocol):
    """Where every key's status, URL and file, the run history and the shared records live."""

    location: str  # for messages: a file path, or a URL without its password

    async def close(self) -> None:
        """Release connections."""
        ...

    # --- runs ---
    async def start_run(self, options: Mapping[str, Any], *, join: bool = False) -> int:
        """A new run's id; with `join`, the id of a live run over the same inputs if there is one."""
        ...

    async def finish_run(self, run_id: int, exit_code: int, summary: Mapping[str, Any]) -> None:
        """Record a run's end, exit code and summary."""
        ...

    async def runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first."""
        ...

    # --- inputs ---
    async def ingest(self, keys: Iterable[PatentKey], run_id: int) -> IngestCounts:
        """Add keys (new ones pending) and mark every key as part of this run; idempotent."""
        ...

    async def reopen(self, run_id: int, *, retry_failed: bool, recheck_before: float | None) -> None:
        """Send back to pending what this run should ask again: failed (if asked), stale misses.

        Also clears `retry_at` of this run's unsettled keys: a new run tries deferred keys at once.
        """
        ...

    async def plan(self, keys: Iterable[PatentKey], *, usable_after: float, retry_failed: bool,
                   recheck_before: float | None) -> dict[str, int]:
        """What a run over `keys` would do, writing nothing (the dry run)."""
        ...

    # --- work ---
    async def claim(self, run_id: int, worker: str, *, limit: int, usable_after: float, lease: float) -> Claim:
        """Take up to `limit` keys of this run that nobody holds (or whose holder's lease ran out)
        and that are due (`retry_at` passed or unset); a resolved key whose URL expires before
        `usable_after` is asked again, a later one downloaded."""
        ...

    async def renew(self, worker: str, lease: float) -> None:
        """Extend the lease on the keys `worker` holds under claims still live (see `holds`)."""
        ...

    def holds(self, lease: int) -> bool:
        """Whether the claim of generation `lease` is still provably this process's (no I/O)."""
        ...

    async def release(self, worker: str | None) -> None:
        """Give back every key `worker` still holds (a clean stop); None: every worker's claims
        (only for a run that holds the folder lock, so no other worker can be alive)."""
        ...

    async def apply(self, events: Sequence[StateEvent | Held]) -> list[Held]:
        """Write a batch of results in one transaction, in order; settled keys are released.

        A bare event is written unfenced (a key under no claim: tools, tests). Returns the Held
        writes refused because their key has another generation now (another worker claimed it).
        """
        ...

    # --- reading ---
    async def counts(self, run_id: int | None = None) -> dict[str, int]:
        """Keys by status, for one run's inputs or for the whole store."""
        ...

    def rows(self, run_id: int | None = None, status: Status | None = None) -> AsyncIterator[PatentRow]:
        """Rows in input order, streamed (a million rows never sit in memory)."""
        ...

    async def latest(self, status: Status, limit: int) -> list[PatentRow]:
        """The most recently updated rows in `status`, newest first."""
        ...

    # --- drawings (--drawings all) ---
    async def drawings_kind(self, wanted: str | None) -> str | None:
        """The kind of drawings the job holds ("abstract" or "all"), recording `wanted` on first use
        (a store with patents from before holds "abstract"); None when not recorded and `wanted` None."""
        ...

    async def drawing_counts(self, run_id: int | None = None) -> dict[str, int]:
        """Drawings by status, for one run's patents or for the whole store."""
        ...

    async def figure_counts(self, run_id: int | None = None) -> dict[int, int]:
        """Patents by how many drawings they have (0: no_image)."""
        ...

    # --- workers and shared records ---
    async def heartbeat(self, run_id: int, worker: str, info: Mapping[str, Any], lease: float,
                        finished: bool = False) -> None:
        """Say `worker` is alive (or finished) for `lease` seconds more, with its counters in `info`."""
        ...

    async def workers(self, run_id: int | None = None) -> list[WorkerRecord]:
        """Workers of a run (or of the latest runs), live ones first."""
        ...

    async def update_shared(self, name: str, change: Callable[[Shared | None, float], tuple[Shared, T]]) -> T:
        """Atomically replace the record `name` by `change(old, now)[0]`; returns `[1]`.

        `now` is the store's clock (the database server's, for a fleet), in epoch seconds.
        """
        ...

    async def read_shared(self, name: str) -> Shared | None:
        """The record `name`, or None."""
        ...

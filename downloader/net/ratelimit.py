"""The account-wide API gate, held in the state store so every worker of a run shares it.

`core/gate.py` decides (pacing slots, throttle episodes and the spent-quota verdict, the hold while
refused credentials are checked); this class applies those decisions through the store's atomic
`update_shared` (SQLite: one thread hop; PostgreSQL: one transaction on the server's clock) and
waits as told. A normal request costs one round trip (`acquire`); its answer is reported only while
the gate needs to hear it (a probe, a credential check, a spacing that is still recovering).

Within one process the tasks queue on a local lock, so one of them at a time asks the store for a
slot and the others do not poll it; a credential checker skips that queue (the others are waiting
on its verdict). A throttling answer or a refusal pauses this process's senders at once, before
its report reaches the store (which may be busy with other writes): a slot granted meanwhile is
dropped and asked for again, so nothing goes out on a stale view of the gate.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio

from downloader.core import gate
from downloader.core.errors import ApiError, FatalApiError

T = TypeVar("T")
RECORD = "api-gate"
Shared = dict[str, Any]


class SharedRecords(Protocol):
    """The part of the state store the gate needs (`StateStore` has it)."""

    async def update_shared(self, name: str, change: Callable[[Shared | None, float], tuple[Shared, T]]) -> T: ...


@dataclass(frozen=True, slots=True)
class Ticket:
    """A granted slot: which one (to tell the gate how it went) and whether the gate wants to hear."""

    slot: float
    report: bool
    probe: bool = False


def fatal_from(verdict: dict[str, Any]) -> FatalApiError:
    """The error a gate verdict stops the run with."""
    return FatalApiError(verdict.get("message", "the run was stopped at the API gate"), hint=verdict.get("hint", ""),
                         code=verdict.get("code"), status=verdict.get("status"),
                         hint_says_rerun=bool(verdict.get("hint_says_rerun")))


class ApiGate:
    """`ticket = await gate.acquire()` before each API request; then report how it went."""

    def __init__(self, records: SharedRecords, run_id: int, rate: float, patience: float, *,
                 log: Callable[[str, dict[str, object]], None] | None = None,
                 pauses: tuple[float, ...] = gate.PAUSES) -> None:
        self.rate = rate
        self.patience = patience
        self.pauses = pauses
        self._records = records
        self._run = run_id
        self._log = log or (lambda event, fields: None)
        self._local = anyio.Lock()
        self._reporting = 0  # throttles and refusals of this process on their way to the store
        self._reported = anyio.Event()
        self._late = 0.0  # how long after its slot this process's last request left, at most

    def __repr__(self) -> str:
        return f"<ApiGate run {self._run}, {self.rate:g}/s, patience {self.patience:g} s>"

    async def _update(self, change: Callable[..., tuple[Shared, T]], **kwargs: Any) -> T:
        step = functools.partial(change, run=self._run, rate=self.rate, **kwargs)
        return await self._records.update_shared(RECORD, step)

    async def acquire(self, holder: str | None = None) -> Ticket:
        """Wait for this request's slot (a probe's, while throttled); raise the run's verdict if there is one."""
        if holder is not None:
            return await self._acquire(holder)
        async with self._local:
            return await self._acquire(None)

    async def _acquire(self, holder: str | None) -> Ticket:
        while True:
            while self._reporting and holder is None:
                await self._reported.wait()
            asked = time.monotonic()
            grant: gate.Grant = await self._update(gate.acquire, owner=holder, late=self._late)
            if grant.fatal is not None:
                raise fatal_from(grant.fatal)
            if grant.wait > 0:
                await anyio.sleep(grant.wait)
            if grant.slot is None or (self._reporting and holder is None):
                continue
            # The store's clock read the slot's time after `asked`: this bounds how late we are. A
            # grant later than the guard is dropped (unless nothing is ever that quick: best effort).
            self._late = max(0.0, time.monotonic() - asked - grant.wait)
            if self._late <= grant.guard or self._late >= gate.MAX_GUARD or grant.probe:
                return Ticket(grant.slot, grant.report, grant.probe)

    @asynccontextmanager
    async def _reporting_now(self) -> AsyncIterator[None]:
        """Hold this process's senders while a throttle or refusal is reported to the store."""
        self._reporting += 1
        try:
            yield
        finally:
            self._reporting -= 1
            if not self._reporting:
                self._reported.set()
                self._reported = anyio.Event()

    async def throttled(self, ticket: Ticket, err: ApiError) -> None:
        """A throttling answer: slow down and probe; raise FatalApiError when the quota is spent."""
        what = f"PatSnap error {err.code}" if err.code else f"HTTP {err.status}"
        async with self._reporting_now():
            verdict: gate.Throttle = await self._update(
                gate.throttled, slot=ticket.slot, what=what, code=err.code, status=err.status,
                retry_after=err.retry_after, patience=self.patience, pauses=self.pauses)
        if verdict.fatal is not None:
            raise fatal_from(verdict.fatal) from err
        if not verdict.ignored:
            self._log("throttled", {"code": err.code or err.status, "next_probe_in_s": verdict.pause,
                                    "episode": "new" if verdict.started else "continues"})

    async def succeeded(self, ticket: Ticket, holder: str | None = None) -> None:
        """A normal answer (only sent to the store when the gate wants to hear it)."""
        if ticket.report or holder is not None:
            await self._update(gate.succeeded, slot=ticket.slot, owner=holder)

    async def unanswered(self, ticket: Ticket) -> None:
        """No answer (a transport failure): a probe is offered again."""
        if ticket.probe:
            await self._update(gate.unanswered, slot=ticket.slot)

    async def hold(self, owner: str) -> bool:
        """After a refusal: True when `owner` is to check the credentials; False after waiting for
        someone else's check to pass. Raises the verdict when a check failed."""
        async with self._reporting_now():
            checker: bool | dict[str, Any] = await self._update(gate.hold, owner=owner)
        if isinstance(checker, dict):
            raise fatal_from(checker)
        if checker:
            return True
        while True:  # someone else checks: wait for the verdict
            await anyio.sleep(0.1)
            held: bool | dict[str, Any] = await self._update(gate.checking, owner=owner)
            if isinstance(held, dict):
                raise fatal_from(held)
            if not held:
                return False

    async def release(self, owner: str) -> None:
        """Give up a credential check without a verdict (the token refresh failed in transport)."""
        with anyio.CancelScope(shield=True):
            await self._update(gate.release, owner=owner)

    async def conclude(self, err: FatalApiError) -> None:
        """The check failed: stop every worker at the gate with `err`."""
        verdict = {"kind": "credentials", "message": str(err), "hint": err.hint, "code": err.code,
                   "status": err.status}
        with anyio.CancelScope(shield=True):
            await self._update(gate.conclude, verdict=verdict)

    async def state(self) -> gate.GateState:
        """The gate as the store holds it now (for tests and status)."""
        def look(old: Shared | None, now: float) -> tuple[Shared, gate.GateState]:
            current = gate.load(old, self._run, self.rate)
            return gate.dump(current), current
        return await self._records.update_shared(RECORD, look)

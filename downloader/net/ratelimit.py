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

The slot is taken at the moment the request is written: the API session's trace hook
(`on_request_headers_sent`, which aiohttp awaits just before it writes the request) calls
`Ticket.writing`, which lets the request go only within its slot's guard, else raises SlotMissed
and nothing is sent. When it was written (or that it was not) reaches the gate with this
process's next call to it (see `core/pacing.py`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Protocol, TypeVar

import aiohttp
import anyio

from downloader.core import gate, pacing
from downloader.core.errors import ApiError, FatalApiError, TransientApiError

T = TypeVar("T")
RECORD = "api-gate"
Shared = dict[str, Any]


class SharedRecords(Protocol):
    """The part of the state store the gate needs (`StateStore` has it)."""

    async def update_shared(self, name: str, change: Callable[[Shared | None, float], tuple[Shared, T]]) -> T: ...


class SlotMissed(Exception):
    """The request could not be written within its slot's guard: it was not sent (ask for a new slot)."""


@dataclass(slots=True)
class Ticket:
    """A granted slot: which one (to tell the gate how it went), whether the gate wants to hear,
    and until when (our monotonic clock) its request may be written."""

    slot: float
    report: bool
    probe: bool = False
    deadline: float = float("inf")
    allowed: bool = field(default=False, repr=False)  # its write was let go
    written: float | None = field(default=None, repr=False)  # the store time it was written, at most
    _gate: ApiGate | None = field(default=None, repr=False)

    def writing(self) -> None:
        """Called just before the request's bytes go out: let them go, or raise SlotMissed."""
        if self._gate is not None and not self.allowed:
            self._gate.writing(self)


def trace_config() -> aiohttp.TraceConfig:
    """The API session's hooks: a request that carries a Ticket (`trace_request_ctx`) is checked
    against its slot at the moment it is written. aiohttp awaits `on_request_headers_sent` just
    before it writes a request without a body (nothing awaits in between), and buffers the headers
    of one with a body, which go out with its first chunk, right after `on_request_chunk_sent`."""
    config = aiohttp.TraceConfig()
    config.on_request_headers_sent.append(_on_headers)
    config.on_request_chunk_sent.append(_on_chunk)
    return config


async def _on_headers(session: aiohttp.ClientSession, context: SimpleNamespace,
                      params: aiohttp.TraceRequestHeadersSentParams) -> None:
    ticket = getattr(context, "trace_request_ctx", None)
    if isinstance(ticket, Ticket) and params.method in BODILESS:
        if ticket.allowed:  # written before: aiohttp resends a GET whose connection dropped, by itself
            raise TransientApiError("API request failed: the connection dropped before an answer")
        ticket.writing()


async def _on_chunk(session: aiohttp.ClientSession, context: SimpleNamespace,
                    params: aiohttp.TraceRequestChunkSentParams) -> None:
    ticket = getattr(context, "trace_request_ctx", None)
    if isinstance(ticket, Ticket):
        ticket.writing()


BODILESS = frozenset({"GET", "HEAD"})  # requests we send without a body


def fatal_from(verdict: dict[str, Any]) -> FatalApiError:
    """The error a gate verdict stops the run with."""
    return FatalApiError(verdict.get("message", "the run was stopped at the API gate"), hint=verdict.get("hint", ""),
                         code=verdict.get("code"), status=verdict.get("status"),
                         hint_says_rerun=bool(verdict.get("hint_says_rerun")))


class ApiGate:
    """`ticket = await gate.acquire()` before each API request; then report how it went."""

    def __init__(self, records: SharedRecords, run_id: int, rate: float, patience: float, *,
                 log: Callable[[str, dict[str, object]], None] | None = None,
                 pauses: tuple[float, ...] = gate.PAUSES, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.patience = patience
        self.pauses = pauses
        self._records = records
        self._run = run_id
        self._log = log or (lambda event, fields: None)
        self._local = anyio.Lock()
        self._reporting = 0  # throttles and refusals of this process on their way to the store
        self._reported = anyio.Event()
        self._now = clock  # this process's monotonic clock (a test's loop clock)
        self._clock = pacing.StoreClock()
        self._sent: list[pacing.Sent] = []  # when this process's requests were written, for the gate
        self._missing = anyio.Event()  # set when a slot is missed
        self.missed = 0  # slots this process could not write in time (for tests and the bench)

    def __repr__(self) -> str:
        return f"<ApiGate run {self._run}, {self.rate:g}/s, patience {self.patience:g} s>"

    async def _update(self, change: Callable[..., tuple[Shared, T]], **kwargs: Any) -> T:
        step = functools.partial(change, run=self._run, rate=self.rate, **kwargs)
        return await self._records.update_shared(RECORD, step)

    async def _reporting_update(self, change: Callable[..., tuple[Shared, T]], **kwargs: Any) -> T:
        """`_update`, carrying this process's reports of when its requests were written."""
        sent, self._sent = self._sent, []
        try:
            return await self._update(change, sent=sent, **kwargs)
        except BaseException:
            self._sent[:0] = sent
            raise

    def writing(self, ticket: Ticket) -> None:
        """The request of `ticket` is about to be written: SlotMissed when its slot's guard has passed.
        When it was written is read once the write is done (the next turn of the loop): a process
        paused between this check and the write then reports its real, later time."""
        now = self._now()
        if now > ticket.deadline:
            late = now - ticket.deadline
            self._sent.append((ticket.slot, None))
            self.missed += 1
            self._missing.set()
            self._missing = anyio.Event()
            ticket.deadline = float("-inf")  # a retried write (a new connection) is no better
            raise SlotMissed(f"the request could not be written until {late:.3f} s after its slot's guard")
        ticket.allowed = True
        asyncio.get_running_loop().call_soon(self._written, ticket)

    def _written(self, ticket: Ticket) -> None:
        ticket.written = self._clock.latest(self._now())
        self._sent.append((ticket.slot, ticket.written))

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
            asked = self._now()
            grant: gate.Grant = await self._reporting_update(gate.acquire, owner=holder)
            if grant.now is not None:
                self._clock.observe(asked, grant.now, self._now())
            if grant.fatal is not None:
                raise fatal_from(grant.fatal)
            if grant.slot is None:
                with anyio.move_on_after(grant.wait):
                    await self._missing.wait()  # a miss of this process frees its slot: ask at once
                continue
            await anyio.sleep(max(0.0, self._clock.not_before(grant.slot) - self._now()))
            if self._reporting and holder is None:  # a throttle or refusal came meanwhile: not this slot
                self._sent.append((grant.slot, None))
                continue
            deadline = self._clock.not_after(grant.slot + grant.guard)
            return Ticket(grant.slot, grant.report, grant.probe, deadline, _gate=self)

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
        """A normal answer (sent to the store when the gate wants to hear it, or when no later call
        of this process to the gate has told it yet when this request was written)."""
        unheard = (ticket.slot, ticket.written) in self._sent and not self._local.locked()  # no one asks soon
        if ticket.report or holder is not None or unheard:
            await self._reporting_update(gate.succeeded, slot=ticket.slot, owner=holder)

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

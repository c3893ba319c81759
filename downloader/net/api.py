"""PatsnapClient: the only code that calls the metadata API.

It passes every request through the account-wide API gate (`ratelimit.ApiGate`: pacing, throttle
episodes, the credential check), retries what is worth retrying (RetryPolicy), keeps a
charged-results budget, and turns answers into per-key outcomes with the sans-IO functions of
`protocol`. A batch the API calls invalid is split in halves until the bad identifiers are alone;
those fail, the rest go through.

Refused credentials (HTTP 401, 67200003, 67200009): the first refusal makes its request the
checker, which holds the gate (no other request of the fleet goes out), refreshes the token once
for everyone and retries once; a second refusal stops every worker with an error naming the
suspect credential. Other requests refused meanwhile wait for the verdict, then retry.

Transport failures (refused, DNS, TLS, timeouts, resets, 5xx) whose retries are spent defer the
batch's keys (pending, tried again later), never fail them; when every call fails that way for a
while, `OutageDetector` stops the run (OutageError, exit 3).

Answers lost on the way (HTTP 200, then the body cut or reset; or a timeout after the request was
written): PatSnap bills an answer when it gives it, so each was (possibly) billed. Counted in `charged`
as the answer that arrived in their place, or, when none did, at their most (every key asked), the
first once and the others in `recharged`; the keys are deferred as `billed`, so asking them again
later is a recharge too. --max-charged: the first try is paid for by the caller's reservation, and a
lost answer may have used it up, so each try after one reserves its cost anew (`Call.cost`) before it
is sent, or is not sent (BudgetSpentError): what the API bills never passes the budget.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
import anyio
from yarl import URL

from downloader.core import protocol
from downloader.core.credentials import refused_error
from downloader.core.errors import (
    BudgetSpentError,
    FatalApiError,
    InvalidParameterError,
    OutageError,
    ThrottledError,
    TokenExpiredError,
    TransientApiError,
    describe,
)
from downloader.core.model import Batch, Counters, Deferred, Failed, Outcome, PatentKey
from downloader.core.outage import SPAN, OutageDetector, origin
from downloader.core.ports import Answer, BatchResult
from downloader.net.auth import TokenProvider
from downloader.net.httperrors import map_client_errors
from downloader.net.proxies import proxy_for
from downloader.net.ratelimit import ApiGate, SlotMissed, Ticket
from downloader.net.retrying import RetryPolicy


class BudgetLike(Protocol):
    """--max-charged: reserve before asking, settle after the answer (see state.shared.SharedBudget)."""

    async def reserve(self, wanted: int) -> int: ...

    async def settle(self, reserved: int, charged: int) -> None: ...


API_PATH = "/basic-patent-data/abstract-image"
# What PatSnap's own clients send with every call.
HEADERS = {"X-PatSnap-Version": "1.0", "Content-Type": "application/json", "Accept": "application/json"}
_MAX_ANSWER_BYTES = 16 * 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One call: a path under the API base, its query (the apikey is added), and a JSON body for a
    POST (None: a GET)."""

    path: str
    params: dict[str, str]
    body: dict[str, Any] | None = None


@dataclass
class Call:
    """One request's tries: `holder` is set while it checks refused credentials; `lost` counts the
    answers given (HTTP 200: billed) whose body was lost on the way, or possibly given (a timeout after
    the request was written), so that it was asked again or not answered at all.

    `cost`: the most one answer is billed (results). The caller reserved it of --max-charged for the
    first try; each lost answer may have used up a try's reservation, so before the next try the client
    reserves `cost` more (`extra` sums them: the caller settles its reservation plus `extra`)."""

    holder: str | None = None
    lost: int = 0
    cost: int = 0
    extra: int = 0


@dataclass
class _Bill:
    """What one batch's calls were billed; `recharged`: results paid again because an answer was lost;
    `reserved`: what the batch holds of --max-charged (its first reservation and the retries')."""

    charged: int = 0
    recharged: int = 0
    reserved: int = 0
    budget_spent: bool = False

    def lost(self, results: int, answers: int) -> None:
        """`answers` answers of `results` each were possibly billed and none arrived: the first is the
        batch's charge, the others charges again."""
        self.charged += results * answers
        self.recharged += results * max(0, answers - 1)


class PatsnapClient:
    """Resolves batches of keys into outcomes; raises FatalError when the run must stop."""

    def __init__(self, session: aiohttp.ClientSession, api_base: str, api_key: str, tokens: TokenProvider,
                 gate: ApiGate, policy: Callable[[], RetryPolicy], counters: Counters,
                 budget: BudgetLike, *,
                 apikey_is_client_id: bool = False, worker: str = "", outage_seconds: float = SPAN) -> None:
        self._session = session
        self._base = api_base.rstrip("/")
        self._proxy = proxy_for(URL(self._base + API_PATH))  # one host: one proxy for every path
        self.api_key = api_key
        self._tokens = tokens
        self.gate = gate
        self._policy = policy
        self._counters = counters
        self.budget = budget
        self._apikey_is_client_id = apikey_is_client_id
        self._worker = worker
        self.outage = OutageDetector("the API", outage_seconds)
        self._host = origin(api_base)

    async def resolve(self, batch: Batch) -> BatchResult:
        """Ask for one batch (shrunk to the budget); split it when the API calls it invalid."""
        granted = await self.budget.reserve(len(batch.keys))
        unasked = tuple(PatentKey(batch.kind, k) for k in batch.keys[granted:])
        if granted == 0:
            return BatchResult([], unasked)
        asked = Batch(batch.kind, batch.keys[:granted])
        bill = _Bill(reserved=granted)
        try:
            outcomes = await self._resolve_splitting(asked, bill)
        finally:
            with anyio.CancelScope(shield=True):
                await self.budget.settle(bill.reserved, bill.charged)
        return BatchResult(outcomes, unasked, bill.charged, bill.recharged, bill.budget_spent)

    async def _resolve_splitting(self, batch: Batch, bill: _Bill) -> list[Answer]:
        keys = [PatentKey(batch.kind, k) for k in batch.keys]
        call = Call(cost=len(keys))
        try:
            return list(await self._call(batch, bill, call))
        except InvalidParameterError as err:
            if len(batch.keys) == 1:
                return [Failed(keys[0], describe(err))]
            left, right = protocol.split(batch)
            return await self._resolve_splitting(left, bill) + await self._resolve_splitting(right, bill)
        except (TokenExpiredError, TransientApiError) as err:
            return self.unanswered(err, keys, billed=call.lost > 0)
        except BudgetSpentError as err:
            bill.budget_spent = True
            return budget_spent(err, keys)

    def unanswered(self, err: TokenExpiredError | TransientApiError, keys: Sequence[PatentKey], *,
                   billed: bool = False) -> list[Answer]:
        """Keys whose call failed past its retries: refused credentials stop the run; a transport
        failure defers them (they wait and are asked again), or stops the run when every call fails.
        `billed`: an answer for them may have been billed (asking again is a recharge)."""
        if isinstance(err, TokenExpiredError):  # refused over and over, past every check
            raise refused_error(err, static=self._tokens.static,
                                apikey_is_client_id=self._apikey_is_client_id) from err
        outage = self.outage.error(time.monotonic())
        if outage is not None:
            raise outage from err
        retry_at = time.time() + self.outage.defer_seconds
        return [Deferred(key, describe(err), retry_at, billed) for key in keys]

    async def _call(self, batch: Batch, bill: _Bill, call: Call) -> list[Outcome]:
        """Ask once (with retries). An answer lost on the way after the API gave it was billed, for
        the same results as the one that arrived: counted in `charged` and `recharged`. When none
        arrived, each lost one counts at its most: every key asked (the API bills those it finds)."""
        request = ApiRequest(API_PATH, protocol.request_params(batch, self.api_key))
        try:
            items, answered_at = await self._exchange(request, _abstract_items, call)
        except BaseException:
            self._counters.charged += len(batch.keys) * call.lost
            bill.lost(len(batch.keys), call.lost)
            raise
        finally:
            bill.reserved += call.extra
        billed = len(items) * (1 + call.lost)
        self._counters.charged += billed
        bill.charged += billed
        bill.recharged += billed - len(items)
        return protocol.map_answer(batch, items, answered_at)

    async def exchange(self, request: ApiRequest, decode: Callable[[object], T],
                       call: Call | None = None) -> tuple[T, float]:
        """One request through the gate, with retries and the credential check: `decode` turns the
        answer's JSON into a value or raises its ApiError. Returns the value and when it was answered;
        `call.lost` then says how many answers were lost on the way (billed, each like the one returned),
        and when it raises, how many were lost before it gave up (possibly billed). With `call.cost`,
        each try after a lost answer first reserves that much of the budget (`call.extra`), or raises
        BudgetSpentError without sending it."""
        return await self._exchange(request, decode, call if call is not None else Call())

    async def _exchange(self, request: ApiRequest, decode: Callable[[object], T], call: Call) -> tuple[T, float]:
        return await self._policy().call(lambda: self._once(request, decode, call))

    async def _once(self, request: ApiRequest, decode: Callable[[object], T], call: Call) -> tuple[T, float]:
        outage = self.outage.error(time.monotonic())
        if outage is not None:
            raise outage
        await self._cover_retry(call)
        # The token first: the request must leave as soon as its slot comes (late requests bunch
        # at the server), and getting a new token takes a store and a network round trip.
        try:
            await self._tokens.get()
        except TransientApiError as err:  # the token endpoint out of reach is an outage of the API too
            self.outage.failed(time.monotonic(), str(err), self._host)
            raise
        while True:  # until a request is written within its slot
            ticket = await self.gate.acquire(call.holder)
            token = ""
            try:
                token = await self._tokens.get()  # cached unless it aged while waiting for the slot
                body = await self._send(request, token, ticket, call)
                answered_at = time.time()
                value = decode(body)
            except SlotMissed:
                continue  # nothing was sent: ask for a new slot
            except ThrottledError as err:
                self.outage.succeeded()
                self._counters.throttled += 1
                await self.gate.throttled(ticket, err)
                raise
            except TokenExpiredError as err:
                self.outage.succeeded()
                await self._refused(err, token, call)
                raise
            except InvalidParameterError:
                self.outage.succeeded()
                await self.gate.succeeded(ticket, call.holder)
                call.holder = None
                raise
            except TransientApiError as err:
                await self.gate.unanswered(ticket)
                if (outage := self.outage.failed(time.monotonic(), str(err), self._host)) is not None:
                    raise outage from err
                raise
            self.outage.succeeded()
            await self.gate.succeeded(ticket, call.holder)
            call.holder = None
            return value, answered_at

    async def _cover_retry(self, call: Call) -> None:
        """Before a try: reserve `call.cost` of --max-charged for each lost answer not yet made up for
        (each may have used up a try's reservation), or raise BudgetSpentError: this try is not sent."""
        missing = call.lost * call.cost - call.extra
        if missing <= 0:
            return
        granted = await self.budget.reserve(missing)
        if granted < missing:
            with anyio.CancelScope(shield=True):
                await self.budget.settle(granted, 0)
            raise BudgetSpentError(f"the --max-charged budget has no room to ask again for {call.cost} "
                                   f"result{'s' if call.cost != 1 else ''} whose answer was lost on the way")
        call.extra += granted

    async def _refused(self, err: TokenExpiredError, token: str, call: Call) -> None:
        """A refusal: become the fleet's checker (refresh once; the caller retries once) or wait
        for the check another request is making; a checker refused again stops the run."""
        if call.holder is not None:
            fatal = refused_error(err, static=self._tokens.static,
                                  apikey_is_client_id=self._apikey_is_client_id)
            await self.gate.conclude(fatal)
            raise fatal from err
        me = f"{self._worker}/{id(call):x}"
        if not await self.gate.hold(me):
            await self._tokens.refresh(token)  # someone's check passed: take the token it got
            return
        call.holder = me
        if not self._tokens.refreshable:
            fatal = refused_error(err, static=self._tokens.static or "--token",
                                  apikey_is_client_id=self._apikey_is_client_id)
            await self.gate.conclude(fatal)
            raise fatal from err
        try:
            await self._tokens.refresh(token)
        except FatalApiError as refused:
            await self.gate.conclude(refused)
            raise
        except BaseException:
            call.holder = None
            await self.gate.release(me)
            raise

    async def _send(self, request: ApiRequest, token: str, ticket: Ticket, call: Call) -> object:
        headers = {**HEADERS, "Authorization": f"Bearer {token}"}
        url = URL(self._base + request.path)
        params = {**request.params, "apikey": self.api_key}
        method = "GET" if request.body is None else "POST"
        answered = False
        with map_client_errors(TransientApiError, "API request"):
            try:
                async with self._session.request(method, url, params=params, json=request.body, headers=headers,
                                                 proxy=self._proxy, trace_request_ctx=ticket) as resp:
                    self._counters.api_calls += 1  # it reached the API (a call that never did is no call)
                    if resp.status != 200:
                        retry_after = protocol.parse_retry_after(resp.headers.get("Retry-After"), time.time())
                        raise protocol.error_for_http(resp.status, retry_after, str(url.with_user(None)))
                    answered = True
                    return _json(await _whole_body(resp.content))
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as err:
                # An answer lost on the way was billed; so may be one written but not answered in time (the API
                # may still have answered it). Asking again pays for the same results again.
                if answered or (ticket.allowed and isinstance(err, TimeoutError)):
                    call.lost += 1
                raise

    def count_charged(self, charged: int) -> None:
        """Add results charged by a call made through `exchange` (the caller knows what was billed)."""
        self._counters.charged += charged

    def outage_error(self) -> OutageError | None:
        """The OutageError to stop with when every call failed for a while (checked on a timer too)."""
        return self.outage.error(time.monotonic())


def budget_spent(err: BudgetSpentError, keys: Sequence[PatentKey]) -> list[Answer]:
    """Keys whose call lost an answer (possibly billed) and that the budget cannot ask again: deferred as
    billed (the next run asks them, a recharge), due at once; the run stops asking (BatchResult.budget_spent)."""
    return [Deferred(key, describe(err), time.time(), billed=True) for key in keys]


def _abstract_items(body: object) -> tuple[Any, ...]:
    """P021's items, or the error its answer carries."""
    answer = protocol.decode_answer(body)
    if answer.error is not None:
        raise answer.error
    return answer.items


async def _whole_body(content: aiohttp.StreamReader) -> bytes:
    """The answer's body to its end, up to 16 MB. `content.read(n)` would return the first piece that
    arrived: an answer that came in two pieces read as "not JSON", was asked again and billed twice."""
    pieces: list[bytes] = []
    size = 0
    async for piece in content.iter_any():
        size += len(piece)
        if size > _MAX_ANSWER_BYTES:
            raise TransientApiError("the API answer is larger than 16 MB")
        pieces.append(piece)
    return b"".join(pieces)


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TransientApiError("the API answer is not JSON") from err

"""The API gate: one small record, shared by every worker of a run, that paces requests
account-wide, tells a passing rate limit from a spent quota, and holds everyone while refused
credentials are checked. Pure: each function takes the record as stored (a JSON dict, or None)
and the store's clock, and returns the new record and a decision; `net/ratelimit.py` applies
them through the state store's atomic `update_shared`, so the fleet shares one gate.

Theory of operation.

Pacing. Requests are spaced `interval` seconds apart (1 / --rate at first), account-wide. A slot
is handed out only when it is due within GRANT_AHEAD; a caller asking earlier is told when to ask
again and reserves nothing. So no request is ever scheduled far ahead: when a throttling answer
arrives, nothing else is about to go out (requests already sent are in flight, not queued).
The server never sees more than ⌊rate⌋ requests in any second: the gate counts them by the time
they were written, which the senders report, and a request that could not be written within its
slot's guard is not sent at all (see `pacing`, which keeps that schedule).

Throttling (67200002, 67200007, HTTP 429). The first throttling answer starts an episode: the
spacing doubles (it climbs back by 10% per RECOVER_AFTER quiet successes) and the whole run is
down to one probe at a time, after growing pauses (PAUSES: 1 s, one QPS window; then 2, 8 and
30 s; never less than Retry-After). A probe answered normally ends the episode. A throttled probe
makes the next pause longer; when the pauses run out, or the next probe would come later than
`patience` seconds after the episode began, the limit is no rate limit but a spent quota: the
record keeps that verdict and every worker stops. With the default patience of 60 s that is at
most 4 requests after the first throttling answer, and a stop 41 s after it. Answers to
requests sent before the current probe (stragglers already in flight) change nothing.

Credentials (HTTP 401, 67200003, 67200009). The first refusal makes its request the checker and
holds the gate: nobody else sends until the checker has refreshed the token (once, fleet-wide)
and retried once. A success releases the gate; a second refusal concludes it with a verdict that
every worker waiting at the gate raises. A checker that died lets its hold lapse (HOLD_SECONDS).

A record belongs to a run: another run's record is reset (only its pace is kept), so a later run
starts at its own rate and is not stopped by an earlier run's verdict.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from downloader.core import pacing
from downloader.core.pacing import Entry, Sent

PAUSES = (1.0, 2.0, 8.0, 30.0)  # before each single probe while throttled
CATCH_UP = 0.25  # a schedule this late is caught up by the following slots
GRANT_AHEAD = 0.02  # a slot is handed out at most this long before it is due
POLL = 1.0  # the longest a waiting caller sleeps before asking the gate again
MIN_RATE = 0.2  # requests per second never drop below this while throttled
RECOVER_AFTER = 10  # quiet successes before the spacing shrinks by 10%
HOLD_SECONDS = 60.0  # a credential check that did not conclude by then is given up
PROBE_LOST = 120.0  # a probe that never reported (its worker died) is replaced after this

Record = dict[str, Any]
Verdict = dict[str, Any]  # why the run must stop: kind, message, hint, code, status


@dataclass(slots=True)
class Episode:
    """A throttling episode: since when, how many probes failed, when the next probe goes."""

    since: float
    what: str  # "PatSnap error 67200002", "HTTP 429"
    code: int | None = None
    status: int | None = None
    stage: int = 0
    probe_at: float = 0.0
    probe_slot: float | None = None


@dataclass(slots=True)
class Hold:
    """A credential check in progress: only `owner` may send until it concludes or lapses."""

    owner: str
    until: float


@dataclass(slots=True)
class GateState:
    """The record, typed."""

    run: int
    interval: float
    next: float = 0.0
    quiet: int = 0
    calm_since: float = 0.0  # the slot of the probe that ended the last episode
    recent: list[Entry] = field(default_factory=list)  # requests that may share a second with the next
    guard: float = pacing.MIN_GUARD  # seconds a request may be written after its slot
    episode: Episode | None = None
    hold: Hold | None = None
    verdict: Verdict | None = None
    probes: list[float] = field(default_factory=list)  # pauses before the probes of this episode


@dataclass(frozen=True, slots=True)
class Grant:
    """What `acquire` decided: a slot (send after `wait` seconds), or ask again after `wait`.

    `report`: the caller must tell the gate how the request went (a probe, a checker, or a
    spacing that is still recovering). `guard`: the most a request may be written after its slot
    (a later one is not sent). `fatal`: the run is stopped (spent quota, refused credentials):
    raise it. `now`: the store's clock when it decided.
    """

    slot: float | None
    wait: float
    report: bool = False
    probe: bool = False
    fatal: Verdict | None = None
    guard: float = pacing.MAX_GUARD
    now: float | None = None


@dataclass(frozen=True, slots=True)
class Throttle:
    """What a throttling answer did: started an episode, scheduled the next probe, was a
    straggler (`ignored`), or spent the patience (`fatal`)."""

    started: bool = False
    pause: float = 0.0
    ignored: bool = False
    fatal: Verdict | None = None


def load(record: Record | None, run: int, rate: float) -> GateState:
    """The gate of `run` from its stored record (another run's record starts afresh, keeping its pace)."""
    base = 1.0 / rate
    if not record or record.get("run") != run:  # a new run keeps the pace of the account's last requests
        old = record or {}
        guard = float(old.get("guard", pacing.MIN_GUARD))
        return GateState(run=run, interval=base, next=float(old.get("next", 0.0)),
                         recent=pacing.loaded(old.get("recent", []), guard), guard=guard)
    data = dict(record)
    episode, hold = data.pop("episode", None), data.pop("hold", None)
    state = GateState(**data)
    state.recent = pacing.loaded(state.recent, state.guard)
    state.episode = Episode(**episode) if episode else None
    state.hold = Hold(**hold) if hold else None
    return state


def dump(state: GateState) -> Record:
    """The record to store."""
    return asdict(state)


def acquire(record: Record | None, now: float, *, run: int, rate: float, owner: str | None = None,
            sent: Iterable[Sent] = ()) -> tuple[Record, Grant]:
    """Hand out the next slot if it is due within GRANT_AHEAD, else say when to ask again.

    `sent`: the caller's reports since its last call: when each of its requests was written (None:
    it missed its slot and was not sent).
    """
    state = load(record, run, rate)
    _settle(state, sent, now)
    if state.verdict is not None:
        return _granted(state, now, Grant(None, 0.0, fatal=state.verdict))
    holder = _held_by(state, now, owner)
    if state.hold is not None and not holder:
        return _granted(state, now, Grant(None, min(POLL, state.hold.until - now)))
    if state.episode is not None and not holder:
        return _probe(state, now, rate)
    slot = max(now, state.next, pacing.opens(state.recent, rate))
    if slot - now > GRANT_AHEAD:
        return _granted(state, now, Grant(None, _retry_in(state, now, rate, slot)))
    _take(state, slot, rate)
    recovering = state.interval > 1.0 / rate * 1.001
    return _granted(state, now, Grant(slot, slot - now, report=holder or recovering, guard=state.guard))


def _granted(state: GateState, now: float, grant: Grant) -> tuple[Record, Grant]:
    return dump(state), replace(grant, now=now)


def _retry_in(state: GateState, now: float, rate: float, slot: float) -> float:
    """When to ask again: when the slot would open if every pending request is written on time."""
    hoped = max(state.next, pacing.opens(state.recent, rate, hopeful=True)) - now - GRANT_AHEAD / 2
    return min(POLL, slot - now - GRANT_AHEAD / 2, max(hoped, pacing.RETRY_FLOOR))


def _settle(state: GateState, sent: Iterable[Sent], now: float) -> None:
    """Take in a sender's reports; a missed probe is offered again."""
    state.recent, state.guard, missed = pacing.settle(state.recent, sent, state.guard)
    if missed and all(e[0] < max(missed) for e in state.recent):
        state.next = min(state.next, max(missed))  # the last slot went unused: the next may take its place
    episode = state.episode
    if episode is not None and episode.probe_slot in missed:
        episode.probe_slot, episode.probe_at = None, now


def _take(state: GateState, slot: float, rate: float) -> None:
    # A slot asked for late (the store was slow, the asker woke late) by less than CATCH_UP keeps the
    # schedule: the next ones may come sooner until it is caught up (the window still holds). After
    # a longer pause the schedule starts again from this slot: no burst.
    state.next = (state.next if state.next >= slot - CATCH_UP else slot) + state.interval
    state.guard = pacing.narrowed(state.guard)
    if pacing.counted(rate):
        state.recent = pacing.take(state.recent, slot, state.guard)


def _held_by(state: GateState, now: float, owner: str | None) -> bool:
    if state.hold is not None and state.hold.until <= now:
        state.hold = None  # the checker died or hung: the gate opens again
    return state.hold is not None and owner is not None and state.hold.owner == owner


def _checked_by_other(state: GateState, now: float, owner: str) -> bool:
    """Whether a credential check of someone other than `owner` holds the gate now."""
    return state.hold is not None and state.hold.until > now and state.hold.owner != owner


def _probe(state: GateState, now: float, rate: float) -> tuple[Record, Grant]:
    episode = state.episode
    assert episode is not None
    if episode.probe_slot is not None:
        if now - episode.probe_slot < PROBE_LOST:
            return _granted(state, now, Grant(None, POLL))  # the probe is out: wait for its answer
        episode.probe_slot, episode.probe_at = None, now
    if episode.probe_at - now > GRANT_AHEAD:
        return _granted(state, now, Grant(None, min(POLL, episode.probe_at - now - GRANT_AHEAD / 2)))
    slot = max(now, episode.probe_at, pacing.opens(state.recent, rate))
    if slot - now > GRANT_AHEAD:
        return _granted(state, now, Grant(None, _retry_in(state, now, rate, slot)))
    episode.probe_slot = slot
    _take(state, slot, rate)
    return _granted(state, now, Grant(slot, slot - now, report=True, probe=True, guard=state.guard))


def throttled(record: Record | None, now: float, *, run: int, rate: float, slot: float, what: str,
              code: int | None, status: int | None, retry_after: float | None, patience: float,
              pauses: tuple[float, ...] = PAUSES) -> tuple[Record, Throttle]:
    """Take in a throttling answer to the request sent in `slot`."""
    state = load(record, run, rate)
    if state.verdict is not None:
        return dump(state), Throttle(fatal=state.verdict)
    episode = state.episode
    if episode is None:
        if slot < state.calm_since:
            return dump(state), Throttle(ignored=True)  # sent before the last episode ended
        state.interval = min(1.0 / MIN_RATE, max(state.interval * 2, 1.0 / rate))
        state.quiet = 0
        state.episode = episode = Episode(since=now, what=what, code=code, status=status)
        state.probes = []
        return _schedule(state, episode, now, retry_after, patience, pauses, started=True)
    if episode.probe_slot is None or slot != episode.probe_slot:
        return dump(state), Throttle(ignored=True)
    episode.stage += 1
    return _schedule(state, episode, now, retry_after, patience, pauses, started=False)


def _schedule(state: GateState, episode: Episode, now: float, retry_after: float | None, patience: float,
              pauses: tuple[float, ...], started: bool) -> tuple[Record, Throttle]:
    """The next probe's time, or the verdict that the quota is spent."""
    pause = max(pauses[episode.stage], retry_after or 0.0) if episode.stage < len(pauses) else None
    if pause is None or now + pause > episode.since + patience:
        asked = retry_after if retry_after and pause is not None and retry_after >= pause else None
        state.verdict = spent_quota(episode, now, asked, patience, state.probes)
        state.episode = None
        return dump(state), Throttle(fatal=state.verdict)
    episode.probe_at, episode.probe_slot = now + pause, None
    state.probes.append(pause)
    return dump(state), Throttle(started=started, pause=pause)


def spent_quota(episode: Episode, now: float, asked: float | None, patience: float, probes: list[float]) -> Verdict:
    """The verdict for a throttle that did not lift while the run was down to single probes
    (`asked`: a Retry-After that reaches past the patience)."""
    tried = len(probes)
    spaced = f", to {tried} single probe{'s' * (tried != 1)} {'/'.join(f'{p:g}' for p in probes)} s apart" if (
        tried) else ""
    longer = "" if asked is None else f" and the API asks to wait {asked:.0f} s"
    return {"kind": "quota", "code": episode.code, "status": episode.status,
            "message": f"{episode.what} (throttling) answered for {now - episode.since:.0f} s{spaced}{longer}: "
                       "not a rate limit, the quota or daily limit is probably used up",
            "hint_says_rerun": True,
            "hint": f"wait for it to renew (or raise it with PatSnap), then run the same command; "
                    f"--throttle-patience (now {patience:g} s) sets how long to probe"}


def succeeded(record: Record | None, now: float, *, run: int, rate: float, slot: float,
              owner: str | None = None, sent: Iterable[Sent] = ()) -> tuple[Record, None]:
    """Take in a normal answer to the request sent in `slot` (a probe's ends its episode), and the
    caller's reports of when its requests were written."""
    state = load(record, run, rate)
    _settle(state, sent, now)
    if owner is not None and state.hold is not None and state.hold.owner == owner:
        state.hold = None  # the checker's retry went through: the credentials are good
    episode = state.episode
    if episode is not None:
        if episode.probe_slot is not None and slot == episode.probe_slot:
            state.episode, state.calm_since, state.quiet = None, slot, 0
        return dump(state), None
    state.quiet += 1
    if state.quiet >= RECOVER_AFTER and state.interval > 1.0 / rate:
        state.interval, state.quiet = max(1.0 / rate, state.interval / 1.1), 0
    return dump(state), None


def unanswered(record: Record | None, now: float, *, run: int, rate: float, slot: float) -> tuple[Record, None]:
    """The request sent in `slot` got no answer (a transport failure): a probe is offered again."""
    state = load(record, run, rate)
    episode = state.episode
    if episode is not None and episode.probe_slot is not None and slot == episode.probe_slot:
        episode.probe_slot, episode.probe_at = None, now
    return dump(state), None


def hold(record: Record | None, now: float, *, run: int, rate: float, owner: str) -> tuple[Record, bool | Verdict]:
    """A request was refused: True when `owner` now checks the credentials, False when someone
    else is checking (wait), or the verdict when a check already failed."""
    state = load(record, run, rate)
    if state.verdict is not None:
        return dump(state), state.verdict
    if _checked_by_other(state, now, owner):
        return dump(state), False
    state.hold = Hold(owner, now + HOLD_SECONDS)
    return dump(state), True


def checking(record: Record | None, now: float, *, run: int, rate: float, owner: str) -> tuple[Record, bool | Verdict]:
    """Whether someone other than `owner` still checks the credentials (True: keep waiting), or
    the verdict when the check failed."""
    state = load(record, run, rate)
    if state.verdict is not None:
        return dump(state), state.verdict
    return dump(state), _checked_by_other(state, now, owner)


def release(record: Record | None, now: float, *, run: int, rate: float, owner: str) -> tuple[Record, None]:
    """`owner` gives up its credential check without a verdict (its refresh failed in transport)."""
    state = load(record, run, rate)
    if state.hold is not None and state.hold.owner == owner:
        state.hold = None
    return dump(state), None


def conclude(record: Record | None, now: float, *, run: int, rate: float, verdict: Verdict) -> tuple[Record, None]:
    """Stop the run at the gate: every worker's next `acquire` raises `verdict`."""
    state = load(record, run, rate)
    if state.verdict is None:
        state.verdict = verdict
    state.hold = None
    return dump(state), None

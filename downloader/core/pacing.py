"""The slot schedule of the API gate, counted where the server counts: when requests are written. Pure.

Theory of operation. The server allows ⌊R⌋ requests in any one-second window and counts a request
when it arrives. The gate hands out slots (store clock) and keeps, for every request that may still
share a second with the next one, an entry `[slot, end, written]`: `end` is the latest store time
the request was (or may be) written. The next slot opens MARGIN after one second past the ⌊R⌋-th
latest end, so whatever order the requests are written in, no ⌊R⌋+1 of them fall within one second
(MARGIN is the server's share: how much the transit and its own clock may squeeze two requests).

A slot is granted with a `guard`: its request is written between the slot and slot + guard, or not
at all. The sender checks at the moment the request is written (an aiohttp hook runs just before
the bytes go out): too late, the request is not sent and the sender asks for a new slot. Until a
sender reports when it wrote, its entry's end is slot + guard; the report (carried by the sender's
next call to the gate, or by its answer's) replaces it with the real time, usually a millisecond
after the slot. So the schedule pays for lateness that happened, not for lateness that might: the
rate is ⌊R⌋ per (1 s + MARGIN + about a millisecond). A miss removes its entry (the slot went
unused, the server saw nothing) and widens the guard; every grant narrows it again, so it settles
where misses are rare. A caller that must wait is told to come back when the slot would open if
every pending request were written on time, so reports arrive before the slot is decided.

Clocks. Slots are store time (SQLite: this machine's wall clock; PostgreSQL: the server's). Each
process bounds the store clock against its own monotonic clock from the round trips it makes
(`StoreClock`: the store read its clock between asking and answering), and converts: it waits until
the slot has surely come, and its deadline is the local time at which slot + guard may have passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MARGIN = 0.01  # seconds over one second between a request and the ⌊R⌋-th one after it
MIN_GUARD, MAX_GUARD = 0.15, 2.0  # how late after its slot a request may be written
GUARD_DECAY = 0.001  # the guard narrows by this much per grant
MISS_WIDEN = 1.5  # and widens by this factor per missed slot
MAX_WINDOW = 200  # rates above this many per second are only spaced, not counted per second
DRIFT = 1e-3  # how fast the store clock may drift from ours (1 ms per second), generously
RETRY_FLOOR = 0.01  # the shortest wait before asking again while a report is awaited

Entry = list[float]  # [slot, end, written (1.0) or assumed (0.0)]
Sent = tuple[float, float | None]  # a slot, and when its request was written (None: it was not)


def window(rate: float) -> int:
    """Requests allowed in one second: ⌊rate⌋ (at least 1)."""
    return max(1, int(rate))


def counted(rate: float) -> bool:
    """Whether requests are counted per second at this rate (above MAX_WINDOW they are only spaced)."""
    return window(rate) <= MAX_WINDOW


def opens(recent: Sequence[Entry], rate: float, *, hopeful: bool = False) -> float:
    """The earliest slot that keeps ⌊rate⌋ requests within any second (0.0: no limit from the window).

    `hopeful`: as if every request not yet reported were written at its slot (when to ask again)."""
    count = window(rate)
    if not counted(rate) or len(recent) < count:
        return 0.0
    ends = sorted(e[0] if hopeful and not e[2] else e[1] for e in recent)
    return ends[-count] + 1.0 + MARGIN


def take(recent: list[Entry], slot: float, guard: float) -> list[Entry]:
    """`recent` with the new slot (assumed written as late as its guard allows), without the entries
    that can no longer share a second with any later slot."""
    horizon = slot - 1.0 - MARGIN
    return [e for e in recent if e[1] > horizon] + [[slot, slot + guard, 0.0]]


def settle(recent: list[Entry], sent: Iterable[Sent], guard: float) -> tuple[list[Entry], float, list[float]]:
    """Take in senders' reports: a written request's real end, a missed slot's removal.

    Returns the entries, the guard (wider after misses) and the slots that were missed."""
    missed: list[float] = []
    by_slot = {e[0]: e for e in recent}
    for slot, end in sent:
        if end is None:
            missed.append(slot)
            guard = min(MAX_GUARD, guard * MISS_WIDEN)
        elif (entry := by_slot.get(slot)) is not None:
            entry[1], entry[2] = end, 1.0
    if missed:
        gone = set(missed)
        recent = [e for e in recent if e[0] not in gone]
    return recent, guard, missed


def narrowed(guard: float) -> float:
    """The guard after one more grant."""
    return max(MIN_GUARD, guard - GUARD_DECAY)


def loaded(raw: Iterable[object], guard: float) -> list[Entry]:
    """Entries from a stored record (an older record kept bare slots: assume them written late)."""
    out: list[Entry] = []
    for item in raw:
        if isinstance(item, (int, float)):
            out.append([float(item), float(item) + guard, 0.0])
        elif isinstance(item, list) and len(item) == 3:
            out.append([float(item[0]), float(item[1]), float(item[2])])
    return out


@dataclass(slots=True)
class StoreClock:
    """Bounds on (store clock − our monotonic clock), from the round trips to the store.

    The store read its clock between our asking and its answer, so each round trip bounds the
    offset; the bounds of earlier trips are kept (widened by DRIFT per second) while they agree."""

    lo: float = float("-inf")
    hi: float = float("inf")
    at: float = 0.0

    def observe(self, asked: float, store_now: float, answered: float) -> None:
        """One round trip: asked and answered on our clock, `store_now` read by the store between."""
        slack = DRIFT * max(0.0, asked - self.at)
        lo, hi = max(self.lo - slack, store_now - answered), min(self.hi + slack, store_now - asked)
        if lo > hi:  # a clock stepped: start again from this trip
            lo, hi = store_now - answered, store_now - asked
        self.lo, self.hi, self.at = lo, hi, answered

    def not_before(self, store_time: float) -> float:
        """Our time from which `store_time` has surely passed on the store's clock."""
        return store_time - self.lo

    def not_after(self, store_time: float) -> float:
        """Our last time at which the store's clock surely has not passed `store_time`."""
        return store_time - self.hi

    def latest(self, local: float) -> float:
        """The latest the store's clock can read at our time `local`."""
        return local + self.hi


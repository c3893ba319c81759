"""Which claims this process may still act on: the local half of lease fencing. Pure (times are passed in).

Every claim carries a generation (a number the store hands out once). The store refuses a result
whose generation is not the key's current one, so a worker cut off from the database while its
lease ran out can never overwrite the keys another worker claimed since. A file or an object,
though, cannot check a token: before it puts an image under its final name, a worker asks this
book whether the claim is still provably its own.

Theory of operation. A claim's lease runs from the moment the store executed it (on the database's
clock) for `lease` seconds, and a renewal extends it from when it executed. The book measures from
when the request was *sent*, which is earlier, on this process's monotonic clock, and keeps a
safety share of the lease in hand (the time a rename or an upload may still take after the check).
So while the book says "held", the store's lease has not run out, and no other worker can have
claimed the keys. A renewal extends only the generations the store says it extended (their lease
had not run out when it executed); a generation the book once gave up is never held again, even
if the store still shows it as this worker's: its keys come back to the pool when the lease lapses.
"""

from __future__ import annotations

from collections.abc import Iterable

SAFETY = 0.25  # the share of a lease kept in hand: a 60 s lease is trusted for 45 s after its request left


class LeaseBook:
    """The generations a worker holds, each with the monotonic time until which it is provably held."""

    def __init__(self, safety: float = SAFETY) -> None:
        self._safety = safety
        self._until: dict[int, float] = {}

    def claimed(self, generation: int, sent: float, lease: float) -> None:
        """A claim sent at `sent` (monotonic) was granted for `lease` seconds."""
        self._until[generation] = sent + lease * (1 - self._safety)

    def live(self, now: float) -> list[int]:
        """The generations still held at `now` (those to renew); the others are forgotten for good."""
        self._until = {g: until for g, until in self._until.items() if until > now}
        return list(self._until)

    def renewed(self, asked: Iterable[int], extended: Iterable[int], sent: float, lease: float) -> None:
        """A renewal of `asked`, sent at `sent`, extended `extended`: the rest are lost (or all settled)."""
        kept = set(extended)
        for generation in asked:
            if generation in kept and generation in self._until:
                self._until[generation] = sent + lease * (1 - self._safety)
            else:
                self._until.pop(generation, None)

    def lost(self, generations: Iterable[int]) -> None:
        """The store refused results of these generations: another worker holds their keys."""
        for generation in generations:
            self._until.pop(generation, None)

    def holds(self, generation: int, now: float) -> bool:
        """Whether the claim `generation` is still provably this worker's at `now`.

        Once not, never again: a renewal that was sent before the claim lapsed and answered after it
        does not bring it back (the work it held may have been dropped meanwhile; its keys must go
        back to the pool when their lease lapses, not stay held by a worker that no longer works them).
        """
        if self._until.get(generation, -1.0) > now:
            return True
        self._until.pop(generation, None)
        return False

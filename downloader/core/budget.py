"""The charged-results budget (--max-charged): reserve before asking, settle after the answer."""

from __future__ import annotations


class Budget:
    """Never lets the results that may be charged exceed `limit` (None: no limit).

    A request reserves as many results as it asks for (the most it can be charged); the answer
    gives back what was not charged. So concurrent requests can never overshoot the limit.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._available = limit
        self.exhausted = False

    def reserve(self, wanted: int) -> int:
        """How many of `wanted` keys may be asked now (0 once the budget is spent)."""
        if self._available is None:
            return wanted
        granted = min(wanted, self._available)
        self._available -= granted
        if granted < wanted:
            self.exhausted = True
        return granted

    def settle(self, reserved: int, charged: int) -> None:
        """Return what a request reserved but was not charged for."""
        if self._available is not None:
            self._available += max(0, reserved - charged)

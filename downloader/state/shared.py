"""Records every worker of a run shares through the state store, as small async objects.

The arithmetic is pure (in `core`); these only route it through `StateStore.update_shared`, so
it runs atomically against the store's own clock whichever process or machine calls it.
"""

from __future__ import annotations

from downloader.core import budget
from downloader.state.base import StateStore


class SharedBudget:
    """--max-charged for the whole run: every worker reserves from one record (None: no limit)."""

    def __init__(self, store: StateStore, run_id: int, limit: int | None) -> None:
        self._store = store
        self._run_id = run_id
        self.limit = limit
        self.exhausted = False

    async def reserve(self, wanted: int) -> int:
        """How many of `wanted` keys may be asked now (0 once the budget is spent)."""
        if self.limit is None:
            return wanted
        granted: int = await self._store.update_shared(
            "budget", budget.reserve_change(self._run_id, self.limit, wanted))
        self.exhausted = self.exhausted or granted < wanted
        return granted

    async def settle(self, reserved: int, charged: int) -> None:
        """Give back what a request reserved but was not charged for."""
        if self.limit is not None and reserved > charged:
            await self._store.update_shared("budget", budget.settle_change(self._run_id, self.limit,
                                                                           reserved - charged))

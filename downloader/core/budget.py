"""The charged-results budget (--max-charged): reserve before asking, settle after the answer.

A request reserves as many results as it asks for (the most it can be charged); the answer gives
back what was not charged, so concurrent requests, in any process of the run, never overshoot.
The `*_change` functions act on a record every worker shares (see `state.shared.SharedBudget`).
"""

from __future__ import annotations

from typing import Any


class Unlimited:
    """No --max-charged: every key may be asked (no shared record is touched)."""

    exhausted = False

    async def reserve(self, wanted: int) -> int:
        """All of them."""
        return wanted

    async def settle(self, reserved: int, charged: int) -> None:
        """Nothing to give back."""


def reserve_change(run_id: int, limit: int, wanted: int) -> Any:
    """The shared-record change that reserves up to `wanted` of a run's budget; returns the grant.

    The record names its run: a new run starts again from `limit`.
    """
    def change(old: dict[str, Any] | None, now: float) -> tuple[dict[str, Any], int]:
        available = old["available"] if old and old.get("run_id") == run_id else limit
        granted = max(0, min(wanted, available))
        return {"run_id": run_id, "available": available - granted}, granted
    return change


def settle_change(run_id: int, limit: int, returned: int) -> Any:
    """The shared-record change that gives back what a request reserved but was not charged."""
    def change(old: dict[str, Any] | None, now: float) -> tuple[dict[str, Any], None]:
        available = old["available"] if old and old.get("run_id") == run_id else limit
        return {"run_id": run_id, "available": available + max(0, returned)}, None
    return change

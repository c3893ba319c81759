"""The halt record: how one worker's fatal condition stops every worker of the run within seconds.

The worker that meets a fatal condition (credentials refused, quota, balance, an outage, a full
disk) writes this small record into the shared store; every worker's lease keeper reads it each
few seconds and stops with the same error. It names the run, so a later run is not halted by it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from downloader.core.errors import FatalApiError, FatalError, OutageError, OutputError

RECORD = "halt"

Change = Callable[[dict[str, Any] | None, float], tuple[dict[str, Any], None]]


def record(err: FatalError, run_id: int, worker: str) -> Change:
    """The change that writes `err` as the run's halt record (the first one written is kept)."""
    def change(old: dict[str, Any] | None, now: float) -> tuple[dict[str, Any], None]:
        if old and old.get("run_id") == run_id:
            return old, None
        return {"run_id": run_id, "worker": worker, "at": now, "message": str(err), "hint": err.hint,
                "hint_says_rerun": err.hint_says_rerun,
                "code": getattr(err, "code", None), "status": getattr(err, "status", None),
                "kind": type(err).__name__}, None
    return change


def error_from(data: dict[str, Any] | None, run_id: int) -> FatalError | None:
    """The error another worker halted this run with, or None."""
    if not data or data.get("run_id") != run_id:
        return None
    message = f"{data.get('message', 'halted')} (seen by worker {data.get('worker', '?')})"
    hint, rerun = data.get("hint") or "", bool(data.get("hint_says_rerun"))
    if data.get("kind") == "FatalApiError":
        return FatalApiError(message, hint=hint, code=data.get("code"), status=data.get("status"),
                             hint_says_rerun=rerun)
    if data.get("kind") == "OutputError":  # the other workers stop as gently as the one that met it
        return OutputError(message, hint=hint, hint_says_rerun=rerun)
    if data.get("kind") == "OutageError":
        return OutageError(message, hint=hint, hint_says_rerun=rerun)
    return FatalError(message, hint=hint, hint_says_rerun=rerun)

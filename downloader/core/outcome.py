"""How a run ended: the typed summary, the reasons to stop early, and the exit code, decided here only.

    0   every patent settled (downloaded, no_image or not_found)
    1   some patents failed, or an unexpected error
    2   usage or input error, or another run holds DIR
    3   a fatal condition of the run: the API refused (credentials, quota, balance, client), the API
        or CDN unreachable, the output folder full, gone or read-only
    4   a budget or time cap was reached (state kept; the next run continues)
    130 interrupted by SIGINT/SIGTERM (state kept)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from downloader.core import errors


class StopReason(enum.StrEnum):
    """Why a run stopped before every patent was settled."""

    BUDGET = "budget"  # --max-charged spent
    RUNTIME = "runtime"  # --max-runtime reached
    INTERRUPTED = "interrupted"  # SIGINT / SIGTERM
    FATAL = "fatal"  # the API said no, or it (or the CDN, or the output) is out of reach


EXIT_BY_STOP: dict[StopReason, int] = {
    StopReason.FATAL: 3,
    StopReason.INTERRUPTED: 130,
    StopReason.BUDGET: 4,
    StopReason.RUNTIME: 4,
}

# Exception class → exit code for errors that end a command (first match wins).
EXIT_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (errors.UsageError, 2),
    (errors.InputError, 2),
    (errors.LockedError, 2),
    (errors.StateError, 2),
    (errors.FatalError, 3),
    (errors.Interrupted, 130),
    (KeyboardInterrupt, 130),
    (errors.DownloaderError, 1),
)

UNSETTLED = ("failed", "pending", "resolved")


def exit_code(stop: StopReason | None, by_status: Mapping[str, int]) -> int:
    """The exit code of a run that returned: its stop reason, else whether anything is left unsettled."""
    if stop is not None:
        return EXIT_BY_STOP[stop]
    return 1 if any(by_status.get(s, 0) for s in UNSETTLED) else 0


def exit_code_for(err: BaseException) -> int:
    """The exit code for an exception that ended a command."""
    for cls, code in EXIT_BY_ERROR:
        if isinstance(err, cls):
            return code
    return 1


@dataclass(slots=True)
class Summary:
    """What summary.json, the run history, the final line and --json report."""

    run_id: int = 0
    exit_code: int = 1
    stop_reason: StopReason | None = None
    fatal: str | None = None
    seconds: float = 0.0
    # inputs
    unique: int = 0
    new: int = 0
    known: int = 0
    duplicates: int = 0
    rejected: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    drawings: dict[str, int] = field(default_factory=dict)  # --drawings all: this run's drawings by status
    # what the run did (summed over its workers)
    api_calls: int = 0
    asked: int = 0
    charged: int = 0
    recharged: int = 0
    retries: int = 0
    throttled: int = 0
    token_refreshes: int = 0
    images: int = 0
    bytes: int = 0
    expired_urls: int = 0
    fenced: int = 0  # results refused or images not put in place: the worker's lease had lapsed
    images_per_second: float = 0.0
    peak_rss_mb: float = 0.0
    manifest_rows: int = 0
    workers: int = 1
    # Every patent of the inputs was already settled: nothing was asked or downloaded. Such a run
    # keeps the last real run's summary.json, and history views skip it.
    nothing_to_do: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (the stop reason as its string)."""
        data = asdict(self)
        data["stop_reason"] = self.stop_reason.value if self.stop_reason else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Summary:
        """Read one back (from summary.json or the run history); unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("stop_reason"):
            values["stop_reason"] = StopReason(values["stop_reason"])
        return cls(**values)

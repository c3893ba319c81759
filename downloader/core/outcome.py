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
from dataclasses import dataclass, field, fields
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


# Exception class → exit code for errors that end a command, from each class's own `exit_code`.
EXIT_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    *((cls, cls.exit_code) for cls in (errors.UsageError, errors.InputError, errors.LockedError,
                                       errors.StateError, errors.FatalError, errors.Interrupted)),
    (KeyboardInterrupt, 130),
    (errors.DownloaderError, errors.DownloaderError.exit_code),
)

SETTLED = ("downloaded", "no_image", "not_found")
UNSETTLED = ("failed", "pending", "resolved")


def settled_count(by_status: Mapping[str, int]) -> int:
    """How many keys are settled (downloaded, no image, not found) among `by_status`."""
    return sum(by_status.get(k, 0) for k in SETTLED)


def exit_code(stop: StopReason | None, by_status: Mapping[str, int]) -> int:
    """The exit code of a run that returned: its stop reason, else whether anything is left unsettled."""
    if stop is not None:
        return EXIT_BY_STOP[stop]
    return 1 if any(by_status.get(s, 0) for s in UNSETTLED) else 0


def exit_code_for(err: BaseException) -> int:
    """The exit code for an exception that ended a command: its own `exit_code` (errors.py), 130 for
    KeyboardInterrupt, else 1."""
    if isinstance(err, errors.DownloaderError):
        return err.exit_code
    return 130 if isinstance(err, KeyboardInterrupt) else 1


@dataclass(frozen=True, slots=True)
class Summary:
    """How a run ended, frozen: what `Job.run` returns and summary.json, the run history, the final
    line and --json report.

    A fatal condition, a cap or an interrupt is a result, not an exception: `stop_reason` says
    which, `exit_code` what a command exits with, and `error` holds the FatalError (with its `hint`)
    or Interrupted that stopped the run, for a caller that wants its words; it is not written out.
    """

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
    manifest: str = ""  # where manifest.csv is: a path, or s3://bucket/prefix/manifest.csv
    workers: int = 1
    # Every patent of the inputs was already settled: nothing was asked or downloaded. Such a run
    # keeps the last real run's summary.json, and history views skip it.
    nothing_to_do: bool = False
    error: errors.DownloaderError | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (the stop reason as its string; `error` is left out, `fatal` says it)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "error"}
        data["by_status"] = dict(self.by_status)
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

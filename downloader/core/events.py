"""Frozen records of what the pipeline did, for progress bars, log files and tests.

The pipeline calls `sink(event)`; sinks must be quick and must not raise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Planned:
    """Work found after reading inputs: keys to ask the API, images to fetch from known URLs."""

    to_ask: int
    reusable: int
    round: int


@dataclass(frozen=True, slots=True)
class BatchDone:
    """One API call answered: keys asked, images found, results charged."""

    asked: int
    images: int
    charged: int


@dataclass(frozen=True, slots=True)
class ImageDone:
    """One image settled: `status` is downloaded, expired (asked again later), deferred (the CDN
    failed; tried again later) or failed."""

    status: str
    bytes: int
    error: str = ""
    key: str = ""


@dataclass(frozen=True, slots=True)
class Problem:
    """One patent's problem, for the log file: `outcome` is failed or deferred (left pending).

    The person watching gets these counted by kind (a Notice per kind at the end), never one
    line per patent.
    """

    key: str
    outcome: str
    error: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Something worth a line in a log file: throttling, token refresh, a stop, a fatal answer."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Elsewhere:
    """Work the run's other workers did since the last such event (from their heartbeats)."""

    asked: int
    images: int
    bytes: int
    charged: int


Event = Planned | BatchDone | ImageDone | Notice | Elsewhere | Problem
Sink = Callable[[Event], None]


def fan_out(*sinks: Sink) -> Sink:
    """One sink that forwards every event to each of `sinks`."""
    def emit(event: Event) -> None:
        for sink in sinks:
            sink(event)
    return emit


class Recording:
    """A sink that keeps every event (tests assert on the list)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

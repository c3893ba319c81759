"""The two seams the pipeline works through, as small protocols, and the values that cross them.

    Resolver   a batch of keys → per-key outcomes (BatchResult). Today `net.api.PatsnapClient`
               (P021 abstract-image, 100 patents a call); a P042 fulltext-image resolver is a second one.
    Fetcher    one image job → a verified object in the sink, or why not. Today `net.cdn.ImageFetcher`.

Both also say when every call failed in transport for a while (`outage_error`), which the pipeline
checks on a timer as well as on each call: an outage stops the run even when nothing is in flight.
Nothing here does I/O; the pipeline sees only these, so tests drive it with fakes in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from downloader.core.errors import OutageError
from downloader.core.model import Batch, Deferred, Downloaded, Failed, ImageJob, Outcome, PatentKey, UrlExpired

Answer = Outcome | Deferred
Fetched = Downloaded | UrlExpired | Failed | Deferred


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Outcomes for the keys that were asked (Deferred ones in an outage), and the keys left
    unasked (budget spent); `charged` is how many results the answer billed, `recharged` how many of
    them were billed again because an earlier answer was lost on the way (its call was retried).
    `budget_spent`: --max-charged had no room for something this batch needed (keys left unasked, or
    a retry of an answer lost on the way: those keys are Deferred), so the run stops asking."""

    outcomes: list[Answer]
    unasked: tuple[PatentKey, ...] = ()
    charged: int = 0
    recharged: int = 0
    budget_spent: bool = False

    @property
    def stops(self) -> bool:
        """Whether the budget ends the run's asking here."""
        return self.budget_spent or bool(self.unasked)


class Resolver(Protocol):
    """Resolves batches of keys into outcomes; raises FatalError when the run must stop."""

    async def resolve(self, batch: Batch) -> BatchResult:
        """Ask for one batch; per-key problems are outcomes, run-level ones raise FatalError."""
        ...

    def outage_error(self) -> OutageError | None:
        """The OutageError to stop with when every call failed in transport for a while, else None."""
        ...


class Fetcher(Protocol):
    """Fetches one image per call into the sink; the result is data, never a raise, for the patent's
    own problems."""

    async def fetch(self, job: ImageJob) -> Fetched:
        """Download `job`; raises FatalError only for conditions of the run (output full, CDN gone)."""
        ...

    def outage_error(self) -> OutageError | None:
        """The OutageError to stop with when every download failed in transport for a while, else None."""
        ...

"""What a pipeline is given, how it stops, and what it returns: the frozen `PipelineConfig` (how its
stages are sized and paced), its `Control` (why it stops early, if it does, and the scopes that
cancel its workers) and the frozen `PipelineResult` its `run()` returns. Imported from
`downloader.pipeline`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio

from downloader.core.errors import FatalError
from downloader.core.outcome import StopReason


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """How one worker's stages are sized and paced (from the job's settings)."""

    batch_size: int = 100
    api_concurrency: int = 4
    download_concurrency: int = 64  # as Settings: the one process of the default takes all of it
    expiry_margin: float = 120.0
    lease: float = 60.0
    deadline: float | None = None  # time.monotonic() after which no new work is claimed (--max-runtime)


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """How one worker's pipeline ended: why it stopped early (if it did) and what only it counted.

    `fatal` is the condition that stopped it (already written to the halt record); `asked` the keys
    answered by the API, `recharged` those paid again (an earlier URL expired unused, or an answer was
    lost on the way), `fenced` the results refused (or images not put in place) because this worker's lease had lapsed.
    """

    stop_reason: StopReason | None = None
    fatal: FatalError | None = None
    asked: int = 0
    recharged: int = 0
    fenced: int = 0

    @property
    def stopped(self) -> bool:
        """True when the work was cut short (a stop reason or a fatal condition)."""
        return self.stop_reason is not None or self.fatal is not None


@dataclass
class Control:
    """Why a pipeline stops early, if it does, and the scopes that stop it; the pipeline's own."""

    deadline: float | None = None
    stop_reason: StopReason | None = None
    fatal: FatalError | None = None
    # Made by the run (a cancelled scope cannot be entered again).
    cancel_all: anyio.CancelScope | None = None
    cancel_downloads: anyio.CancelScope | None = None

    def cancel(self, downloads_only: bool = False) -> None:
        """Cancel the downloads, or all of the workers."""
        scope = self.cancel_downloads if downloads_only else self.cancel_all
        if scope is not None:
            scope.cancel()

    def stopping(self) -> bool:
        """True once no new work may be claimed."""
        if self.stop_reason is None and self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop_reason = StopReason.RUNTIME
        return self.stop_reason is not None or self.fatal is not None

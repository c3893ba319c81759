"""Where events go during a CLI run: progress on stderr and, with --log-file, an appended log.

The log keeps what an operator of an unattended run needs afterwards: start, end, failed
patents, throttling episodes, token refreshes, stops. It never sees a credential: events carry
none, and error texts are built without URLs (see httperrors).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from .config import Settings
from .events import Event, ImageDone, Notice, Sink, fan_out
from .progress import make_progress


class LogFile:
    """Appends one line per event worth keeping, as text or JSON lines."""

    def __init__(self, out: TextIO, fmt: str) -> None:
        self._out = out
        self._json = fmt == "json"

    def __call__(self, event: Event) -> None:
        match event:
            case Notice(kind, message):
                self._write(kind, message)
            case ImageDone("failed", _, error, key):
                self._write("failed", f"{key}: {error}", key=key)

    def _write(self, kind: str, message: str, **extra: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if self._json:
            line = json.dumps({"time": stamp, "event": kind, "message": message, **extra}, ensure_ascii=False)
        else:
            line = f"{stamp} {kind}: {message}"
        self._out.write(line + "\n")
        self._out.flush()


@contextmanager
def open_sinks(settings: Settings) -> Iterator[Sink]:
    """The event sink for a run: progress display plus the optional log file."""
    progress = None if settings.dry_run else make_progress(settings.progress)
    sinks: list[Sink] = [progress] if progress else []
    log = open(settings.log_file, "a", encoding="utf-8") if settings.log_file else None  # noqa: SIM115
    if log:
        sinks.append(LogFile(log, settings.log_format))
    try:
        yield fan_out(*sinks)
    finally:
        if progress:
            progress.close()
        if log:
            log.close()

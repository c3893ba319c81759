"""What a person watching sees: tqdm bars on a terminal, else a log line every few seconds.

Notices are shown unless they are routine or said elsewhere: a token refresh is routine; a
fatal condition is said once, by the command's closing error line; failed and deferred patents
are counted by kind at the end (one line per kind) and detailed in the log file and the manifest.
`--verbose` shows them all, each patent's problem included.
The bars are cleared when the run ends (the final line replaces them), so nothing stale stays
on the terminal.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

from downloader.core.events import BatchDone, Elsewhere, Event, ImageDone, Notice, Planned, Problem

# "at_once": a second stop signal; the process says so on stderr itself as it ends (no closing line follows).
QUIET = frozenset({"token", "fatal", "failed", "budget", "runtime", "at_once"})


def shown(notice: Notice, verbose: bool) -> bool:
    """Whether a notice belongs on the terminal (all of them with --verbose)."""
    return verbose or notice.kind not in QUIET


class Bars:
    """Two tqdm bars: patents resolved by the API, images downloaded (with bytes)."""

    def __init__(self, stream: TextIO | None = None, verbose: bool = False) -> None:
        stream = stream or sys.stderr
        self._patents = tqdm(total=0, unit="patent", desc="patents", file=stream, dynamic_ncols=True,
                             position=0, leave=False)
        self._images = tqdm(total=0, unit="img", desc="images ", file=stream, dynamic_ncols=True,
                            position=1, leave=False)
        self._bytes = 0
        self._verbose = verbose
        self._stream = stream

    def __call__(self, event: Event) -> None:
        match event:
            case Planned(to_ask, reusable, _):
                self._patents.total = (self._patents.total or 0) + to_ask
                self._images.total = (self._images.total or 0) + reusable
                self._patents.refresh()
            case BatchDone(asked, images, _):
                self._images.total = (self._images.total or 0) + images
                self._patents.update(asked)
            case ImageDone(status, size, _, _):
                self._bytes += size
                self._images.update(1)
                self._images.set_postfix_str(f"{self._bytes / 1e6:.1f} MB" + (
                    "" if status == "downloaded" else f", last: {status}"), refresh=False)
            case Elsewhere(asked, images, size, _):
                self._bytes += size
                self._patents.update(asked)
                self._images.total = (self._images.total or 0) + images
                self._images.update(images)
            case Notice(_, message) if shown(event, self._verbose):
                tqdm.write(message, file=self._stream)  # above the bars, on their stream (not stdout)
            case Problem(key, _, error) if self._verbose:  # else counted by kind at the end
                tqdm.write(f"{key}: {error}", file=self._stream)

    def close(self) -> None:
        """Clear the bars: the final line says what they said."""
        self._images.close()
        self._patents.close()


class LogLines:
    """For a non-terminal stderr: one progress line every `interval` seconds."""

    def __init__(self, stream: TextIO | None = None, interval: float = 5.0, verbose: bool = False) -> None:
        self._stream = stream or sys.stderr
        self._verbose = verbose
        self._interval = interval
        self._started = self._last = time.monotonic()
        self._to_ask = self._asked = self._images = self._bytes = self._charged = 0

    def __call__(self, event: Event) -> None:
        match event:
            case Planned(to_ask, _, _):
                self._to_ask += to_ask
            case BatchDone(asked, _, charged):
                self._asked += asked
                self._charged += charged
            case ImageDone(status, size, _, _):
                self._images += status == "downloaded"
                self._bytes += size
            case Elsewhere(asked, images, size, charged):
                self._asked += asked
                self._charged += charged
                self._images += images
                self._bytes += size
            case Notice(_, message) if shown(event, self._verbose):
                self._write(message)
            case Problem(key, _, error) if self._verbose:  # else counted by kind at the end
                self._write(f"{key}: {error}")
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._write(self.line(now))

    def line(self, now: float) -> str:
        """The current progress as one line."""
        rate = self._images / max(now - self._started, 1e-9)
        return (f"progress: {self._asked}/{self._to_ask} patents asked, {self._charged} charged, "
                f"{self._images} images ({self._bytes / 1e6:.1f} MB, {rate:.0f}/s)")

    def _write(self, text: str) -> None:
        print(text, file=self._stream, flush=True)  # noqa: T201

    def close(self) -> None:
        """Nothing to tear down."""


class Notices:
    """With --no-progress --verbose: every notice as a line, and nothing else."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr

    def __call__(self, event: Event) -> None:
        if isinstance(event, Notice):
            print(event.message, file=self._stream, flush=True)  # noqa: T201
        elif isinstance(event, Problem):
            print(f"{event.key}: {event.error}", file=self._stream, flush=True)  # noqa: T201

    def close(self) -> None:
        """Nothing to tear down."""


def make_progress(enabled: bool | None, stream: TextIO | None = None,
                  verbose: bool = False) -> Bars | LogLines | Notices | None:
    """Bars on a terminal, log lines elsewhere, nothing when disabled (`--no-progress`, unless verbose)."""
    stream = stream or sys.stderr
    if enabled is False:
        return Notices(stream) if verbose else None
    if enabled or stream.isatty():
        return Bars(stream, verbose)
    return LogLines(stream, verbose=verbose)

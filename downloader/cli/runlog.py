"""Where events go during a CLI run: progress on stderr and, with --log-file, an appended log.

The log keeps what an operator of an unattended run needs afterwards: start, end, failed
patents, throttling episodes, token refreshes, stops. It never sees a credential: events carry
none, error texts are built without URLs (see httperrors), and the start line names the API by
scheme and host only. The start and end lines are written by `open_sinks` itself, around the
job: the end line holds the caller's summary when it passes one to `RunSink.finish`, else the
tally of the events seen, plus the error that ended the run, if one did (with its traceback when it
was unexpected). A log that cannot be written (its disk is full) is given up with one line on stderr;
the run goes on.

With `--no-progress` nothing is drawn, but a "limits" notice (concurrency lowered to fit the
open-file limit) is still said once on stderr.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

from downloader import __version__
from downloader.core.errors import DownloaderError, UsageError
from downloader.core.events import BatchDone, Event, ImageDone, Notice, Problem, Sink, fan_out
from downloader.core.settings import Settings

_STOPS = ("budget", "runtime", "interrupted", "fatal")


def err_line(text: str) -> None:
    """One line on stderr."""
    print(text, file=sys.stderr, flush=True)  # noqa: T201
_ALWAYS_SAID = ("limits",)  # notices a person must see even with --no-progress


@dataclass
class Tally:
    """What the events of a run add up to (the end line when no summary is given)."""

    batches: int = 0
    charged: int = 0
    images: int = 0
    bytes: int = 0
    failed_images: int = 0
    stop_reason: str | None = None

    def add(self, event: Event) -> None:
        """Count one event."""
        match event:
            case BatchDone(_, _, charged):
                self.batches += 1
                self.charged += charged
            case ImageDone(status, size, _, _):
                self.images += status == "downloaded"
                self.failed_images += status == "failed"
                self.bytes += size
            case Notice(kind, _) if kind in _STOPS and self.stop_reason is None:
                self.stop_reason = kind


class LogFile:
    """Appends one line per event worth keeping, as text or JSON lines."""

    def __init__(self, out: TextIO, fmt: str) -> None:
        self._out: TextIO | None = out
        self._json = fmt == "json"
        self.tally = Tally()

    def __call__(self, event: Event) -> None:
        self.tally.add(event)
        match event:
            case Notice(kind, message):
                # The API client's notices already start with their kind ("throttled: ..."); say it once.
                self._write(kind, message.removeprefix(f"{kind}: "))
            case Problem(key, outcome, error):
                self._write(outcome, f"{key}: {error}", key=key)

    def start(self, settings: Settings) -> None:
        """The run's first line: version, pid and the options that shape cost and pace."""
        options = _options(settings)
        text = ", ".join(f"{k}={v}" for k, v in options.items() if v is not None)
        self._write("start", f"patent-images {__version__} pid {os.getpid()}: {text}",
                    version=__version__, pid=os.getpid(), options=options)

    def end(self, summary: dict[str, Any] | None, error: BaseException | None) -> None:
        """The run's last line: the summary if known, else the tally; and what stopped it."""
        fields: dict[str, Any] = _summary_fields(summary) if summary else asdict(self.tally)
        if error is not None:
            fields["error"] = "interrupted" if isinstance(error, KeyboardInterrupt) else (
                f"{type(error).__name__}: {error}")
        text = ", ".join(f"{k}={_text(v)}" for k, v in fields.items() if v is not None)
        self._write("end", text, **fields)
        if error is not None and not isinstance(error, DownloaderError | KeyboardInterrupt):
            trace = "".join(traceback.format_exception(error)).rstrip()
            self._write("traceback", trace if self._json else "\n" + trace, traceback=trace)

    def _write(self, kind: str, message: str, **extra: Any) -> None:
        if self._out is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if self._json:
            line = json.dumps({"time": stamp, "event": kind, "message": message, **extra}, ensure_ascii=False)
        else:
            line = f"{stamp} {kind}: {message}"
        try:
            self._out.write(line + "\n")
            self._out.flush()
        except OSError as err:  # the log's disk is full or gone: the run matters more than its log
            self._out = None
            _say(f"cannot write the log file any more ({err.strerror or err}); the run goes on without it")


class RunSink:
    """The sink handed to the job; `finish(summary)` puts the job's own summary in the end line."""

    def __init__(self, sinks: list[Sink]) -> None:
        self._emit = fan_out(*sinks)
        self.summary: dict[str, Any] | None = None

    def __call__(self, event: Event) -> None:
        self._emit(event)

    def finish(self, summary: dict[str, Any]) -> None:
        """Record the job's summary for the log's end line."""
        self.summary = summary


@contextmanager
def open_sinks(settings: Settings, *, progress: bool | None = None, log_file: str | None = None,
               log_format: str = "text", verbose: bool = False) -> Iterator[RunSink]:
    """The event sink for a run: progress display (`progress` None: bars when stderr is a terminal)
    plus the optional log file (start/end lines)."""
    from downloader.cli.progress import make_progress  # tqdm: only for a run, not for --help

    bars = None if settings.dry_run else make_progress(progress, verbose=verbose)
    # A dry run promises to write nothing, so it leaves the log file alone too.
    out = _open_log(log_file) if log_file and not settings.dry_run else None
    log = LogFile(out, log_format) if out else None
    said = _say_always if bars is None and not settings.dry_run else None
    sink = RunSink([s for s in (bars, log, said) if s is not None])
    if log:
        log.start(settings)
    error: BaseException | None = None
    try:
        yield sink
    except BaseException as err:
        error = err
        raise
    finally:
        if bars:
            bars.close()
        if log and out:
            log.end(sink.summary, error)
            try:
                out.close()
            except OSError:
                pass  # already said by the log


# A --log-file that names no writable file (a folder, a path through a file, no permission): a usage error.
_BAD_LOG_PATH = {errno.EISDIR, errno.ENOTDIR, errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG}


def _open_log(path: str) -> TextIO:
    """The --log-file, opened to append; a path that cannot be a log file is a usage error (exit 2)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--log-file {path}: folder {folder} does not exist")
    try:
        return open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by open_sinks
    except OSError as err:
        if err.errno not in _BAD_LOG_PATH:
            raise  # a full or read-only disk: a condition of the machine, named as such by the CLI
        raise UsageError(f"cannot write --log-file {path}: {err.strerror or err}") from None


def _say_always(event: Event) -> None:
    """Without a progress display: the notices a person must see all the same, on stderr."""
    if isinstance(event, Notice) and event.kind in _ALWAYS_SAID:
        _say(event.message)


def _say(text: str) -> None:
    err_line(f"patent-images: {text}")


def _options(settings: Settings) -> dict[str, Any]:
    """Options worth a log line; the API as scheme://host only (a URL may hold user:password)."""
    api = urlsplit(settings.api_base)
    return {"api": f"{api.scheme}://{api.hostname}" + (f":{api.port}" if api.port else ""),
            "rate": settings.rate, "batch_size": settings.batch_size,
            "api_concurrency": settings.api_concurrency, "download_concurrency": settings.download_concurrency,
            "max_charged": settings.max_charged, "max_runtime": settings.max_runtime,
            "recheck_after_days": settings.recheck_after_days, "retry_failed": settings.retry_failed or None}


def _summary_fields(summary: dict[str, Any]) -> dict[str, Any]:
    # Every input row is accounted for: the keys by status, and the rows that were not used (rejected, duplicates).
    keep = ("exit_code", "stop_reason", "by_status", "rejected", "duplicates", "api_calls", "charged", "recharged",
            "images", "bytes", "seconds")
    return {k: summary.get(k) for k in keep}


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + " ".join(f"{k}:{v}" for k, v in value.items()) + "}"
    return str(value)

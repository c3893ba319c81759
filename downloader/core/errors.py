"""One exception hierarchy for everything that can go wrong.

    DownloaderError
    ├── UsageError              bad option or command line                       → exit 2
    ├── InputError              unreadable / empty input                         → exit 2
    ├── LockedError             another live run holds DIR                       → exit 2
    ├── StateError              the state store is unreadable or too new         → exit 2
    ├── Interrupted             SIGINT/SIGTERM; state and manifest were saved    → exit 130
    ├── FatalError              the run cannot go on; state kept                  → exit 3
    │   ├── OutageError         the API or CDN unreachable / failing every call for a while
    │   │   └── StateOutageError  the shared state store unreachable for longer than --state-patience
    │   ├── OutputError         the output folder or bucket is full, gone or read-only (see machine.py)
    │   └── FatalApiError       (also an ApiError, below)
    ├── ApiError(code, status)  the metadata API said no
    │   ├── TransientApiError   5xx, reset, timeout, bad JSON, 68300008: retry with backoff;
    │   │   │                   spent: the patents are deferred (an outage is not their failure)
    │   │   └── ThrottledError  67200002, 67200007, HTTP 429: slow down, probe; never lifting: fatal
    │   ├── TokenExpiredError   67200003, 67200009, HTTP 401: refresh the token once
    │   ├── InvalidParameterError 68300004, 68300007: split the batch to isolate bad keys
    │   └── FatalApiError       auth refused, quota, balance, expired client     → exit 3
    ├── BudgetSpentError        --max-charged has no room to ask again after an answer lost on the way
    ├── LocalResourceError      this machine is out of open files (EMFILE, ENFILE) for now: back off, retry
    ├── LeaseLostError          this worker's claim on a key lapsed: its image is not put in place
    └── DownloadError           one image could not be fetched (per patent, data not a stop)
        ├── TransientDownloadError  5xx, reset, timeout, truncated body: retry; spent: deferred
        │   └── NotAnImageError    a 200 whose body is no image: retry; spent: the patent fails
        ├── UrlExpiredError     the signed URL expired (or its host moved): ask the API again
        ├── HostRefusedError    the URL's host refused while a probe finds out whether it moved: wait a moment
        └── BadImageError       not an image, too large, hostile answer: the patent fails

`Job.run` raises only what its caller must handle (UsageError, InputError, LockedError, StateError),
each with its `exit_code`; a fatal condition, a cap or an interrupt ends the run as a result: the
Summary's `stop_reason` and `exit_code`, with the FatalError or Interrupted as `Summary.error`.

Per-patent problems become `failed` rows with `error` = "ClassName: detail"; only run-level
conditions (usage, input, fatal API, a full or vanished output, caps, signals) stop the run. PatSnap's pages disagree on
what 67200002 and 67200003 mean, so their classes are the ones that are right under both readings.
"""

from __future__ import annotations


class DownloaderError(Exception):
    """Base of every error this package raises on purpose; `exit_code` is the command's exit status."""

    exit_code: int = 1


class UsageError(DownloaderError):
    """A bad option value or command line; nothing was started."""

    exit_code = 2


class InputError(DownloaderError):
    """An input file is missing, unreadable, or yields no usable column."""

    exit_code = 2


class LockedError(DownloaderError):
    """Another live process is running a job on the same output folder."""

    exit_code = 2


class StateError(DownloaderError):
    """The state store in DIR cannot be used (corrupt, or written by a newer version)."""

    exit_code = 2


class Interrupted(DownloaderError):
    """SIGINT or SIGTERM stopped the run after state and manifest were written."""

    exit_code = 130


class FatalError(DownloaderError):
    """A condition of the whole run that no retry fixes: stop cleanly, keep state, exit 3.

    `hint` says what to do, in words for the person running the job. `hint_says_rerun`: the hint
    already tells the person to run the same command again (the CLI then does not say it twice).
    """

    exit_code = 3

    def __init__(self, message: str, *, hint: str = "", hint_says_rerun: bool = False) -> None:
        super().__init__(message)
        self.hint = hint
        self.hint_says_rerun = hint_says_rerun


class OutageError(FatalError):
    """The API or the CDN failed every call for a while (refused, DNS, TLS, timeouts, 5xx)."""


class StateOutageError(OutageError):
    """The shared state store (PostgreSQL) stayed unreachable for longer than --state-patience."""


class OutputError(FatalError):
    """The output folder or bucket cannot take more: full, gone, read-only.

    `unsaved` names the output files the run could not write on its way out (the state is intact).
    """

    def __init__(self, message: str, *, hint: str = "", hint_says_rerun: bool = False) -> None:
        super().__init__(message, hint=hint, hint_says_rerun=hint_says_rerun)
        self.unsaved: list[str] = []


class BudgetSpentError(DownloaderError):
    """--max-charged has no room for another try of a call whose answer was lost on the way (it may have
    been billed, so its reservation is used up): the call's keys wait for the next run. Never retried."""


class LocalResourceError(DownloaderError):
    """The process is out of file descriptors (EMFILE, ENFILE) for a moment: wait and try again.

    A shortage of this machine, never a patent's fault: it is not counted against a download's retries.
    """


class LeaseLostError(DownloaderError):
    """This worker's claim on a key lapsed (cut off from the state store, or paused): another worker may
    hold the key now, so the image is not put under its final name (the temp file is dropped)."""


class ApiError(DownloaderError):
    """The metadata API answered with an error code or HTTP status, or not at all."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.retry_after = retry_after


class TransientApiError(ApiError):
    """Worth retrying after a backoff: server errors, resets, timeouts, 68300008."""


class ThrottledError(TransientApiError):
    """The account is over its rate: slow down (and wait `retry_after` seconds if given)."""


class TokenExpiredError(ApiError):
    """The bearer token was refused as expired or invalid: refresh once, then it is fatal."""


class InvalidParameterError(ApiError):
    """The batch holds an identifier the API rejects: split it to find which."""


class FatalApiError(ApiError, FatalError):
    """Nothing this run can fix (credentials, quota, balance, expired client): stop, exit 3."""

    def __init__(self, message: str, *, hint: str = "", code: int | None = None, status: int | None = None,
                 retry_after: float | None = None, hint_says_rerun: bool = False) -> None:
        ApiError.__init__(self, message, code=code, status=status, retry_after=retry_after)
        self.hint = hint
        self.hint_says_rerun = hint_says_rerun


class DownloadError(DownloaderError):
    """One image could not be fetched; the patent gets a status, the run goes on."""


class TransientDownloadError(DownloadError):
    """A network fault or truncated body: retry the same URL."""


class NotAnImageError(TransientDownloadError):
    """The CDN answered 200 with something that is not an image (an HTML page): worth a retry,
    but when every try gets it, it is this patent's problem, not an outage."""


class UrlExpiredError(DownloadError):
    """The signed URL is expired or about to: the patent goes back for a fresh URL."""


class HostRefusedError(DownloadError):
    """The URL's host refused the connection while one of its keys asks the API whether the host
    moved (`core/moved.py`): not retried, the key is deferred a moment and decided then."""


class BadImageError(DownloadError):
    """The CDN's bytes are not an acceptable image (type, size), or the answer was hostile."""


def describe(err: BaseException) -> str:
    """The `error` column text: the class name, then the message (never a secret, see api.py)."""
    text = " ".join(str(err).split())[:300]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def cause_of(err: BaseException) -> BaseException:
    """The error that matters inside (nested) exception groups from task groups.

    Our own errors first (they carry the exit code and the message), then anything else; a group
    of only cancellations stays as it is.
    """
    leaves = list(_leaves(err))
    for leaf in leaves:
        if isinstance(leaf, DownloaderError | KeyboardInterrupt):
            return leaf
    for leaf in leaves:
        if not _is_cancellation(leaf):
            return leaf
    return err


def _leaves(err: BaseException) -> list[BaseException]:
    if isinstance(err, BaseExceptionGroup):
        return [leaf for inner in err.exceptions for leaf in _leaves(inner)]
    return [err]


def _is_cancellation(err: BaseException) -> bool:
    # asyncio's CancelledError (what anyio raises on asyncio) without importing an event loop here.
    return type(err).__name__ == "CancelledError"

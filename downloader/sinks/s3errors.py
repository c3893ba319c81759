"""What an S3 call's failure means: retry it, or stop; in words safe to show.

obstore raises its own exception classes and puts the HTTP status and S3's XML error body in the text.
`classify` turns that into a `Failure`: transient (network faults, timeouts, 5xx with SlowDown, 408, 429)
or not (denied, no such bucket, bad configuration), with the status, S3's error code and one short line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from obstore.exceptions import (
    AlreadyExistsError,
    GenericError,
    InvalidPathError,
    NotSupportedError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
    UnknownConfigurationKeyError,
)

_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]{1,64})</Code>")
_NETWORK_CAUSES = (("connection refused", "connection refused"), ("dns error", "host name not found (DNS)"),
                   ("certificate", "TLS certificate not accepted"), ("timed out", "timed out"),
                   ("connection reset", "connection reset"), ("tls", "TLS error"))
# obstore's classes for answers no retry changes (a 404 is FileNotFoundError, a 403 PermissionDeniedError)
_PERMANENT = (PermissionDeniedError, UnauthenticatedError, FileNotFoundError, InvalidPathError, NotSupportedError,
              UnknownConfigurationKeyError, AlreadyExistsError, PreconditionError)
_DENIED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"})


@dataclass(frozen=True)
class Failure:
    """What went wrong in one S3 call, in words safe to show (no credentials, no debug dump)."""

    transient: bool
    status: int | None
    code: str
    text: str

    @property
    def missing_bucket(self) -> bool:
        return self.code == "NoSuchBucket"

    @property
    def denied(self) -> bool:
        return self.status in (401, 403) or self.code in _DENIED_CODES

    @property
    def answered(self) -> bool:
        """The server answered (a status), as opposed to a connection that failed."""
        return self.status is not None


def classify(err: Exception, scrub: Callable[[str], str]) -> Failure:
    """The failure behind obstore's exception `err`; `scrub` removes credentials from its text first."""
    text = scrub(str(err))
    status = int(m.group(1)) if (m := _STATUS.search(text)) else None
    code = m.group(1) if (m := _CODE.search(text)) else ""
    line = summary(text, status, code)
    if isinstance(err, _PERMANENT):
        return Failure(False, status, code, line)
    transient = isinstance(err, GenericError) and (status is None or status >= 500 or status in (408, 429))
    return Failure(transient, status, code, line)


def summary(text: str, status: int | None, code: str) -> str:
    """One short line: the status and S3 error code, else the network cause found in obstore's dump."""
    if status is not None:
        return f"HTTP {status} {code}".strip()
    lowered = text.lower()
    for needle, words in _NETWORK_CAUSES:
        if needle in lowered:
            return words
    first = text.split("\n", 1)[0]
    return " ".join(first.rsplit(" - ", 1)[-1].split())[:200] or "unknown error"

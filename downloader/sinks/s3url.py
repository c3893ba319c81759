"""`s3://bucket/prefix` and the endpoint: parsed and checked without any S3 library (pure).

Kept apart from `s3.py` so that a bad `--out` is refused (exit 2) with the same words whether the
S3 extra is installed or not, and so the rules are tested as a table.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from downloader.core.errors import UsageError

SCHEME = "s3://"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # AWS's rules, which MinIO, COS and OSS share
_BAD_PREFIX_CHARS = re.compile(r"[\x00-\x1f\x7f?#\\]")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix ('' or 'a/b', never with a leading or trailing slash)."""

    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        """`s3://bucket/prefix` (or `s3://bucket`)."""
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"

    def key(self, name: str) -> str:
        """The object key of `name` under the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def join(self, name: str) -> str:
        """`s3://bucket/prefix/name`."""
        return f"{SCHEME}{self.bucket}/{self.key(name)}"


def is_s3_url(out: str) -> bool:
    """True when `--out` names a bucket rather than a folder."""
    return out[: len(SCHEME)].lower() == SCHEME


def parse_s3_url(url: str) -> S3Location:
    """Split and check `s3://bucket/prefix`; anything else is a `UsageError` (never echoing credentials)."""
    shown = url if "@" not in url else "the s3:// URL given"
    if not is_s3_url(url):
        raise UsageError(f"not an S3 URL: {shown} (expected s3://bucket/prefix)")
    bucket, _, prefix = url[len(SCHEME):].partition("/")
    if "@" in bucket or ":" in bucket:
        raise UsageError("an s3:// URL holds only the bucket and prefix: give credentials through the AWS chain "
                         "and the service with --s3-endpoint-url")
    if not _valid_bucket(bucket):
        raise UsageError(f"bad bucket name {bucket!r} in {shown}: 3–63 characters of a-z, 0-9, '.' and '-', "
                         "starting and ending with a letter or digit")
    return S3Location(bucket, _checked_prefix(prefix.strip("/"), shown))


def _valid_bucket(bucket: str) -> bool:
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        return False
    try:
        ipaddress.ip_address(bucket)
    except ValueError:
        return True
    return False


def _checked_prefix(prefix: str, shown: str) -> str:
    if _BAD_PREFIX_CHARS.search(prefix):
        raise UsageError(f"bad prefix in {shown}: no control characters, '?', '#' or '\\'")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise UsageError(f"bad prefix in {shown}: no empty, '.' or '..' path segments")
    return prefix


def resolve_endpoint(endpoint_url: str | None) -> str | None:
    """The endpoint to use: the option, else `AWS_ENDPOINT_URL`, else None (AWS itself)."""
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    if endpoint is None:
        return None
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise UsageError("bad S3 endpoint URL: expected http(s)://host[:port] (credentials come from the AWS chain)")
    return endpoint.rstrip("/")


def endpoint_host(endpoint: str | None, region: str) -> str:
    """host[:port] of the endpoint for messages; AWS's regional host when there is none."""
    if endpoint is None:
        return f"s3.{region}.amazonaws.com"
    parts = urlsplit(endpoint)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)

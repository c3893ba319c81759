"""Incomplete multipart uploads under the sink's prefix: listed, and the dead ones aborted.

Images never use multipart (one PUT each). Output files over `MULTIPART_OVER` (a manifest of more than
~50,000 rows) do, through obstore, which aborts an upload whose part or completion fails. Two cases
still leave one behind: the process killed (-9, out of memory, power) during the upload, and an abort
that failed itself (the store unreachable at that moment). An incomplete upload is invisible but its
parts are stored (and billed) until it is aborted.

obstore cannot list or abort them, so this uses botocore (the S3 extra has it for the credential
chain), off the event loop, with the same credentials, endpoint, region and CA bundle.

Which to abort is decided by `dead` (pure): every upload under the prefix when this process is the
job's only writer (it holds the lock), else only those older than `STALE_AFTER`, which no live worker
can still be sending. A bucket lifecycle rule `AbortIncompleteMultipartUpload` does the same on the
server side.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

STALE_AFTER = timedelta(hours=1)  # far beyond any upload of ours: parts of 16 MB, 120 s timeout each


@dataclass(frozen=True)
class Upload:
    """One incomplete multipart upload."""

    key: str
    upload_id: str
    initiated: datetime


def dead(uploads: Iterable[Upload], now: datetime, *, only_writer: bool, key: str | None = None) -> list[Upload]:
    """The uploads to abort: all (the only writer), or those older than STALE_AFTER; with `key` (after our
    own upload of it failed: one writer per output file), every upload of that key."""
    return [u for u in uploads if (key is None or u.key == key)
            and (only_writer or key is not None or now - u.initiated > STALE_AFTER)]


class UploadSweeper:
    """Lists and aborts incomplete multipart uploads under `prefix` (blocking: run it in a thread)."""

    def __init__(self, session: Any, *, bucket: str, prefix: str, endpoint: str | None, region: str,
                 ca_bundle: str | None) -> None:
        self._session = session
        self._bucket = bucket
        self._prefix = f"{prefix}/" if prefix else ""
        self._endpoint = endpoint
        self._region = region
        self._ca_bundle = ca_bundle
        self._client: Any = None

    def sweep(self, *, only_writer: bool, key: str | None = None) -> int:
        """Abort the dead uploads (see `dead`); the number aborted. Raises botocore's errors."""
        gone = dead(self.incomplete(key), datetime.now(UTC), only_writer=only_writer, key=key)
        for upload in gone:
            self._s3().abort_multipart_upload(Bucket=self._bucket, Key=upload.key, UploadId=upload.upload_id)
        return len(gone)

    def incomplete(self, key: str | None = None) -> list[Upload]:
        """Every incomplete upload under the prefix (or of `key`, a full object key)."""
        found: list[Upload] = []
        pages = self._s3().get_paginator("list_multipart_uploads").paginate(
            Bucket=self._bucket, Prefix=key if key is not None else self._prefix)
        for page in pages:
            found += [Upload(u["Key"], u["UploadId"], u["Initiated"]) for u in page.get("Uploads", [])]
        return found

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _s3(self) -> Any:
        if self._client is None:
            from botocore.config import Config

            # Path-style for other services, as obstore does unless told otherwise; AWS decides for itself.
            virtual = os.environ.get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "").lower() == "true"
            style = "auto" if self._endpoint is None else "virtual" if virtual else "path"
            config = Config(s3={"addressing_style": style}, connect_timeout=10, read_timeout=60,
                            retries={"max_attempts": 3, "mode": "standard"})
            self._client = self._session.create_client(
                "s3", endpoint_url=self._endpoint, region_name=self._region, verify=self._ca_bundle or None,
                config=config)
        return self._client

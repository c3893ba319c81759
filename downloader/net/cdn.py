"""CDN downloads: stream a signed URL to a temporary file, verify it, rename it into place.

The body is hashed (SHA-256) and measured while it streams; the first bytes decide the real
image type. The file is checked against the HTTP status, Content-Length, the magic bytes and
the size cap before the rename, so nothing unverified ever carries a final name.

The bytes go to an `ImageSink` upload (a temp file, or memory for an object store), which makes
them visible under their final name only on `commit`, after every check passed. When the sink
cannot take the bytes, its OutputError (full, read-only, gone) stops the run; a moment without
free file descriptors (LocalResourceError) is waited out, never counted against the patent.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import aiohttp
import anyio
from yarl import URL

from downloader.core.errors import (
    BadImageError,
    DownloadError,
    FatalError,
    LocalResourceError,
    TransientDownloadError,
    UrlExpiredError,
    describe,
)
from downloader.core.expiry import is_expired_403, is_usable
from downloader.core.model import Counters, Downloaded, Failed, ImageJob, UrlExpired
from downloader.core.naming import CONTENT_TYPES, MAGIC_BYTES_NEEDED, image_path, sniff_image_type
from downloader.net.httperrors import map_client_errors
from downloader.net.proxies import proxy_for
from downloader.net.retrying import RetryPolicy
from downloader.sinks.base import ImageSink, Upload

_ERROR_BODY_BYTES = 64 * 1024
# Waiting for file descriptors to be freed (by the downloads that hold them): first pause, cap, patience.
_FD_PAUSE, _FD_PAUSE_MAX, _FD_PATIENCE = 0.05, 2.0, 120.0


class ImageFetcher:
    """Fetches one image per call; the result is data (downloaded, expired, failed), never a raise."""

    def __init__(self, session: aiohttp.ClientSession, sink: ImageSink, counters: Counters, *,
                 policy: Callable[[], RetryPolicy], expiry_margin: float, max_bytes: int) -> None:
        self._session = session
        self._sink = sink
        self._counters = counters
        self._policy = policy
        self._margin = expiry_margin
        self._max_bytes = max_bytes

    async def fetch(self, job: ImageJob) -> Downloaded | UrlExpired | Failed:
        """Download `job` with retries on transient faults.

        Raises the sink's OutputError when the output cannot take the image (a condition of the run),
        and FatalError when no file descriptor came free for minutes.
        """
        pause, waited = _FD_PAUSE, 0.0
        while True:
            try:
                return await self._fetch(job)
            except LocalResourceError as err:
                if waited >= _FD_PATIENCE:
                    raise FatalError(f"{err}, for {waited:.0f} s", hint="raise the open-file limit (ulimit -n) "
                                     "or lower --download-concurrency") from err
            self._counters.retries += 1
            await anyio.sleep(pause)
            waited += pause
            pause = min(2 * pause, _FD_PAUSE_MAX)

    async def _fetch(self, job: ImageJob) -> Downloaded | UrlExpired | Failed:
        try:
            return await self._policy().call(lambda: self._once(job))
        except UrlExpiredError as err:
            self._counters.expired_urls += 1
            return UrlExpired(job.key, describe(err))
        except DownloadError as err:
            return Failed(job.key, describe(err))

    async def _once(self, job: ImageJob) -> Downloaded:
        if not is_usable(job.expires_at, time.time(), self._margin):
            raise UrlExpiredError("the URL expires too soon to start the download")
        with map_client_errors(TransientDownloadError, "image download"):
            # Signed URLs must go out byte for byte: re-quoting would break the signature.
            url = URL(job.url, encoded=True)
            async with self._session.get(url, allow_redirects=True, proxy=proxy_for(url)) as resp:
                if resp.status != 200:
                    await self._refuse(resp, job)
                declared = resp.content_length
                if declared is not None and declared > self._max_bytes:
                    raise BadImageError(f"image is {declared} bytes, over the {self._max_bytes}-byte cap")
                return await self._stream(resp, job, declared)

    async def _refuse(self, resp: aiohttp.ClientResponse, job: ImageJob) -> None:
        status = resp.status
        if status == 403:
            body = await resp.content.read(_ERROR_BODY_BYTES)
            if is_expired_403(body) or not is_usable(job.expires_at, time.time(), 0):
                raise UrlExpiredError("the CDN says the URL has expired (HTTP 403)")
            raise BadImageError("the CDN refused the URL (HTTP 403)")
        if status >= 500 or status in (408, 429):
            raise TransientDownloadError(f"HTTP {status} from the CDN")
        raise BadImageError(f"HTTP {status} from the CDN")

    async def _stream(self, resp: aiohttp.ClientResponse, job: ImageJob, declared: int | None) -> Downloaded:
        digest = hashlib.sha256()
        size = 0
        head = b""
        upload: Upload | None = None
        try:
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > self._max_bytes:
                    raise BadImageError(f"image is over the {self._max_bytes}-byte cap")
                digest.update(chunk)
                if upload is None:
                    head += chunk
                    if len(head) < MAGIC_BYTES_NEEDED:
                        continue
                    upload = self._begin(head)
                    chunk = head
                upload.write(chunk)
            if upload is None:
                upload = self._begin(head)
                upload.write(head)
            if declared is not None and size != declared:
                raise TransientDownloadError(f"body cut short: {size} of {declared} bytes")
            ext = sniff_image_type(head) or "bin"
            relative = image_path(job.pn or job.key.value, job.num, ext)
            sha = digest.hexdigest()
            done, upload = upload, None
            await done.commit(relative, content_type=CONTENT_TYPES[ext], sha256=sha)
        finally:
            if upload is not None:
                with anyio.CancelScope(shield=True):
                    await upload.discard()
        self._counters.bytes += size
        self._counters.images += 1
        return Downloaded(job.key, relative, size, sha)

    def _begin(self, head: bytes) -> Upload:
        if sniff_image_type(head) is None:
            # CDNs do answer 200 with an HTML error page now and then: worth another try.
            raise TransientDownloadError(f"not an image: the body starts with {head[:16]!r}")
        return self._sink.begin()

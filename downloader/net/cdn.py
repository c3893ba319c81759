"""CDN downloads: stream a signed URL to a temporary file, verify it, rename it into place.

The body is hashed (SHA-256) and measured while it streams; the first bytes decide the real
image type. The file is checked against the HTTP status, Content-Length, the magic bytes and
the size cap before the rename, so nothing unverified ever carries a final name.

The bytes go to an `ImageSink` upload (a temp file, or memory for an object store), which makes
them visible under their final name only on `commit`, after every check passed. When the sink
cannot take the bytes, its OutputError (full, read-only, gone) stops the run; a moment without
free file descriptors (LocalResourceError) is waited out, never counted against the patent.

A download starts only while its URL has more than a margin left: --expiry-margin, but never
more than a quarter of the URL's own lifetime (`expiry.margin`), so short-lived URLs are used.
The CDN's word beats the URL's: its "Request has expired" answers and its Date headers teach
`self.clock` (`core/urlclock.py`) its clock and the lifetime it really honours, and every
expiry is judged by what was learned.
A transport failure whose retries are spent defers the patent (it keeps its URL; tried again
later), and when every download fails that way for a while the CDN is out of reach: OutageError.
A URL whose host refuses the connection while the API gives URLs on another host (the host moved:
`core/moved.py` tells it from a host that is down, with one probe) is asked again at once, as an
expired one is: charged once more and counted in `recharged`, never waited for until it expires.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import anyio
from yarl import URL

from downloader.core.errors import (
    BadImageError,
    DownloadError,
    FatalError,
    HostRefusedError,
    LeaseLostError,
    LocalResourceError,
    NotAnImageError,
    OutageError,
    TransientDownloadError,
    UrlExpiredError,
    describe,
)
from downloader.core.expiry import is_expired_403, is_usable, margin, parse_url_signed_at
from downloader.core.model import Counters, Deferred, Downloaded, Failed, FigureKey, ImageJob, PatentKey, UrlExpired
from downloader.core.moved import MovedHosts
from downloader.core.naming import CONTENT_TYPES, MAGIC_BYTES_NEEDED, drawing_path, image_path, sniff_image_type
from downloader.core.outage import SPAN, OutageDetector, origin
from downloader.core.urlclock import UrlClock, cdn_time
from downloader.net.httperrors import cause, map_client_errors
from downloader.net.proxies import proxy_for
from downloader.net.retrying import RETRYABLE, RetryPolicy
from downloader.sinks.base import ImageSink, Upload

_ERROR_BODY_BYTES = 64 * 1024
# A key whose URLs expired unused again and again (transitions.MAX_EXPIRIES) waits this long: longer
# than a run waits for deferred keys, so this run stops paying for it; the next run asks again.
EXPIRED_DEFER = 300.0
# Waiting for file descriptors to be freed (by the downloads that hold them): first pause, cap, patience.
_FD_PAUSE, _FD_PAUSE_MAX, _FD_PATIENCE = 0.05, 2.0, 120.0
_PROBE_WAIT = 1.0  # a refused URL waits this long while its host's probe is out (see core/moved.py)


class ImageFetcher:
    """Fetches one image per call; the result is data (downloaded, expired, failed), never a raise."""

    def __init__(self, session: aiohttp.ClientSession, sink: ImageSink, counters: Counters, *,
                 policy: Callable[[], RetryPolicy], expiry_margin: float, max_bytes: int,
                 outage_seconds: float = SPAN, clock: UrlClock | None = None,
                 holds: Callable[[int], bool] | None = None) -> None:
        self._session = session
        self.clock = clock if clock is not None else UrlClock()
        self._holds = holds  # whether a claim (its generation) is still this worker's: see state.base
        self._sink = sink
        self._counters = counters
        self._policy = policy
        self._margin = expiry_margin
        self._max_bytes = max_bytes
        self.outage = OutageDetector("the CDN", outage_seconds)
        self.moves: MovedHosts[PatentKey] = MovedHosts(patience=self.outage.defer_seconds)
        self._last_host = "\0"  # the origin of the last successful download (told to `moves` once per change)

    async def fetch(self, job: ImageJob) -> Downloaded | UrlExpired | Failed | Deferred:
        """Download `job` with retries on transient faults.

        Raises the sink's OutputError when the output cannot take the image (a condition of the run),
        OutageError when every download failed in transport for a while (the CDN is out of reach),
        FatalError when no file descriptor came free for minutes, and LeaseLostError when the job's
        claim lapsed before the image could be put in place (another worker may hold the key now).
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

    async def _fetch(self, job: ImageJob) -> Downloaded | UrlExpired | Failed | Deferred:
        try:
            try:  # the first try outside the policy: nearly every download needs no other
                return await self._once(job)
            except RETRYABLE as err:
                failed = err
            return await self._policy().retry(failed, lambda: self._once(job))
        except UrlExpiredError as err:
            self._counters.expired_urls += 1
            return UrlExpired(job.key, describe(err), time.time() + EXPIRED_DEFER)
        except HostRefusedError as err:
            return Deferred(job.key, describe(err), time.time() + _PROBE_WAIT)
        except NotAnImageError as err:  # every try got a page that is no image: the patent's problem
            return Failed(job.key, describe(err))
        except TransientDownloadError as err:  # not the patent's fault: it keeps its URL, tried again later
            return Deferred(job.key, describe(err), time.time() + self.outage.defer_seconds)
        except DownloadError as err:
            return Failed(job.key, describe(err))

    def usable(self, job: ImageJob, signed: float | None, now: float) -> bool:
        """Whether `job` (signed at `signed`) may start now: more than its margin (relative to the URL's
        lifetime) left, by what the CDN has shown of its clock and of the lifetime it honours."""
        expires = self.clock.expires_at(signed, job.expires_at)
        return is_usable(expires, now, margin(expires, self.clock.signed_at(signed), now, self._margin))

    @staticmethod
    def _signed_at(job: ImageJob) -> float | None:
        return job.signed_at if job.signed_at is not None else parse_url_signed_at(job.url)

    async def _once(self, job: ImageJob) -> Downloaded:
        outage = self.outage.error(time.monotonic())
        if outage is not None:
            raise outage
        # Read once per attempt: for a URL claimed from the store it is parsed out of the URL (~70 us).
        signed = self._signed_at(job)
        if not self.usable(job, signed, time.time()):
            raise UrlExpiredError("the URL expires too soon to start the download")
        if self.moves.probing:
            self.moves.arrived(origin(job.url), job.key)
        try:
            done = await self._attempt(job, signed)
        except NotAnImageError:
            self.outage.succeeded()
            raise
        except TransientDownloadError as err:
            host = origin(job.url)
            verdict = self.moves.refused(host, job.key, time.monotonic()) if _refused(err) else "down"
            if verdict == "ask":
                raise UrlExpiredError(f"{host} refused the connection: asking the API for a fresh URL") from err
            outage = self.outage.failed(time.monotonic(), str(err), host)
            if verdict == "wait":
                raise HostRefusedError(f"{host} refused the connection; waiting to learn whether it moved") from err
            if outage is not None:
                raise outage from err
            raise
        except DownloadError:
            self.outage.succeeded()  # the CDN answered (403, 404, a bad image): it is reachable
            raise
        self.outage.succeeded()
        self._note_served(job.url)
        return done

    def _note_served(self, url: str) -> None:
        """Tell `moves` the host of a successful download, hashing the URL only when the host changed."""
        served = self._last_host
        if url.startswith(served) and url[len(served):len(served) + 1] in ("/", "?", "#"):
            return
        self._last_host = origin(url)
        self.moves.served(self._last_host)

    def outage_error(self) -> OutageError | None:
        """The OutageError to stop with when every download failed for a while (checked on a timer too)."""
        return self.outage.error(time.monotonic())

    async def _attempt(self, job: ImageJob, signed: float | None) -> Downloaded:
        with map_client_errors(TransientDownloadError, "image download"):
            # Signed URLs must go out byte for byte: re-quoting would break the signature.
            url = URL(job.url, encoded=True)
            started = time.time()
            async with self._session.get(url, allow_redirects=True, proxy=proxy_for(url)) as resp:
                if resp.status != 200:
                    await self._refuse(resp, job, signed)
                self._served(signed, started, resp)
                declared = resp.content_length
                if declared is not None and declared > self._max_bytes:
                    raise BadImageError(f"image is {declared} bytes, over the {self._max_bytes}-byte cap")
                return await self._stream(resp, job, declared)

    def _served(self, signed: float | None, started: float, resp: aiohttp.ClientResponse) -> None:
        """Teach the clock the age this URL was honoured at (and, now and then, the CDN's Date)."""
        now = time.time()
        date = resp.headers.get("Date") if self.clock.wants_date(now) else None
        self.clock.served(signed_at=signed, started=started, now=now,
                          server_time=None if date is None else cdn_time(None, date))

    async def _refuse(self, resp: aiohttp.ClientResponse, job: ImageJob, signed: float | None) -> None:
        status = resp.status
        if status == 403:
            body = await error_body(resp.content.iter_any())
            now = time.time()
            if is_expired_403(body):  # unambiguous, and it carries the CDN's time: learn from it
                self.clock.refused(signed_at=signed, stated=job.expires_at, now=now,
                                   server_time=cdn_time(body, resp.headers.get("Date")))
                raise UrlExpiredError("the CDN says the URL has expired (HTTP 403)")
            if not is_usable(self.clock.expires_at(signed, job.expires_at), now, 0):
                raise UrlExpiredError("the CDN refused the URL past its expiry (HTTP 403)")
            raise BadImageError("the CDN refused the URL (HTTP 403)")
        if status >= 500 or status in (408, 429):
            raise TransientDownloadError(f"HTTP {status} from the CDN")
        raise BadImageError(f"HTTP {status} from the CDN")

    async def _stream(self, resp: aiohttp.ClientResponse, job: ImageJob, declared: int | None) -> Downloaded:
        digest = hashlib.sha256()
        size = 0
        head = b""
        ext = ""  # the image's type, read from its first bytes
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
                    ext, upload = _image_type(head), self._sink.begin()
                    chunk = head
                upload.write(chunk)
            if upload is None:
                ext, upload = _image_type(head), self._sink.begin()
                upload.write(head)
            if declared is not None and size != declared:
                raise TransientDownloadError(f"body cut short: {size} of {declared} bytes")
            pn = job.pn or job.key.value
            relative = (drawing_path if isinstance(job.key, FigureKey) else image_path)(pn, job.num, ext)
            sha = digest.hexdigest()
            if self._holds is not None and not self._holds(job.lease):  # checked last: nothing may wait after it
                raise LeaseLostError(job.key.value)
            done, upload = upload, None
            await done.commit(relative, content_type=CONTENT_TYPES[ext], sha256=sha)
        finally:
            if upload is not None:
                with anyio.CancelScope(shield=True):
                    await upload.discard()
        self._counters.bytes += size
        self._counters.images += 1
        return Downloaded(job.key, relative, size, sha)


def _image_type(head: bytes) -> str:
    """The extension the first bytes of a body announce; NotAnImageError when they announce no image."""
    ext = sniff_image_type(head)
    if ext is None:  # CDNs do answer 200 with an HTML error page now and then: worth another try
        raise NotAnImageError(f"not an image: the body starts with {head[:16]!r}")
    return ext


def _refused(err: TransientDownloadError) -> bool:
    """True when the host refused the connection (nothing listens there), not a timeout, reset or 5xx."""
    return err.__cause__ is not None and cause(err.__cause__) == "connection refused"


async def error_body(pieces: AsyncIterator[bytes], cap: int = _ERROR_BODY_BYTES) -> bytes:
    """The first `cap` bytes of a refusal's body, however many pieces it came in. `content.read(n)` returns
    only the first piece that arrived: a "Request has expired" body split in two would read as a plain 403,
    and its patent would fail instead of asking for a fresh URL."""
    head = b""
    async for piece in pieces:
        head += piece
        if len(head) >= cap:
            return head[:cap]
    return head

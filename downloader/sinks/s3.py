"""Images and output files as objects under `s3://bucket/prefix` in any S3-compatible store.

Theory of operation. An image is buffered in memory while the fetcher streams, hashes and checks
it (the fetcher caps images at 50 MB; they are ~30 KB typically), and `commit` sends it in ONE
PutObject with its Content-Type and `x-amz-meta-sha256`. An S3 object appears whole or not at all,
so no object exists before its bytes were verified and a killed run leaves no partial object.
Images always go in a single PUT (S3 takes up to 5 GB that way). Output files (manifest, summary,
report) are written to a private local temp folder and `publish` uploads them; files over
`MULTIPART_OVER` go as a multipart upload, which also becomes visible only when it completes.

The client is obstore (Rust's `object_store` under Python; bench/results/s3-libs.md measured it at
about a quarter of aiobotocore's CPU per PUT). It is made once per sink and keeps a pool of
connections per host. Credentials and region come from botocore's standard chain (environment,
shared credentials and config files with AWS_PROFILE, SSO, container and instance roles), handed
to obstore through a credential provider; no credential is ever put in a message: every text that
leaves this module passes through `_ChainCredentials.scrub`.

Retries are ours, not obstore's (its own are turned off), so the policy is one visible loop:
network faults, timeouts, 5xx (SlowDown included) and 429 are retried with exponential backoff
up to `S3Retry.attempts`; 4xx answers (denied, no such bucket) fail at once. A failure while
storing raises `OutputError` (exit 3); a failure in `prepare` raises `UsageError` (exit 2).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import obstore
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
from obstore.store import S3Store

from downloader.core.backoff import backoff
from downloader.core.errors import OutputError, UsageError
from downloader.sinks.s3url import S3Location, endpoint_host, parse_s3_url, resolve_endpoint

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Credential

T = TypeVar("T")
MULTIPART_OVER = 16 * 1024 * 1024  # publish: bigger files go in parts of this size
POOL_PER_HOST = 64  # idle connections kept: the fetcher runs 32–64 commits at once
PROBE_PREFIX = ".patent-images-probe-"
STAGING_PREFIX = "patent-images-s3-"  # + pid + "-" + random, in the system temp folder
_PERMANENT = (PermissionDeniedError, UnauthenticatedError, FileNotFoundError, InvalidPathError, NotSupportedError,
              UnknownConfigurationKeyError, AlreadyExistsError, PreconditionError)
_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]{1,64})</Code>")
_NETWORK_CAUSES = (("connection refused", "connection refused"), ("dns error", "host name not found (DNS)"),
                   ("certificate", "TLS certificate not accepted"), ("timed out", "timed out"),
                   ("connection reset", "connection reset"), ("tls", "TLS error"))
_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b")


@dataclass(frozen=True)
class S3Retry:
    """How storing operations are retried: attempts in all, and full-jitter exponential backoff."""

    attempts: int = 5
    first_backoff: float = 0.25
    max_backoff: float = 10.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the n-th failure (1-based)."""
        return backoff(failures, self.first_backoff, self.max_backoff)


@dataclass(frozen=True)
class _Failure:
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
        return self.status in (401, 403) or self.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch")


class _ChainCredentials:
    """obstore credential provider backed by botocore's standard chain; remembers what to scrub."""

    def __init__(self, credentials: Any, method: str) -> None:
        self._credentials = credentials
        self.method = method  # where the chain found them: env, shared-credentials-file, iam-role, …
        self.secrets: set[str] = set()

    def __call__(self) -> S3Credential:
        frozen = self._credentials.get_frozen_credentials()
        self.secrets.update(s for s in (frozen.access_key, frozen.secret_key, frozen.token) if s)
        refreshable = hasattr(self._credentials, "refresh_needed")
        expires = datetime.now(UTC) + timedelta(minutes=5) if refreshable else None
        return {"access_key_id": frozen.access_key, "secret_access_key": frozen.secret_key,
                "token": frozen.token, "expires_at": expires}

    def scrub(self, text: str) -> str:
        """`text` with every credential value (and anything shaped like an access key id) removed."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return _KEY_ID.sub("***", text)


@dataclass(frozen=True)
class _Chain:
    """What the standard AWS chain gave: credentials, region, extra trusted CA certificates (PEM)."""

    credentials: _ChainCredentials | None
    region: str | None
    ca_pem: bytes | None


def _chain() -> _Chain:
    """Resolve the AWS chain (blocking: it may ask an instance-metadata service, it reads files).

    botocore reads AWS_DEFAULT_REGION and the profile's `region`; `prepare` adds AWS_REGION (which
    other AWS SDKs read), then us-east-1. AWS_CA_BUNDLE (or the profile's `ca_bundle`) adds trusted
    roots, as it does for the AWS CLI: a MinIO behind a private CA needs it.
    """
    import botocore.session

    session = botocore.session.Session()
    bundle = session.get_config_variable("ca_bundle")
    try:
        ca_pem = Path(bundle).read_bytes() if bundle else None
    except OSError as err:
        raise UsageError(f"cannot read the CA bundle {bundle} (AWS_CA_BUNDLE or ca_bundle): {err.strerror}") from None
    credentials = session.get_credentials()
    region = session.get_config_variable("region")
    if credentials is None:
        return _Chain(None, region, ca_pem)
    provider = _ChainCredentials(credentials, str(getattr(credentials, "method", "") or "unknown"))
    provider()  # resolve now, off the event loop, so their values are known to `scrub` from the start
    return _Chain(provider, region, ca_pem)


class S3Sink:
    """An `ImageSink` on `s3://bucket/prefix` in AWS S3 or any S3-compatible service."""

    def __init__(self, url: str, *, endpoint_url: str | None, durable: bool = False,
                 retry: S3Retry | None = None) -> None:
        self._where: S3Location = parse_s3_url(url)
        self.location = self._where.url
        self.durable = durable  # an acknowledged PUT is already durable in S3: nothing more to do
        self.retry = retry or S3Retry()
        self._endpoint = resolve_endpoint(endpoint_url)
        self._store: S3Store | None = None
        self._creds: _ChainCredentials | None = None
        self._region = "us-east-1"
        self._tmp: Path | None = None

    @property
    def host(self) -> str:
        """The endpoint's host[:port] for messages (never with credentials)."""
        return endpoint_host(self._endpoint, self._region)

    async def prepare(self, *, clean: bool = True) -> None:
        """Find credentials, open the client, and check the bucket exists and takes a write.

        A killed run leaves no partial object (one PUT per image, and a multipart upload is invisible
        until complete), so there is nothing to clean in the bucket. Staging folders are per process
        and named by pid: those of dead processes are removed whatever `clean` says, since no live
        worker can be using them.
        """
        chain = await anyio.to_thread.run_sync(_chain)
        if chain.credentials is None:
            raise UsageError("no AWS credentials found for --out s3://… (looked in the environment, the shared "
                             "credentials and config files, and the container/instance role)")
        self._creds = chain.credentials
        self._region = chain.region or os.environ.get("AWS_REGION") or "us-east-1"
        self._store = self._open_store(chain.credentials, chain.ca_pem)
        await self._probe()
        await anyio.to_thread.run_sync(_remove_dead_staging)
        # Only now: a failed prepare (which the caller need not close) leaves nothing behind.
        self._tmp = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-"))

    def _open_store(self, creds: _ChainCredentials, ca_pem: bytes | None) -> S3Store:
        options: ClientConfig = {"pool_max_idle_per_host": str(POOL_PER_HOST), "connect_timeout": "10s",
                                 "timeout": "120s"}
        if ca_pem:
            options["root_certificate"] = ca_pem
        extra: dict[str, Any] = {}
        if self._endpoint:
            options["allow_http"] = self._endpoint.startswith("http://")
            extra["endpoint"] = self._endpoint
        return S3Store(self._where.bucket, prefix=self._where.prefix or None, region=self._region,
                       client_options=options, retry_config={"max_retries": 0}, credential_provider=creds, **extra)

    async def _probe(self) -> None:
        probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        try:
            await self._call(lambda store: obstore.put_async(store, probe, b"probe", use_multipart=False))
            await self._call(lambda store: obstore.delete_async(store, probe))
        except _Fatal as fatal:
            raise UsageError(self._prepare_message(fatal.failure)) from None

    def _prepare_message(self, failure: _Failure) -> str:
        if failure.missing_bucket:
            return f"S3 bucket '{self._where.bucket}' does not exist at {self.host}"
        if failure.denied:
            return (f"access to {self.location} denied at {self.host} ({failure.status} {failure.code}; credentials "
                    f"from the AWS chain: {self._credential_source()})")
        if failure.transient and failure.status is None:
            return f"cannot reach the S3 endpoint {self.host}: {failure.text}"
        return f"cannot write to {self.location} at {self.host}: {failure.text}"

    def _credential_source(self) -> str:
        return self._creds.method if self._creds else "none"

    def begin(self) -> _S3Upload:
        """Start buffering one image; `commit` PUTs it, `discard` drops it."""
        return _S3Upload(self)

    async def close(self) -> None:
        """Drop the client (its pool closes with it) and remove the local temp folder."""
        self._store = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def staging(self, name: str) -> Path:
        """A path in this sink's private temp folder to write output file `name` to."""
        if self._tmp is None:
            raise RuntimeError("S3Sink.staging before prepare()")
        path = self._tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    async def publish(self, name: str, staged: Path, *, content_type: str) -> None:
        """Upload `staged` as `name` (multipart when big: visible only once complete), then delete it."""
        path = anyio.Path(staged)
        multipart = (await path.stat()).st_size > MULTIPART_OVER
        await self._store_call(name, lambda store: obstore.put_async(
            store, name, staged, attributes={"Content-Type": content_type}, use_multipart=multipart,
            chunk_size=MULTIPART_OVER, max_concurrency=4))
        await path.unlink(missing_ok=True)

    def url_of(self, name: str) -> str:
        """`s3://bucket/prefix/name`."""
        return self._where.join(name)

    async def put_image(self, relative: str, body: bytes, content_type: str, sha256: str) -> None:
        """One PutObject of a verified image, with its type and `x-amz-meta-sha256`."""
        attributes = {"Content-Type": content_type, "sha256": sha256}
        await self._store_call(relative, lambda store: obstore.put_async(
            store, relative, body, attributes=attributes, use_multipart=False))

    async def _store_call(self, name: str, op: Callable[[S3Store], Awaitable[object]]) -> None:
        try:
            await self._call(op)
        except _Fatal as fatal:
            raise self._output_error("write", name, fatal.failure) from None

    async def _call(self, op: Callable[[S3Store], Awaitable[T]]) -> T:
        """Run `op` on the store, retrying transient faults; a final failure raises `_Fatal`."""
        if self._store is None:
            raise RuntimeError("S3Sink used before prepare() or after close()")
        failures = 0
        while True:
            try:
                return await op(self._store)
            except Exception as err:  # noqa: BLE001 - classified right below; anything unknown is fatal
                failure = self._classify(err)
            failures += 1
            if not failure.transient or failures >= self.retry.attempts:
                raise _Fatal(failure)
            await anyio.sleep(self.retry.delay(failures))

    def _classify(self, err: Exception) -> _Failure:
        text = self._scrub(str(err))
        status = int(m.group(1)) if (m := _STATUS.search(text)) else None
        code = m.group(1) if (m := _CODE.search(text)) else ""
        summary = _summary(text, status, code)
        if isinstance(err, _PERMANENT):
            return _Failure(False, status, code, summary)
        transient = isinstance(err, GenericError) and (status is None or status >= 500 or status in (408, 429))
        return _Failure(transient, status, code, summary)

    def _scrub(self, text: str) -> str:
        return self._creds.scrub(text) if self._creds else _KEY_ID.sub("***", text)

    def _output_error(self, action: str, name: str, failure: _Failure) -> OutputError:
        tries = f" after {self.retry.attempts} attempts" if failure.transient else ""
        hint = ("check the bucket policy and the credentials the AWS chain found "
                f"({self._credential_source()})") if failure.denied else ""
        return OutputError(f"could not {action} {self.url_of(name)} at {self.host}{tries}: {failure.text}", hint=hint)


def _remove_dead_staging() -> None:
    """Remove staging folders (ours: same user) left by processes that no longer exist (kill -9)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*-*"):
        pid = folder.name.removeprefix(STAGING_PREFIX).split("-", 1)[0]
        try:
            if not pid.isdigit() or folder.stat().st_uid != os.getuid() or _alive(int(pid)):
                continue
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Fatal(Exception):
    """Internal: an S3 call failed for good (carries the classified failure)."""

    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.text)
        self.failure = failure


def _summary(text: str, status: int | None, code: str) -> str:
    """One short line: the status and S3 error code, else the network cause found in obstore's dump."""
    if status is not None:
        return f"HTTP {status} {code}".strip()
    lowered = text.lower()
    for needle, words in _NETWORK_CAUSES:
        if needle in lowered:
            return words
    first = text.split("\n", 1)[0]
    return " ".join(first.rsplit(" - ", 1)[-1].split())[:200] or "unknown error"


class _S3Upload:
    """One image buffered in memory until `commit` PUTs it in one request."""

    __slots__ = ("_chunks", "_sink")

    def __init__(self, sink: S3Sink) -> None:
        self._sink = sink
        self._chunks: list[bytes] = []

    def write(self, chunk: bytes) -> None:
        """Keep `chunk` (no I/O)."""
        self._chunks.append(chunk)

    async def commit(self, relative: str, *, content_type: str, sha256: str) -> None:
        """PUT the whole image at `prefix/relative` with its type and sha256 metadata."""
        body, self._chunks = b"".join(self._chunks), []
        await self._sink.put_image(relative, body, content_type, sha256)

    async def discard(self) -> None:
        """Forget the bytes; nothing was sent."""
        self._chunks = []

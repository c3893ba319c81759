"""Images and output files as objects under `s3://bucket/prefix` in any S3-compatible store.

Theory of operation. An image is buffered in memory while the fetcher streams, hashes and checks
it (the fetcher caps images at 50 MB; they are ~30 KB typically), and `commit` sends it in ONE
PutObject with its Content-Type and `x-amz-meta-sha256`. An S3 object appears whole or not at all,
so no object exists before its bytes were verified and a killed run leaves no partial object.
Images always go in a single PUT (S3 takes up to 5 GB that way). Output files (manifest, summary,
report) are written to a private local temp folder and `publish` uploads them; files over
`MULTIPART_OVER` go as a multipart upload, which also becomes visible only when it completes. An
upload left incomplete (a kill, a failed abort) is aborted later (see `s3uploads`).

The client is obstore (Rust's `object_store` under Python; bench/results/s3-libs.md measured it at
about a quarter of aiobotocore's CPU per PUT). It is made once per sink and keeps a pool of
connections per host. Credentials and region come from botocore's standard chain (environment,
shared credentials and config files with AWS_PROFILE, SSO, container and instance roles), handed
to obstore through a credential provider; no credential is ever put in a message: every text that
leaves this module passes through `_ChainCredentials.scrub`.

Retries are ours, not obstore's (its own are turned off), so the policy is one visible loop:
network faults, timeouts, 5xx (503 SlowDown included) and 429 are retried with full-jitter exponential
backoff for at least `S3Retry.attempts` tries and `S3Retry.patience` seconds, so a throttling storm or
a restart of the store loses nothing; 4xx answers (denied, no such bucket) fail at once. A bucket
that is missing, refuses us or stays unreachable raises `OutputError` (exit 3, naming the bucket),
in `prepare` as while storing; a configuration that cannot work (no credentials, an unreadable CA
bundle) raises `UsageError` (exit 2).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import obstore
from botocore.exceptions import BotoCoreError, ClientError
from obstore.store import S3Store

from downloader.core.backoff import backoff
from downloader.core.errors import OutputError, UsageError
from downloader.sinks.s3errors import Failure, classify
from downloader.sinks.s3uploads import UploadSweeper
from downloader.sinks.s3url import S3Location, endpoint_host, parse_s3_url, resolve_endpoint

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Credential

T = TypeVar("T")
MULTIPART_OVER = 16 * 1024 * 1024  # publish: bigger files go in parts of this size
POOL_PER_HOST = 64  # idle connections kept: the fetcher runs 32–64 commits at once
PROBE_PREFIX = ".patent-images-probe-"
STAGING_PREFIX = "patent-images-s3-"  # + pid + "-" + random, in the system temp folder
_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b")


@dataclass(frozen=True)
class S3Retry:
    """How a transient failure is retried: full-jitter exponential backoff until both `attempts` tries
    were made and `patience` seconds passed since the first failure (a 503 SlowDown storm, a restart)."""

    attempts: int = 5
    first_backoff: float = 0.25
    max_backoff: float = 3.0  # a storm's end is noticed within seconds; 64 calls waiting are ~40 requests/s
    patience: float = 120.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the n-th failure (1-based)."""
        return backoff(failures, self.first_backoff, self.max_backoff)

    def spent(self, failures: int, elapsed: float) -> bool:
        """Whether a call that failed `failures` times over `elapsed` seconds should give up."""
        return failures >= self.attempts and elapsed >= self.patience


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
    """What the standard AWS chain gave: credentials, region, extra trusted CA certificates, the session."""

    credentials: _ChainCredentials | None
    region: str | None
    ca_bundle: str | None  # the file
    ca_pem: bytes | None  # its content
    session: Any  # botocore's, for the multipart-upload sweeper


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
        return _Chain(None, region, bundle, ca_pem, session)
    provider = _ChainCredentials(credentials, str(getattr(credentials, "method", "") or "unknown"))
    provider()  # resolve now, off the event loop, so their values are known to `scrub` from the start
    return _Chain(provider, region, bundle, ca_pem, session)


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
        self._sweeper: UploadSweeper | None = None

    @property
    def host(self) -> str:
        """The endpoint's host[:port] for messages (never with credentials)."""
        return endpoint_host(self._endpoint, self._region)

    async def prepare(self, *, clean: bool = True) -> None:
        """Find credentials, open the client, check the bucket exists and takes a write, clear what dead runs left.

        A killed run leaves no partial object (one PUT per image, and a multipart upload is invisible
        until complete); it may leave an incomplete multipart upload of an output file: with `clean`
        (this process is the job's only writer) every one under the prefix is aborted, else those
        older than an hour (s3uploads). Staging folders are per process and named by pid: those of
        dead processes are removed whatever `clean` says, since no live worker can be using them.
        """
        chain = await anyio.to_thread.run_sync(_chain)
        if chain.credentials is None:
            raise UsageError("no AWS credentials found for --out s3://… (looked in the environment, the shared "
                             "credentials and config files, and the container/instance role)")
        self._creds = chain.credentials
        self._region = chain.region or os.environ.get("AWS_REGION") or "us-east-1"
        self._store = self._open_store(chain.credentials, chain.ca_pem)
        await self._probe()
        self._sweeper = UploadSweeper(chain.session, bucket=self._where.bucket, prefix=self._where.prefix,
                                      endpoint=self._endpoint, region=self._region, ca_bundle=chain.ca_bundle)
        await self._abort_dead_uploads(only_writer=clean)
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
        """One PUT and DELETE: a missing bucket, refused credentials or an unreachable endpoint stop here (exit 3)."""
        probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        try:
            await self._call(lambda store: obstore.put_async(store, probe, b"probe", use_multipart=False), probing=True)
            await self._call(lambda store: obstore.delete_async(store, probe), probing=True)
        except _Fatal as fatal:
            raise self._output_error("write", None, fatal) from None

    async def _abort_dead_uploads(self, *, only_writer: bool, key: str | None = None) -> int:
        """Abort incomplete multipart uploads no live process will finish; best effort (a lifecycle rule is the
        fallback): a store that refuses to list them (no s3:ListBucketMultipartUploads) or is down is left be."""
        if self._sweeper is None:
            return 0
        sweeper = self._sweeper
        try:
            return await anyio.to_thread.run_sync(lambda: sweeper.sweep(only_writer=only_writer, key=key))
        except (BotoCoreError, ClientError):
            return 0

    def _credential_source(self) -> str:
        return self._creds.method if self._creds else "none"

    def begin(self) -> _S3Upload:
        """Start buffering one image; `commit` PUTs it, `discard` drops it."""
        return _S3Upload(self)

    async def close(self) -> None:
        """Drop the clients (their pools close with them) and remove the local temp folder."""
        self._store = None
        if self._sweeper is not None:
            self._sweeper.close()
            self._sweeper = None
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
        try:
            await self._store_call(name, lambda store: obstore.put_async(
                store, name, staged, attributes={"Content-Type": content_type}, use_multipart=multipart,
                chunk_size=MULTIPART_OVER, max_concurrency=4))
        except BaseException:  # failed for good, or cancelled (Ctrl-C) mid-upload
            if multipart:  # obstore aborts a failed upload, unless that abort failed too: leave no parts
                with anyio.CancelScope(shield=True):
                    await self._abort_dead_uploads(only_writer=True, key=self._where.key(name))
            raise
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
            raise self._output_error("write", name, fatal) from None

    async def _call(self, op: Callable[[S3Store], Awaitable[T]], *, probing: bool = False) -> T:
        """Run `op` on the store, retrying transient faults (see S3Retry); a final failure raises `_Fatal`.

        While `probing`, an endpoint that never answered gets only `attempts` tries: at start that is
        most likely a wrong URL or port, worth saying at once rather than after `patience`.
        """
        if self._store is None:
            raise RuntimeError("S3Sink used before prepare() or after close()")
        failures, first = 0, 0.0
        while True:
            try:
                return await op(self._store)
            except Exception as err:  # noqa: BLE001 - classified right below; anything unknown is fatal
                failure = classify(err, self._scrub)
            failures += 1
            now = time.monotonic()
            first = first or now
            if not failure.transient or self.retry.spent(failures, now - first) or (
                    probing and not failure.answered and failures >= self.retry.attempts):
                raise _Fatal(failure, failures, now - first)
            await anyio.sleep(self.retry.delay(failures))

    def _scrub(self, text: str) -> str:
        return self._creds.scrub(text) if self._creds else _KEY_ID.sub("***", text)

    def _output_error(self, action: str, name: str | None, fatal: _Fatal) -> OutputError:
        """One line naming the bucket (and the object), what the store said, and what to do."""
        failure, bucket = fatal.failure, self._where.bucket
        if failure.missing_bucket:
            return OutputError(f"S3 bucket '{bucket}' does not exist at {self.host}",
                               hint="create it, or correct --out (and --s3-endpoint-url)")
        if failure.denied:
            return OutputError(f"access to S3 bucket '{bucket}' denied at {self.host} ({failure.text})",
                               hint="check the bucket policy and the credentials the AWS chain found "
                                    f"({self._credential_source()})")
        tries = f" after {fatal.attempts} attempts in {fatal.seconds:.0f} s" if failure.transient else ""
        what = self.url_of(name) if name is not None else self.location
        if not failure.answered:
            return OutputError(f"cannot reach the S3 endpoint {self.host} for bucket '{bucket}'{tries}: {failure.text}",
                               hint="check --s3-endpoint-url (or AWS_ENDPOINT_URL) and the network")
        return OutputError(f"could not {action} {what} in S3 bucket '{bucket}' at {self.host}{tries}: {failure.text}",
                           hint="run the same command once the store answers again")


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
    """Internal: an S3 call failed for good (the classified failure, after how many tries and seconds)."""

    def __init__(self, failure: Failure, attempts: int, seconds: float) -> None:
        super().__init__(failure.text)
        self.failure = failure
        self.attempts = attempts
        self.seconds = seconds


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

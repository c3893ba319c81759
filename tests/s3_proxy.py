"""A loopback HTTP proxy in front of an S3 server that answers as a throttled or failing S3 would.

    proxy = S3Proxy("http://127.0.0.1:8333").start()   # its own thread and event loop, a free port
    client endpoint → proxy.endpoint
    proxy.storm(10)        # every request of the next 10 s: 503 SlowDown with S3's XML error body
    proxy.throttle(0.3)    # from now on about 30 % of requests: 503 SlowDown (0 ends it)
    proxy.fail(403, "AccessDenied", times=1, method="PUT")   # scripted answers, in order
    proxy.stall("partNumber", 30)   # hold matching requests 30 s before forwarding them
    proxy.calm()           # none of the above any more
    proxy.stop()

Everything else is forwarded to the server unchanged. It counts what it saw: `seen` (method, path and
query, access key id), `answers` (when, method, status), `count(method)`, `refused` (of which
`stormed`). It runs in a thread so that sync tests, async tests
(on another loop) and benchmarks (bench/chaos.py) use it alike; it needs no pytest.
"""

from __future__ import annotations

import asyncio
import io
import random
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Self

import aiohttp
from aiohttp import web
from yarl import URL

# Per-hop headers, and Expect (aiohttp's server already answered "100 Continue" to the client). Host is kept:
# it is signed (SigV4), and a server that checks signatures (SeaweedFS) refuses a changed one.
_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive", "expect"}
_KEY_ID = re.compile(r"Credential=([^/]+)/")


@dataclass
class Fault:
    """Answer the next `times` matching requests with this S3 error instead of forwarding them."""

    status: int
    code: str
    times: int
    method: str | None = None  # only requests of this method; None = any
    query: str | None = None  # only requests whose query string contains this (e.g. "partNumber")


class S3Proxy:
    """A fault-injecting proxy to one S3 endpoint, on 127.0.0.1, in a thread of its own."""

    def __init__(self, upstream: str, *, seed: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.endpoint = ""
        self.seen: list[tuple[str, str, str]] = []  # (method, path?query, access key id)
        self.answers: list[tuple[float, str, int]] = []  # (time.monotonic() answered, method, status)
        self.refused = 0  # requests answered with an injected error
        self.stormed = 0  # of which during a storm
        self._faults: list[Fault] = []
        self._storm_until = 0.0  # time.monotonic() before which every request is throttled
        self._share = 0.0
        self._stall: tuple[str, float] = ("", 0.0)  # (query part, monotonic time until which it is held)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------------------------------ control

    def storm(self, seconds: float) -> float:
        """Answer every request with 503 SlowDown for the next `seconds`; returns its end (time.monotonic())."""
        self._storm_until = time.monotonic() + seconds
        return self._storm_until

    def throttle(self, share: float) -> None:
        """Answer about `share` (0–1) of the requests with 503 SlowDown from now on."""
        self._share = share

    def fail(self, status: int, code: str, *, times: int = 1_000_000, method: str | None = None,
             query: str | None = None) -> None:
        """Answer matching requests with `status` and S3 error `code`, `times` times."""
        with self._lock:
            self._faults.append(Fault(status, code, times, method, query))

    def stall(self, query: str, seconds: float) -> None:
        """Hold requests whose query string contains `query` for up to `seconds` before forwarding them."""
        self._stall = (query, time.monotonic() + seconds)

    def calm(self) -> None:
        """End every storm, throttle, stall and scripted fault."""
        with self._lock:
            self._faults.clear()
        self._storm_until, self._share, self._stall = 0.0, 0.0, ("", 0.0)

    def count(self, method: str) -> int:
        """How many requests of `method` arrived (answered by a fault or forwarded)."""
        with self._lock:
            return sum(1 for seen_method, _, _ in self.seen if seen_method == method)

    # ------------------------------------------------------------------------------------------ life

    def start(self) -> Self:
        """Listen on a free loopback port in a new thread; returns once it accepts connections."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="s3-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the S3 proxy did not start")
        return self

    def stop(self) -> None:
        """Close the listener and its connections, and end the thread."""
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._open())
        ready.set()
        self._loop.run_forever()

    async def _open(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self._session = aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(limit=256))
        self.endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------------------------------ requests

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        found = _KEY_ID.search(request.headers.get("Authorization", ""))
        key_id = found.group(1) if found else ""
        body = await request.read()  # read even when refusing, as S3 does, so the client sees the answer
        with self._lock:
            self.seen.append((request.method, request.path_qs, key_id))
            code = self._injected(request)
            if code is not None:
                self.refused += 1
        if code is not None:
            self._answered(request.method, code[0])
            return web.Response(status=code[0], body=error_xml(code[1], key_id), content_type="application/xml")
        while self._stall[0] and self._stall[0] in request.query_string and time.monotonic() < self._stall[1]:
            await asyncio.sleep(0.05)
        answer = await self._forward(request, body)
        self._answered(request.method, answer.status)
        return answer

    def _answered(self, method: str, status: int) -> None:
        with self._lock:
            self.answers.append((time.monotonic(), method, status))

    def _injected(self, request: web.Request) -> tuple[int, str] | None:
        """The (status, code) to answer instead of forwarding, if any (under the lock)."""
        fault = next((f for f in self._faults if f.times > 0 and f.method in (None, request.method)
                      and (f.query is None or f.query in request.query_string)), None)
        if fault is not None:
            fault.times -= 1
            return fault.status, fault.code
        if time.monotonic() < self._storm_until:
            self.stormed += 1
            return 503, "SlowDown"
        if self._share and self._rng.random() < self._share:
            return 503, "SlowDown"
        return None

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        target = URL(self.upstream + request.raw_path, encoded=True)  # as signed: no re-quoting
        data = io.BytesIO(body) if len(body) > 1 << 20 else body  # aiohttp warns of big bytes bodies
        async with self._session.request(request.method, target, headers=headers, data=data) as answer:
            data = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
            return web.Response(status=answer.status, body=data, headers=kept)


def error_xml(code: str, key_id: str = "") -> bytes:
    """S3's error document; like S3, auth errors name the access key id the request used."""
    named = code in ("InvalidAccessKeyId", "SignatureDoesNotMatch")
    echo = f"<AWSAccessKeyId>{key_id}</AWSAccessKeyId>" if named else ""
    message = "Please reduce your request rate." if code == "SlowDown" else f"injected {code}"
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"{echo}<RequestId>0</RequestId></Error>").encode()

"""The one boundary where aiohttp's and the OS's exceptions become ours (nothing above imports them)."""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterator
from types import TracebackType

import aiohttp

from downloader.core.errors import DownloaderError


def map_client_errors(cls: type[DownloaderError], what: str) -> ClientErrors:
    """Re-raise network failures (resets, timeouts, truncated bodies, bad JSON) as `cls`, in a `with` block.

    The message says what happened in a few fixed words ("API request failed: connection refused
    (ClientConnectorError)"): the originals can hold the URL, and so the apikey or a signature.
    """
    return ClientErrors(cls, what)


class ClientErrors:
    """The context manager `map_client_errors` gives: a plain class, since it wraps every download, and a
    generator-based one (contextlib) costs a generator and three more calls each time."""

    __slots__ = ("_cls", "_what")

    def __init__(self, cls: type[DownloaderError], what: str) -> None:
        self._cls = cls
        self._what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if err is None or isinstance(err, DownloaderError):
            return
        cls, what = self._cls, self._what
        if isinstance(err, TimeoutError):
            raise cls(f"{what} timed out") from err
        if isinstance(err, aiohttp.ClientPayloadError):
            raise cls(f"{what}: body cut short ({type(err).__name__})") from err
        if isinstance(err, aiohttp.ClientResponseError):
            raise cls(f"{what}: HTTP {err.status}") from err
        if isinstance(err, aiohttp.ClientError | ConnectionError | ValueError):
            raise cls(f"{what} failed: {cause(err)} ({type(err).__name__})") from err


def cause(err: BaseException) -> str:
    """A few words for a transport failure: connection refused, DNS lookup failed, TLS failed, ..."""
    for inner in _chain(err):
        if isinstance(inner, ssl.SSLError | aiohttp.ClientSSLError):
            return "TLS failed"
        if isinstance(inner, socket.gaierror) or type(inner).__name__ == "ClientConnectorDNSError":
            return "DNS lookup failed"
        if isinstance(inner, ConnectionRefusedError) or getattr(inner, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(inner, ConnectionResetError) or getattr(inner, "errno", None) == errno.ECONNRESET:
            return "connection reset"
        if isinstance(inner, aiohttp.ServerDisconnectedError):
            return "server disconnected"
    if isinstance(err, aiohttp.ClientConnectorError):
        return "cannot connect"
    if isinstance(err, ValueError):
        return "bad answer"
    return "connection lost"


def _chain(err: BaseException) -> Iterator[BaseException]:
    """The error and what caused it (aiohttp keeps the OS error as `os_error` and as the cause)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        inner = getattr(current, "os_error", None)
        if isinstance(inner, BaseException) and id(inner) not in seen:
            yield inner
        current = current.__cause__ or current.__context__

"""aioresponses 0.7.x builds ClientResponse without the `stream_writer` aiohttp 3.14 requires
(pnuckowski/aioresponses#289, still open). aiohttp 3.14 is a security release, so instead of
pinning aiohttp back we give aioresponses a response class that supplies an empty writer."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import aioresponses.core
from aiohttp import ClientResponse


class CompatClientResponse(ClientResponse):
    """ClientResponse that tolerates a missing `stream_writer` (the request was "already sent")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


def install() -> None:
    """Make aioresponses build CompatClientResponse where aiohttp needs it."""
    if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:
        aioresponses.core.ClientResponse = CompatClientResponse  # type: ignore[misc]

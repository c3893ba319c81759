"""The one boundary where aiohttp's and the OS's exceptions become ours (nothing above imports them)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

from downloader.core.errors import DownloaderError


@contextmanager
def map_client_errors(cls: type[DownloaderError], what: str) -> Iterator[None]:
    """Re-raise network failures (resets, timeouts, truncated bodies, bad JSON) as `cls`."""
    try:
        yield
    except DownloaderError:
        raise
    except TimeoutError as err:
        raise cls(f"{what} timed out") from err
    except aiohttp.ClientPayloadError as err:
        raise cls(f"{what}: body cut short ({type(err).__name__})") from err
    except aiohttp.ClientResponseError as err:
        raise cls(f"{what}: HTTP {err.status}") from err
    except (aiohttp.ClientError, ConnectionError, ValueError) as err:
        # Messages of these can hold the URL (and so the apikey): keep only the class name.
        raise cls(f"{what} failed ({type(err).__name__})") from err

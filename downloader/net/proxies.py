"""HTTP(S)_PROXY / NO_PROXY, resolved once per host.

aiohttp's `trust_env=True` does the same lookup (plus a ~/.netrc read) in a worker thread on every
request: profiled at ~10% of the CPU of a download run. The environment does not change during a
run, so the answer is cached per (scheme, host).
"""

from __future__ import annotations

import functools
import urllib.request

from yarl import URL


@functools.lru_cache(maxsize=1024)
def _proxy(scheme: str, host: str) -> str | None:
    if urllib.request.proxy_bypass_environment(host):  # type: ignore[attr-defined]  # real, not in typeshed
        return None
    return urllib.request.getproxies_environment().get(scheme)


def proxy_for(url: URL) -> str | None:
    """The proxy URL the environment names for this URL, or None for a direct connection."""
    return _proxy(url.scheme, url.host or "")

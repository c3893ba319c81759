"""What the rows a claim took become (`base.Claim`), for both stores.

Pure: each store selects and marks the rows in its own SQL (`sqlite_claims`, `pg_claims`) and in
the same order of steps (listed drawings, then still-good URLs, then one kind's batch for the API,
else why nothing is free); the claims they hand out are built here, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from downloader.core.model import Batch, FigureKey, ImageJob, Kind, PatentKey
from downloader.state.base import Claim

# Drawings (--drawings all) a claim may take at once for download: one patent asked gives ~10.
DRAWINGS_A_CLAIM = 100


def drawings_to_download(rows: Iterable[tuple[Any, ...]], gen: int) -> Claim:
    """Listed drawings taken under generation `gen`; rows: kind, key, figure, image, pn, num, url, expires_at."""
    return Claim(to_download=tuple(ImageJob(FigureKey(Kind(kind), key, figure, image), pn, num, url, expires_at,
                                            lease=gen)
                                   for kind, key, figure, image, pn, num, url, expires_at in sorted(rows)))


def patents_to_download(rows: Iterable[tuple[Any, ...]], gen: int) -> Claim:
    """Keys with a still-good URL taken under `gen`; rows: seq, kind, key, pn, num, url, expires_at."""
    return Claim(to_download=tuple(ImageJob(PatentKey(Kind(kind), key), pn, num, url, expires_at, lease=gen)
                                   for _seq, kind, key, pn, num, url, expires_at in sorted(rows)))


def keys_to_ask(kind: Kind, rows: Iterable[tuple[Any, ...]], gen: int, stored: Iterable[tuple[Any, ...]]) -> Claim:
    """One kind's batch for the API; rows: seq, key, repeat (paid for before and unused: its URL, or a
    drawing's, expired, or its answer was lost on the way: asking again is a recharge). `stored`: key,
    figure, image of its drawings already downloaded."""
    taken = sorted(rows)
    return Claim(to_ask=Batch(kind, tuple(key for _seq, key, _repeat in taken), gen,
                              frozenset(FigureKey(kind, key, figure, image) for key, figure, image in stored)),
                 repeats=tuple(key for _seq, key, repeat in taken if repeat))


def nothing_free(patents: Sequence[Any], drawings: Sequence[Any]) -> Claim:
    """Why nothing could be taken, from (held, deferred, next retry_at) of the patents and of the drawings."""
    waiting, deferred, next_retry = patents
    held, later, first_later = drawings
    soonest = min((t for t in (next_retry, first_later) if t is not None), default=None)
    return Claim(waiting=int(waiting) + int(held), deferred=int(deferred) + int(later), next_retry=soonest)

"""How long to wait before the n-th retry: pure arithmetic, shared by the API/CDN retries and the S3 sink."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff(attempt: int, initial: float, maximum: float, rng: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff for the n-th failure (1-based)."""
    return rng() * min(maximum, initial * 2 ** (attempt - 1))

"""Settings of one job, validated once: a bad value is a UsageError (exit 2) before any work."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from downloader.core.errors import UsageError

DEFAULT_API_BASE = "https://connect.patsnap.com"
IO_MODES = ("auto", "direct", "threads")  # --io: see sinks/local.py and sinks/filesystems.py
DRAWINGS = ("abstract", "all")  # --drawings: see core.model.Drawings


@dataclass(frozen=True)
class Settings:
    """Everything a run needs besides its inputs and output folder (how it is shown and logged is the
    caller's: the CLI's --no-progress and --log-file are not settings of the job)."""

    api_base: str = DEFAULT_API_BASE
    api_key: str | None = None
    token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    rate: float = 5.0
    api_concurrency: int = 4
    download_concurrency: int = 64  # per worker process: one, by default, unless it is CPU-bound
    batch_size: int = 100
    retries: int = 5
    retry_failed: bool = False
    column: str | None = None
    # Backoff between retries: exponential from backoff_initial, capped, with jitter.
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    # A URL closer than this to its expiry is not tried; its patent is asked again. Never more
    # than a quarter of the URL's own lifetime, so short-lived URLs are still used.
    expiry_margin: float = 120.0
    max_image_bytes: int = 50 * 1024 * 1024
    api_timeout: float = 60.0
    download_timeout: float = 300.0
    stall_timeout: float = 60.0
    durable: bool = False
    # Where the state lives: None = DIR/state.sqlite (embedded); postgresql://… = shared by workers.
    state_url: str | None = None
    # Processes on this machine sharing the job (None: the number of cores, capped).
    workers: int | None = None
    # How long a worker's claim on keys lives without renewal; a dead worker's keys are taken over after it.
    lease: float = 60.0
    # S3-compatible endpoint for --out s3://…; None = AWS_ENDPOINT_URL or AWS itself.
    s3_endpoint_url: str | None = None
    # How images are written: "direct" from the event loop, "threads" (aiofiles, one hop per image), or
    # "auto": threads on network and FUSE file systems, where a write can block the loop.
    io: str = "auto"
    # How long throttling (67200002/67200007/429) may persist while the whole run is down to single
    # probes with growing pauses; then it is a spent quota, not a rate limit (exit 3).
    throttle_patience: float = 60.0
    # How long a shared state store (PostgreSQL) may stay unreachable (a restart, a failover) before the
    # run stops with exit 3; within it, every worker keeps what it holds and tries again with backoff.
    state_patience: float = 300.0
    # How long every API call (or every download) may fail in transport, 5 in a row at least,
    # before the run stops as an outage (exit 3); deferred patents are retried after a third of it.
    outage_seconds: float = 30.0
    max_charged: int | None = None
    # Which drawings: "abstract" (P021, the front-page drawing) or "all" (P042, every drawing).
    drawings: str = "abstract"
    max_runtime: float | None = None
    recheck_after_days: float | None = None
    # A dry run never bills: `Job.run` refuses it (UsageError); `Job.plan` is the dry run.
    dry_run: bool = False

    def __post_init__(self) -> None:
        _check_url(self.api_base)
        _check_range("--batch-size", self.batch_size, 1, 100)
        _check_range("--api-concurrency", self.api_concurrency, 1, 256)
        _check_range("--download-concurrency", self.download_concurrency, 1, 1024)
        _check_range("--retries", self.retries, 1, 100)
        if not 0 < self.rate <= 1000:
            raise UsageError(f"--rate must be > 0 and ≤ 1000 requests/s, got {self.rate}")
        if self.max_charged is not None and self.max_charged < 0:
            raise UsageError("--max-charged must be ≥ 0")
        if self.max_runtime is not None and self.max_runtime <= 0:
            raise UsageError("--max-runtime must be positive")
        if self.workers is not None:
            _check_range("--workers", self.workers, 1, 64)
        if not 1 <= self.lease <= 3600:
            raise UsageError(f"--lease must be between 1 and 3600 seconds, got {self.lease}")
        if self.throttle_patience <= 0:
            raise UsageError("--throttle-patience must be positive")
        if self.state_patience <= 0:
            raise UsageError("--state-patience must be positive")
        if self.io not in IO_MODES:
            raise UsageError(f"--io must be auto, direct or threads, got {self.io!r}")
        if self.outage_seconds <= 0:
            raise UsageError("outage_seconds must be positive")
        if self.drawings not in DRAWINGS:
            raise UsageError(f"--drawings must be abstract or all, got {self.drawings!r}")

    @property
    def api_in_flight(self) -> int:
        """API requests in flight: --api-concurrency, and with --drawings all at least half a second of
        calls at --rate (one call per patent: the gate stays busy while answers take their time)."""
        if self.drawings == "all":
            return max(self.api_concurrency, min(64, math.ceil(self.rate / 2)))
        return self.api_concurrency

    @property
    def effective_api_key(self) -> str | None:
        """The apikey query parameter: given, else the OAuth client id (PatSnap needs one)."""
        return self.api_key or self.client_id

    @property
    def api_key_is_bearer(self) -> bool:
        """True for a key of PatSnap's newer platform (`sk-…`): it alone authenticates, sent as
        `Authorization: Bearer` as well as the apikey parameter, with no OAuth."""
        return bool(self.api_key and self.api_key.startswith("sk-"))

    def require_credentials(self) -> None:
        """Raise UsageError unless an sk- key, or a token or client credentials and an apikey, are there."""
        if self.api_key_is_bearer:
            return
        if not self.token and not (self.client_id and self.client_secret):
            raise UsageError("no credentials: give --api-key sk-…, --token, or --client-id and --client-secret "
                             "(or PATSNAP_API_KEY / PATSNAP_TOKEN / PATSNAP_CLIENT_ID / PATSNAP_CLIENT_SECRET)")
        if not self.effective_api_key:
            raise UsageError("no apikey: give --api-key (or PATSNAP_API_KEY)")


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise UsageError(f"{name} must be between {low} and {high}, got {value}")


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--api-base must be an http(s) URL like {DEFAULT_API_BASE}, got {url!r}")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds from '90', '90s', '15m', '2h' or '1d'."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"not a duration: {text!r} (use e.g. 90s, 15m, 2h)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2).lower()]
    return float(match.group(1)) * unit

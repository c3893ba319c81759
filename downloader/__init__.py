"""patent-images: bulk download of PatSnap patent abstract images, resumable, with a manifest.

Architecture (one module per stage; `job.run_job` is the entry point, `cli` a thin layer on it):

- inputs    stream CSV rows → normalized PatentKeys or Rejects (header aliases, BOM, headerless)
- state     SQLite store: de-duplicates keys, holds each key's status/URL/file, run history
- protocol  sans-IO core: batches, request params, answer → per-key outcomes, error codes
- expiry    when a signed URL expires, read from the URL itself (COS, SigV4, SigV2, GCS)
- auth      bearer tokens: static, or OAuth client credentials with single-flight refresh
- api       PatsnapClient: rate limit (ratelimit), retries (retrying), budget, token refresh
- images    CDN downloads: stream to a temp file, hash, check, rename (storage, naming)
- pipeline  the task group: planner → API workers → download workers → one recorder
- report    manifest.csv/.jsonl, rejects.csv, summary.json, written atomically
- progress  tqdm bars or periodic log lines, fed by frozen events (events), log files (runlog)
- budget    the --max-charged reservation arithmetic; dryrun: what a run would cost, calling nothing
- status, htmlreport  what DIR holds: totals and run history as text/JSON, or one offline report.html
- lock      one run per DIR (flock); proxies: HTTP(S)_PROXY/NO_PROXY resolved once per host
- simulator a faithful fake of the PatSnap API and CDN for demo, tests and benchmarks
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Settings", "__version__", "run_job"]

if TYPE_CHECKING:
    from downloader.core.settings import Settings
    from downloader.job import run_job


def __getattr__(name: str) -> Any:
    # Imported lazily so that `python -m downloader --help` stays quick.
    if name == "run_job":
        from downloader.job import run_job
        return run_job
    if name == "Settings":
        from downloader.core.settings import Settings
        return Settings
    raise AttributeError(name)

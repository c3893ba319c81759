"""patent-images: bulk download of PatSnap patent abstract images, resumable, with a manifest.

Architecture. `job.run_job` is the entry point (the CLI is a thin layer on it); dependencies point
inward, and each folder is one part:

- core/      the pure vocabulary and rules, no I/O: model (keys, outcomes, events of the state),
             errors (the tree, exit 3 = FatalError), outcome (typed Summary, StopReason, the one
             exit-code table), protocol (request params, answer → per-key outcomes, error codes),
             fulltext (P042 for --drawings all: one patent's pages → per-drawing outcomes),
             expiry (when a signed URL was signed and expires, from the URL; the margin, relative to
             its lifetime), lookahead (how far the API stage may run ahead of the downloads), gate
             (account-wide pacing, throttle episodes → spent quota, the credential-check hold),
             credentials (the shared token record, the suspect credential), outage (transport
             failures defer; every call failing for a while stops the run), problems (counted by
             kind), naming (image paths), budget, halt (the record that stops every worker),
             events (what progress and logs hear), settings
- inputs/    stream CSV rows → normalized PatentKeys or Rejects
- state/     where state lives: `base.StateStore` (the protocol: ingest, claims under leases, results,
             reads, workers, shared records), `sqlite` (embedded default, DIR/state.sqlite),
             `postgres` (shared by workers on several machines), `transitions` (one guarded UPDATE per
             result, shared by both; with --drawings all a row per drawing under its patent), `shared`
             (records every worker of a run uses), `lock` (one run per DIR)
- sinks/     where images and output files go: `base.ImageSink` (the protocol: begin → write → commit
             a verified object, stage → publish a file), `local` (temp file, atomic rename; aiofiles on
             file systems that can block), `s3` (one object per verified image)
- net/       the API client (api: the gate, retries, splitting, budget, credential check; the P021
             resolver), fulltext (the P042 resolver, on api's calls), auth
             (tokens, one for the fleet), cdn (stream, hash, verify, hand to the sink), ratelimit
             (the shared API gate), retrying, proxies, httperrors
- pipeline   the task group of one worker: planner (claims) → API workers → download workers →
             recorder, plus the lease keeper (renew, heartbeat, halt check)
- job        wiring: sink + store + lock → ingest → pipeline (and --workers helpers) → manifest,
             summary, history; wiring (the HTTP side), workers (helper processes), outputs (manifest,
             summary, rejects files), dryrun (what a run would cost)
- cli/       commands (app), run/demo plumbing (runner), status, HTML report, progress, log file,
             the final line
- simulator/ a faithful fake of the PatSnap API and CDN for demo, tests and benchmarks

A third state store or sink implements the protocol in `state/base.py` or `sinks/base.py` and is
chosen in `state/__init__.py` (`open_store`) or `sinks/__init__.py` (`open_sink`); nothing else changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
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

"""patent-images: bulk download of PatSnap patent drawings, resumable, with a manifest.

Use it as a library (the CLI is one client of it):

    from downloader import Job, Settings
    summary = await Job("out/", Settings(client_id=..., client_secret=...)).run(["patents.csv"])
    summary = downloader.run_job(["patents.csv"], "out/", settings)      # the same, from sync code

`job.Job` is the entry point: `run` (a frozen Summary), `plan` (the dry run's frozen Plan, no
request), `status`, `report`; the sync twins `run_job`, `plan_job`, `job_status`, `report_job`.
Only UsageError, InputError, LockedError and StateError raise (each with `exit_code`); a fatal
condition, a cap or an interrupt is in the Summary.

Architecture. Dependencies point down, layer by layer, and `pyproject.toml`'s import-linter
contracts check it (`lint-imports`):

- cli/       the command line, a client of the library: parsing, progress, log file, final line,
             exit codes from one table; `helper` is the entry point of a --workers helper process
- job        the face: Job and the sync twins; it alone decides what touches the process (signals,
             the open-file limit) and only when the caller asks
- execution  one run: sink + store + lock → ingest → pipeline (and --workers helpers, `workers`) →
             manifest, summary, history, stopped by one watcher (`stops`: signals, a helper's parent
             gone); `dryrun` (Plan), `jobstatus` (JobStatus), `report/` (report.html)
- pipeline   the task group of one worker: planner (claims) → API workers → download workers →
             recorder, plus the lease keeper; it sees only the `Resolver` and `Fetcher` protocols of
             `core/ports.py`, an event hook and a store, and returns a frozen PipelineResult
             (`pipeline/downloads`: the download workers; `pipeline/recorder`: the single writer;
             `pipeline/streams`: the stages' hand-offs; `pipeline/control`: config, stops, result);
             `wiring` builds the concrete ones (the HTTP side) for `execution`
- net/       the API client (api: the gate, retries, splitting, budget, credential check; the P021
             resolver), fulltext (the P042 resolver for --drawings all, on api's calls), auth
             (tokens, one for the fleet), cdn (stream, hash, verify, hand to the sink), ratelimit
             (the shared API gate), retrying, proxies, httperrors
- state/     where state lives: `base.StateStore` (the protocol: ingest, claims under leases, results,
             reads, workers, shared records), `sqlite` (embedded default, DIR/state.sqlite; with
             sqlite_schema, sqlite_claims, sqlite_rows), `postgres` (shared by workers on several
             machines; with pg_connections, pg_claims, pg_queries, pg_schema, pg_patience), the pure
             parts both stores share: `transitions` (result statements), `claims` (a claim's rows →
             Claim); `shared`, `lock` (one run per DIR), and `state_folder` (where the embedded state
             of an --out lives)
- sinks/     where images and output files go: `base.ImageSink` (begin → write → commit a verified
             object, stage → publish a file), `local` (temp file, atomic rename), `s3`
- inputs/    stream CSV/xlsx rows → normalized PatentKeys or Rejects (`rows`: the rules both share);
             `outputs` (manifest, summary, rejects files) and `machine` (this machine's limits and
             disk conditions) stand beside the stores and sinks
- core/      the pure vocabulary and rules, no I/O: model, errors (the tree, each with exit_code),
             outcome (Summary, StopReason, exit codes), ports (the pipeline's seams), protocol
             (request params, answer → per-key outcomes, error codes), fulltext (P042: one patent's
             pages → per-drawing outcomes), expiry, urlclock (what the CDN showed of its clock and of
             the lifetime it honours), lookahead, gate, credentials, outage, moved (a refusing URL
             host: moved or down), problems, naming, budget, backoff, halt, events, settings
- simulator/ a faithful fake of the PatSnap API and CDN for demo, tests and benchmarks

A third state store or sink implements the protocol in `state/base.py` or `sinks/base.py` and is
chosen in `state/__init__.py` (`open_store`) or `sinks/__init__.py` (`open_sink`); a second resolver
implements `core.ports.Resolver`; nothing else changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["InputError", "Job", "JobStatus", "LockedError", "Plan", "Settings", "StateError", "Summary",
           "UsageError", "__version__", "job_status", "plan_job", "report_job", "run_job"]

if TYPE_CHECKING:
    from downloader.core.errors import InputError, LockedError, StateError, UsageError
    from downloader.core.outcome import Summary
    from downloader.core.settings import Settings
    from downloader.dryrun import Plan
    from downloader.job import Job, job_status, plan_job, report_job, run_job
    from downloader.jobstatus import JobStatus

# Where each public name lives; imported lazily so that `python -m downloader --help` stays quick.
_HOMES = {"Job": "downloader.job", "run_job": "downloader.job", "plan_job": "downloader.job",
          "job_status": "downloader.job", "report_job": "downloader.job", "Settings": "downloader.core.settings",
          "Summary": "downloader.core.outcome", "Plan": "downloader.dryrun", "JobStatus": "downloader.jobstatus",
          "UsageError": "downloader.core.errors", "InputError": "downloader.core.errors",
          "LockedError": "downloader.core.errors", "StateError": "downloader.core.errors"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)

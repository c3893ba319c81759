"""A Dagster asset that downloads the drawings of a patent list with patent-images, called as a library.

Each materialization runs the job on the same output: patents settled before are never asked
again, so a daily schedule pays only for the new ones. The run's counts and cost become the
materialization's metadata. A fatal stop (credentials refused, quota or balance spent, the API or
CDN out of reach) or an interrupt fails the run with the tool's own words; a budget or time cap
(--max-charged, --max-runtime: exit 4) materializes what was done and the next run continues.

Copy this file into your code location and set, in the environment of the run: PATENTS_CSV (one
or more paths, separated by ':'), PATENTS_OUT (a folder or s3://bucket/prefix), and PatSnap's
credentials (PATSNAP_CLIENT_ID and PATSNAP_CLIENT_SECRET, or PATSNAP_TOKEN and PATSNAP_API_KEY;
PATSNAP_API_BASE to point elsewhere). `run_job` works whether or not Dagster runs the asset inside
an event loop.
"""

from __future__ import annotations

import os

import dagster as dg

from downloader import Settings, Summary, run_job

_CREDENTIALS = {"api_base": "PATSNAP_API_BASE", "client_id": "PATSNAP_CLIENT_ID",
                "client_secret": "PATSNAP_CLIENT_SECRET", "token": "PATSNAP_TOKEN", "api_key": "PATSNAP_API_KEY"}


def settings_from_env() -> Settings:
    """The job's settings: PatSnap's credentials from the environment, every other setting its default."""
    given = {field: os.environ[name] for field, name in _CREDENTIALS.items() if os.environ.get(name)}
    return Settings(**given)


def run_metadata(summary: Summary) -> dict[str, object]:
    """What a person checks after a materialization: counts by outcome, API calls, cost, where the manifest is."""
    by = summary.by_status
    return {
        "exit_code": summary.exit_code,
        "stopped": summary.stop_reason.value if summary.stop_reason else "",
        "downloaded": by.get("downloaded", 0), "no_image": by.get("no_image", 0),
        "not_found": by.get("not_found", 0), "failed": by.get("failed", 0),
        "left_for_next_run": by.get("pending", 0) + by.get("resolved", 0),
        "api_calls": summary.api_calls, "charged_results": summary.charged, "recharged_results": summary.recharged,
        "images": summary.images, "megabytes": round(summary.bytes / 1e6, 1), "seconds": summary.seconds,
        "manifest": dg.MetadataValue.path(summary.manifest),
    }


@dg.asset(description="Front-page drawings of the patents listed in PATENTS_CSV, with manifest.csv")
def patent_drawings() -> dg.MaterializeResult:
    """Run the job; its counts and cost are the materialization's metadata."""
    summary = run_job(os.environ["PATENTS_CSV"].split(":"), os.environ["PATENTS_OUT"], settings_from_env())
    if summary.exit_code in (3, 130):  # fatal or interrupted: state is kept, the next run continues
        hint = getattr(summary.error, "hint", "")
        raise dg.Failure(description=f"patent-images stopped: {summary.fatal or summary.stop_reason}. {hint}",
                         metadata=run_metadata(summary))
    return dg.MaterializeResult(metadata=run_metadata(summary))
